"""Clients of eventbusd: :class:`SyncClient` (blocking) and :class:`Client` (asyncio).

Both speak request/reply over a DEALER socket with correlation ids and
timeouts, and receive published events for the patterns they subscribed to.
The verbs are described once in :mod:`eventbus._requests`; this module holds
the asyncio client, :mod:`eventbus.sync_client` the blocking one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import zmq

from distributor.models import CollectorInfo, TaskInfo
from eventbus import _requests as rq
from eventbus import messages as m
from eventbus._link import (
    MONITORED_EVENTS,
    UNKNOWN_OUTCOME,
    TaskWait,
    link_event,
    not_back,
    reset_error,
)
from eventbus._loopsock import LoopReader, LoopWriter
from eventbus._requests import WAIT_CHUNK_S, list_body, submit_body
from eventbus._transport import RECONNECT_GRACE_S, Ids, dealer, probe
from eventbus.errors import (
    ConnectionReset,
    DaemonUnreachable,
    EventBusError,
    Forbidden,
    ProtocolError,
    RequestTimeout,
)
from eventbus.paths import resolve_socket_path
from eventbus.sync_client import SyncClient
from eventbus.wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEPTH_HEADROOM,
    MAX_DEPTH,
    PROTOCOL_VERSION,
    Envelope,
    Kind,
    decode,
    decode_batch,
    encode,
    is_batch,
)

__all__ = [
    "RECONNECT_GRACE_S",
    "WAIT_CHUNK_S",
    "Client",
    "OnPublish",
    "SyncClient",
    "list_body",
    "probe",
    "submit_body",
]

T = TypeVar("T")
OnPublish = Callable[[str, dict[str, Any]], None]
log = logging.getLogger(__name__)


#: the protocol version the asyncio client speaks: it sends and reads batch frames
VERSION = PROTOCOL_VERSION
#: bytes a connection queues while its pipe to the daemon is full (the daemon is not reading)
SEND_QUEUE_BYTES = 64 << 20


def _expire(fut: asyncio.Future[Envelope], path: Path, limit: float, topic: str) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(f"no answer from eventbusd at {path} within {limit:g}s ({topic})"))


def _same(exc: EventBusError) -> EventBusError:
    return exc


class Client:
    """asyncio client; also the transport of the collector SDK.

    ``on_publish(topic, body)`` is called for every event or command the
    daemon pushes to this connection.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        identity: str | None = None,
        on_publish: OnPublish | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        reconnect_grace: float = RECONNECT_GRACE_S,
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self.reconnect_grace = min(reconnect_grace, timeout)
        self._identity = identity
        self._on_publish = on_publish
        self.max_message_size = max_message_size
        self._ids = Ids()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self._reader: LoopReader[bytes] | None = None
        self._writer: LoopWriter | None = None
        #: the socket monitor's PAIR, and its reader (see :mod:`eventbus._link`)
        self._mon: zmq.Socket[Any] | None = None
        self._mon_reader: LoopReader[list[bytes]] | None = None
        self._up = asyncio.Event()
        #: set when the daemon refused the connection (this uid is not served)
        self._refused: Forbidden | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Check the daemon is there and open the connection."""
        probe(self.path)
        self._ctx = zmq.Context()
        self._open()

    async def reconnect(self) -> None:
        """Drop the connection and open a new one (same identity); pending requests fail.

        Raises :class:`DaemonUnreachable` (and stays disconnected) when no daemon listens.
        """
        await self._disconnect()
        probe(self.path)
        self._open()

    def _open(self) -> None:
        """A new DEALER, read from the loop, and its monitor, which follows the connection."""
        assert self._ctx is not None
        loop = asyncio.get_running_loop()
        sock = self._sock = dealer(self._ctx, self.path, self._identity, self.max_message_size)
        mon = self._mon = sock.get_monitor_socket(MONITORED_EVENTS)
        self._up.set()  # probe() found the daemon: up until the monitor says otherwise
        reader = self._reader = LoopReader(
            loop, sock, lambda: sock.recv(zmq.NOBLOCK), self._handle, on_error=self._socket_failed
        )
        # requests made in one loop iteration go out in one batch frame (protocol version 2)
        self._writer = LoopWriter(loop, sock, SEND_QUEUE_BYTES, reader.recheck, batch_size=self.max_message_size)
        self._mon_reader = LoopReader(loop, mon, lambda: mon.recv_multipart(zmq.NOBLOCK), self._on_monitor)

    async def _disconnect(self) -> None:
        for io in (self._reader, self._writer, self._mon_reader):
            if io is not None:
                io.close()
        self._reader = self._writer = self._mon_reader = None
        self._fail_pending(lambda: DaemonUnreachable(f"connection to eventbusd at {self.path} was reset"))
        if self._sock is not None and self._mon is not None:
            self._sock.disable_monitor()
            self._mon.close(linger=0)
            self._sock.close(linger=0)
        self._sock = self._mon = None

    def _fail_pending(self, error: Callable[[], EventBusError]) -> None:
        """Nobody will answer the pending requests: each fails with a fresh ``error()``."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error())
        self._pending.clear()

    async def close(self) -> None:
        await self._disconnect()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def _socket_failed(self, exc: Exception) -> None:
        """The socket failed: nobody will answer the pending requests."""
        log.error("connection to %s failed: %s", self.path, exc)
        message = f"connection to eventbusd at {self.path} failed: {exc}"
        self._fail_pending(lambda: DaemonUnreachable(message))

    def _on_monitor(self, frames: list[bytes]) -> None:
        """Track the connection: when the daemon goes away, every pending request fails at once."""
        try:
            state = link_event(frames)
        except Forbidden as exc:
            self._refused = exc
            self._fail_pending(functools.partial(_same, exc))
            return
        if state:
            self._up.set()
        elif state is False:
            self._up.clear()
            if self._reader is not None:
                self._reader.drain_all()  # answers that arrived before the drop still count
            self._fail_pending(lambda: reset_error(self.path, "an answer", UNKNOWN_OUTCOME))

    async def _ensure_link(self, within: float) -> None:
        """Return once the connection is up; :class:`DaemonUnreachable` with the cause if not within ``within`` s."""
        if self._refused is not None:
            raise self._refused
        if self._sock is not None and not self._up.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), within)
            if not self._up.is_set():
                probe(self.path)  # names the cause: no socket, connection refused
                raise not_back(self.path, within)
        if self._sock is None:
            raise DaemonUnreachable(f"not connected to eventbusd at {self.path}")

    def _handle(self, data: bytes) -> None:
        limit, depth = 2 * self.max_message_size, MAX_DEPTH + DEPTH_HEADROOM
        try:
            items: list[Envelope | ProtocolError] = (
                decode_batch(data, limit, depth) if is_batch(data) else [decode(data, limit, depth)]
            )
        except ProtocolError as exc:
            items = [exc]
        for item in items:
            if isinstance(item, ProtocolError):  # fails the request it answers, when its id can be read
                failed = self._pending.pop(item.correlation_id, None) if item.correlation_id else None
                if failed is not None and not failed.done():
                    failed.set_exception(item)
            else:
                self._deliver(item)

    def _deliver(self, env: Envelope) -> None:
        if env.kind is Kind.PUBLISH:
            if self._on_publish is not None and env.topic != m.SUBSCRIPTION_PING:
                try:
                    self._on_publish(env.topic, env.body)
                except Exception:  # a handler bug must not stop replies from arriving
                    log.exception("on_publish failed for %s", env.topic)
            return
        fut = self._pending.pop(env.id, None)
        if fut is not None and not fut.done():
            fut.set_result(env)

    async def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and await the reply body; the daemon's errors are raised typed.

        :class:`ConnectionReset` if the daemon goes away before answering; while the connection
        is down, the request waits up to ``reconnect_grace`` for it (then :class:`DaemonUnreachable`).
        """
        limit = self.timeout if timeout is None else timeout
        await self._ensure_link(min(self.reconnect_grace, limit))
        writer = self._writer
        assert writer is not None  # _ensure_link raises when not connected
        corr = self._ids.next()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Envelope] = loop.create_future()
        self._pending[corr] = fut
        timer = loop.call_later(limit, _expire, fut, self.path, limit, topic)
        try:
            if not writer.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self.max_message_size, VERSION)):
                raise RequestTimeout(
                    f"eventbusd at {self.path} is not reading: {writer.queued_bytes} bytes wait to be sent ({topic})"
                )
            env = await fut
        except ConnectionReset:
            raise reset_error(self.path, f"the answer to {topic}", UNKNOWN_OUTCOME) from None
        finally:
            timer.cancel()
            self._pending.pop(corr, None)
        return rq.reply_body(env)

    async def _call(self, call: rq.Call[T]) -> T:
        """Send one verb and return its result."""
        return call.parse(await self.request(call.topic, call.body, call.timeout))

    def notify(self, topic: str, body: dict[str, Any]) -> None:
        """Send a request now without awaiting its reply (progress, acceptance).

        Sent synchronously, so it keeps its order relative to later requests.
        Best effort: while disconnected the message is dropped.
        """
        data = encode(Envelope(Kind.REQUEST, "", topic, body), self.max_message_size, VERSION)
        if self._writer is None or not self._writer.send(data):
            log.debug("not connected, or the send queue is full; %s dropped", topic)

    async def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return await self._call(rq.submit(operation, payload, **fields))

    async def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        return await self._call(rq.get(task_id, wait_s, self.timeout))

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Until the task is final; :class:`RequestTimeout` after ``timeout`` seconds (None: no limit).

        Across a daemon restart it behaves as :meth:`SyncClient.wait`: it goes on if the daemon that
        takes the connection back knows the task, else raises :class:`DaemonRestarted` or
        :class:`DaemonUnreachable` (the task's fate is unknown).
        """
        loop = asyncio.get_running_loop()
        return await self._wait(TaskWait(self.path, task_id, timeout, loop.time(), self.reconnect_grace))

    async def _wait(self, w: TaskWait) -> TaskInfo:
        loop = asyncio.get_running_loop()
        task_id = w.task_id
        while True:
            try:
                within = w.relink_within(loop.time())
                if within is not None:
                    await self._ensure_link(within)
                info = await self.get(task_id, wait_s=w.chunk(loop.time()))
            except EventBusError as exc:
                w.failed(exc)
                continue
            final = w.got(info, loop.time())
            if final is not None:
                return final

    async def run(
        self,
        operation: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_unoffered: Callable[[str], None] | None = None,
        **fields: Any,
    ) -> TaskInfo:
        """Submit a task and wait until it is final: one request when it finishes within a minute.

        As :meth:`SyncClient.run`.
        """
        loop = asyncio.get_running_loop()
        task_id = fields.pop("task_id", None) or rq.new_task_id()
        w = TaskWait(self.path, task_id, timeout, loop.time(), self.reconnect_grace)
        call = rq.submit_wait(operation, payload, w.chunk(loop.time()), self.timeout, task_id=task_id, **fields)
        try:
            first = await self._call(call)
        except ConnectionReset as exc:
            w.failed(exc)  # submitted or not: ask the daemon that takes the connection back
            return await self._wait(w)
        if first.info.state.terminal:
            return first.info
        if not first.offered and on_unoffered is not None:
            on_unoffered(task_id)
        return await self._wait(w)

    async def cancel(self, task_id: str) -> TaskInfo:
        return await self._call(rq.cancel(task_id))

    async def tasks(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> list[TaskInfo]:
        """Known tasks, newest first, optionally filtered by state and operation (see :meth:`task_page`)."""
        return (await self.task_page(state, operation, limit, after=after)).tasks

    async def task_page(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> m.TaskPage:
        """As :meth:`SyncClient.task_page`."""
        page, more = m.TaskPage(tasks=[], next=after), True
        while more:
            reply = await self._call(rq.list_page(state, operation, limit - len(page.tasks), page.next))
            page, more = rq.next_page(page, reply, limit)
        return page

    async def strategy(self, name: str | None = None) -> str:
        return await self._call(rq.strategy(name))

    async def status(self) -> dict[str, Any]:
        return await self._call(rq.status())

    async def stats(self) -> dict[str, Any]:
        return await self._call(rq.stats())

    async def report(self) -> dict[str, Any]:
        """Completion-time percentiles per operation, collectors' utilization and success, errors by type."""
        return await self._call(rq.report())

    async def metrics(self) -> str:
        """The daemon's metrics in the Prometheus text format (:class:`MetricsUnavailable` without the extra)."""
        return await self._call(rq.metrics())

    async def collectors(self) -> list[CollectorInfo]:
        return await self._call(rq.collectors())

    async def offers(self, operation: str) -> bool:
        """Whether a live collector offers ``operation`` now (else its tasks wait in the queue)."""
        return rq.offers(await self.collectors(), operation)

    async def subscribe(self, *patterns: str) -> None:
        """Have events on topics matching ``patterns`` delivered to ``on_publish``."""
        await self._call(rq.subscribe(patterns))

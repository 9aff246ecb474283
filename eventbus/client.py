"""Clients of eventbusd: :class:`SyncClient` (blocking) and :class:`Client` (asyncio).

Both speak request/reply with correlation ids and timeouts, and receive
published events for the patterns they subscribed to. The verbs are
described once in :mod:`eventbus._requests`; this module holds the asyncio
client, :mod:`eventbus.sync_client` the blocking one. The asyncio client
reaches the daemon through a :class:`~eventbus._transport.Transport`
(ZeroMQ unless told otherwise) and holds only the logic: pending requests,
timeouts, the connection's state, batching and publish dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from distributor.models import CollectorInfo, TaskInfo
from eventbus import _requests as rq
from eventbus import messages as m
from eventbus._batch import Batch, Part
from eventbus._link import UNKNOWN_OUTCOME, TaskWait, not_back, reset_error
from eventbus._requests import WAIT_CHUNK_S, list_body, submit_body
from eventbus._transport import (
    RECONNECT_GRACE_S,
    Connector,
    Ids,
    LinkEvents,
    Transport,
    ZmqConnector,
    probe,
    translate,
    zmq_errors,
)
from eventbus.errors import (
    ConnectionReset,
    DaemonRestarted,
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
    batches,
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


def _expire(fut: asyncio.Future[Envelope], path: Path, limit: float, topic: str) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(f"no answer from eventbusd at {path} within {limit:g}s ({topic})"))


def _fail(fut: asyncio.Future[Envelope] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


class _Broken:
    """Why the connection is unusable until :meth:`Client.connect` or :meth:`Client.reconnect`."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.message, self.cause = message, cause

    def error(self) -> DaemonUnreachable:
        """A fresh error each time (an exception raised twice would pile up tracebacks)."""
        exc = DaemonUnreachable(self.message)
        exc.__cause__ = self.cause
        return exc


class Client:
    """asyncio client; also the transport of the collector SDK.

    ``on_publish(topic, body)`` is called for every event or command the
    daemon pushes to this connection. ``transport`` opens the connection
    (default: ZeroMQ on the daemon's socket; tests pass an in-memory one).

    Requests made in one turn of the event loop go out together, in one batch
    frame (protocol version 2). A request waiting for its answer fails with
    :class:`ConnectionReset` when the daemon goes away; one made while the
    connection is down waits up to ``reconnect_grace`` for a daemon to take it
    back. Once the connection itself failed or was closed, every request fails
    at once with :class:`DaemonUnreachable` (naming the cause) until
    :meth:`connect` or :meth:`reconnect` opens a new one.
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
        transport: Connector | None = None,
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self.reconnect_grace = min(reconnect_grace, timeout)
        self._identity = identity
        self._on_publish = on_publish
        self.max_message_size = max_message_size
        self._connector: Connector = ZmqConnector() if transport is None else transport
        self._ids = Ids()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        #: requests answered by a stream of replies (a batch of tasks): what came, or why it ended
        self._streams: dict[str, asyncio.Queue[Envelope | BaseException]] = {}
        self._transport: Transport | None = None
        #: what this loop turn sends: (encoded envelope, correlation id, topic), flushed at the turn's end
        self._outgoing: list[tuple[bytes, str, str]] = []
        self._up = asyncio.Event()
        #: set when the connection came back after it went down (a daemon restarted, or returned):
        #: whoever keeps state at the daemon (a collector's registration) clears it and says so again
        self.relinked = asyncio.Event()
        #: set when the daemon refused the connection (this uid is not served)
        self._refused: Forbidden | None = None
        #: set while there is no usable connection: not opened yet, closed, or failed
        self._broken: _Broken | None = _Broken(f"not connected to eventbusd at {self.path}")

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Check the daemon is there and open the connection (:class:`DaemonUnreachable` if it is not)."""
        self._open()

    async def reconnect(self) -> None:
        """Drop the connection and open a new one (same identity); pending requests fail.

        Raises :class:`DaemonUnreachable` (and stays disconnected) when no daemon listens.
        """
        self._disconnect(f"not connected to eventbusd at {self.path}")
        self._open()

    async def close(self) -> None:
        """Close the connection; pending requests fail, and later ones fail at once."""
        self._disconnect(f"the connection to eventbusd at {self.path} is closed")

    # ---- the connection ------------------------------------------------

    def _open(self) -> None:
        events = LinkEvents(self._handle, self._on_up, self._on_down, self._on_refused, self._on_failed)
        with zmq_errors(self.path):
            self._transport = self._connector.connect(self.path, self._identity, self.max_message_size, events)
        self._broken = None
        self._up.set()  # the connector found the daemon: up until the transport says otherwise

    def _disconnect(self, why: str) -> None:
        transport, self._transport = self._transport, None
        self._broken = _Broken(why)
        self._outgoing.clear()
        self._fail_pending(lambda: DaemonUnreachable(f"connection to eventbusd at {self.path} was reset"))
        if transport is not None:
            try:
                with zmq_errors(self.path):
                    transport.close()
            except EventBusError as exc:  # the connection is gone either way
                log.debug("closing the connection to %s: %s", self.path, exc)

    def _fail_pending(self, error: Callable[[], BaseException]) -> None:
        """Nobody will answer the pending requests: each fails with a fresh ``error()``."""
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            _fail(fut, error())
        for queue in self._streams.values():
            queue.put_nowait(error())

    def _fail_request(self, corr: str, exc: BaseException) -> None:
        """The request ``corr`` (awaited or streamed) gets no answer: ``exc`` instead."""
        queue = self._streams.get(corr)
        if queue is not None:
            queue.put_nowait(exc)
        else:
            _fail(self._pending.get(corr), exc)

    def _on_up(self) -> None:
        if not self._up.is_set():
            self.relinked.set()
        self._up.set()

    def _on_down(self) -> None:
        """The daemon went away: every pending request fails at once (whether it acted on it is unknown)."""
        self._up.clear()
        self._fail_pending(lambda: reset_error(self.path, "an answer", UNKNOWN_OUTCOME))

    def _on_refused(self, exc: Forbidden) -> None:
        self._refused = exc
        self._fail_pending(lambda: exc)

    def _on_failed(self, exc: BaseException) -> None:
        """The transport broke: nobody will answer, and the connection stays failed until reopened."""
        log.error("connection to %s failed: %s", self.path, exc)
        self._broken = _Broken(translate(exc, self.path).message, exc)
        self._fail_pending(self._broken.error)

    async def _ensure_link(self, within: float) -> None:
        """Return once the connection is up; :class:`DaemonUnreachable` with the cause if not within ``within`` s."""
        if self._refused is not None:
            raise self._refused
        if self._broken is None and not self._up.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), within)
            if self._broken is None and not self._up.is_set():
                self._connector.probe(self.path)  # names the cause: no socket, connection refused
                raise not_back(self.path, within)
        if self._broken is not None:
            raise self._broken.error()

    # ---- frames --------------------------------------------------------

    def _queue(self, data: bytes, corr: str, topic: str) -> None:
        """Send ``data`` at the end of this loop turn, with whatever else is sent in it."""
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append((data, corr, topic))

    def _flush(self) -> None:
        """Send this turn's envelopes in as few batch frames as the size limit allows."""
        parts, self._outgoing = self._outgoing, []
        transport = self._transport
        if transport is None or self._broken is not None or not parts:
            return  # their requests already failed
        start = 0
        for frame, count in batches([data for data, _, _ in parts], self.max_message_size):
            batch, start = parts[start : start + count], start + count
            try:
                with zmq_errors(self.path):
                    sent = transport.send(frame)
            except DaemonUnreachable as exc:
                self._on_failed(exc.__cause__ or exc)
                return
            except EventBusError as exc:
                for _, corr, _ in batch:
                    self._fail_request(corr, exc)
                continue
            if not sent:
                for _, corr, topic in batch:
                    why = f"eventbusd at {self.path} is not reading: its send queue is full ({topic})"
                    self._fail_request(corr, RequestTimeout(why))

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
                if item.correlation_id:
                    self._fail_request(item.correlation_id, item)
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
        queue = self._streams.get(env.id)
        if queue is not None:
            queue.put_nowait(env)
            return
        fut = self._pending.pop(env.id, None)
        if fut is not None and not fut.done():
            fut.set_result(env)

    # ---- requests ------------------------------------------------------

    async def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and await the reply body; the daemon's errors are raised typed.

        :class:`ConnectionReset` if the daemon goes away before answering; while the connection
        is down, the request waits up to ``reconnect_grace`` for it (then :class:`DaemonUnreachable`).
        """
        limit = self.timeout if timeout is None else timeout
        await self._ensure_link(min(self.reconnect_grace, limit))
        corr = self._ids.next()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Envelope] = loop.create_future()
        self._pending[corr] = fut
        timer = loop.call_later(limit, _expire, fut, self.path, limit, topic)
        try:
            self._queue(encode(Envelope(Kind.REQUEST, corr, topic, body), self.max_message_size, VERSION), corr, topic)
            env = await fut
        except ConnectionReset:
            raise reset_error(self.path, f"the answer to {topic}", UNKNOWN_OUTCOME) from None
        finally:
            timer.cancel()
            self._pending.pop(corr, None)
        return rq.reply_body(env)

    async def _stream(self, topic: str, body: dict[str, Any], timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Send a request answered by a stream of replies; yield each reply body until one has ``remaining`` 0.

        ``timeout`` bounds the wait for each reply; errors as in :meth:`request`.
        """
        await self._ensure_link(min(self.reconnect_grace, timeout))
        corr = self._ids.next()
        queue: asyncio.Queue[Envelope | BaseException] = asyncio.Queue()
        self._streams[corr] = queue
        try:
            self._queue(encode(Envelope(Kind.REQUEST, corr, topic, body), self.max_message_size, VERSION), corr, topic)
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise RequestTimeout(
                        f"no answer from eventbusd at {self.path} within {timeout:g}s ({topic})"
                    ) from None
                if isinstance(item, ConnectionReset):
                    raise reset_error(self.path, f"the answers to {topic}", UNKNOWN_OUTCOME) from None
                if isinstance(item, BaseException):
                    raise item
                reply = rq.reply_body(item)
                yield reply
                if not reply.get("remaining"):
                    return
        finally:
            self._streams.pop(corr, None)

    async def _follow(self, batch: Batch, part: Part, timeout: float, changed: asyncio.Event) -> None:
        """Read one part's replies into ``batch``; a stream cut short marks the part failed."""
        try:
            async for reply in self._stream(m.BATCH, part.body, timeout):
                batch.take(part, reply)
                changed.set()
        except EventBusError as exc:
            batch.fail(part, exc)
        finally:
            part.done = True
            changed.set()

    async def _batch(self, batch: Batch, timeout: float) -> AsyncIterator[int]:
        """Send every part of ``batch`` at once and yield each spec's index, in input order, once it is settled."""
        changed = asyncio.Event()
        readers = [asyncio.ensure_future(self._follow(batch, part, timeout, changed)) for part in batch.parts]
        try:
            for index in range(len(batch)):
                while not batch.settled(index):
                    changed.clear()
                    await changed.wait()
                yield index
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def submit_many(self, specs: Iterable[Mapping[str, Any]]) -> list[str | EventBusError]:
        """Submit many tasks in as few requests as fit (``control.task.batch``); one result per spec, in order.

        Each spec is a submit body (``{"operation": ..., "payload": ..., "priority": ...}``, the
        fields of TaskRequest). A spec the daemon refused is answered with its error (an
        :class:`EventBusError` in the list); the others are taken. A spec whose answer went with
        a reset connection gets :class:`ConnectionReset` (whether it was taken is unknown).
        """
        batch = Batch(specs, wait=False, max_size=self.max_message_size)
        return [batch.submitted(index) async for index in self._batch(batch, self.timeout)]

    async def run_many(
        self, specs: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> AsyncIterator[TaskInfo | EventBusError]:
        """Submit many tasks and yield each one's final TaskInfo in input order, as soon as it and those
        before it are final (results arrive as tasks finish, many per frame).

        A spec the daemon refused yields its error instead. ``timeout`` (None: no limit) bounds the
        whole batch: tasks not final by then are yielded in their current state. A daemon restart
        meanwhile is handled as in :meth:`wait` (the task ids are chosen here when not given); a task
        whose fate it leaves unknown yields :class:`DaemonRestarted` or :class:`DaemonUnreachable`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        wait_s = rq.wait_chunk(deadline, loop.time())
        batch = Batch(specs, wait=True, wait_s=wait_s, max_size=self.max_message_size)
        async for index in self._batch(batch, wait_s + self.timeout):
            outcome = batch.outcome(index)
            if outcome is None:
                outcome = await self._settle(batch, index, deadline)
            yield outcome

    async def _settle(self, batch: Batch, index: int, deadline: float | None) -> TaskInfo | EventBusError:
        """A task of a batch its replies left open: wait for it by id (its current state past ``deadline``)."""
        loop = asyncio.get_running_loop()
        task_id = batch.slots[index].task_id
        left = None if deadline is None else deadline - loop.time()
        w = TaskWait(self.path, task_id, left, loop.time(), self.reconnect_grace)
        reset = batch.after_reset(index)
        if reset is not None:
            w.failed(reset)
        try:
            return await self._wait(w)
        except RequestTimeout:
            return await self.get(task_id)
        except (DaemonRestarted, DaemonUnreachable) as exc:
            return exc

    async def map(
        self, operation: str, payloads: Iterable[Any], *, timeout: float | None = None, **fields: Any
    ) -> AsyncIterator[TaskInfo]:
        """Run ``operation`` on each payload (a batch, see :meth:`run_many`) and yield the tasks in order.

        ``fields`` (priority, timeout_ms, ...) apply to every task; a refused task raises its error.
        """
        specs = ({**fields, "operation": operation, "payload": payload} for payload in payloads)
        async for outcome in self.run_many(specs, timeout=timeout):
            if isinstance(outcome, EventBusError):
                raise outcome
            yield outcome

    async def _call(self, call: rq.Call[T]) -> T:
        """Send one verb and return its result."""
        return call.parse(await self.request(call.topic, call.body, call.timeout))

    def notify(self, topic: str, body: dict[str, Any]) -> None:
        """Send a request now without awaiting its reply (progress, acceptance).

        Sent in order with later requests. Best effort: while disconnected the message is dropped.
        """
        data = encode(Envelope(Kind.REQUEST, "", topic, body), self.max_message_size, VERSION)
        if self._transport is None or self._broken is not None or self._refused is not None:
            log.debug("not connected; %s dropped", topic)
            return
        self._queue(data, "", topic)

    # ---- tasks ---------------------------------------------------------

    async def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return await self._call(rq.submit(operation, payload, **fields))

    async def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        """A task's state; with ``wait_s`` the daemon answers when it is final or after ``wait_s``."""
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
        while True:
            try:
                within = w.relink_within(loop.time())
                if within is not None:
                    await self._ensure_link(within)
                info = await self.get(w.task_id, wait_s=w.chunk(loop.time()))
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
        w, call = TaskWait.run(
            self.path,
            operation,
            payload,
            fields,
            timeout=timeout,
            now=loop.time(),
            grace=self.reconnect_grace,
            request_timeout=self.timeout,
        )
        try:
            final = w.submitted(await self._call(call), on_unoffered)
        except EventBusError as exc:
            w.failed(exc)  # a reset: submitted or not, ask the daemon that takes the connection back
            final = None
        return final if final is not None else await self._wait(w)

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

    # ---- admin ---------------------------------------------------------

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

    async def limits(self) -> list[dict[str, Any]]:
        """The rate limits in force: rate, max_in_flight, attempts under each, tokens, what it held, source."""
        return await self._call(rq.limits())

    async def set_limit(
        self, name: str, *, rate: str | None = None, max_in_flight: int | None = None, kind: str = "operation"
    ) -> dict[str, Any]:
        """Limit an operation (or, ``kind="collector_type"``, a collector type) at runtime: ``rate`` is
        ``N/PERIOD`` (``10/s``, ``100/60s``, ``5/m``); kept across restarts until :meth:`remove_limit`."""
        return await self._call(rq.set_limit(kind, name, rate, max_in_flight))

    async def remove_limit(self, name: str, *, kind: str = "operation") -> list[dict[str, Any]]:
        """Remove a runtime limit; the limits left in force."""
        return await self._call(rq.remove_limit(kind, name))

    async def cluster(self) -> dict[str, Any]:
        """The daemon's view of its cluster: node, leader, NATS connection, and each host's record."""
        return await self._call(rq.cluster())

    async def schedules(self) -> list[dict[str, Any]]:
        """Every periodic schedule: its definition, next due time and last runs."""
        return await self._call(rq.schedules())

    async def add_schedule(self, name: str, operation: str, *, replace: bool = False, **fields: Any) -> dict[str, Any]:
        """Add a periodic schedule: ``every="30s"`` or ``cron="*/5 * * * *"``, and optionally ``payload``,
        ``priority``, ``timeout_ms``, ``constraints``, ``jitter_s``, ``overlap`` ("skip" or "queue"),
        ``timezone``. Kept across restarts until :meth:`remove_schedule`."""
        return await self._call(rq.add_schedule(name, operation, replace, **fields))

    async def schedule(self, name: str) -> dict[str, Any]:
        """One schedule with its last runs (newest first) and their tasks' states."""
        return await self._call(rq.schedule_verb(m.SCHEDULE_SHOW, name))

    async def pause_schedule(self, name: str) -> dict[str, Any]:
        return await self._call(rq.schedule_verb(m.SCHEDULE_PAUSE, name))

    async def resume_schedule(self, name: str) -> dict[str, Any]:
        """Resume a paused schedule: next due after now (the paused time is not caught up)."""
        return await self._call(rq.schedule_verb(m.SCHEDULE_RESUME, name))

    async def remove_schedule(self, name: str) -> None:
        await self._call(rq.schedule_verb(m.SCHEDULE_RM, name))

    async def strategy(self, name: str | None = None) -> str:
        """The routing strategy in use; with ``name``, switch to it first."""
        return await self._call(rq.strategy(name))

    async def drain(self, collector_id: str) -> CollectorInfo:
        """Stop routing new work to a collector (running attempts finish)."""
        return await self._call(rq.drain(collector_id))

    async def undrain(self, collector_id: str) -> CollectorInfo:
        """Route work to a drained collector again."""
        return await self._call(rq.undrain(collector_id))

    async def stop_collectors(self, collector_id: str | None = None) -> list[str]:
        """Ask a collector (None: every collector) to drain and exit; returns whom it asked."""
        return await self._call(rq.stop_collectors(collector_id))

    # ---- events --------------------------------------------------------

    async def subscribe(self, *patterns: str) -> None:
        """Have events on topics matching ``patterns`` delivered to ``on_publish``."""
        await self._call(rq.subscribe(patterns))

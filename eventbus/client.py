"""Clients of eventbusd: :class:`SyncClient` (blocking) and :class:`Client` (asyncio).

Both speak request/reply over a DEALER socket with correlation ids and
timeouts, and receive published events for the patterns they subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import socket as _socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from distributor.models import CollectorInfo, TaskInfo
from eventbus import messages as m
from eventbus._link import (
    MONITORED_EVENTS,
    UNKNOWN_OUTCOME,
    SyncLink,
    link_event,
    lost_task,
    not_back,
    reconnect_bound,
    reset_error,
)
from eventbus.errors import (
    ConnectionReset,
    DaemonUnreachable,
    EventBusError,
    Forbidden,
    ProtocolError,
    RequestTimeout,
    error_from_code,
)
from eventbus.paths import endpoint, resolve_socket_path
from eventbus.wire import DEFAULT_MAX_MESSAGE_SIZE, DEPTH_HEADROOM, MAX_DEPTH, Envelope, Kind, decode, encode

OnPublish = Callable[[str, dict[str, Any]], None]
log = logging.getLogger(__name__)
#: a wait is split into server-side waits of at most this long
WAIT_CHUNK_S = 60.0
#: how long a request, or a wait whose connection was reset, gives the daemon to take the connection
#: back before failing with DaemonUnreachable (never longer than the client's timeout or the wait's own limit)
RECONNECT_GRACE_S = 5.0


def _wait_chunk(deadline: float | None, now: float) -> float:
    """The next server-side wait: a chunk, or what is left before ``deadline``."""
    return WAIT_CHUNK_S if deadline is None else max(0.0, min(WAIT_CHUNK_S, deadline - now))


def probe(path: Path) -> None:
    """Raise :class:`DaemonUnreachable` unless something accepts connections on ``path``.

    ZeroMQ connects lazily and retries forever, so without this a missing
    daemon would only show up as a timeout.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except FileNotFoundError:
        raise DaemonUnreachable(f"eventbusd is not running: no socket at {path}") from None
    except OSError as exc:
        raise DaemonUnreachable(f"eventbusd is not reachable at {path}: {exc.strerror}") from None
    finally:
        sock.close()


def _reply_body(env: Envelope) -> dict[str, Any]:
    if env.kind is Kind.ERROR:
        raise error_from_code(str(env.body.get("code", "internal")), str(env.body.get("message", "")))
    return env.body


def submit_body(operation: str, payload: Any = None, **fields: Any) -> dict[str, Any]:
    """A ``control.task.submit`` body; fields left as None take the daemon's defaults."""
    body = {"operation": operation, "payload": payload}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget send's outcome; a full pipe only loses a progress report."""
    if not fut.cancelled():
        fut.exception()


def list_body(state: str | None, operation: str | None, limit: int, after: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": limit}
    if state is not None:
        body["state"] = state
    if operation is not None:
        body["operation"] = operation
    if after is not None:
        body["after"] = after
    return body


def _next_page(so_far: m.TaskPage, reply: dict[str, Any], limit: int) -> tuple[m.TaskPage, bool]:
    """``so_far`` followed by the page in ``reply``, and whether to ask for another page."""
    page = m.TaskPage.model_validate(reply)
    merged = m.TaskPage(
        tasks=[*so_far.tasks, *page.tasks], next=page.next, truncated=so_far.truncated or page.truncated
    )
    return merged, bool(page.tasks) and page.next is not None and len(merged.tasks) < limit


def _same(exc: EventBusError) -> EventBusError:
    return exc


class _Ids:
    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count)}"


def _dealer(ctx: zmq.Context[Any], path: Path, identity: str | None, max_size: int) -> Any:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_size)
    if identity is not None:
        # a stable identity lets a reconnecting collector take over its old pipe
        sock.setsockopt(zmq.ROUTING_ID, identity.encode())
    sock.connect(endpoint(path))
    return sock


class SyncClient:
    """Blocking client. Not thread-safe: use one per thread.

    When the daemon goes away (stops or crashes), a request waiting for its
    answer fails at once with :class:`ConnectionReset`; a request made while
    the connection is down waits up to ``reconnect_grace`` seconds for a
    daemon to take it back, then fails with :class:`DaemonUnreachable`.

    >>> with SyncClient() as c:
    ...     info = c.wait(c.submit("echo", {"hello": 1}))
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        reconnect_grace: float = RECONNECT_GRACE_S,
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self.reconnect_grace = min(reconnect_grace, timeout)
        self._max = max_message_size
        probe(self.path)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = _dealer(self._ctx, self.path, None, max_message_size)
        self._link = SyncLink(self._sock)
        self._ids = _Ids()
        self._events: deque[tuple[str, dict[str, Any]]] = deque()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._link.close()
        self._sock.close(linger=0)
        self._ctx.term()

    def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the reply body; the daemon's errors are raised typed."""
        limit = self.timeout if timeout is None else timeout
        self._ensure_link(min(self.reconnect_grace, limit))
        corr = self._ids.next()
        self._sock.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self._max))
        deadline = time.monotonic() + limit
        while True:
            env = self._recv(deadline, f"the answer to {topic}", UNKNOWN_OUTCOME)
            if env is None:
                probe(self.path)
                raise RequestTimeout(f"no answer from eventbusd at {self.path} within {limit:g}s ({topic})")
            if env.kind is Kind.PUBLISH:
                self._events.append((env.topic, env.body))
            elif env.id == corr:
                return _reply_body(env)
            # else: a late reply to an earlier request that timed out

    def _ensure_link(self, within: float) -> None:
        """Return once the connection is up; :class:`DaemonUnreachable` with the cause if not within ``within`` s."""
        if not self._link.wait_up(within):
            probe(self.path)  # names the cause: no socket, connection refused
            raise not_back(self.path, within)
        self._link.dropped = False  # a drop before this request does not concern it

    def _recv(self, deadline: float, what: str, consequence: str) -> Envelope | None:
        """The next message, None at ``deadline``; :class:`ConnectionReset` once the connection dropped."""
        while True:
            # messages that arrived before the drop are still good: they are read first
            if self._link.dropped and not self._sock.poll(0, zmq.POLLIN):
                raise reset_error(self.path, what, consequence)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._sock in dict(self._link.poller.poll(int(remaining * 1000) + 1)):
                return decode(self._sock.recv(), 2 * self._max, MAX_DEPTH + DEPTH_HEADROOM)
            self._link.update()

    # ---- tasks ---------------------------------------------------------

    def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return str(self.request(m.SUBMIT, submit_body(operation, payload, **fields))["task_id"])

    def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        """A task's state; with ``wait_s`` the daemon answers when it is final or after ``wait_s``."""
        reply = self.request(m.GET, {"task_id": task_id, "wait_s": wait_s}, timeout=(wait_s or 0) + self.timeout)
        return TaskInfo.model_validate(reply)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Block until the task is final; :class:`RequestTimeout` after ``timeout`` seconds.

        If the daemon goes away meanwhile, the wait asks again once a daemon takes the connection
        back and goes on if that daemon knows the task. Otherwise the task's fate is unknown:
        :class:`DaemonRestarted` if the new daemon does not know it, :class:`DaemonUnreachable` if
        none came back within ``reconnect_grace`` (and never later than ``timeout``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reset = False
        while True:
            try:
                if reset:  # the answer went with the connection: ask again once a daemon is back
                    self._ensure_link(reconnect_bound(self.reconnect_grace, deadline, time.monotonic()))
                info = self.get(task_id, wait_s=_wait_chunk(deadline, time.monotonic()))
            except ConnectionReset:
                reset = True
                continue
            except EventBusError as exc:
                if not reset:
                    raise
                raise lost_task(exc, self.path, task_id) from exc
            reset = False
            if info.state.terminal:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise RequestTimeout(f"task {task_id} is still {info.state.value} after {timeout:g}s")

    def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.model_validate(self.request(m.CANCEL, {"task_id": task_id}))

    def tasks(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> list[TaskInfo]:
        """Known tasks, newest first, optionally filtered by state and operation (see :meth:`task_page`)."""
        return self.task_page(state, operation, limit, after=after).tasks

    def task_page(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> m.TaskPage:
        """Up to ``limit`` tasks older than the cursor ``after``, newest first, in as many requests as the
        frame limit takes; the page's ``next`` continues the listing (None: no task left)."""
        page, more = m.TaskPage(tasks=[], next=after), True
        while more:
            reply = self.request(m.LIST, list_body(state, operation, limit - len(page.tasks), page.next))
            page, more = _next_page(page, reply, limit)
        return page

    # ---- admin ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.request(m.STATUS, {})

    def stats(self) -> dict[str, Any]:
        return self.request(m.STATS, {})

    def collectors(self) -> list[CollectorInfo]:
        return [CollectorInfo.model_validate(c) for c in self.request(m.COLLECTORS, {})["collectors"]]

    def strategy(self, name: str | None = None) -> str:
        """The routing strategy in use; with ``name``, switch to it first."""
        return str(self.request(m.STRATEGY, {"name": name} if name else {})["strategy"])

    def drain(self, collector_id: str) -> CollectorInfo:
        """Stop routing new work to a collector (running attempts finish)."""
        return CollectorInfo.model_validate(self.request(m.ADMIN_DRAIN, {"collector_id": collector_id}))

    def undrain(self, collector_id: str) -> CollectorInfo:
        return CollectorInfo.model_validate(self.request(m.ADMIN_UNDRAIN, {"collector_id": collector_id}))

    def stop_collectors(self, collector_id: str | None = None) -> list[str]:
        """Ask a collector (None: every collector) to drain and exit; returns whom it asked."""
        body = {"collector_id": collector_id} if collector_id else {}
        return [str(cid) for cid in self.request(m.ADMIN_STOP, body)["collectors"]]

    # ---- events --------------------------------------------------------

    def subscribe(self, *patterns: str) -> None:
        """Receive events on topics matching ``patterns`` (``+`` one segment, ``#`` the rest)."""
        self.request(m.SUBSCRIBE, {"patterns": list(patterns)})

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (topic, body) of published events; stops after ``timeout`` seconds without one.

        Raises :class:`ConnectionReset` when the daemon goes away: its subscriptions went with it.
        """
        while True:
            while self._events:
                yield self._events.popleft()
            wait = 3600.0 if timeout is None else timeout
            env = self._recv(time.monotonic() + wait, "events", "its subscriptions are gone")
            if env is None:
                if timeout is None:
                    continue
                return
            if env.kind is Kind.PUBLISH:
                yield env.topic, env.body


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
        self._ids = _Ids()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: Any = None
        self._reader: asyncio.Task[None] | None = None
        #: the socket monitor's PAIR, and the task that follows it (see :mod:`eventbus._link`)
        self._mon: Any = None
        self._watcher: asyncio.Task[None] | None = None
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
        self._ctx = zmq.asyncio.Context()
        self._open()

    async def reconnect(self) -> None:
        """Drop the connection and open a new one (same identity); pending requests fail.

        Raises :class:`DaemonUnreachable` (and stays disconnected) when no daemon listens.
        """
        await self._disconnect()
        probe(self.path)
        self._open()

    def _open(self) -> None:
        """A new DEALER, with a task reading it and one following its connection through the monitor."""
        assert self._ctx is not None
        self._sock = _dealer(self._ctx, self.path, self._identity, self.max_message_size)
        self._mon = self._sock.get_monitor_socket(MONITORED_EVENTS)
        self._up.set()  # probe() found the daemon: up until the monitor says otherwise
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._watcher = loop.create_task(self._follow(self._mon))

    async def _disconnect(self) -> None:
        for task in (self._reader, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._watcher = None
        self._fail_pending(lambda: DaemonUnreachable(f"connection to eventbusd at {self.path} was reset"))
        if self._sock is not None:
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

    async def _read(self) -> None:
        try:
            while True:
                self._handle(await self._sock.recv())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket failed: nobody will answer the pending requests
            log.error("connection to %s failed: %s", self.path, exc)
            message = f"connection to eventbusd at {self.path} failed: {exc}"
            self._fail_pending(lambda: DaemonUnreachable(message))

    async def _follow(self, mon: Any) -> None:
        """Track the connection: when the daemon goes away, every pending request fails at once."""
        try:
            while True:
                try:
                    state = link_event(await mon.recv_multipart())
                except Forbidden as exc:
                    self._refused = exc
                    self._fail_pending(functools.partial(_same, exc))
                    continue
                if state:
                    self._up.set()
                elif state is False:
                    self._up.clear()
                    self._read_ready()  # answers that arrived before the drop still count
                    self._fail_pending(lambda: reset_error(self.path, "an answer", UNKNOWN_OUTCOME))
        except zmq.ZMQError as exc:  # the monitor is gone with its socket
            log.debug("monitor of the connection to %s stopped: %s", self.path, exc)

    def _read_ready(self) -> None:
        """Handle the messages already received, without waiting."""
        while True:
            done = self._sock.recv(zmq.NOBLOCK)  # resolves at once: a message, or zmq.Again
            if done.exception() is not None:
                return
            self._handle(done.result())

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
        try:
            env = decode(data, 2 * self.max_message_size, MAX_DEPTH + DEPTH_HEADROOM)
        except ProtocolError as exc:  # fails the request it answers, when its id can be read
            failed = self._pending.pop(exc.correlation_id, None) if exc.correlation_id else None
            if failed is not None and not failed.done():
                failed.set_exception(exc)
            return
        if env.kind is Kind.PUBLISH:
            if self._on_publish is not None:
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
        corr = self._ids.next()
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        try:
            await self._sock.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self.max_message_size))
            env = await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise RequestTimeout(f"no answer from eventbusd at {self.path} within {limit:g}s ({topic})") from None
        except ConnectionReset:
            raise reset_error(self.path, f"the answer to {topic}", UNKNOWN_OUTCOME) from None
        finally:
            self._pending.pop(corr, None)
        return _reply_body(env)

    def notify(self, topic: str, body: dict[str, Any]) -> None:
        """Send a request now without awaiting its reply (progress, acceptance).

        Sent synchronously, so it keeps its order relative to later requests.
        Best effort: while disconnected the message is dropped.
        """
        if self._sock is None:
            log.debug("not connected; %s dropped", topic)
            return
        sent = self._sock.send(encode(Envelope(Kind.REQUEST, "", topic, body), self.max_message_size), zmq.NOBLOCK)
        sent.add_done_callback(_consume)

    async def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return str((await self.request(m.SUBMIT, submit_body(operation, payload, **fields)))["task_id"])

    async def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        reply = await self.request(m.GET, {"task_id": task_id, "wait_s": wait_s}, timeout=(wait_s or 0) + self.timeout)
        return TaskInfo.model_validate(reply)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Until the task is final; :class:`RequestTimeout` after ``timeout`` seconds (None: no limit).

        Across a daemon restart it behaves as :meth:`SyncClient.wait`: it goes on if the daemon that
        takes the connection back knows the task, else raises :class:`DaemonRestarted` or
        :class:`DaemonUnreachable` (the task's fate is unknown).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        reset = False
        while True:
            try:
                if reset:  # the answer went with the connection: ask again once a daemon is back
                    await self._ensure_link(reconnect_bound(self.reconnect_grace, deadline, loop.time()))
                info = await self.get(task_id, wait_s=_wait_chunk(deadline, loop.time()))
            except ConnectionReset:
                reset = True
                continue
            except EventBusError as exc:
                if not reset:
                    raise
                raise lost_task(exc, self.path, task_id) from exc
            reset = False
            if info.state.terminal:
                return info
            if deadline is not None and loop.time() >= deadline:
                raise RequestTimeout(f"task {task_id} is still {info.state.value} after {timeout:g}s")

    async def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.model_validate(await self.request(m.CANCEL, {"task_id": task_id}))

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
            reply = await self.request(m.LIST, list_body(state, operation, limit - len(page.tasks), page.next))
            page, more = _next_page(page, reply, limit)
        return page

    async def strategy(self, name: str | None = None) -> str:
        return str((await self.request(m.STRATEGY, {"name": name} if name else {}))["strategy"])

    async def status(self) -> dict[str, Any]:
        return await self.request(m.STATUS, {})

    async def stats(self) -> dict[str, Any]:
        return await self.request(m.STATS, {})

    async def collectors(self) -> list[CollectorInfo]:
        reply = await self.request(m.COLLECTORS, {})
        return [CollectorInfo.model_validate(c) for c in reply["collectors"]]

    async def subscribe(self, *patterns: str) -> None:
        """Have events on topics matching ``patterns`` delivered to ``on_publish``."""
        await self.request(m.SUBSCRIBE, {"patterns": list(patterns)})

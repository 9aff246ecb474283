"""Clients of eventbusd: :class:`SyncClient` (blocking) and :class:`Client` (asyncio).

Both speak request/reply over a DEALER socket with correlation ids and
timeouts, and receive published events for the patterns they subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from eventbus.errors import DaemonUnreachable, ProtocolError, RequestTimeout, error_from_code
from eventbus.paths import endpoint, resolve_socket_path
from eventbus.wire import DEFAULT_MAX_MESSAGE_SIZE, Envelope, Kind, decode, encode

OnPublish = Callable[[str, dict[str, Any]], None]
log = logging.getLogger(__name__)
#: a wait is split into server-side waits of at most this long
WAIT_CHUNK_S = 60.0


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


def list_body(state: str | None, operation: str | None, limit: int) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": limit}
    if state is not None:
        body["state"] = state
    if operation is not None:
        body["operation"] = operation
    return body


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

    >>> with SyncClient() as c:
    ...     info = c.wait(c.submit("echo", {"hello": 1}))
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self._max = max_message_size
        probe(self.path)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = _dealer(self._ctx, self.path, None, max_message_size)
        self._ids = _Ids()
        self._events: deque[tuple[str, dict[str, Any]]] = deque()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the reply body; the daemon's errors are raised typed."""
        corr = self._ids.next()
        self._sock.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self._max))
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            env = self._recv(deadline)
            if env is None:
                probe(self.path)
                raise RequestTimeout(f"no answer from eventbusd at {self.path} within {limit:g}s ({topic})")
            if env.kind is Kind.PUBLISH:
                self._events.append((env.topic, env.body))
            elif env.id == corr:
                return _reply_body(env)
            # else: a late reply to an earlier request that timed out

    def _recv(self, deadline: float) -> Envelope | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
            return None
        return decode(self._sock.recv(), 2 * self._max)

    # ---- tasks ---------------------------------------------------------

    def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return str(self.request(m.SUBMIT, submit_body(operation, payload, **fields))["task_id"])

    def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        """A task's state; with ``wait_s`` the daemon answers when it is final or after ``wait_s``."""
        reply = self.request(m.GET, {"task_id": task_id, "wait_s": wait_s}, timeout=(wait_s or 0) + self.timeout)
        return TaskInfo.model_validate(reply)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Block until the task is final; :class:`RequestTimeout` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = WAIT_CHUNK_S if deadline is None else max(0.0, min(WAIT_CHUNK_S, deadline - time.monotonic()))
            info = self.get(task_id, wait_s=chunk)
            if info.state.terminal:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise RequestTimeout(f"task {task_id} is still {info.state.value} after {timeout:g}s")

    def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.model_validate(self.request(m.CANCEL, {"task_id": task_id}))

    def tasks(self, state: str | None = None, operation: str | None = None, limit: int = 100) -> list[TaskInfo]:
        """Known tasks, newest first, optionally filtered by state and operation."""
        reply = self.request(m.LIST, list_body(state, operation, limit))
        return [TaskInfo.model_validate(t) for t in reply["tasks"]]

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
        """Yield (topic, body) of published events; stops after ``timeout`` seconds without one."""
        while True:
            while self._events:
                yield self._events.popleft()
            wait = 3600.0 if timeout is None else timeout
            env = self._recv(time.monotonic() + wait)
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
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self._identity = identity
        self._on_publish = on_publish
        self.max_message_size = max_message_size
        self._ids = _Ids()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Check the daemon is there and open the connection."""
        probe(self.path)
        self._ctx = zmq.asyncio.Context()
        self._sock = _dealer(self._ctx, self.path, self._identity, self.max_message_size)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def reconnect(self) -> None:
        """Drop the connection and open a new one (same identity); pending requests fail.

        Raises :class:`DaemonUnreachable` (and stays disconnected) when no daemon listens.
        """
        await self._disconnect()
        probe(self.path)
        assert self._ctx is not None
        self._sock = _dealer(self._ctx, self.path, self._identity, self.max_message_size)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DaemonUnreachable(f"connection to eventbusd at {self.path} was reset"))
        self._pending.clear()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

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
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(DaemonUnreachable(f"connection to eventbusd at {self.path} failed: {exc}"))
            self._pending.clear()

    def _handle(self, data: bytes) -> None:
        try:
            env = decode(data, 2 * self.max_message_size)
        except ProtocolError:
            return  # nothing to correlate it with
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
        """Send a request and await the reply body; the daemon's errors are raised typed."""
        if self._sock is None:
            raise DaemonUnreachable(f"not connected to eventbusd at {self.path}")
        corr = self._ids.next()
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        limit = self.timeout if timeout is None else timeout
        try:
            await self._sock.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self.max_message_size))
            env = await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise RequestTimeout(f"no answer from eventbusd at {self.path} within {limit:g}s ({topic})") from None
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
        """Until the task is final; :class:`RequestTimeout` after ``timeout`` seconds (None: no limit)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            chunk = WAIT_CHUNK_S if deadline is None else max(0.0, min(WAIT_CHUNK_S, deadline - loop.time()))
            info = await self.get(task_id, wait_s=chunk)
            if info.state.terminal:
                return info
            if deadline is not None and loop.time() >= deadline:
                raise RequestTimeout(f"task {task_id} is still {info.state.value} after {timeout:g}s")

    async def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.model_validate(await self.request(m.CANCEL, {"task_id": task_id}))

    async def tasks(self, state: str | None = None, operation: str | None = None, limit: int = 100) -> list[TaskInfo]:
        reply = await self.request(m.LIST, list_body(state, operation, limit))
        return [TaskInfo.model_validate(t) for t in reply["tasks"]]

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

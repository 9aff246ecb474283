"""Plain ZeroMQ sockets driven from the asyncio loop, without an await per message.

``zmq.asyncio`` makes every receive and send a future; measured here that
costs about 3 times per message (../shared/PLATFORM-NOTES.md). Instead the
socket's ``zmq.FD`` is registered with ``loop.add_reader`` and, when it
signals, every waiting message is handled in one callback, in bounded
batches so timers still run. The FD is edge-triggered and any send or
receive may consume the edge, so ``zmq.EVENTS`` is checked again after each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import zmq

log = logging.getLogger(__name__)

T = TypeVar("T")

#: messages handled per callback before yielding to timers and other callbacks
BATCH = 512
#: first and longest retry interval for sends whose pipe was full
RETRY_S = 0.002
RETRY_MAX_S = 0.1


class LoopReader(Generic[T]):
    """Hands every message of ``sock`` to ``handle`` from the loop; ``receive`` reads one or raises ``zmq.Again``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[Any],
        receive: Callable[[], T],
        handle: Callable[[T], None],
        *,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._loop = loop
        self._sock: zmq.Socket[Any] | None = sock
        self._receive = receive
        self._handle = handle
        self._on_error = on_error
        self._scheduled = False
        self._fd = int(sock.getsockopt(zmq.FD))
        loop.add_reader(self._fd, self.drain)
        self.recheck()  # messages may already wait: the FD only signals edges

    def recheck(self) -> None:
        """Schedule a drain if messages wait (call after any send on the socket)."""
        sock = self._sock
        if sock is not None and not self._scheduled and int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Handle up to :data:`BATCH` waiting messages now; more are left to a later callback."""
        self._scheduled = False
        if self._sock is None:
            return
        try:
            for _ in range(BATCH):
                try:
                    message = self._receive()
                except zmq.Again:
                    break
                try:
                    self._handle(message)
                except Exception:  # a handler bug must not stop the messages after it
                    log.exception("error handling a message")
        except zmq.ZMQError as exc:  # the socket itself failed
            self.close()
            if self._on_error is None:
                raise
            self._on_error(exc)
            return
        self.recheck()

    def drain_all(self) -> None:
        """Handle every message waiting now, however many batches it takes."""
        while self._sock is not None and int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self.drain()

    def close(self) -> None:
        """Stop reading (the socket itself is its owner's to close)."""
        if self._sock is not None:
            self._loop.remove_reader(self._fd)
            self._sock = None


class LoopWriter:
    """Non-blocking sends on ``sock``; when its pipe is full, messages wait in a queue bounded in bytes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[Any],
        limit_bytes: int,
        after_send: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._sock: zmq.Socket[Any] | None = sock
        self._limit = limit_bytes
        self._after_send = after_send
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_S

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def send(self, data: bytes) -> bool:
        """Send now or queue; False when the queue is over its byte limit (nothing is sent)."""
        sock = self._sock
        if sock is None or self._queued + len(data) > self._limit:
            return False
        if self._queue:
            return self._enqueue(data)
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return self._enqueue(data)
        finally:
            self._after_send()
        return True

    def _enqueue(self, data: bytes) -> bool:
        self._queue.append(data)
        self._queued += len(data)
        if self._retry is None:
            self._retry = self._loop.call_later(self._delay, self._flush)
        return True

    def _flush(self) -> None:
        self._retry = None
        sock = self._sock
        if sock is None:
            return
        progressed = False
        try:
            while self._queue:
                sock.send(self._queue[0], zmq.NOBLOCK)
                self._queued -= len(self._queue.popleft())
                progressed = True
        except zmq.Again:
            pass
        finally:
            self._after_send()
        self._delay = RETRY_S if progressed else min(self._delay * 2, RETRY_MAX_S)
        if self._queue:
            self._retry = self._loop.call_later(self._delay, self._flush)

    def close(self) -> None:
        """Drop what waits and stop retrying."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._queue.clear()
        self._queued = 0
        self._sock = None

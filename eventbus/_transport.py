"""How a client reaches the daemon: the :class:`Transport` seam and its ZeroMQ implementation.

The asyncio client speaks to the daemon through a :class:`Transport` that a
:class:`Connector` opens: frames go out with :meth:`Transport.send` and come
back, with news of the connection, through the :class:`LinkEvents` the client
hands over. Everything that touches ZeroMQ lives here; :func:`zmq_errors` is
where its exceptions become ours, so none reaches a user of the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket as _socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq

from eventbus._link import MONITORED_EVENTS, link_event
from eventbus._loopsock import LoopReader, LoopWriter
from eventbus.errors import DaemonUnreachable, EventBusError, Forbidden, RequestTimeout
from eventbus.paths import endpoint

log = logging.getLogger(__name__)

#: how long a request, or a wait whose connection was reset, gives the daemon to take the connection
#: back before failing with DaemonUnreachable (never longer than the client's timeout or the wait's own limit)
RECONNECT_GRACE_S = 5.0
#: bytes a connection queues while its pipe to the daemon is full (the daemon is not reading)
SEND_QUEUE_BYTES = 64 << 20


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


class Ids:
    """Correlation ids for one connection's requests: a random prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count)}"


# ---- foreign errors -----------------------------------------------------


def translate(exc: BaseException, path: Path) -> EventBusError:
    """Our error for an exception ZeroMQ raised on the connection to ``path``.

    ``zmq.Again`` (the pipe is full) is a :class:`RequestTimeout`; any other
    ZeroMQ error (socket closed, context terminated, no file descriptors left)
    means the connection is unusable: :class:`DaemonUnreachable`.
    """
    if isinstance(exc, EventBusError):
        return exc
    if isinstance(exc, zmq.Again):
        return RequestTimeout(f"eventbusd at {path} is not reading: the connection cannot take more")
    if isinstance(exc, zmq.ContextTerminated):
        return DaemonUnreachable(f"connection to eventbusd at {path} is closed (its ZeroMQ context was terminated)")
    reason = exc.strerror if isinstance(exc, zmq.ZMQError) else str(exc)
    return DaemonUnreachable(f"connection to eventbusd at {path} failed: {reason}")


@contextlib.contextmanager
def zmq_errors(path: Path) -> Iterator[None]:
    """Re-raise any ZeroMQ exception of the block as ours (see :func:`translate`), with it as the cause."""
    try:
        yield
    except zmq.ZMQBaseError as exc:
        raise translate(exc, path) from exc


# ---- the seam -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkEvents:
    """What a transport tells its owner. Called from the event loop, never from inside :meth:`Transport.send`.

    ``frame(data)``: a frame from the daemon. ``up()``: a daemon took the connection (back).
    ``down()``: the connection dropped (the daemon stopped or crashed); frames that arrived
    before the drop were handed over first. ``refused(exc)``: the daemon refused the connection.
    ``failed(exc)``: the transport itself broke; it reports nothing more.
    """

    frame: Callable[[bytes], None]
    up: Callable[[], None]
    down: Callable[[], None]
    refused: Callable[[Forbidden], None]
    failed: Callable[[BaseException], None]


class Transport(Protocol):
    """One connection to the daemon, as a client sees it: whole frames out, events in."""

    def send(self, frame: bytes) -> bool:
        """Send one frame now or queue it; False when it was not taken (the daemon is not reading)."""
        ...

    def close(self) -> None:
        """Drop the connection and what waits to be sent; no event is reported after this."""
        ...


class Connector(Protocol):
    """Opens transports to the daemon at a path: the client's transport factory."""

    def probe(self, path: Path) -> None:
        """Raise :class:`DaemonUnreachable` naming the cause (no socket, refused) unless a daemon listens."""
        ...

    def connect(self, path: Path, identity: str | None, max_message_size: int, events: LinkEvents) -> Transport:
        """A new connection with ``identity`` as its routing id (None: the transport picks one).

        Raises :class:`DaemonUnreachable` when no daemon listens. The connection counts as
        up until ``events.down`` says otherwise.
        """
        ...


# ---- ZeroMQ -------------------------------------------------------------


def dealer(ctx: zmq.Context[Any], path: Path, identity: str | None, max_size: int) -> Any:
    """A DEALER connected to the daemon at ``path``, with ``identity`` as its routing id when given."""
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


class ZmqTransport:
    """A DEALER read and written from the event loop, and its socket monitor, which follows the connection.

    A DEALER never says that its peer went away: libzmq quietly reconnects. The
    monitor does (see :mod:`eventbus._link`), and that is what ``events.down``
    and ``events.up`` report.
    """

    def __init__(self, path: Path, identity: str | None, max_message_size: int, events: LinkEvents) -> None:
        loop = asyncio.get_running_loop()
        self._events = events
        self._ctx: zmq.Context[Any] = zmq.Context()
        try:
            sock = self._sock = dealer(self._ctx, path, identity, max_message_size)
            mon = self._mon = sock.get_monitor_socket(MONITORED_EVENTS)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise
        self._reader: LoopReader[bytes] = LoopReader(
            loop, sock, lambda: sock.recv(zmq.NOBLOCK), events.frame, on_error=self._failed
        )
        self._writer = LoopWriter(loop, sock, SEND_QUEUE_BYTES, self._reader.recheck)
        self._mon_reader: LoopReader[list[bytes]] = LoopReader(
            loop, mon, lambda: mon.recv_multipart(zmq.NOBLOCK), self._on_monitor, on_error=self._failed
        )
        self._closed = False

    def send(self, frame: bytes) -> bool:
        return self._writer.send(frame)

    def _failed(self, exc: Exception) -> None:
        self._reader.close()
        self._mon_reader.close()
        self._writer.close()
        self._events.failed(exc)

    def _on_monitor(self, frames: list[bytes]) -> None:
        try:
            state = link_event(frames)
        except Forbidden as exc:
            self._events.refused(exc)
            return
        if state:
            self._events.up()
        elif state is False:
            self._reader.drain_all()  # answers that arrived before the drop still count
            self._events.down()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for io in (self._reader, self._writer, self._mon_reader):
            io.close()
        try:
            self._sock.disable_monitor()
        finally:
            self._mon.close(linger=0)
            self._sock.close(linger=0)
            self._ctx.term()


class ZmqConnector:
    """The default :class:`Connector`: a DEALER on the daemon's ``ipc://`` socket, checked first with :func:`probe`."""

    def probe(self, path: Path) -> None:
        probe(path)

    def connect(self, path: Path, identity: str | None, max_message_size: int, events: LinkEvents) -> ZmqTransport:
        probe(path)
        return ZmqTransport(path, identity, max_message_size, events)


__all__ = [
    "RECONNECT_GRACE_S",
    "SEND_QUEUE_BYTES",
    "Connector",
    "Ids",
    "LinkEvents",
    "Transport",
    "ZmqConnector",
    "ZmqTransport",
    "dealer",
    "probe",
    "translate",
    "zmq_errors",
]

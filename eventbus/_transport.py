"""What both clients open: the check that a daemon listens, the DEALER socket, request ids."""

from __future__ import annotations

import itertools
import os
import socket as _socket
from pathlib import Path
from typing import Any

import zmq

from eventbus.errors import DaemonUnreachable
from eventbus.paths import endpoint

#: how long a request, or a wait whose connection was reset, gives the daemon to take the connection
#: back before failing with DaemonUnreachable (never longer than the client's timeout or the wait's own limit)
RECONNECT_GRACE_S = 5.0


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

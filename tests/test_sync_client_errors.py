"""The blocking client lets no ZeroMQ exception out: a closed or broken socket is DaemonUnreachable."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from eventbus.client import SyncClient
from eventbus.errors import DaemonUnreachable


@pytest.fixture
def listening() -> Iterator[Path]:
    """A Unix socket that accepts connections (enough for the client's probe; nothing answers)."""
    root = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    path = root / "eb.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    try:
        yield path
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_closed_sync_client_fails_at_once_with_daemon_unreachable(listening: Path) -> None:
    client = SyncClient(listening, timeout=5)
    client.close()
    with pytest.raises(DaemonUnreachable, match="closed"):
        client.status()
    with pytest.raises(DaemonUnreachable, match="closed"):
        next(client.events(timeout=0.01))
    client.close()  # closing twice is harmless


def test_a_socket_closed_under_the_sync_client_is_daemon_unreachable_caused_by_the_zmq_error(listening: Path) -> None:
    client = SyncClient(listening, timeout=5)
    try:
        client._sock.close(linger=0)
        with pytest.raises(DaemonUnreachable) as caught:
            client.status()
        assert isinstance(caught.value.__cause__, zmq.ZMQError)
    finally:
        client.close()

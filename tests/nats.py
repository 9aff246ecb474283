"""A private nats-server with JetStream for a test: its own port and store directory, stopped after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def nats_server_path() -> str:
    """The nats-server binary (Debian installs it in /usr/sbin); skips the test, saying why, if there is none."""
    found = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if found is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server; .ci/run installs it)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(root: Path) -> Iterator[str]:
    """Run ``nats-server -js`` on a free port with its store under ``root``; yields its URL."""
    binary = nats_server_path()
    port = free_port()
    store = root / f"nats-{port}"
    store.mkdir(parents=True)
    log = (root / f"nats-{port}.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (root / f"nats-{port}.log").read_text()
                    raise AssertionError(f"nats-server did not start: {text}") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)
        log.close()

"""Private nats-servers with JetStream for a test: their own ports and store directories, stopped after."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class NatsNode:
    """One running nats-server."""

    name: str
    url: str
    monitor: int
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def jsz(self, query: str = "") -> dict[str, Any]:
        """The server's JetStream report (its monitoring port's /jsz)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/jsz{query}", timeout=2) as answer:
            return dict(json.load(answer))


@contextmanager
def _run(root: Path, name: str, args: list[str]) -> Iterator[NatsNode]:
    """Start nats-server with ``args`` plus its own client and monitoring ports; kill it after."""
    port, monitor = free_port(), free_port()
    log_path = root / f"nats-{name}.log"
    with log_path.open("wb") as log:
        argv = [nats_server_path(), *args, "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        node = NatsNode(name, f"nats://127.0.0.1:{port}", monitor, proc)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"nats-server did not start: {log_path.read_text()}") from None
                    time.sleep(0.05)
            yield node
        finally:
            if proc.poll() is None:
                node.kill()


@contextmanager
def nats_server(root: Path) -> Iterator[str]:
    """Run ``nats-server -js`` on a free port with its store under ``root``; yields its URL."""
    store = root / f"nats-store-{free_port()}"
    store.mkdir(parents=True)
    with _run(root, store.name, ["-js", "-sd", str(store)]) as node:
        yield node.url


@contextmanager
def nats_cluster(root: Path, size: int = 3) -> Iterator[list[NatsNode]]:
    """A NATS cluster of ``size`` JetStream servers; yields them once JetStream has elected its meta leader."""
    routes = [free_port() for _ in range(size)]
    all_routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    with ExitStack() as stack:
        nodes = []
        for index, route in enumerate(routes):
            name = f"n{index + 1}"
            store = root / f"nats-{name}"
            store.mkdir(parents=True)
            args = ["-js", "-sd", str(store), "-n", name, "--cluster_name", "ebtest"]
            args += ["--cluster", f"nats://127.0.0.1:{route}", "--routes", all_routes]
            nodes.append(stack.enter_context(_run(root, name, args)))
        deadline = time.monotonic() + 20
        while not all(n.jsz().get("meta_cluster", {}).get("leader") for n in nodes):
            if time.monotonic() > deadline:
                raise AssertionError("the NATS cluster elected no JetStream leader in 20 s")
            time.sleep(0.1)
        yield nodes


def stream_leader(nodes: list[NatsNode], stream: str) -> str | None:
    """The name of the server leading ``stream`` (as a live server reports it), None if none is known."""
    for node in nodes:
        if node.proc.poll() is not None:
            continue
        for account in node.jsz("?streams=true").get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail["name"] == stream:
                    return str(detail.get("cluster", {}).get("leader") or "") or None
    return None

"""benchmarks/peers.py as a smoke test: Celery and Dramatiq run every task, each checked, on a private Redis.

Skipped where the bench extra (``pip install -e '.[bench]'``) or redis-server is missing. No timing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Proc, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="redis-server is not installed (Debian: apt install redis-server)",
    ),
    # find_spec, not import: celery and kombu warn at import, and warnings are errors here
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in ("celery", "dramatiq", "redis")),
        reason="celery, dramatiq or redis cannot be imported: install the bench extra (pip install -e '.[bench]')",
    ),
]

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
#: the databases peers.py uses (its DATABASES)
DATABASES = (13, 14)
_FIGURES = {"tasks", "succeeded", "failed", "wrong", "lost", "checked", "tasks_per_s", "latency_ms"}
_FIGURES |= {"warmup_unsuccessful", "worker_cpu_us_per_task", "version", "settings", "errors"}


def _cli(port: int, *args: str) -> str:
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True).stdout.strip()


def _answers(port: int) -> bool:
    try:
        return _cli(port, "ping") == "PONG"
    except subprocess.CalledProcessError:
        return False


@pytest.fixture
def redis_port(short_tmp: Path) -> Iterator[int]:
    """A private redis-server on a free port, its files in a temp dir, no persistence."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(short_tmp)]
    server = Proc([*argv, "--save", "", "--appendonly", "no"], short_tmp / "redis.log")
    try:
        wait_until(lambda: _answers(port), 10, "redis-server to answer")
        yield port
    finally:
        server.stop(timeout=5)


def _commands_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


@pytest.mark.timeout(60)
def test_peers_run_every_task_check_it_and_delete_only_their_own_keys(redis_port: int) -> None:
    for db in DATABASES:
        _cli(redis_port, "-n", str(db), "set", "not-ours", "1")
    url = f"redis://127.0.0.1:{redis_port}"
    argv = [sys.executable, str(PEERS), "--json", "--tasks", "50", "--warmup", "10", "--in-flight", "10"]
    result = subprocess.run([*argv, "--redis-url", url], capture_output=True, text=True, timeout=50, check=False)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert (doc["in_flight"], doc["payload_bytes"], doc["tasks"]) == (10, 64, 50)
    assert doc["redis"]["url"] == url and doc["redis"]["started"] is False
    assert set(doc["peers"]) == {"celery", "dramatiq"}
    for name, figs in doc["peers"].items():
        assert set(figs) >= _FIGURES, name
        assert (figs["tasks"], figs["succeeded"], figs["checked"]) == (50, 50, 50), name
        assert (figs["failed"], figs["wrong"], figs["lost"], figs["warmup_unsuccessful"]) == (0, 0, 0, 0), name
        assert set(figs["latency_ms"]) == {"p50", "p90", "p99", "p99_9"} and figs["tasks_per_s"] > 0, name
    for db in DATABASES:
        assert _cli(redis_port, "-n", str(db), "dbsize") == "1"  # "not-ours" only
    assert not _commands_mentioning(f"--redis-url {url}/")  # its workers are gone

"""eventbusctl bench as a smoke test: it runs, checks every task, reports every figure, cleans up. No timing."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e

_FIGURES = {"tasks_per_s", "latency_ms", "daemon_cpu_us_per_task", "daemon_rss_mb", "tasks", "failed", "lost"}
_KEYS = _FIGURES | {"baseline", "throughput_ratio", "p99_ratio", "collectors", "idle_collectors", "clients"}
_KEYS |= {"in_flight", "payload_bytes", "env"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}


def _bench(*args: str, env: dict[str, str] | None = None, timeout: float = 55) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("eventbusctl"), *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _bench_dirs() -> set[str]:
    return set(glob.glob("/tmp/eb-bench-*"))


def _running_under(root: str) -> list[str]:
    """Command lines of live processes that mention ``root`` (every helper of a bench names its temp dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in text:
            found.append(text)
    return found


def test_bench_runs_every_task_checks_it_and_reports_ours_and_the_baseline() -> None:
    before = _bench_dirs()
    result = _bench(
        "--json",
        "bench",
        "--tasks",
        "300",
        "--in-flight",
        "20",
        "--clients",
        "1",
        "--collectors",
        "1",
        "--idle-collectors",
        "5",
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert set(doc) >= _KEYS
    assert (doc["tasks"], doc["failed"], doc["lost"]) == (300, 0, 0)
    assert set(doc["latency_ms"]) == {"p50", "p90", "p99", "p99_9"}
    assert doc["idle_collectors"] == 5 and doc["daemon"] == "private"
    assert set(doc["baseline"]) >= _FIGURES
    assert doc["baseline"]["tasks"] == 300 and doc["baseline"]["tasks_per_s"] > 0
    assert doc["throughput_ratio"] is not None and doc["p99_ratio"] is not None
    assert {"cores", "python", "pyzmq", "libzmq", "eventbus", "durability"} <= set(doc["env"])
    assert doc["env"]["durability"] == "fsync" and list(doc["durability"]) == ["fsync"]  # the daemon's default
    assert doc["durability_ratio_to_none"] is None
    assert _bench_dirs() == before  # its temp dir, socket included, is gone


def test_bench_runs_each_durability_mode_on_a_private_daemon_with_a_private_state_dir(tmp_path: Path) -> None:
    before = _bench_dirs()
    state_home = tmp_path / "xdg-state"  # where a daemon given no --state-dir would put its state
    env = {**_env(), "XDG_STATE_HOME": str(state_home)}
    env.pop("STATE_DIRECTORY", None)
    args = ["--json", "bench", "--tasks", "200", "--in-flight", "10", "--durability", "fsync,none", "--no-baseline"]
    result = _bench(*args, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert list(doc["durability"]) == ["fsync", "none"]
    for mode, figs in doc["durability"].items():
        assert set(figs) >= _FIGURES, mode
        assert (figs["succeeded"], figs["failed"], figs["lost"]) == (200, 0, 0), mode
    assert doc["env"]["durability"] == "fsync"
    assert doc["tasks_per_s"] == doc["durability"]["fsync"]["tasks_per_s"]  # the first mode at the top level
    ratios = doc["durability_ratio_to_none"]
    assert set(ratios) == {"fsync", "none"} and ratios["none"] == 1.0 and ratios["fsync"] > 0
    assert doc["baseline"] is None
    assert not state_home.exists()  # each private daemon kept its state in the bench's temp dir
    assert _bench_dirs() == before


def test_bench_refuses_durability_with_socket_in_one_line(short_tmp: Path) -> None:
    result = _bench("--socket", str(short_tmp / "none.sock"), "bench", "--durability", "none")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--durability" in result.stderr


def test_bench_refuses_an_unknown_durability_mode() -> None:
    result = _bench("bench", "--durability", "fsync,sometimes")
    assert result.returncode == 2
    assert "sometimes" in result.stderr


def test_bench_with_socket_uses_that_daemon_and_takes_its_collectors_away(bus: Bus) -> None:
    result = _bench(
        "--socket",
        str(bus.socket),
        "--json",
        "bench",
        "--tasks",
        "200",
        "--in-flight",
        "10",
        "--idle-collectors",
        "3",
        "--no-baseline",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["tasks"], doc["failed"], doc["lost"], doc["daemon"]) == (200, 0, 0, str(bus.socket))
    assert doc["baseline"] is None and doc["throughput_ratio"] is None
    with bus.client() as client:
        durability = client.status()["durability"]
    assert doc["env"]["durability"] == durability and list(doc["durability"]) == [durability]
    with bus.client() as client:
        assert client.stats()["tasks_succeeded"] >= 200
        wait_until(lambda: not client.collectors(), 10, "the bench's collectors to deregister")


def test_bench_against_no_daemon_exits_3_with_one_line(short_tmp: Path) -> None:
    result = _bench("--socket", str(short_tmp / "none.sock"), "bench", "--tasks", "10")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "eventbusctl: error:" in result.stderr


def test_bench_refuses_tasks_and_duration_together() -> None:
    result = _bench("bench", "--tasks", "10", "--duration", "1")
    assert result.returncode == 2
    assert "--tasks or --duration" in result.stderr


def test_an_interrupted_bench_leaves_no_process_and_no_temp_dir() -> None:
    before = _bench_dirs()
    proc = subprocess.Popen(
        [command("eventbusctl"), "bench", "--duration", "60", "--in-flight", "5", "--idle-collectors", "2"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        while "measuring" not in proc.stderr.readline():  # one line per phase: stderr is not a terminal
            assert proc.poll() is None
        (root,) = _bench_dirs() - before
        assert _running_under(root)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while _running_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running_under(root)
    assert not os.path.exists(root)

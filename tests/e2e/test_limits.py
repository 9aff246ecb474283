"""Limits of the real daemon and its command line: fairness, history, contradicting settings, bad numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from eventbus.errors import QueueFull
from tests.e2e.conftest import Bus, command


def test_an_unserved_operation_cannot_keep_echo_out_of_the_queue(bare_bus: Bus) -> None:
    bare_bus.start_daemon("--max-queue-size", "20")
    bare_bus.start_collector("idle")
    taken = 0
    with bare_bus.client() as c, pytest.raises(QueueFull) as refused:
        while taken <= 20:
            c.submit("nobody")
            taken += 1
    assert taken == 10  # half of max_queue_size by default
    assert "'nobody'" in refused.value.message and "max_queued_per_operation" in refused.value.message
    out = bare_bus.ctl("submit", "echo", "--payload", '"still served"', "--wait", "--wait-timeout", "20")
    assert (out.returncode, out.stdout.strip()) == (0, '"still served"'), out.stderr


@pytest.mark.parametrize("durable", [False, True], ids=["memory-only", "durable"])
def test_task_on_an_evicted_task_says_it_was_evicted(bare_bus: Bus, durable: bool) -> None:
    """Evicted from memory: a durable daemon reads it from its state database, a memory-only one has lost it."""
    limits = ("--max-finished-tasks", "1")
    bare_bus.start_daemon(*limits, *(() if durable else ("--no-durable",)))
    bare_bus.start_collector("c1")
    for task_id in ("first", "second"):
        assert bare_bus.ctl("submit", "echo", "--id", task_id, "--wait", "--wait-timeout", "20").returncode == 0
    out = bare_bus.ctl("--json", "task", "first")
    if durable:
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "succeeded", out
        listed = bare_bus.ctl("--json", "tasks")
        assert [t["task_id"] for t in json.loads(listed.stdout)] == ["second", "first"], listed.stdout
        return
    assert out.returncode == 4
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "not_found"
    assert "evicted from the history" in error["message"] and "max_finished_tasks=1" in error["message"]
    assert bare_bus.ctl("task", "second").returncode == 0


def test_contradicting_settings_stop_the_daemon_with_exit_2_and_one_line(bare_bus: Bus) -> None:
    argv = [command("eventbusd"), "--heartbeat-timeout-s", "1", "--heartbeat-interval-s", "5"]
    proc = bare_bus.spawn(argv, "contradiction")
    assert proc.wait(10) == 2
    lines = proc.output().strip().splitlines()
    assert len(lines) == 1
    assert "heartbeat_timeout_s=1 from --heartbeat-timeout-s" in lines[0]
    assert "heartbeat_interval_s=5 from --heartbeat-interval-s" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("submit", "echo", "--wait", "--wait-timeout", "-1"),
        ("submit", "echo", "--wait", "--wait-timeout", "nan"),
        ("submit", "echo", "--wait", "--wait-timeout", "inf"),
        ("submit", "echo", "--deadline-s", "inf"),
        ("submit", "echo", "--deadline-s", "nan"),
        ("watch", "--count", "-1"),
        ("--timeout", "nan", "status"),
        ("--timeout", "-1", "status"),
        ("--timeout", "inf", "status"),
        ("submit", "echo", "--payload", "NaN"),
        ("submit", "echo", "--payload", '{"x": Infinity}'),
        ("submit", "echo", "--payload", "[-Infinity]"),
        ("submit", "echo", "--payload", "1e400"),
    ],
)
def test_negative_nan_and_infinite_numbers_are_usage_errors(bus: Bus, args: tuple[str, ...]) -> None:
    out = bus.ctl(*args, timeout=10)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    with bus.client() as c:
        assert c.stats()["tasks_submitted"] == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to run eventbusctl as nobody"
)
@pytest.mark.parametrize("directory_mode", [0o755, 0o700], ids=["socket-not-writable", "directory-not-searchable"])
def test_a_socket_the_user_cannot_open_exits_3_with_the_reason(bare_bus: Bus, directory_mode: int) -> None:
    bare_bus.start_daemon()
    bare_bus.root.chmod(directory_mode)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*as_nobody, command("eventbusctl"), "--socket", str(bare_bus.socket), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 3, out.stderr
    assert "Permission denied" in out.stderr and str(bare_bus.socket) in out.stderr

"""Scheduling through the real daemon: delayed tasks from the command line, across a kill -9."""

from __future__ import annotations

import json
import signal
import time

import pytest

from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_USAGE
from tests.e2e.conftest import Bus

pytestmark = pytest.mark.e2e


def test_a_delayed_task_waits_scheduled_then_runs_on_a_demo_collector(bus: Bus) -> None:
    bus.start_collector("c1")
    before = time.time()
    out = bus.ctl("submit", "echo", "--payload", '{"n": 1}', "--delay-s", "1.5")
    assert out.returncode == EXIT_OK, out.stderr
    task_id = out.stdout.strip()
    shown = json.loads(bus.ctl("--json", "task", task_id).stdout)
    assert shown["state"] == "scheduled" and shown["not_before"] >= before + 1.5
    with bus.client() as c:
        assert int(c.stats()["tasks_scheduled"]) == 1
        info = c.wait(task_id, timeout=20)
    assert info.state == "succeeded" and info.queued_at is not None and info.queued_at >= before + 1.5
    # --wait waits through the delay; --at takes an ISO 8601 time
    at = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + 1))
    waited = bus.ctl("--json", "submit", "echo", "--at", at, "--wait")
    assert waited.returncode == EXIT_OK, waited.stderr
    assert json.loads(waited.stdout)["state"] == "succeeded"


def test_bad_times_are_refused_with_one_line(bus: Bus) -> None:
    both = bus.ctl("submit", "echo", "--delay-s", "1", "--at", "2030-01-01T00:00:00Z")
    assert both.returncode == EXIT_USAGE and "give one" in both.stderr
    garbled = bus.ctl("submit", "echo", "--at", "tomorrow")
    assert garbled.returncode == EXIT_USAGE and "ISO 8601" in garbled.stderr
    late = bus.ctl("submit", "echo", "--delay-s", "60", "--deadline-s", "30")
    assert late.returncode == EXIT_USAGE and "--delay-s 60 is not before --deadline-s 30" in late.stderr
    # the daemon's own check, for clients that skip the command line's
    with bus.client() as c, pytest.raises(EventBusError, match=r"not_before .* is not before the deadline"):
        c.submit("echo", not_before=time.time() + 60, deadline=time.time() + 30)
    assert "Traceback" not in both.stderr + garbled.stderr + late.stderr


def test_a_scheduled_task_survives_a_kill_9_and_runs_once_when_due(bus: Bus) -> None:
    task_id = bus.ctl("submit", "echo", "--delay-s", "3").stdout.strip()
    assert bus.daemon is not None
    bus.daemon.signal(signal.SIGKILL)
    bus.daemon.wait(10)
    bus.start_daemon()
    bus.start_collector("c1")
    with bus.client() as c:
        assert c.get(task_id).state == "scheduled"
        info = c.wait(task_id, timeout=20)
        assert info.state == "succeeded" and info.attempt == 1
        assert int(c.stats()["tasks_distributed"]) == 1

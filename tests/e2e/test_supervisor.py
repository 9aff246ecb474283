"""eventbus-collector supervise: scale on load, retire when idle, restart crashed children."""

from __future__ import annotations

import os
import signal

import pytest

from distributor.models import TaskState
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e


def supervised(bus: Bus) -> list[str]:
    with bus.client() as c:
        return sorted(i.collector_id for i in c.collectors() if "-sup" in i.collector_id and i.status == "available")


def test_the_supervisor_scales_up_under_a_burst_and_back_down_when_idle(bus: Bus) -> None:
    argv = [command("eventbus-collector"), "supervise", "demo", "--min", "1", "--max", "3"]
    sup = bus.spawn([*argv, "--concurrency", "1", "--interval", "0.3"], "supervisor")
    wait_until(lambda: len(supervised(bus)) == 1, 20, "the first collector")
    with bus.client() as c:
        ids = [c.submit("sleep", {"seconds": 3}) for _ in range(6)]
        wait_until(lambda: len(supervised(bus)) >= 3, 20, "scaling up to 3")
        assert all(c.wait(t, timeout=60).state is TaskState.SUCCEEDED for t in ids)
    wait_until(lambda: len(supervised(bus)) == 1, 30, "scaling back down to 1")
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    wait_until(lambda: supervised(bus) == [], 10, "the children to leave")
    assert "retiring idle collector_id" in sup.output()


def test_the_supervisor_restarts_a_crashed_child(bus: Bus) -> None:
    argv = [command("eventbus-collector"), "supervise", "demo", "--min", "1", "--max", "1", "--interval", "0.3"]
    sup = bus.spawn(argv, "supervisor")
    wait_until(lambda: len(supervised(bus)) == 1, 20, "the child")
    started = [line for line in sup.output().splitlines() if "started collector_id=" in line]
    pid = int(started[0].rsplit("pid=", 1)[1])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: sup.output().count("started collector_id=") == 2, 20, "the restart")
    assert "exited with -9; restarting" in sup.output()
    with bus.client() as c:
        wait_until(lambda: c.wait(c.submit("echo", 1), timeout=10).state is TaskState.SUCCEEDED, 20, "service")
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_children_stop_when_the_supervisor_is_killed(bus: Bus) -> None:
    argv = [command("eventbus-collector"), "supervise", "demo", "--min", "2", "--max", "2", "--interval", "0.3"]
    sup = bus.spawn(argv, "supervisor")
    wait_until(lambda: len(supervised(bus)) == 2, 20, "two children")
    sup.signal(signal.SIGKILL)
    wait_until(lambda: supervised(bus) == [], 20, "the orphans to drain and leave")

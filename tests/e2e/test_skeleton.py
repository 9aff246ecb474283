"""End to end through the real daemon and collector processes: the walking skeleton."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from distributor.models import TaskState
from tests.e2e.conftest import Bus, wait_until

pytestmark = pytest.mark.e2e


def test_echo_returns_the_payload(bus: Bus) -> None:
    bus.start_collector("demo1")
    out = bus.ctl("submit", "echo", "--payload", '{"hello": 1}', "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"hello": 1}


def test_fail_returns_success_false_with_the_message_and_exit_code_1(bus: Bus) -> None:
    bus.start_collector("demo1")
    out = bus.ctl("--json", "submit", "fail", "--payload", '{"message": "disk on fire"}', "--wait")
    assert out.returncode == 1
    info = json.loads(out.stdout)
    assert info["state"] == "failed"
    assert info["result"]["success"] is False
    assert info["error"] == {"type": "RuntimeError", "message": "disk on fire"}
    assert "disk on fire" in out.stderr


def test_a_task_with_no_collector_stays_queued_and_runs_when_one_starts(bus: Bus) -> None:
    with bus.client() as c:
        tid = c.submit("echo", "waited")
        assert c.get(tid, wait_s=0.5).state is TaskState.QUEUED
        bus.start_collector("late")
        info = c.wait(tid, timeout=20)
    assert info.state is TaskState.SUCCEEDED
    assert info.result is not None and info.result.value == "waited"
    assert info.collector_id == "late"


def test_two_collectors_both_receive_work_under_least_loaded(bus: Bus) -> None:
    bus.start_collector("a", "demo", "--concurrency", "2")
    bus.start_collector("b", "demo", "--concurrency", "2")
    with bus.client() as c:
        ids = [c.submit("sleep", {"seconds": 0.3}) for _ in range(8)]
        infos = [c.wait(t, timeout=30) for t in ids]
    assert all(i.state is TaskState.SUCCEEDED for i in infos)
    assert Counter(i.collector_id for i in infos) == {"a": 4, "b": 4}


def test_status_and_collectors_report_the_registered_collector(bus: Bus) -> None:
    bus.start_collector("demo1", "demo", "--attr", "zone=lab", "--attr", "skill=7")
    status = json.loads(bus.ctl("--json", "status").stdout)
    assert status["collectors"] == 1 and status["strategy"] == "least_loaded"
    assert status["socket"] == str(bus.socket)
    (col,) = json.loads(bus.ctl("--json", "collectors").stdout)
    assert col["collector_id"] == "demo1"
    assert col["attributes"] == {"zone": "lab", "skill": 7}
    assert sorted(col["supported_operations"]) == ["compute", "echo", "fail", "io", "sleep"]
    human = bus.ctl("collectors").stdout
    assert "demo1" in human and "available" in human


def test_stats_count_what_happened(bus: Bus) -> None:
    bus.start_collector("demo1")
    assert bus.ctl("submit", "echo", "--payload", "1", "--wait").returncode == 0
    stats = json.loads(bus.ctl("--json", "stats").stdout)
    assert stats["tasks_submitted"] == 1
    assert stats["tasks_succeeded"] == 1
    assert stats["tasks_by_type"] == {"echo": 1}


def test_watch_streams_task_events(bus: Bus) -> None:
    bus.start_collector("demo1")
    watcher = bus.spawn(
        [*_ctl(bus), "--json", "watch", "events.task.+.echo", "--count", "4"],
        "watch",
    )
    wait_until(lambda: json.loads(bus.ctl("--json", "stats").stdout)["subscribers"] == 1, 10, "the watcher")
    assert bus.ctl("submit", "echo", "--payload", "1", "--wait").returncode == 0
    assert watcher.wait(10) == 0
    states = [json.loads(line)["body"]["state"] for line in watcher.output().splitlines()]
    assert states == ["queued", "dispatched", "running", "succeeded"]


def test_cancel_a_queued_task(bus: Bus) -> None:
    tid = bus.ctl("submit", "nobody-runs-this").stdout.strip()
    out = bus.ctl("--json", "cancel", tid)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "cancelled"
    assert bus.ctl("task", tid).returncode == 1


def _ctl(bus: Bus) -> list[str]:
    from tests.e2e.conftest import command

    return [command("eventbusctl")]

"""The seed scenarios through the real daemon: skill routing, errors retried elsewhere, timeouts."""

from __future__ import annotations

import json
import time

import pytest

from distributor.models import TaskState
from tests.e2e.conftest import Bus, wait_until

pytestmark = pytest.mark.e2e


def skilled(bus: Bus, collector_id: str, skill: int) -> None:
    bus.start_collector(collector_id, "skilled", "--attr", f"skill={skill}", "--attr", "time_scale=0.02")


def test_normal_flow_routes_each_difficulty_to_a_skilled_enough_collector_under_best_fit(bus: Bus) -> None:
    assert bus.ctl("strategy", "best_fit").stdout.strip() == "best_fit"
    for cid, skill in (("s3", 3), ("s6", 6), ("s9", 9)):
        skilled(bus, cid, skill)
    ids = {}
    for difficulty in range(1, 11):
        args = ["submit", "solve", "--payload", json.dumps({"difficulty": difficulty})]
        args += ["--require", f"skill>={difficulty}", "--priority", str(difficulty), "--deadline-s", "4"]
        out = bus.ctl(*args)
        assert out.returncode == 0, out.stderr
        ids[difficulty] = out.stdout.strip()
    skill_of = {"s3": 3, "s6": 6, "s9": 9}
    with bus.client() as c:
        infos = {d: c.wait(tid, timeout=30) for d, tid in ids.items()}
    for difficulty in range(1, 10):
        info = infos[difficulty]
        assert info.state is TaskState.SUCCEEDED, (difficulty, info)
        assert info.collector_id is not None and skill_of[info.collector_id] >= difficulty
    assert infos[9].collector_id == "s9"  # the only (so the best-scoring) eligible collector
    hardest = infos[10]
    assert hardest.state is TaskState.EXPIRED
    assert hardest.error is not None and "no eligible collector" in hardest.error.message
    out = bus.ctl("task", ids[10])
    assert out.returncode == 1 and "expired" in out.stdout


def test_error_flow_retries_a_failed_attempt_on_another_collector(bus: Bus) -> None:
    bus.ctl("strategy", "first_available")
    skilled(bus, "weak", 2)
    skilled(bus, "strong", 9)
    out = bus.ctl("--json", "submit", "solve", "--payload", '{"difficulty": 5}', "--wait")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["collector_id"], info["attempt"], info["retries"]) == ("strong", 2, 1)
    with bus.client() as c:
        weak = next(x for x in c.collectors() if x.collector_id == "weak")
    assert weak.tasks_failed == 1


def test_timeout_flow_cancels_on_the_collector_retries_and_fails_with_a_timeout(bus: Bus) -> None:
    demo = bus.start_collector("demo1")
    out = bus.ctl("--json", "submit", "sleep", "--payload", '{"seconds": 5}', "--timeout-ms", "300", "--wait")
    assert out.returncode == 1
    info = json.loads(out.stdout)
    assert info["state"] == "failed"
    assert info["error"]["type"] == "Timeout" and "timeout_ms=300" in info["error"]["message"]
    assert info["attempt"] == 4  # the first attempt and max_retries=3 retries
    wait_until(lambda: demo.output().count("cancelled: timeout") == 4, 10, "four cancels on the collector")


def test_stats_counters_move_during_a_run(bus: Bus) -> None:
    bus.start_collector("demo1")
    before = json.loads(bus.ctl("--json", "stats").stdout)
    with bus.client() as c:
        ids = [c.submit("echo", n) for n in range(20)]
        for tid in ids:
            c.wait(tid, timeout=20)
    after = json.loads(bus.ctl("--json", "stats").stdout)
    assert after["tasks_submitted"] - before["tasks_submitted"] == 20
    assert after["tasks_succeeded"] - before["tasks_succeeded"] == 20
    assert after["tasks_by_type"]["echo"] >= 20
    assert after["latency_end_to_end_s"]["p50"] is not None
    assert "demo1" in after["utilization"]


def test_cli_dependencies_drain_list_and_cancel(bus: Bus) -> None:
    demo = bus.start_collector("demo1")
    parent = bus.ctl("submit", "sleep", "--payload", '{"seconds": 2}').stdout.strip()
    child = bus.ctl("submit", "echo", "--payload", '"after"', "--after", parent).stdout.strip()
    assert json.loads(bus.ctl("--json", "task", child).stdout)["state"] == "pending"
    with bus.client() as c:
        done = c.wait(child, timeout=20)
        assert done.state is TaskState.SUCCEEDED
        parent_info = c.get(parent)
    assert parent_info.finished_at is not None and done.dispatched_at is not None
    assert done.dispatched_at >= parent_info.finished_at

    assert json.loads(bus.ctl("--json", "drain", "demo1").stdout)["status"] == "draining"
    queued = bus.ctl("submit", "echo", "--payload", "1").stdout.strip()
    time.sleep(0.3)
    listed = json.loads(bus.ctl("--json", "tasks", "--state", "queued").stdout)
    assert [t["task_id"] for t in listed] == [queued]
    assert json.loads(bus.ctl("--json", "undrain", "demo1").stdout)["status"] == "available"
    with bus.client() as c:
        assert c.wait(queued, timeout=10).state is TaskState.SUCCEEDED

    running = bus.ctl("submit", "sleep", "--payload", '{"seconds": 30}').stdout.strip()
    with bus.client() as c:
        wait_until(lambda: c.get(running).state is TaskState.RUNNING, 10, "the sleep to run")
    out = bus.ctl("--json", "cancel", running)
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "cancelled"
    wait_until(lambda: f"task_id={running} attempt=1 cancelled: cancelled" in demo.output(), 10, "the cancel")
    assert bus.ctl("cancel", running).returncode == 4  # already final


def test_a_full_queue_rejects_submissions_with_exit_4(bare_bus: Bus) -> None:
    bare_bus.env["EVENTBUS_MAX_QUEUE_SIZE"] = "2"
    bare_bus.env["EVENTBUS_MAX_QUEUED_PER_OPERATION"] = "2"  # the global cap is what is under test
    bare_bus.start_daemon()
    assert bare_bus.ctl("submit", "nobody").returncode == 0
    assert bare_bus.ctl("submit", "nobody").returncode == 0
    out = bare_bus.ctl("--json", "submit", "nobody")
    assert out.returncode == 4
    assert json.loads(out.stdout)["error"]["code"] == "queue_full"


def test_bad_constraints_are_usage_errors_and_unknown_parents_are_rejected_with_exit_4(bus: Bus) -> None:
    out = bus.ctl("submit", "solve", "--require", "skill>=lots")
    assert out.returncode == 2 and "needs a number" in out.stderr  # caught before sending
    out = bus.ctl("submit", "echo", "--after", "no-such-task")
    assert out.returncode == 4 and "unknown task" in out.stderr
    out = bus.ctl("strategy", "coin_flip")
    assert out.returncode == 4 and "unknown strategy" in out.stderr

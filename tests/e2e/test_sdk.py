"""The collector SDK end to end: plugins, typed payloads, progress, cancellation, crash redelivery."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from distributor.models import TaskState
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_entry_point_is_listed_and_runs_by_name(bus: Bus) -> None:
    out = bus.spawn([command("eventbus-collector"), "list"], "list")
    assert out.wait(30) == 0
    assert "greeter" in out.output() and "greet, shout" in out.output()
    bus.start_collector("g1", "greeter")
    result = bus.ctl("submit", "greet", "--payload", '{"name": "entry point"}', "--wait")
    assert json.loads(result.stdout) == "hello entry point"


def test_procmond_lists_this_test_process(bus: Bus) -> None:
    bus.start_collector("pm1", "procmond")
    out = bus.ctl("--json", "submit", "enumerate_processes", "--wait")
    assert out.returncode == 0, out.stderr
    value = json.loads(out.stdout)["result"]["value"]
    mine = [p for p in value["processes"] if p["pid"] == os.getpid()]
    assert len(mine) == 1 and mine[0]["ppid"] == os.getppid()
    assert value["count"] == len(value["processes"]) > 1
    me = mine[0]["username"]
    only_me = bus.ctl("--json", "submit", "enumerate_processes", "--payload", json.dumps({"user": me}), "--wait")
    rows = json.loads(only_me.stdout)["result"]["value"]["processes"]
    assert rows and all(p["username"] == me for p in rows)
    assert bus.ctl("submit", "enumerate_processes", "--payload", '{"colour": "red"}', "--wait").returncode == 1


def test_typed_operations_validate_payload_and_result(bus: Bus) -> None:
    bus.start_collector("typed1", "tests.plugins.typed:TypedCollector")
    ok = bus.ctl("submit", "price", "--payload", '{"item": "tea", "quantity": 4}', "--wait")
    assert json.loads(ok.stdout) == {"item": "tea", "total": 10.0}
    bad = bus.ctl("--json", "submit", "price", "--payload", '{"item": "tea"}', "--wait")
    assert bad.returncode == 1
    error = json.loads(bad.stdout)["error"]
    assert error["type"] == "InvalidPayload" and "quantity" in error["message"]


def test_progress_events_reach_watch(bus: Bus) -> None:
    bus.start_collector("demo1")
    watcher = bus.spawn([command("eventbusctl"), "--json", "watch", "events.task.progress.sleep", "--count", "3"], "w")
    wait_until(lambda: json.loads(bus.ctl("--json", "stats").stdout)["subscribers"] == 1, 10, "the watcher")
    assert bus.ctl("submit", "sleep", "--payload", '{"seconds": 0.5}', "--wait").returncode == 0
    assert watcher.wait(10) == 0
    events = [json.loads(line)["body"] for line in watcher.output().splitlines()]
    assert [e["fraction"] for e in events] == [0.1, 0.2, 0.3]
    assert events[0]["message"].startswith("slept")


def test_cancel_reaches_a_running_sync_operation(bus: Bus) -> None:
    proc = bus.start_collector("typed1", "tests.plugins.typed:TypedCollector")
    with bus.client() as c:
        tid = c.submit("spin", {"seconds": 60})
        wait_until(lambda: c.get(tid).state is TaskState.RUNNING, 10, "spin to run")
        c.cancel(tid)
        wait_until(lambda: f"task_id={tid} attempt=1 cancelled" in proc.output(), 10, "the cancel")
        # the thread noticed ctx.cancelled and the slot is free again: new work runs at once
        follow = c.submit("spin", {"seconds": 0.1})
        assert c.wait(follow, timeout=10).state is TaskState.SUCCEEDED


def test_kill_9_mid_task_redelivers_to_another_collector(short_tmp: Path) -> None:
    bus = Bus(short_tmp)
    bus.env.update({"EVENTBUS_HEARTBEAT_INTERVAL_S": "0.2", "EVENTBUS_HEARTBEAT_TIMEOUT_S": "1"})
    try:
        bus.start_daemon()
        doomed = bus.start_collector("doomed")
        with bus.client() as c:
            tid = c.submit("sleep", {"seconds": 1.0})
            wait_until(lambda: c.get(tid).state is TaskState.RUNNING, 10, "the task to run")
            bus.start_collector("rescuer")
            doomed.popen.send_signal(signal.SIGKILL)
            killed_at = time.time()
            info = c.wait(tid, timeout=30)
        assert info.state is TaskState.SUCCEEDED
        assert (info.collector_id, info.attempt, info.retries) == ("rescuer", 2, 0)
        assert info.dispatched_at is not None and info.dispatched_at > killed_at
    finally:
        bus.close()


def test_a_collector_reconnects_to_a_daemon_that_stopped_answering_and_delivers_its_result(
    short_tmp: Path,
) -> None:
    bus = Bus(short_tmp)
    bus.env.update({"EVENTBUS_HEARTBEAT_INTERVAL_S": "0.2", "EVENTBUS_REQUEST_TIMEOUT_S": "0.5"})
    try:
        daemon = bus.start_daemon()
        collector = bus.start_collector("patient")
        with bus.client() as c:
            tid = c.submit("sleep", {"seconds": 1.0})
            wait_until(lambda: c.get(tid).state is TaskState.RUNNING, 10, "the task to run")
            daemon.signal(signal.SIGSTOP)  # alive but silent: replies stop
            try:
                wait_until(lambda: "heartbeat not answered (2 in a row)" in collector.output(), 15, "missed beats")
            finally:
                daemon.signal(signal.SIGCONT)
            wait_until(lambda: "reconnected" in collector.output(), 15, "the reconnect")
            info = c.wait(tid, timeout=20)
            assert (info.state, info.attempt, info.collector_id) == (TaskState.SUCCEEDED, 1, "patient")
            assert c.wait(c.submit("echo", "still serving"), timeout=10).state is TaskState.SUCCEEDED
        assert collector.popen.poll() is None
    finally:
        bus.close()


def test_a_collector_asked_to_stop_by_the_daemon_drains_and_exits_0(bus: Bus) -> None:
    proc = bus.start_collector("leaver")
    keeper = bus.start_collector("keeper")
    out = bus.ctl("--json", "stop", "leaver")
    assert out.returncode == 0 and json.loads(out.stdout) == {"collectors": ["leaver"]}
    assert proc.wait(20) == 0
    assert "shutdown requested by the daemon" in proc.output()
    with bus.client() as c:
        assert [i.collector_id for i in c.collectors()] == ["keeper"]
    assert keeper.popen.poll() is None
    assert bus.ctl("stop").returncode == 2
    assert bus.ctl("stop", "nobody").returncode == 4


def test_a_collector_started_before_the_daemon_waits_for_it(bare_bus: Bus) -> None:
    proc = bare_bus.spawn([command("eventbus-collector"), "run", "demo", "--id", "early"], "early")
    wait_until(lambda: "retrying" in proc.output(), 15, "the collector to wait")
    bare_bus.start_daemon()
    with bare_bus.client() as c:
        wait_until(lambda: [i.collector_id for i in c.collectors()] == ["early"], 20, "registration")
        assert c.wait(c.submit("echo", 1), timeout=10).state is TaskState.SUCCEEDED

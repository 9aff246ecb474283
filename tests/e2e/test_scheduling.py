"""Scheduling through the real daemon: delayed tasks from the command line, across a kill -9."""

from __future__ import annotations

import itertools
import json
import signal
import time
from typing import Any

import pytest

from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from tests.e2e.conftest import Bus, wait_until

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


def test_a_rate_limit_holds_within_ten_percent_over_twenty_seconds_of_load(bus: Bus) -> None:
    out = bus.ctl("--json", "limit", "set", "echo", "--rate", "5/s")
    assert out.returncode == EXIT_OK, out.stderr
    assert json.loads(out.stdout)["rate"] == "5/s"
    bus.start_collector("c1", "demo", "--concurrency", "16")
    bus.start_collector("c2", "demo", "--concurrency", "16")
    with bus.client() as c:
        ids = [tid for tid in c.submit_many([{"operation": "echo"}] * 200)]
        assert all(isinstance(tid, str) for tid in ids)
        other = c.submit("sleep", {"seconds": 0})  # another operation is not held back
        assert c.wait(other, timeout=10).state == "succeeded"
        time.sleep(22)
        infos = [c.get(str(tid)) for tid in ids]
    times = sorted(i.dispatched_at for i in infos if i.dispatched_at is not None)
    start = times[0] + 1.0  # past the first burst of a full bucket
    in_window = sum(1 for t in times if start <= t < start + 20)
    assert 90 <= in_window <= 110, (in_window, len(times))  # 5/s for 20 s: 100
    waited = [i.limit_wait_s for i in infos if i.dispatched_at is not None]
    assert max(waited) > 15 and min(waited) == 0.0
    listed = bus.ctl("limit", "list")
    assert listed.returncode == EXIT_OK and "echo" in listed.stdout and "runtime" in listed.stdout
    stats = bus.ctl("stats")
    assert "limits:" in stats.stdout


def test_runtime_limits_outlive_the_daemon_and_config_limits_reload(bus: Bus) -> None:
    assert bus.ctl("limit", "set", "echo", "--max-in-flight", "2").returncode == EXIT_OK
    assert bus.ctl("limit", "set", "demo", "--type", "--rate", "100/m").returncode == EXIT_OK
    assert bus.daemon is not None
    bus.daemon.signal(signal.SIGKILL)
    bus.daemon.wait(10)
    config = bus.root / "eventbusd.toml"
    config.write_text('[limits.sleep]\nrate = "3/s"\n')
    bus.start_daemon("--config", str(config))
    with bus.client() as c:
        shown = {(v["kind"], v["name"]): v for v in c.limits()}
    assert shown[("operation", "echo")]["max_in_flight"] == 2 and shown[("operation", "echo")]["source"] == "runtime"
    assert shown[("collector_type", "demo")]["rate"] == "100/m"
    assert shown[("operation", "sleep")]["source"] == "config"
    # a config file's limit is changed in the file, not here
    refused = bus.ctl("limit", "rm", "sleep")
    assert refused.returncode == EXIT_REJECTED and "config file" in refused.stderr
    missing = bus.ctl("limit", "rm", "nothing")
    assert missing.returncode == EXIT_REJECTED and "no limit" in missing.stderr
    assert bus.ctl("limit", "rm", "echo").returncode == EXIT_OK
    config.write_text("[limits.sleep]\nmax_in_flight = 1\n")
    bus.daemon.signal(signal.SIGHUP)

    def reloaded() -> bool:
        with bus.client() as c:
            views = {(v["kind"], v["name"]): v for v in c.limits()}
        return views.get(("operation", "sleep"), {}).get("max_in_flight") == 1 and ("operation", "echo") not in views

    wait_until(reloaded, 10, "the reloaded limits")
    bad = bus.ctl("limit", "set", "echo", "--rate", "5/w")
    assert bad.returncode == EXIT_USAGE and "N/PERIOD" in bad.stderr


def schedule_runs(bus: Bus, name: str) -> list[dict[str, Any]]:
    with bus.client() as c:
        return list(c.schedule(name)["runs"])


def test_a_schedule_runs_every_second_on_a_demo_collector_and_pause_stops_it(bus: Bus) -> None:
    bus.start_collector("c1")
    out = bus.ctl("schedule", "add", "beat", "echo", "--every", "1s", "--payload", '{"n": 1}')
    assert out.returncode == EXIT_OK, out.stderr
    assert "every 1s" in out.stdout
    wait_until(lambda: sum(r["state"] == "succeeded" for r in schedule_runs(bus, "beat")) >= 3, 15, "three runs")
    shown = bus.ctl("schedule", "show", "beat")
    assert shown.returncode == EXIT_OK and "succeeded" in shown.stdout and "sched.beat." in shown.stdout
    with bus.client() as c:
        (first,) = [r for r in c.schedule("beat")["runs"][-1:]]
        task = c.get(first["task_id"])
        assert task.state == "succeeded" and task.result is not None and task.result.value == {"n": 1}
    assert bus.ctl("schedule", "pause", "beat").returncode == EXIT_OK
    time.sleep(0.5)  # a run submitted just before the pause may still finish
    paused = len(schedule_runs(bus, "beat"))
    time.sleep(2.5)
    assert len(schedule_runs(bus, "beat")) == paused
    listed = bus.ctl("schedule", "list")
    assert listed.returncode == EXIT_OK and "paused" in listed.stdout
    assert bus.ctl("schedule", "resume", "beat").returncode == EXIT_OK
    wait_until(lambda: len(schedule_runs(bus, "beat")) > paused, 10, "a run after resume")
    assert bus.ctl("schedule", "rm", "beat").returncode == EXIT_OK
    assert bus.ctl("schedule", "show", "beat").returncode == EXIT_REJECTED


def test_a_restart_keeps_a_schedule_and_fires_no_due_time_twice(bus: Bus) -> None:
    bus.start_collector("c1")
    assert bus.ctl("schedule", "add", "beat", "echo", "--every", "1s").returncode == EXIT_OK
    wait_until(lambda: len(schedule_runs(bus, "beat")) >= 2, 10, "two runs")
    assert bus.daemon is not None
    bus.daemon.signal(signal.SIGKILL)
    bus.daemon.wait(10)
    time.sleep(2.5)  # due times pass while it is down: caught up with one run
    bus.start_daemon()
    wait_until(lambda: len(schedule_runs(bus, "beat")) >= 6, 15, "runs after the restart")
    runs = schedule_runs(bus, "beat")
    dues = [r["due"] for r in runs]
    assert dues == sorted(set(dues), reverse=True)  # each due time once, newest first
    ids = [r["task_id"] for r in runs]
    assert len(ids) == len(set(ids))
    with bus.client() as c:
        tasks = [t for t in c.tasks() if t.task_id.startswith("sched.beat.")]
    assert len({t.task_id for t in tasks}) == len(tasks)
    gaps = [a - b for a, b in itertools.pairwise(dues)]
    assert all(g >= 1.0 for g in gaps) and sum(g > 1.0 for g in gaps) <= 1  # one gap: the outage, caught up once


def test_config_schedules_are_reconciled_on_start_and_on_sighup(bare_bus: Bus) -> None:
    config = bare_bus.root / "eventbusd.toml"
    config.write_text('[schedules.tick]\noperation = "echo"\nevery = "1s"\npayload = {n = 2}\n')
    bare_bus.start_daemon("--config", str(config))
    bare_bus.start_collector("c1")
    wait_until(lambda: len(schedule_runs(bare_bus, "tick")) >= 1, 10, "a run of the config's schedule")
    with bare_bus.client() as c:
        (view,) = c.schedules()
    assert view["source"] == "config" and view["every"] == "1s"
    refused = bare_bus.ctl("schedule", "rm", "tick")
    assert refused.returncode == EXIT_REJECTED and "config file" in refused.stderr
    config.write_text('[schedules.nightly]\noperation = "echo"\ncron = "30 2 * * *"\ntimezone = "Europe/Berlin"\n')
    assert bare_bus.daemon is not None
    bare_bus.daemon.signal(signal.SIGHUP)

    def reloaded() -> bool:
        with bare_bus.client() as c:
            return [v["name"] for v in c.schedules()] == ["nightly"]

    wait_until(reloaded, 10, "the reloaded schedules")


def test_bad_schedules_are_refused_with_one_line(bus: Bus) -> None:
    for args, code, says in [
        (["x", "echo"], EXIT_USAGE, "one of --every or --cron"),
        (["x", "echo", "--every", "1s", "--cron", "* * * * *"], EXIT_USAGE, "one of --every or --cron"),
        (["x", "echo", "--cron", "61 * * * *"], EXIT_USAGE, "not 5 fields"),
        (["x", "echo", "--every", "2w"], EXIT_USAGE, "not a period"),
        (["x", "echo", "--every", "1s", "--timezone", "Mars/Base"], EXIT_USAGE, "time zone"),
        (["x", "echo", "--every", "1s", "--require", "skill>>2"], EXIT_USAGE, "skill"),
        (["Bad Name", "echo", "--every", "1s"], EXIT_REJECTED, "name"),
    ]:
        out = bus.ctl("schedule", "add", *args)
        assert out.returncode == code and says in out.stderr, (args, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr
    assert bus.ctl("schedule", "add", "x", "echo", "--every", "1h").returncode == EXIT_OK
    again = bus.ctl("schedule", "add", "x", "echo", "--every", "2h")
    assert again.returncode == EXIT_REJECTED and "already exists" in again.stderr
    assert bus.ctl("schedule", "add", "x", "echo", "--every", "2h", "--replace").returncode == EXIT_OK
    assert bus.ctl("schedule", "pause", "nope").returncode == EXIT_REJECTED

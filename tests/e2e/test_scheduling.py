"""Scheduling through the real daemon: delayed tasks from the command line, across a kill -9."""

from __future__ import annotations

import json
import signal
import time

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

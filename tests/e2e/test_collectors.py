"""The collector runtime against the real daemon: custom collectors, drain, daemon restarts, make run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distributor.models import TaskState
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_collector_runs_as_module_and_class(bus: Bus) -> None:
    bus.spawn(
        [command("eventbus-collector"), "run", "greeter:Greeter", "--id", "g1"],
        "greeter",
        cwd=ROOT / "examples" / "greeter",
    )
    wait_until(lambda: _registered(bus, "g1"), 15, "the greeter to register")
    greet = bus.ctl("submit", "greet", "--payload", '{"name": "ada"}', "--wait")
    assert (greet.returncode, json.loads(greet.stdout)) == (0, "hello ada")
    shout = bus.ctl("submit", "shout", "--payload", '{"text": "hi"}', "--wait")
    assert json.loads(shout.stdout) == "HI"


def _registered(bus: Bus, collector_id: str) -> bool:
    with bus.client() as c:
        return any(i.collector_id == collector_id for i in c.collectors())


def test_an_unknown_target_exits_2_naming_what_was_tried(bare_bus: Bus) -> None:
    out = subprocess.run(
        [command("eventbus-collector"), "run", "nosuch"], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 2
    assert "built-ins (demo, procmond, skilled)" in out.stderr and "eventbus.collectors" in out.stderr
    assert "Traceback" not in out.stderr


def test_sigterm_lets_the_running_task_finish_then_deregisters_and_exits_0(bus: Bus) -> None:
    proc = bus.start_collector("drainer")
    with bus.client() as c:
        tid = c.submit("sleep", {"seconds": 1.5})
        wait_until(lambda: c.get(tid).state is TaskState.RUNNING, 10, "the task to run")
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        info = c.wait(tid, timeout=10)
        assert info.state is TaskState.SUCCEEDED and info.collector_id == "drainer"
        assert info.attempt == 1
        assert c.collectors() == []
    assert "deregistered" in proc.output()


def test_a_collector_re_registers_when_the_daemon_restarts(short_tmp: Path) -> None:
    bus = Bus(short_tmp)
    bus.env["EVENTBUS_HEARTBEAT_INTERVAL_S"] = "0.2"
    try:
        bus.start_daemon()
        collector = bus.start_collector("survivor")
        assert bus.daemon is not None
        bus.daemon.stop()
        bus.start_daemon()
        wait_until(lambda: _registered(bus, "survivor"), 15, "the collector to register again")
        out = bus.ctl("submit", "echo", "--payload", '"again"', "--wait")
        assert (out.returncode, json.loads(out.stdout)) == (0, "again")
        assert collector.popen.poll() is None
    finally:
        bus.close()


def test_make_run_starts_daemon_and_demo_collector_and_stops_on_ctrl_c(short_tmp: Path) -> None:
    bus = Bus(short_tmp)
    env = {**bus.env, "VENV": str(Path(sys.executable).parent.parent)}
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "run-demo.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: bus.socket.exists() and _any_collector(bus), 20, "make run to start")
        out = bus.ctl("submit", "echo", "--payload", '{"hello":1}', "--wait")
        assert (out.returncode, json.loads(out.stdout)) == (0, {"hello": 1})
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        text, _ = proc.communicate(timeout=20)
        assert f"listening on {bus.socket}" in text
        assert "eventbusctl submit echo --payload '{\"hello\":1}' --wait" in text
        assert "eventbus stopped." in text
        assert not bus.socket.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _any_collector(bus: Bus) -> bool:
    with bus.client() as c:
        return bool(c.collectors())

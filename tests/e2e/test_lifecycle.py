"""eventbusd under a service manager: sd_notify, graceful SIGTERM, SIGHUP reload."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Bus, Proc, command, wait_until

pytestmark = pytest.mark.e2e


class NotifyListener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[list[str]] = []

    def until(self, field: str, timeout: float = 10.0) -> list[str]:
        """Read datagrams until one holds a line starting with ``field``; that datagram's lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            lines = data.decode().split("\n")
            self.messages.append(lines)
            if any(line.startswith(field) for line in lines):
                return lines
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[tuple[NotifyListener, str]]:
    if request.param == "path":
        address = env_value = str(short_tmp / "notify.sock")
    else:
        env_value = f"@eb-notify-{os.getpid()}-{short_tmp.name}"
        address = "\0" + env_value[1:]
    lst = NotifyListener(address)
    try:
        yield lst, env_value
    finally:
        lst.sock.close()


def start_with_env(bus: Bus, extra: dict[str, str], *args: str) -> Proc:
    """Start the daemon with ``extra`` in its environment only (not in the collectors' or the CLI's)."""
    saved = dict(bus.env)
    bus.env.update(extra)
    try:
        return bus.start_daemon(*args)
    finally:
        bus.env.clear()
        bus.env.update(saved)


def test_eventbusd_notifies_ready_status_watchdog_reloading_and_stopping(
    bare_bus: Bus, listener: tuple[NotifyListener, str]
) -> None:
    lst, address = listener
    daemon = start_with_env(bare_bus, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    ready = lst.until("READY=1")
    status = [line for line in ready if line.startswith("STATUS=")]
    assert status and "0 collectors, 0 queued, 0 in flight" in status[0]
    lst.until("WATCHDOG=1", timeout=2)
    lst.until("WATCHDOG=1", timeout=1)  # pinged again, every 0.2 s
    daemon.signal(signal.SIGHUP)
    reloading = lst.until("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") and int(line.split("=")[1]) > 0 for line in reloading)
    lst.until("READY=1")
    daemon.signal(signal.SIGTERM)
    lst.until("STOPPING=1")
    assert daemon.wait(10) == 0


def test_no_watchdog_pings_when_watchdog_pid_names_another_process(
    bare_bus: Bus, listener: tuple[NotifyListener, str]
) -> None:
    lst, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    daemon = start_with_env(bare_bus, env)
    lst.until("READY=1")
    time.sleep(0.5)
    daemon.signal(signal.SIGTERM)
    lst.until("STOPPING=1")
    assert daemon.wait(10) == 0
    assert not any("WATCHDOG=1" in lines for lines in lst.messages)


def running(bus: Bus, count: int = 1) -> bool:
    with bus.client() as c:
        return bool(c.status()["tasks_in_flight"] == count)


def waiting(bus: Bus) -> bool:
    with bus.client() as c:
        return int(c.stats()["waiting_requests"]) >= 1


def waiting_submit(bus: Bus, seconds: float) -> subprocess.Popen[str]:
    argv = [command("eventbusctl"), "--json", "submit", "sleep", "--payload", json.dumps({"seconds": seconds})]
    return subprocess.Popen([*argv, "--wait"], env=bus.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_lets_the_running_task_finish_answers_the_waiting_client_and_exits_0(bare_bus: Bus) -> None:
    daemon = bare_bus.start_daemon()
    collector = bare_bus.start_collector("c1")
    client = waiting_submit(bare_bus, 2)
    wait_until(lambda: running(bare_bus), 10, "the task to run")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    elapsed = time.monotonic() - started
    out, err = client.communicate(timeout=10)
    assert client.returncode == 0, err
    assert json.loads(out)["state"] == "succeeded"
    assert elapsed < 20, elapsed  # about the task's 2 s, not the 30 s grace (loose: machines here are noisy)
    print(f"SIGTERM to exit with a running 2 s task: {elapsed:.2f}s")
    assert collector.popen.poll() is None  # collectors outlive the daemon and register with the next one
    assert "0 in flight abandoned" in daemon.output()
    # told why, in words: the daemon is going, not the collector
    assert "eventbusd is stopping; 1 running tasks finish and report" in collector.output()


def test_sigterm_with_no_work_exits_0_at_once_with_a_final_report(bare_bus: Bus) -> None:
    daemon = bare_bus.start_daemon()
    collector = bare_bus.start_collector("c1")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    elapsed = time.monotonic() - started
    print(f"SIGTERM to exit with no running work: {elapsed:.2f}s")
    assert elapsed < 10, elapsed  # not the 30 s grace
    assert "0 in flight abandoned" in daemon.output()
    assert collector.popen.poll() is None


def test_a_submission_during_the_grace_period_is_refused_shutting_down(bare_bus: Bus) -> None:
    daemon = bare_bus.start_daemon()
    bare_bus.start_collector("c1")
    with bare_bus.client() as c:
        c.submit("sleep", {"seconds": 30})  # still running whenever the refused submission arrives
    wait_until(lambda: running(bare_bus), 10, "the task to run")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: "stopping (running attempts may finish" in daemon.output(), 10, "the stop to begin")
    refused = bare_bus.ctl("--json", "submit", "echo")
    assert refused.returncode == 3, refused
    assert json.loads(refused.stdout)["error"]["code"] == "shutting_down"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_a_waiting_client_gets_shutting_down_when_the_grace_period_ends_first(bare_bus: Bus) -> None:
    daemon = bare_bus.start_daemon("--shutdown-grace-s", "0.5")
    bare_bus.start_collector("c1")
    client = waiting_submit(bare_bus, 30)
    wait_until(lambda: running(bare_bus) and waiting(bare_bus), 10, "the task to run and its client to wait")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert time.monotonic() - started < 10  # the 0.5 s grace, not the 30 s task
    out, _ = client.communicate(timeout=10)
    assert client.returncode == 3
    assert json.loads(out)["error"]["code"] == "shutting_down"
    assert "1 waiting requests answered shutting_down" in daemon.output()


def test_a_second_sigterm_stops_at_once(bare_bus: Bus) -> None:
    daemon = bare_bus.start_daemon()
    bare_bus.start_collector("c1")
    with bare_bus.client() as c:
        c.submit("sleep", {"seconds": 30})
    wait_until(lambda: running(bare_bus), 10, "the task to run")
    daemon.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert daemon.popen.poll() is None, "the first SIGTERM must wait for the running task"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0  # not the 30 s task
    assert "SIGTERM again: stopping at once" in daemon.output()


def strategy(bus: Bus) -> str:
    shown = bus.ctl("strategy")
    assert shown.returncode == 0, shown
    return shown.stdout.strip()


def test_sighup_applies_the_strategy_from_the_file_and_a_broken_file_keeps_it(bare_bus: Bus) -> None:
    config = bare_bus.root / "eventbusd.toml"
    config.write_text('strategy = "round_robin"\n')
    daemon = bare_bus.start_daemon("--config", str(config))
    assert strategy(bare_bus) == "round_robin"
    with bare_bus.client() as c:  # a connection open across the reloads stays served
        config.write_text('strategy = "best_fit"\nmax_queue_size = 5\nmax_message_size = 2000000\n')
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: strategy(bare_bus) == "best_fit", 10, "the new strategy")
        assert "max_message_size changed in the settings but needs a restart" in daemon.output()
        config.write_text('strategy = "first_available"\nmax_queue_size = [\n')
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in daemon.output(), 10, "the reload to be rejected")
        assert "is not valid TOML" in daemon.output()
        config.write_text('strategy = "nope"\n')
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "unknown strategy 'nope'" in daemon.output(), 10, "the bad value to be named")
        assert c.strategy() == "best_fit"
        assert c.status()["strategy"] == "best_fit"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0

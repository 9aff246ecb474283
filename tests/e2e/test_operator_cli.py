"""eventbusctl as an operator and a new user meet it: report, readable output, help, and rough edges."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from click.testing import CliRunner

from eventbus.cli import main
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_report_gives_completion_percentiles_collectors_and_errors(bus: Bus) -> None:
    bus.start_collector("rep-1")
    for _ in range(3):
        assert bus.ctl("submit", "echo", "--payload", "1", "--wait").returncode == 0
    assert bus.ctl("submit", "fail", "--payload", '{"message": "nope"}', "--wait").returncode == 1

    data = _json(bus.ctl("--json", "report"))
    assert data["uptime_s"] > 0
    echo = data["operations"]["echo"]
    assert echo["succeeded"] == 3
    assert 0 <= echo["completion_s"]["p50"] <= echo["completion_s"]["p95"] <= echo["completion_s"]["p99"]
    assert data["operations"]["fail"]["failed"] == 1
    assert data["errors"] == {"RuntimeError": 1}
    (collector,) = data["collectors"]
    assert collector["collector_id"] == "rep-1"
    assert collector["tasks_completed"] == 3
    assert collector["success_rate"] == pytest.approx(3 / 7)  # the fail task ran 4 attempts

    table = bus.ctl("report").stdout
    assert "OPERATION" in table and "P99" in table and "rep-1" in table and "RuntimeError" in table


def test_task_shows_iso_times_durations_attempts_and_a_pretty_result(bus: Bus) -> None:
    bus.start_collector("task-1")
    tid = bus.ctl("submit", "echo", "--payload", '{"b": [1, 2], "a": "x"}').stdout.strip()
    wait_until(lambda: bus.ctl("task", tid).returncode == 0 and "succeeded" in bus.ctl("task", tid).stdout)

    out = bus.ctl("task", tid).stdout
    lines = dict(line.split(None, 1) for line in out.splitlines() if line[:1].isalpha() and " " in line)
    assert lines["state"].strip() == "succeeded"
    assert lines["attempts"].strip() == "1"
    assert "T" in lines["created"] and lines["created"].strip()[:4].isdigit()  # ISO 8601
    assert lines["total"].strip().endswith("s")
    assert '  {\n    "a": "x",\n    "b": [\n' in out  # the result, indented


def test_stats_is_a_table_and_json_is_unchanged(bus: Bus) -> None:
    out = bus.ctl("stats").stdout
    assert not out.lstrip().startswith("{")
    assert any(line.split() == ["tasks_submitted", "0"] for line in out.splitlines())
    assert "latency_end_to_end_s" in out and "p99=-" in out
    assert _json(bus.ctl("--json", "stats"))["tasks_submitted"] == 0


def test_help_ends_with_the_socket_path_in_effect(bus: Bus) -> None:
    assert f"Socket in effect: {bus.socket}" in bus.ctl("--help").stdout
    assert "Socket in effect: /tmp/elsewhere.sock" in bus.ctl("--socket", "/tmp/elsewhere.sock", "--help").stdout


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_help_has_an_example(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Example: eventbusctl " in result.output


def test_shell_completion_is_served_by_the_command(bus: Bus) -> None:
    env = {**bus.env, "_EVENTBUSCTL_COMPLETE": "bash_source"}
    result = subprocess.run([command("eventbusctl")], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert "_eventbusctl_completion" in result.stdout


def test_wait_on_an_operation_nobody_offers_says_so_at_once_and_keeps_waiting(bus: Bus) -> None:
    proc = subprocess.Popen(
        [command("eventbusctl"), "submit", "nobody-offers", "--wait", "--wait-timeout", "20"],
        env=bus.env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.monotonic()
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert time.monotonic() - started < 10
        assert "no live collector offers 'nobody-offers'" in line and "stays queued" in line
        assert proc.poll() is None  # still waiting
        with bus.client() as c:
            assert [t.state.value for t in c.tasks(operation="nobody-offers")] == ["queued"]
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_a_failed_wait_says_how_many_retries_ran(bus: Bus) -> None:
    bus.start_collector("fail-1")
    result = bus.ctl("submit", "fail", "--payload", '{"message": "nope"}', "--wait")
    assert result.returncode == 1
    assert "RuntimeError: nope (after 3 retries)" in result.stderr


def test_after_an_unknown_task_names_the_flag(bus: Bus) -> None:
    result = bus.ctl("submit", "echo", "--after", "no-such-task")
    assert result.returncode == 4
    assert "--after names unknown task 'no-such-task'" in result.stderr
    assert "depends_on" not in result.stderr


def test_a_malformed_require_is_a_usage_error_before_anything_is_sent(bare_bus: Bus) -> None:
    result = bare_bus.ctl("submit", "echo", "--require", "skill>>5")  # no daemon: it is never asked
    assert result.returncode == 2
    assert "--require" in result.stderr and "unknown operator" in result.stderr


def test_a_collector_whose_daemon_is_gone_says_so_in_plain_words(bus: Bus) -> None:
    collector = bus.start_collector("gone-1")
    assert bus.daemon is not None
    bus.daemon.stop()
    collector.stop()
    lines = [line for line in collector.output().splitlines() if "eventbusd is gone" in line]
    assert lines, collector.output()
    assert "deregistering" in lines[-1]
    assert not any("control." in line for line in lines)


_TASK_KEYS = {"task_id", "operation", "state", "attempt", "retries", "created_at", "finished_at", "result"}
_COLLECTOR_KEYS = {"collector_id", "collector_type", "supported_operations", "status", "success_rate", "utilization"}
_DOCUMENTED: dict[str, set[str]] = {
    "status": {"version", "uptime_s", "strategy", "collectors", "active_collectors", "tasks_queued", "socket"},
    "collectors": _COLLECTOR_KEYS,
    "stats": {"tasks_submitted", "tasks_succeeded", "queue_depths", "latency_end_to_end_s", "subscribers"},
    "report": {"uptime_s", "operations", "collectors", "errors"},
    "task": _TASK_KEYS,
    "tasks": {"task_id", "operation", "state", "attempt", "collector_id"},
    "strategy": {"strategy"},
    "submit": {"task_id"},
    "cancel": _TASK_KEYS,
    "drain": _COLLECTOR_KEYS,
    "undrain": _COLLECTOR_KEYS,
    "stop": {"collectors"},
    "metrics": {"text"},
    "watch": {"topic", "body"},
    "batch": _TASK_KEYS | {"index"},
    "bench": {"tasks_per_s", "latency_ms", "daemon_cpu_us_per_task", "throughput_ratio", "p99_ratio", "env", "lost"},
    "cluster": {"enabled"},
    "limit": {"kind", "name", "rate", "max_in_flight", "in_flight", "tokens", "source"},
    "schedule": {"name", "operation", "every", "cron", "timezone", "paused", "next_due", "runs", "source"},
}


def test_every_command_has_its_documented_json_keys_listed() -> None:
    assert set(_DOCUMENTED) == set(main.commands)


def _subscribers(bus: Bus) -> int:
    with bus.client() as c:
        return int(c.stats()["subscribers"])


def _watch_one(bus: Bus) -> subprocess.CompletedProcess[str]:
    """``--json watch --count 1`` while a task is submitted."""
    proc = subprocess.Popen(
        [command("eventbusctl"), "--json", "watch", "--count", "1"],
        env=bus.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _subscribers(bus) == 1, 10, "the watcher to subscribe")
        bus.ctl("submit", "echo")
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait(5)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("name", sorted(_DOCUMENTED))
def test_json_output_parses_and_holds_the_documented_keys(bus: Bus, name: str) -> None:
    bus.start_collector("json-1")
    tid = _json(bus.ctl("--json", "submit", "echo", "--payload", "1", "--wait"))["task_id"]
    queued = _json(bus.ctl("--json", "submit", "nobody-offers"))["task_id"]
    specs = bus.root / "specs.jsonl"
    specs.write_text('{"operation": "echo", "payload": 2}\n')
    args = {
        "batch": ["batch", str(specs), "--wait"],
        "task": ["task", tid],
        "submit": ["submit", "echo"],
        "cancel": ["cancel", queued],
        "drain": ["drain", "json-1"],
        "undrain": ["undrain", "json-1"],
        "stop": ["stop", "json-1"],
        "bench": ["bench", "--tasks", "50", "--in-flight", "5", "--no-baseline"],  # on a private daemon
        "limit": ["limit", "set", "echo", "--rate", "5/s"],
        "schedule": ["schedule", "add", "hourly", "echo", "--every", "1h"],
    }.get(name, [name])
    result = _watch_one(bus) if name == "watch" else bus.ctl("--json", *args)
    data = _json(result)
    record = data[0] if isinstance(data, list) else data
    assert _DOCUMENTED[name] <= set(record)

"""Results and replies at the limits: invalid results fail fast, replies never outgrow a frame."""

from __future__ import annotations

import json

import pytest

from distributor.models import TaskResult
from eventbus.wire import Envelope, Kind, encode
from tests.e2e.conftest import Bus

pytestmark = pytest.mark.e2e
RESULTS = "tests.plugins.results:ResultsCollector"


def _final(bus: Bus, operation: str, payload: str = "null") -> tuple[int, dict[str, object]]:
    # the attempt timeout (30 s) is longer than the wait: a result lost as a timeout fails this
    out = bus.ctl("--json", "submit", operation, "--payload", payload, "--wait", "--wait-timeout", "20", timeout=40)
    return out.returncode, json.loads(out.stdout)


def test_a_result_with_a_non_string_key_fails_its_first_attempt_as_invalid_result(bus: Bus) -> None:
    bus.start_collector("r1", RESULTS)
    code, info = _final(bus, "int_keys")
    assert code == 1, info
    assert info["state"] == "failed" and info["attempt"] == 1
    error = info["error"]
    assert isinstance(error, dict) and error["type"] == "InvalidResult"
    assert "map keys must be strings" in str(error["message"])


def test_a_result_nested_100_levels_fails_its_first_attempt_as_invalid_result(bus: Bus) -> None:
    bus.start_collector("r1", RESULTS)
    code, info = _final(bus, "nested", "100")
    assert code == 1, info
    assert info["state"] == "failed" and info["attempt"] == 1
    error = info["error"]
    assert isinstance(error, dict) and error["type"] == "InvalidResult" and "64" in str(error["message"])
    listing = bus.ctl("tasks")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr


def test_a_result_nested_within_the_limit_succeeds_and_lists(bus: Bus) -> None:
    bus.start_collector("r1", RESULTS)
    code, info = _final(bus, "nested", "60")
    assert code == 0, info
    assert bus.ctl("--json", "tasks").returncode == 0


def test_tasks_limit_5000_fetches_pages_and_prints_the_cursor_to_continue(bus: Bus) -> None:
    with bus.client() as c:
        for i in range(5200):
            c.submit("left" if i % 2 else "right", {"n": i})
    first = bus.ctl("--json", "tasks", "--limit", "5000")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert len(page) == 5000 and len({t["task_id"] for t in page}) == 5000
    cursor = first.stderr.split("--after-cursor")[1].split()[0]
    rest = bus.ctl("--json", "tasks", "--limit", "5000", "--after-cursor", cursor)
    assert rest.returncode == 0, rest.stderr
    tail = json.loads(rest.stdout)
    assert len(tail) == 200 and "--after-cursor" not in rest.stderr
    assert not {t["task_id"] for t in page} & {t["task_id"] for t in tail}


def test_a_bad_cursor_is_a_usage_error(bus: Bus) -> None:
    out = bus.ctl("tasks", "--after-cursor", "x1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def _value_room(max_size: int, task_id: str, collector_id: str) -> int:
    """The longest string value whose result message still fits ``max_size``."""
    result = TaskResult(
        task_id=task_id,
        attempt=1,
        collector_id=collector_id,
        success=True,
        value="",
        execution_time_s=1.5,
        started_at=1.5e9,
        finished_at=1.5e9,
    )
    body = {"event": "result", "task_id": task_id, "attempt": 1, "result": result.model_dump()}
    frame = encode(Envelope(Kind.REQUEST, "x" * 24, f"control.collector.result.{collector_id}", body), 1 << 30)
    return max_size - len(frame) - 8  # a long string's header takes up to 4 bytes more than ""


def test_a_task_whose_reply_would_exceed_the_limit_is_sent_without_its_value(bare_bus: Bus) -> None:
    bare_bus.start_daemon("--max-message-size", "65536")
    bare_bus.start_collector("big1", RESULTS)
    task_id = "t" * 32
    room = _value_room(65536, task_id, "big1")
    done = bare_bus.ctl("--json", "submit", "blob", "--id", task_id, "--payload", str(room), "--wait", timeout=40)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["state"] == "succeeded" and info["truncated"] is True
    assert info["result"]["value"] is None and info["result"]["success"] is True
    listed = json.loads(bare_bus.ctl("--json", "tasks").stdout)
    assert [t["truncated"] for t in listed] == [True]


def test_a_payload_nested_1000_levels_is_a_one_line_usage_error(bare_bus: Bus) -> None:
    for levels in (100, 1000, 50_000):
        out = bare_bus.ctl("submit", "echo", "--payload", "[" * levels + "]" * levels)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "62" in out.stderr

"""``eventbusctl batch`` and the clients' batches of tasks, through the real daemon and collectors."""

from __future__ import annotations

import json

import pytest

from distributor.models import TaskInfo, TaskState
from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_TASK_FAILED, EXIT_TIMEOUT, EXIT_USAGE
from tests.e2e.conftest import Bus

pytestmark = pytest.mark.e2e


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_batch_wait_of_1000_specs_prints_1000_results_in_input_order(bus: Bus) -> None:
    bus.start_collector("batch-1", "demo", "--concurrency", "100")
    specs = "".join(
        json.dumps({"operation": "echo", "payload": {"n": i}, "priority": 1 + i % 10}) + "\n" for i in range(1000)
    )
    result = bus.ctl("batch", "-", "--wait", stdin=specs, timeout=120)
    assert result.returncode == EXIT_OK, result.stderr
    lines = _lines(result.stdout)
    assert [line["index"] for line in lines] == list(range(1000))
    assert [line["value"] for line in lines] == [{"n": i} for i in range(1000)]
    assert {line["state"] for line in lines} == {"succeeded"}
    assert len({line["task_id"] for line in lines}) == 1000
    assert result.stderr == ""


def test_batch_without_wait_takes_the_valid_specs_and_names_the_refused_one(bus: Bus) -> None:
    specs = '{"operation": "echo"}\n\n{"operation": "Bad Op!"}\n{"operation": "echo", "task_id": "kept-1"}\n'
    result = bus.ctl("--json", "batch", "-", stdin=specs)
    assert result.returncode == EXIT_REJECTED
    *lines, error = _lines(result.stdout)
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert lines[2]["task_id"] == "kept-1" and "task_id" in lines[0]
    assert lines[1]["error"]["code"] == "invalid"  # type: ignore[index]
    assert lines[1]["error"]["message"].startswith("tasks[1]: operation")  # type: ignore[index]
    assert error["error"]["code"] == "invalid"  # type: ignore[index]
    [summary] = result.stderr.splitlines()
    assert summary.startswith("eventbusctl: error: 1 of 3 task specs: refused by the daemon (first: tasks[1]: ")
    with bus.client() as c:
        assert c.get("kept-1").state is TaskState.QUEUED


def test_batch_wait_exits_1_when_a_task_fails_and_5_when_time_runs_out(bus: Bus) -> None:
    bus.start_collector("batch-2")
    specs = (
        '{"operation": "echo", "payload": 1}\n{"operation": "fail", "payload": {"message": "nope"}, "priority": 9}\n'
    )
    result = bus.ctl("batch", "-", "--wait", stdin=specs, timeout=60)
    assert result.returncode == EXIT_TASK_FAILED
    ok, failed = _lines(result.stdout)
    assert ok["value"] == 1 and failed["state"] == "failed" and "no" in failed["error"]["message"]  # type: ignore[index]
    assert "1 of 2 tasks did not succeed" in result.stderr
    held = '{"operation": "echo"}\n{"operation": "nobody-offers"}\n'
    result = bus.ctl("batch", "-", "--wait", "--wait-timeout", "1", stdin=held)
    assert result.returncode == EXIT_TIMEOUT
    done, queued = _lines(result.stdout)
    assert done["state"] == "succeeded" and queued["state"] == "queued"
    assert "not final within --wait-timeout" in result.stderr


def test_batch_refuses_a_file_with_a_bad_line_and_submits_nothing(bus: Bus) -> None:
    result = bus.ctl("batch", "-", stdin='{"operation": "echo"}\n{"operation": \n')
    assert result.returncode == EXIT_USAGE
    assert "line 2: invalid JSON" in result.stderr and len(result.stderr.splitlines()) == 1
    result = bus.ctl("batch", "-", stdin="[1, 2]\n")
    assert result.returncode == EXIT_USAGE and "line 1: a task spec must be a JSON object" in result.stderr
    result = bus.ctl("batch", "-", stdin="\n")
    assert result.returncode == EXIT_USAGE and "no task spec" in result.stderr
    with bus.client() as c:
        assert c.stats()["tasks_submitted"] == 0


def test_sync_client_run_many_and_map_return_results_in_input_order(bus: Bus) -> None:
    bus.start_collector("batch-3", "demo", "--concurrency", "50")
    with bus.client() as c:
        specs = [{"operation": "echo", "payload": i} for i in range(1500)]  # two requests
        specs[1100] = {"operation": "echo", "priority": 0}
        outcomes = list(c.run_many(specs, timeout=60))
        assert isinstance(outcomes[1100], EventBusError) and outcomes[1100].message.startswith("tasks[1100]: ")
        values = [o.result.value for o in outcomes if isinstance(o, TaskInfo) and o.result is not None]
        assert values == [i for i in range(1500) if i != 1100]
        assert [i.result.value if i.result else None for i in c.map("echo", ["a", "b", "c"])] == ["a", "b", "c"]
        ids = c.submit_many([{"operation": "echo", "payload": "x"}] * 3)
        assert all(isinstance(i, str) for i in ids)
        assert c.wait(str(ids[2]), timeout=10).state is TaskState.SUCCEEDED

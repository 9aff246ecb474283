"""``control.task.submit`` with ``wait``: one round trip per task, answered when the task is final."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from distributor import CollectorCapability
from eventbus import messages as m
from eventbus.wire import Envelope, Kind
from tests.service_harness import Harness

C1 = b"c1"


def _register(harness: Harness, cid: str = "c1") -> None:
    cap = CollectorCapability(
        collector_id=cid, collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=4
    )
    assert harness.request(m.REGISTER, cap.model_dump(), identity=cid.encode()).kind is Kind.REPLY


def _dispatched(harness: Harness, identity: bytes = C1) -> dict[str, Any]:
    tasks = [env.body for env in harness.to(identity) if env.topic.startswith(m.TASK_PREFIX)]
    assert tasks, "nothing was dispatched"
    return tasks[-1]


def _report(harness: Harness, dispatch: dict[str, Any], value: Any) -> None:
    task_id, attempt = dispatch["task"]["task_id"], dispatch["attempt"]
    result = {"task_id": task_id, "attempt": attempt, "collector_id": "c1", "success": True, "value": value}
    body = {"event": "result", "task_id": task_id, "attempt": attempt, "result": result}
    harness.request(f"{m.RESULT_PREFIX}.c1", body, identity=C1, corr="c1-1")


def _answers(harness: Harness) -> list[Envelope]:
    return [env for env in harness.to(b"client") if env.id == "r1"]


def test_the_answer_is_held_until_the_task_is_final_and_comes_once(harness: Harness) -> None:
    _register(harness)
    harness.request(m.SUBMIT, {"operation": "echo", "payload": {"n": 1}, "wait": True})
    assert _answers(harness) == []  # held
    _report(harness, _dispatched(harness), {"n": 1})
    [answer] = _answers(harness)
    assert (answer.kind, answer.topic) == (Kind.REPLY, m.SUBMIT)
    assert answer.body["state"] == "succeeded"
    assert answer.body["result"]["value"] == {"n": 1}
    assert answer.body["task_id"] == _dispatched(harness)["task"]["task_id"]
    assert "offered" not in answer.body
    assert harness.service.stats()["waiting_requests"] == 0


def test_without_wait_the_answer_is_the_task_id_at_once(harness: Harness) -> None:
    _register(harness)
    answer = harness.request(m.SUBMIT, {"operation": "echo", "wait": False})
    assert set(answer.body) == {"task_id"}
    answer = harness.request(m.SUBMIT, {"operation": "echo"}, corr="r2")
    assert set(answer.body) == {"task_id"}


def test_an_operation_no_live_collector_offers_is_answered_at_once_with_offered_false(harness: Harness) -> None:
    answer = harness.request(m.SUBMIT, {"operation": "echo", "wait": True})
    assert answer.body["state"] == "queued" and answer.body["offered"] is False
    _register(harness)
    harness.request(m.ADMIN_DRAIN, {"collector_id": "c1"}, corr="r3")
    answer = harness.request(m.SUBMIT, {"operation": "echo", "wait": True}, corr="r4")
    assert answer.body["offered"] is False  # a draining collector does not count
    assert harness.service.stats()["tasks_queued"] == 1  # the first went to c1 when it registered


def test_a_wait_that_runs_out_answers_with_the_current_state(harness: Harness) -> None:
    _register(harness)
    harness.request(m.SUBMIT, {"operation": "echo", "wait": True, "wait_s": 0.05})
    assert _answers(harness) == []
    harness.loop.run_until_complete(asyncio.sleep(0.2))
    [answer] = _answers(harness)
    assert answer.body["state"] == "dispatched"
    assert harness.service.stats()["waiting_requests"] == 0


def test_a_task_final_at_once_is_answered_at_once(harness: Harness) -> None:
    _register(harness)
    parent = harness.request(m.SUBMIT, {"operation": "echo"}, corr="p").body["task_id"]
    harness.request(m.CANCEL, {"task_id": parent}, corr="c")
    answer = harness.request(m.SUBMIT, {"operation": "echo", "depends_on": [parent], "wait": True})
    assert answer.body["state"] == "failed"  # its dependency was cancelled


@pytest.mark.parametrize("wait", [{"wait": "yes"}, {"wait": True, "wait_s": 0}, {"wait": True, "wait_s": 3601}])
def test_a_bad_wait_is_refused_and_nothing_is_queued(harness: Harness, wait: dict[str, Any]) -> None:
    _register(harness)
    answer = harness.request(m.SUBMIT, {"operation": "echo", **wait})
    assert answer.kind is Kind.ERROR and answer.body["code"] == "invalid"
    assert harness.service.stats()["tasks_submitted"] == 0

"""The asyncio and the blocking client offer the same verbs, and decide a run's next step the same way."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from distributor.models import TaskInfo, TaskState
from eventbus._link import TaskWait
from eventbus._requests import Submitted
from eventbus.client import Client, SyncClient
from eventbus.errors import ConnectionReset, DaemonRestarted, QueueFull, UnknownTask

#: verbs that only make sense on one side, and why
ASYNC_ONLY = {
    "connect": "SyncClient connects in its constructor",
    "reconnect": "the collector runtime rebuilds its long-lived connection; a blocking caller makes a new client",
    "notify": "fire-and-forget from inside the event loop (progress, acceptance); a blocking caller has no loop",
}
SYNC_ONLY = {
    "events": "a blocking iterator over published events; the asyncio client hands them to on_publish",
}


def _verbs(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_every_public_verb_exists_on_both_clients_except_the_justified_few() -> None:
    sync, asyn = _verbs(SyncClient), _verbs(Client)
    assert set(asyn) - set(sync) == set(ASYNC_ONLY)
    assert set(sync) - set(asyn) == set(SYNC_ONLY)


@pytest.mark.parametrize("name", sorted(set(_verbs(SyncClient)) & set(_verbs(Client))))
def test_a_verb_takes_the_same_parameters_on_both_clients(name: str) -> None:
    sync, asyn = _verbs(SyncClient)[name], _verbs(Client)[name]
    assert list(sync.parameters.values()) == list(asyn.parameters.values())


def _info(state: TaskState) -> TaskInfo:
    return TaskInfo(
        task_id="t",
        operation="echo",
        priority=5,
        state=state,
        attempt=0,
        retries=0,
        collector_id=None,
        created_at=1.0,
        queued_at=1.0,
        dispatched_at=None,
        finished_at=None,
        result=None,
        error=None,
        constraints=[],
        depends_on=[],
    )


def _wait() -> TaskWait:
    w, call = TaskWait.run(
        Path("/x.sock"), "echo", None, {"task_id": "t"}, timeout=10, now=0.0, grace=1.0, request_timeout=2.0
    )
    assert call.body["task_id"] == "t" and call.body["wait"] is True
    return w


def test_a_run_ends_with_the_submits_answer_when_the_task_is_final() -> None:
    done = _info(TaskState.SUCCEEDED)
    assert _wait().submitted(Submitted(done, offered=False), None) is done


def test_a_run_whose_operation_nobody_offers_says_so_and_goes_on_waiting() -> None:
    told: list[str] = []
    assert _wait().submitted(Submitted(_info(TaskState.QUEUED), offered=False), told.append) is None
    assert told == ["t"]
    assert _wait().submitted(Submitted(_info(TaskState.QUEUED), offered=True), told.append) is None
    assert told == ["t"]


def test_a_run_goes_on_after_a_reset_and_names_a_lost_task_after_it() -> None:
    w = _wait()
    w.failed(ConnectionReset("reset"))  # goes on waiting
    with pytest.raises(DaemonRestarted, match="fate is unknown"):
        w.failed(UnknownTask("no such task"))


def test_a_run_whose_submit_is_refused_raises_the_refusal() -> None:
    with pytest.raises(QueueFull):
        _wait().failed(QueueFull("full"))


def test_a_run_chooses_a_task_id_when_none_is_given() -> None:
    fields = {"priority": 3}
    w, call = TaskWait.run(Path("/x"), "echo", 1, fields, timeout=None, now=0.0, grace=1.0, request_timeout=2.0)
    assert len(w.task_id) == 32 and call.body["task_id"] == w.task_id and call.body["priority"] == 3
    assert fields == {"priority": 3}

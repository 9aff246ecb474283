"""The distributor's journal side without I/O: changes out, a restart's records back in, idempotency keys."""

from __future__ import annotations

import dataclasses

import pytest

from distributor import Dispatch, DistributorConfig, TaskDistributor, TaskRequest, TaskResult, TaskState
from distributor.tasks import TaskRecord
from tests.test_distributor import cap, dispatches, ok


def journaled(**config: object) -> TaskDistributor:
    dist = TaskDistributor(DistributorConfig(**config))  # type: ignore[arg-type]
    dist.journal = True
    return dist


def written(dist: TaskDistributor) -> dict[str, TaskRecord]:
    """What a store holds after taking every change so far: a copy of each record as it was then."""
    store: dict[str, TaskRecord] = {}
    for task in dist.take_changes().tasks:
        store[task.task_id] = dataclasses.replace(task)
    return store


def restart(store: dict[str, TaskRecord], now: float, **config: object) -> TaskDistributor:
    """A new distributor given back the unfinished tasks, as a daemon does after kill -9."""
    dist = journaled(**config)
    unfinished = [dataclasses.replace(t) for t in store.values() if not t.state.terminal]
    parents = {t.task_id: t.state for t in store.values() if t.state.terminal}
    dist.restore(unfinished, now, parents=parents, last_serial=max((t.serial for t in store.values()), default=0))
    return dist


def first_id(d: Dispatch) -> str:
    assert d.task.task_id is not None
    return d.task.task_id


def submit(dist: TaskDistributor, now: float, **fields: object) -> str:
    task_id, _ = dist.submit(TaskRequest(operation="echo", **fields), now)
    return task_id


def test_every_transition_is_a_change_and_each_task_is_taken_once() -> None:
    dist = journaled()
    a = submit(dist, 1.0)
    b = submit(dist, 1.0)
    changes = dist.take_changes()
    assert [t.task_id for t in changes.tasks] == [a, b]
    assert not dist.has_changes and not dist.take_changes()
    (d,) = dispatches(dist.register(cap("c1", slots=1), 2.0))
    assert [t.state for t in dist.take_changes().tasks] == [TaskState.DISPATCHED]
    dist.complete(ok(d), 3.0)
    changes = dist.take_changes()
    states = {t.task_id: t.state for t in changes.tasks}
    assert states[first_id(d)] is TaskState.SUCCEEDED and len(changes.tasks) == 2  # the next one dispatched
    assert changes.collectors == [("c1", (1, 0, 0.0))]


def test_without_a_journal_nothing_is_recorded() -> None:
    dist = TaskDistributor()
    submit(dist, 1.0)
    assert not dist.has_changes and not dist.take_changes()


def test_queued_tasks_come_back_in_priority_then_fifo_order() -> None:
    dist = journaled()
    ids = [submit(dist, 1.0 + i, priority=p) for i, p in enumerate([5, 9, 5, 1, 9, 5])]
    back = restart(written(dist), 10.0)
    assert back.snapshot(10.0)["tasks_queued"] == 6 and back.stats.tasks_recovered == 6
    order = [d.task.task_id for d in dispatches(back.register(cap("c1", slots=6), 11.0))]
    assert order == [ids[1], ids[4], ids[0], ids[2], ids[5], ids[3]]
    assert back.get(ids[0]).queued_at == 1.0  # it has waited since it was first queued


def test_an_attempt_in_flight_at_the_crash_is_fenced_off() -> None:
    dist = journaled()
    task_id = submit(dist, 1.0)
    (old,) = dispatches(dist.register(cap("c1"), 1.0))
    dist.accepted("c1", task_id, old.attempt, 1.5)
    store = written(dist)
    assert store[task_id].state is TaskState.RUNNING

    back = restart(store, 5.0)
    assert back.state(task_id) is TaskState.QUEUED and back.stats.tasks_redelivered == 1
    (new,) = dispatches(back.register(cap("c1"), 6.0))
    assert new.attempt == old.attempt + 1 and back.get(task_id).retries == 0
    back.complete(ok(old, "late"), 7.0)  # the attempt from before the crash reports at last
    assert back.stats.stale_messages == 1 and back.state(task_id) is TaskState.DISPATCHED
    back.complete(ok(new, "fresh"), 8.0)
    info = back.get(task_id)
    assert info.state is TaskState.SUCCEEDED and info.result is not None and info.result.value == "fresh"


def test_new_serials_continue_after_the_last_one_written() -> None:
    dist = journaled()
    first = submit(dist, 1.0)
    dist.register(cap("c1"), 1.0)
    store = written(dist)
    back = restart(store, 2.0)
    later = submit(back, 3.0)
    assert back._m._tasks[later].serial > store[first].serial  # listing cursors and FIFO keep their order


def test_deadlines_still_apply_and_a_past_one_expires_on_the_first_tick() -> None:
    dist = journaled()
    soon = submit(dist, 1.0, deadline=4.0)
    later = submit(dist, 1.0, deadline=100.0)
    back = restart(written(dist), 5.0)
    back.tick(5.0)
    assert back.state(soon) is TaskState.EXPIRED and back.state(later) is TaskState.QUEUED
    back.tick(100.0)
    assert back.state(later) is TaskState.EXPIRED


def test_dependencies_resolve_against_held_and_finished_parents() -> None:
    dist = journaled()
    done = submit(dist, 1.0, task_id="done")
    failing = submit(dist, 1.0, task_id="failing", timeout_ms=1)
    (d_done, _) = dispatches(dist.register(cap("c1"), 1.0))
    dist.complete(ok(d_done), 1.1)
    open_parent = submit(dist, 1.2, task_id="open")
    child = submit(dist, 1.3, task_id="child", depends_on=[done, open_parent])
    doomed = submit(dist, 1.3, task_id="doomed", depends_on=[failing])
    store = written(dist)
    store[failing] = dataclasses.replace(store[failing], state=TaskState.FAILED)  # it failed, and that was written
    store.pop(done)  # ... and the parent that succeeded is only known by its final state
    back = journaled()
    unfinished = [dataclasses.replace(t) for t in store.values() if not t.state.terminal]
    back.restore(unfinished, 2.0, parents={done: TaskState.SUCCEEDED, failing: TaskState.FAILED})
    assert back.state(child) is TaskState.PENDING and back.state(doomed) is TaskState.FAILED
    assert "was failed" in (back.get(doomed).error or pytest.fail()).message
    (d,) = [d for d in dispatches(back.register(cap("c2"), 3.0)) if d.task.task_id == open_parent]
    back.complete(ok(d), 4.0)
    assert back.state(child) in (TaskState.QUEUED, TaskState.DISPATCHED)


def test_a_pending_task_whose_parent_is_gone_fails() -> None:
    dist = journaled()
    parent = submit(dist, 1.0)
    child = submit(dist, 1.0, depends_on=[parent])
    store = written(dist)
    del store[parent]
    back = restart(store, 2.0)
    assert back.state(child) is TaskState.FAILED
    assert "no longer known" in (back.get(child).error or pytest.fail()).message


def test_a_retry_waits_out_its_backoff_after_a_restart() -> None:
    dist = journaled(retry_backoff_base_ms=10_000, retry_backoff_max_ms=10_000)
    task_id = submit(dist, 1.0)
    (d,) = dispatches(dist.register(cap("c1"), 1.0))
    fail = TaskResult(task_id=task_id, attempt=d.attempt, collector_id="c1", success=False)
    dist.complete(fail, 2.0)
    store = written(dist)
    retry_at = store[task_id].retry_at
    assert store[task_id].state is TaskState.RETRYING and retry_at is not None
    back = restart(store, 2.0)
    back.register(cap("c1"), 2.0)
    if retry_at > 2.0:
        assert back.state(task_id) is TaskState.RETRYING
    (again,) = dispatches(back.tick(retry_at))
    assert again.attempt == d.attempt + 1 and back.get(task_id).retries == 1


def test_restoring_writes_back_only_what_it_changed() -> None:
    dist = journaled()
    queued = submit(dist, 1.0)
    submit(dist, 1.0)
    dist.register(cap("c1", slots=1), 1.0)
    back = restart(written(dist), 2.0)
    changed = back.take_changes().tasks
    assert [t.state for t in changed] == [TaskState.QUEUED]  # the one that was in flight, not the other
    assert queued == changed[0].task_id


def test_an_idempotency_key_returns_the_first_task_within_its_ttl() -> None:
    dist = journaled(idempotency_ttl_s=60)
    first, _ = dist.submit(TaskRequest(operation="echo", idempotency_key="k"), 1.0, owner=1000)
    again, actions = dist.submit(TaskRequest(operation="echo", idempotency_key="k", payload=2), 30.0, owner=1000)
    assert again == first and not actions and dist.stats.tasks_submitted == 1
    other_uid, _ = dist.submit(TaskRequest(operation="echo", idempotency_key="k"), 30.0, owner=1001)
    assert other_uid != first  # a key is its submitter's own
    assert dist.find_idempotent("k", 1000, 30.0) == first
    later, _ = dist.submit(TaskRequest(operation="echo", idempotency_key="k"), 61.5, owner=1000)
    assert later != first  # past the ttl the key names a new task
    back = restart(written(dist), 62.0, idempotency_ttl_s=60)
    assert back.find_idempotent("k", 1000, 62.0) == later


def test_collector_records_carry_on_when_a_collector_registers_after_a_restart() -> None:
    dist = journaled()
    submit(dist, 1.0)
    (d,) = dispatches(dist.register(cap("c1"), 1.0))
    dist.complete(ok(d), 2.0)
    records = dict(dist.take_changes().collectors)
    back = journaled()
    back.restore([], 3.0, collectors=records)
    back.register(cap("c1"), 3.0)
    (info,) = back.collectors(3.0)
    assert info.tasks_completed == 1 and info.success_rate == 1.0


def test_held_requests_share_their_empty_parts_and_still_copy_like_pydantic_models() -> None:
    dist = journaled()
    a = dist._m._tasks[submit(dist, 1.0)].request
    b = dist._m._tasks[submit(dist, 1.0, metadata={"k": "v"})].request
    assert a.constraints is b.constraints and a.__pydantic_fields_set__ is b.__pydantic_fields_set__
    copied = a.model_copy(update={"priority": 9})
    assert copied.priority == 9 and "priority" in copied.__pydantic_fields_set__
    assert "priority" not in a.__pydantic_fields_set__ and a.priority == 5  # the shared set was not changed
    assert b.metadata == {"k": "v"} and a.metadata == {}

"""Delayed tasks (``not_before``) and the table of task-state transitions, driven without I/O."""

from __future__ import annotations

import pytest

from distributor import DistributorConfig, InvalidRequest, QueueFull, TaskDistributor, TaskRequest, TaskState
from distributor.tasks import TaskRecord
from distributor.transitions import BORN, MOVES, IllegalTransition, check
from tests.test_distributor import bad, cap, dispatches, ok
from tests.test_recovery import journaled, restart, written


def delayed(dist: TaskDistributor, now: float, not_before: float, **fields: object) -> str:
    task_id, _ = dist.submit(TaskRequest(operation="echo", not_before=not_before, **fields), now)
    return task_id


def test_a_delayed_task_is_scheduled_until_due_then_queued_exactly_then() -> None:
    dist = TaskDistributor()
    dist.register(cap("c1"), 0.0)
    tid = delayed(dist, 1.0, 11.0)
    assert dist.get(tid).state is TaskState.SCHEDULED and dist.get(tid).not_before == 11.0
    assert dist.next_timer() == 11.0
    assert dispatches(dist.tick(10.999)) == [] and dist.state(tid) is TaskState.SCHEDULED
    (d,) = dispatches(dist.tick(11.0))
    assert d.task.task_id == tid and dist.state(tid) is TaskState.DISPATCHED
    assert dist.get(tid).queued_at == 11.0  # its wait in the queue starts when it is due


def test_a_due_task_waits_in_its_queue_like_any_other_until_a_collector_has_room() -> None:
    dist = TaskDistributor()
    tid = delayed(dist, 0.0, 5.0)
    dist.tick(5.0)
    assert dist.state(tid) is TaskState.QUEUED
    assert dispatches(dist.register(cap("c1"), 6.0))[0].task.task_id == tid


def test_a_not_before_already_past_queues_the_task_at_once() -> None:
    dist = TaskDistributor()
    dist.register(cap("c1"), 0.0)
    tid = delayed(dist, 10.0, 3.0)
    assert dist.state(tid) is TaskState.DISPATCHED


def test_the_deadline_still_applies_to_a_scheduled_task() -> None:
    dist = TaskDistributor()
    with pytest.raises(InvalidRequest, match="not before the deadline"):
        delayed(dist, 0.0, 20.0, deadline=20.0)
    tid = delayed(dist, 0.0, 20.0, deadline=25.0)
    dist.tick(20.0)
    dist.tick(25.0)  # due at 20, then no collector took it
    info = dist.get(tid)
    assert info.state is TaskState.EXPIRED and info.error is not None and "while queued" in info.error.message
    assert dispatches(dist.register(cap("c1"), 26.0)) == []


def test_a_scheduled_task_can_be_cancelled_and_its_due_time_then_does_nothing() -> None:
    dist = TaskDistributor()
    dist.register(cap("c1"), 0.0)
    tid = delayed(dist, 0.0, 5.0)
    dist.cancel(tid, 1.0)
    assert dispatches(dist.tick(5.0)) == [] and dist.state(tid) is TaskState.CANCELLED


def test_a_delayed_task_with_parents_waits_for_them_and_then_for_its_time() -> None:
    dist = TaskDistributor()
    parent, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    early = delayed(dist, 0.0, 10.0, depends_on=[parent])
    late = delayed(dist, 0.0, 2.0, depends_on=[parent])
    assert dist.state(early) is TaskState.PENDING and dist.state(late) is TaskState.PENDING
    (d,) = dispatches(dist.register(cap("c1", slots=1), 1.0))
    actions = dist.complete(ok(d), 5.0)  # parent done at 5: past the late one's time, before the early one's
    assert [x.task.task_id for x in dispatches(actions)] == [late]
    assert dist.state(early) is TaskState.SCHEDULED
    dist.complete(ok(dispatches(actions)[0]), 6.0)
    assert dispatches(dist.tick(9.0)) == []
    assert [x.task.task_id for x in dispatches(dist.tick(10.0))] == [early]


def test_a_failed_parent_fails_a_delayed_child_before_its_time() -> None:
    dist = TaskDistributor(DistributorConfig(max_retries=0))
    parent, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    child = delayed(dist, 0.0, 100.0, depends_on=[parent])
    (d,) = dispatches(dist.register(cap("c1", slots=1), 1.0))
    dist.complete(bad(d), 2.0)
    assert dist.state(child) is TaskState.FAILED


def test_scheduled_tasks_count_against_the_queue_limits() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=2, max_queued_per_operation=2))
    delayed(dist, 0.0, 50.0)
    dist.submit(TaskRequest(operation="echo"), 0.0)
    with pytest.raises(QueueFull):
        delayed(dist, 0.0, 50.0)
    snap = dist.snapshot(1.0)
    assert (snap["tasks_scheduled"], snap["tasks_queued"], snap["tasks_pending"]) == (1, 1, 0)
    dist.tick(50.0)
    snap = dist.snapshot(50.0)
    assert (snap["tasks_scheduled"], snap["tasks_queued"]) == (0, 2)


def test_a_scheduled_task_survives_a_restart_and_fires_once_when_due() -> None:
    dist = journaled()
    tid = delayed(dist, 0.0, 30.0)
    store = written(dist)
    assert store[tid].state is TaskState.SCHEDULED
    back = restart(store, 10.0)
    assert back.state(tid) is TaskState.SCHEDULED and back.next_timer() == 30.0
    back.register(cap("c1"), 11.0)
    (d,) = dispatches(back.tick(30.0))
    assert d.task.task_id == tid and d.attempt == 1
    # a restart after its time has passed queues it at once
    again = restart(store, 40.0)
    assert again.state(tid) is TaskState.QUEUED


def test_every_state_not_final_can_reach_a_final_one_and_final_ones_lead_nowhere() -> None:
    for state, moves in MOVES.items():
        if state.terminal:
            assert moves == frozenset()
        else:
            assert {TaskState.CANCELLED, TaskState.EXPIRED} <= moves
    assert set(MOVES) == set(TaskState)
    assert not any(s in BORN for s in (TaskState.DISPATCHED, TaskState.RUNNING, TaskState.SUCCEEDED))


def test_an_illegal_transition_raises_and_names_both_states() -> None:
    with pytest.raises(IllegalTransition, match="from succeeded to queued"):
        check(TaskState.SUCCEEDED, TaskState.QUEUED)
    with pytest.raises(IllegalTransition, match="from birth to running"):
        check(None, TaskState.RUNNING)
    with pytest.raises(IllegalTransition, match="from scheduled to dispatched"):
        check(TaskState.SCHEDULED, TaskState.DISPATCHED)


def test_the_machine_refuses_an_illegal_move_of_a_real_task() -> None:
    dist = TaskDistributor()
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    task: TaskRecord = dist._m._tasks[tid]
    with pytest.raises(IllegalTransition):
        dist._m._to(task, TaskState.SUCCEEDED)
    assert dist.state(tid) is TaskState.QUEUED and dist._m.counts[TaskState.QUEUED] == 1

"""The distributor driven without I/O: an injected clock, actions inspected directly."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from distributor import (
    Action,
    Cancel,
    CollectorCapability,
    Dispatch,
    DistributorConfig,
    ErrorInfo,
    Finished,
    InvalidRequest,
    InvalidState,
    Publish,
    QueueFull,
    TaskDistributor,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
    UnknownCollector,
    UnknownTask,
)
from distributor.history import RECORD_OVERHEAD


def cap(cid: str, ops: tuple[str, ...] = ("echo",), slots: int = 2, **kw: object) -> CollectorCapability:
    return CollectorCapability(
        collector_id=cid, collector_type="demo", supported_operations=list(ops), max_concurrent_tasks=slots, **kw
    )


def dispatches(actions: list[Action]) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def ok(d: Dispatch, value: object = None) -> TaskResult:
    return TaskResult(
        task_id=d.task.task_id or "", attempt=d.attempt, collector_id=d.collector_id, success=True, value=value
    )


def bad(d: Dispatch, message: str = "boom") -> TaskResult:
    return TaskResult(
        task_id=d.task.task_id or "",
        attempt=d.attempt,
        collector_id=d.collector_id,
        success=False,
        error=ErrorInfo(type="RuntimeError", message=message),
    )


@pytest.fixture
def dist() -> TaskDistributor:
    return TaskDistributor(DistributorConfig(max_retries=2, heartbeat_timeout_s=30), rng=random.Random(7))


def test_a_task_is_dispatched_and_its_result_stored(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", payload={"x": 1}), 1.0)
    (d,) = dispatches(actions)
    assert (d.collector_id, d.attempt, d.task.payload) == ("c1", 1, {"x": 1})
    done = dist.complete(ok(d, {"x": 1}), 2.0)
    assert Finished(tid) in done
    info = dist.get(tid)
    assert info.state is TaskState.SUCCEEDED
    assert info.result is not None and info.result.value == {"x": 1}


def test_a_task_with_no_collector_waits_and_runs_when_one_registers(dist: TaskDistributor) -> None:
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    assert dispatches(actions) == []
    assert dist.get(tid).state is TaskState.QUEUED
    (d,) = dispatches(dist.register(cap("c1"), 5.0))
    assert d.task.task_id == tid


def test_least_loaded_spreads_work_over_collectors(dist: TaskDistributor) -> None:
    dist.register(cap("c1", slots=4), 0.0)
    dist.register(cap("c2", slots=4), 0.0)
    picked: Counter[str] = Counter()
    for _ in range(8):
        (d,) = dispatches(dist.submit(TaskRequest(operation="echo"), 1.0)[1])
        picked[d.collector_id] += 1
    assert picked == {"c1": 4, "c2": 4}


def test_capacity_is_never_exceeded(dist: TaskDistributor) -> None:
    dist.register(cap("c1", slots=2), 0.0)
    sent = [dispatches(dist.submit(TaskRequest(operation="echo"), 1.0)[1]) for _ in range(5)]
    assert [len(s) for s in sent] == [1, 1, 0, 0, 0]
    assert len(dist.queue) == 3
    (first,) = sent[0]
    assert len(dispatches(dist.complete(ok(first), 2.0))) == 1


def test_only_collectors_supporting_the_operation_get_it(dist: TaskDistributor) -> None:
    dist.register(cap("e", ops=("echo",)), 0.0)
    dist.register(cap("s", ops=("sleep",)), 0.0)
    (d,) = dispatches(dist.submit(TaskRequest(operation="sleep"), 1.0)[1])
    assert d.collector_id == "s"


def test_higher_priority_first_and_fifo_within_a_priority(dist: TaskDistributor) -> None:
    ids = [dist.submit(TaskRequest(operation="echo", priority=p), 0.0)[0] for p in (5, 9, 5, 1, 9)]
    (d,) = dispatches(dist.register(cap("c1", slots=1), 1.0))
    order = [d.task.task_id]
    while nxt := dispatches(dist.complete(ok(d), 2.0)):
        (d,) = nxt
        order.append(d.task.task_id)
    assert order == [ids[1], ids[4], ids[0], ids[2], ids[3]]


def test_priority_levels_a_collector_does_not_accept_are_not_sent_to_it(dist: TaskDistributor) -> None:
    dist.register(cap("low", priority_levels=[1, 2, 3]), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", priority=8), 1.0)
    assert dispatches(actions) == []
    (d,) = dispatches(dist.submit(TaskRequest(operation="echo", priority=2), 1.0)[1])
    assert d.collector_id == "low" and d.task.priority == 2
    assert dist.get(tid).state is TaskState.QUEUED


def test_one_operation_without_collectors_does_not_delay_another(dist: TaskDistributor) -> None:
    for _ in range(3):
        dist.submit(TaskRequest(operation="nobody", priority=10), 0.0)
    dist.register(cap("c1", ops=("echo",)), 0.0)
    assert len(dispatches(dist.submit(TaskRequest(operation="echo", priority=1), 1.0)[1])) == 1


def test_queue_full_rejects_new_submissions() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=2))
    dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.submit(TaskRequest(operation="sleep"), 0.0)
    with pytest.raises(QueueFull, match="max_queue_size"):
        dist.submit(TaskRequest(operation="compute"), 0.0)
    assert dist.snapshot(0.0)["tasks_submitted"] == 2


def test_an_unserved_operation_cannot_fill_the_queue_for_the_others() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=10))
    for _ in range(5):  # the default per-operation limit: half of max_queue_size
        dist.submit(TaskRequest(operation="nobody"), 0.0)
    with pytest.raises(QueueFull, match=r"operation 'nobody' .* 5 tasks .*max_queued_per_operation"):
        dist.submit(TaskRequest(operation="nobody"), 0.0)
    dist.register(cap("c1"), 1.0)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 1.0)
    assert [d.task.task_id for d in dispatches(actions)] == [tid]


def test_unfinished_tasks_are_bounded_in_bytes_until_they_finish() -> None:
    dist = TaskDistributor(DistributorConfig(max_queued_bytes=3000, max_queue_size=10, max_queued_per_operation=10))
    first, _ = dist.submit(TaskRequest(operation="nobody"), 0.0, size=2000)
    dist.submit(TaskRequest(operation="echo"), 0.0, size=1000)
    with pytest.raises(QueueFull, match=r"hold 3000 bytes; a task of 1 more exceeds max_queued_bytes=3000"):
        dist.submit(TaskRequest(operation="echo"), 0.0, size=1)
    dist.cancel(first, 1.0)  # a finished task gives its bytes back
    dist.submit(TaskRequest(operation="echo"), 1.0, size=2000)
    assert dist.snapshot(1.0)["unfinished_bytes"] == 3000


def test_one_operation_cannot_hold_every_byte_of_the_queue() -> None:
    dist = TaskDistributor(DistributorConfig(max_queued_bytes=4000, max_queue_size=10))  # a share of 5/10
    dist.submit(TaskRequest(operation="nobody"), 0.0, size=2000)
    with pytest.raises(QueueFull, match=r"operation 'nobody' already holds 2000 bytes.* its share 2000"):
        dist.submit(TaskRequest(operation="nobody"), 0.0, size=1)
    dist.submit(TaskRequest(operation="echo"), 0.0, size=2000)
    assert dist.snapshot(0.0)["unfinished_bytes"] == 4000


def test_pending_tasks_count_against_their_operations_limit() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=10, max_queued_per_operation=2))
    parent, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    child, _ = dist.submit(TaskRequest(operation="sleep", depends_on=[parent]), 0.0)
    dist.submit(TaskRequest(operation="sleep", depends_on=[parent]), 0.0)
    with pytest.raises(QueueFull, match="'sleep'"):
        dist.submit(TaskRequest(operation="sleep"), 0.0)
    dist.cancel(child, 1.0)  # a pending task that stops frees its place
    dist.submit(TaskRequest(operation="sleep"), 1.0)
    assert dist.snapshot(1.0)["tasks_pending"] == 1


def test_a_failed_attempt_is_retried_then_the_task_fails_with_the_last_error(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    (d,) = dispatches(actions)
    now = 0.0
    for attempt in range(1, 4):
        assert d.attempt == attempt
        dist.complete(bad(d, f"boom {attempt}"), now)
        if attempt == 3:
            break
        assert dist.get(tid).state is TaskState.RETRYING
        now += 20.0  # past any backoff
        dist.heartbeat("c1", now)
        (d,) = dispatches(dist.tick(now))
    info = dist.get(tid)
    assert info.state is TaskState.FAILED
    assert info.error == ErrorInfo(type="RuntimeError", message="boom 3")
    assert info.retries == 2


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    dist = TaskDistributor(DistributorConfig(retry_backoff_base_ms=100, retry_backoff_max_ms=30_000))
    for retry in range(1, 15):
        cap_s = min(30.0, 0.1 * 2 ** (retry - 1))
        samples = [dist.backoff_s(retry) for _ in range(200)]
        assert all(0.0 <= s <= cap_s for s in samples)
        assert max(samples) > cap_s / 2  # jitter spans the range, not a constant


def test_a_retry_waits_for_its_backoff(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    _, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    (d,) = dispatches(actions)
    dist.complete(bad(d), 10.0)
    assert dispatches(dist.tick(10.0)) == []  # the backoff is uniform in (0, 0.1] s
    assert len(dispatches(dist.tick(10.11))) == 1


def test_attempt_timeout_cancels_on_the_collector_and_counts_as_a_failure(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", timeout_ms=1000), 0.0)
    assert len(dispatches(actions)) == 1
    assert dist.tick(0.9) == []
    actions = dist.tick(1.0)
    assert Cancel("c1", tid, 1, "timeout") in actions
    info = dist.get(tid)
    assert info.state is TaskState.RETRYING
    assert info.error is not None and info.error.type == "Timeout"


def test_a_stale_result_never_changes_the_task(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", timeout_ms=1000), 0.0)
    (first,) = dispatches(actions)
    dist.tick(1.0)  # attempt 1 times out
    (second,) = dispatches(dist.tick(5.0))  # past the first retry's backoff
    assert second.attempt == 2
    assert dist.complete(ok(first, "late"), 5.5) == []
    assert dist.get(tid).state is TaskState.DISPATCHED
    dist.complete(ok(second, "fresh"), 6.0)
    result = dist.get(tid).result
    assert result is not None and result.value == "fresh"
    assert dist.snapshot(0.0)["stale_messages"] == 1


def test_deadline_expires_a_queued_task_with_a_clear_reason(dist: TaskDistributor) -> None:
    tid, _ = dist.submit(TaskRequest(operation="echo", deadline=10.0), 0.0)
    assert Finished(tid) in dist.tick(10.0)
    info = dist.get(tid)
    assert info.state is TaskState.EXPIRED
    assert info.error is not None and "no eligible collector" in info.error.message
    assert len(dist.queue) == 0


def test_deadline_expires_a_running_task_and_cancels_it(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="echo", deadline=10.0, timeout_ms=60_000), 0.0)
    actions = dist.tick(10.0)
    assert Cancel("c1", tid, 1, "deadline") in actions
    assert dist.get(tid).state is TaskState.EXPIRED


def test_a_deadline_in_the_past_is_rejected(dist: TaskDistributor) -> None:
    with pytest.raises(InvalidRequest):
        dist.submit(TaskRequest(operation="echo", deadline=5.0), 10.0)


def test_a_dead_collector_s_tasks_are_requeued_without_using_a_retry(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", timeout_ms=600_000), 0.0)
    dist.register(cap("c2"), 20.0)
    dist.heartbeat("c2", 40.0)
    actions = dist.tick(31.0)  # c1 silent since 0.0
    (d,) = dispatches(actions)
    assert (d.collector_id, d.attempt) == ("c2", 2)
    assert any(isinstance(a, Publish) and a.topic == "events.collector.unhealthy.demo" for a in actions)
    assert dist.get(tid).retries == 0


def test_a_collector_coming_back_is_told_to_cancel_its_orphaned_attempts(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="echo", timeout_ms=600_000), 0.0)
    dist.tick(31.0)
    actions = dist.heartbeat("c1", 32.0)
    assert Cancel("c1", tid, 1, "reassigned") in actions
    (d,) = dispatches(actions)  # and it can take the requeued task again
    assert d.attempt == 2


def test_deregister_requeues_in_flight_tasks(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.deregister("c1", 1.0)
    assert dist.get(tid).state is TaskState.QUEUED
    with pytest.raises(UnknownCollector):
        dist.heartbeat("c1", 2.0)


def test_cancel_a_queued_and_a_running_task(dist: TaskDistributor) -> None:
    dist.register(cap("c1", slots=1), 0.0)
    running, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    queued, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.cancel(queued, 1.0)
    assert dist.get(queued).state is TaskState.CANCELLED
    actions = dist.cancel(running, 1.0)
    assert Cancel("c1", running, 1, "cancelled") in actions
    assert dist.get(running).state is TaskState.CANCELLED
    with pytest.raises(InvalidState):
        dist.cancel(running, 2.0)
    with pytest.raises(UnknownTask):
        dist.cancel("nope", 2.0)


def test_drain_stops_new_work_and_undrain_resumes_it(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    dist.drain("c1", 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 1.0)
    assert dispatches(actions) == []
    (d,) = dispatches(dist.undrain("c1", 2.0))
    assert d.task.task_id == tid


def test_finished_tasks_beyond_the_history_byte_budget_are_forgotten_oldest_first() -> None:
    dist = TaskDistributor(DistributorConfig(max_finished_bytes=3 * (RECORD_OVERHEAD + 1000)))
    dist.register(cap("c1", slots=10), 0.0)
    ids = []
    for n in range(4):
        tid, actions = dist.submit(TaskRequest(operation="echo", payload="x" * 1000), float(n))
        (d,) = dispatches(actions)
        dist.complete(ok(d, "y" * 990), float(n), size=1000)
        ids.append(tid)
    dist.tick(10.0)  # a task finished in the current call is kept until the next one
    with pytest.raises(UnknownTask, match=r"evicted from the history.*max_finished_bytes"):
        dist.get(ids[0])
    assert [dist.get(tid).state for tid in ids[1:]] == [TaskState.SUCCEEDED] * 3
    assert dist.snapshot(10.0)["tasks_evicted"] == 1


def test_a_finished_task_keeps_its_result_but_not_its_payload() -> None:
    dist = TaskDistributor()
    dist.register(cap("c1"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo", payload={"big": "x" * 1000}), 0.0)
    (d,) = dispatches(actions)
    dist.complete(ok(d, "done"), 1.0, size=100)
    record = dist._m._tasks[tid]
    assert (record.request.payload, record.result and record.result.value) == (None, "done")
    assert dist.get(tid).result == ok(d, "done")


def test_an_unknown_id_is_told_apart_from_an_evicted_one_as_far_as_known() -> None:
    dist = TaskDistributor(DistributorConfig(max_finished_tasks=1))
    with pytest.raises(UnknownTask, match="no finished task has been evicted"):
        dist.get("nope")
    for n in range(3):
        dist.cancel(dist.submit(TaskRequest(operation="echo"), float(n))[0], float(n))
    with pytest.raises(UnknownTask, match=r"evicted from the history .*max_finished_tasks=1"):
        dist.get("nope")


def test_finished_tasks_beyond_the_history_limit_are_forgotten() -> None:
    dist = TaskDistributor(DistributorConfig(max_finished_tasks=2))
    ids = [dist.submit(TaskRequest(operation="echo"), 0.0)[0] for _ in range(3)]
    for tid in ids:
        dist.cancel(tid, 1.0)
    with pytest.raises(UnknownTask):
        dist.get(ids[0])
    assert dist.get(ids[2]).state is TaskState.CANCELLED


def test_a_task_s_view_is_what_validating_its_fields_would_build(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    done, _ = dist.submit(TaskRequest(operation="echo", constraints=["skill>=0"]), 0.0)
    dist.complete(TaskResult(task_id=done, attempt=1, collector_id="c1", success=True, value=[1]), 0.1)
    queued, _ = dist.submit(TaskRequest(operation="other", depends_on=[done]), 0.2)
    for task_id in (done, queued):
        info = dist.get(task_id)
        assert info.model_fields_set == set(TaskInfo.model_fields) == set(info.__dict__)
        again = TaskInfo.model_validate(info.model_dump())
        assert again == info and again.model_dump() == info.model_dump()
        assert dist.state(task_id) is info.state
    with pytest.raises(UnknownTask):
        dist.state("nope")


def test_a_result_without_acceptance_moves_the_task_through_running(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    assert dist.get(tid).state is TaskState.DISPATCHED
    done = dist.complete(TaskResult(task_id=tid, attempt=1, collector_id="c1", success=True, value=1), 0.1)
    topics = [a.topic for a in done if isinstance(a, Publish)]
    assert topics[:2] == ["events.task.running.echo", "events.task.succeeded.echo"]
    assert dist.get(tid).state is TaskState.SUCCEEDED


def test_progress_and_acceptance_are_published(dist: TaskDistributor) -> None:
    dist.register(cap("c1"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    running = dist.accepted("c1", tid, 1, 0.1)
    assert dist.get(tid).state is TaskState.RUNNING
    assert [a.topic for a in running if isinstance(a, Publish)] == ["events.task.running.echo"]
    progress = dist.progress("c1", tid, 1, 0.5, "half", 0.2)
    (p,) = progress
    assert isinstance(p, Publish) and p.body["fraction"] == 0.5 and p.body["message"] == "half"

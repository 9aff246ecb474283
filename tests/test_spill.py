"""Handing tasks to other hosts (a cluster's overflow mode) in the sans-I/O distributor."""

from __future__ import annotations

from distributor import DistributorConfig, ErrorInfo, TaskDistributor, TaskRequest, TaskResult, TaskState
from distributor.actions import Action, Cancel, Spill
from distributor.spill import REMOTE
from tests.test_distributor import cap, dispatches
from tests.test_recovery import restart, written


def spills(actions: list[Action]) -> list[Spill]:
    return [a for a in actions if isinstance(a, Spill)]


def cluster(**config: object) -> TaskDistributor:
    config = {"spill_after_s": 0.5, "spill_grace_s": 5.0, **config}
    dist = TaskDistributor(DistributorConfig(**config))  # type: ignore[arg-type]
    dist.set_remote_offers(frozenset({"echo"}), 0.0)
    return dist


def remote(task_id: str, attempt: int, success: bool = True) -> TaskResult:
    error = None if success else ErrorInfo(type="RuntimeError", message="no")
    return TaskResult(task_id=task_id, attempt=attempt, collector_id="cb", success=success, value=7, error=error)


def test_a_task_no_local_collector_takes_goes_to_another_host_and_its_result_comes_back() -> None:
    dist = cluster()
    tid, _ = dist.submit(TaskRequest(operation="echo", payload=7), 0.0)
    assert spills(dist.tick(0.49)) == []
    (s,) = spills(dist.tick(0.5))
    assert (s.task.task_id, s.attempt) == (tid, 1)
    info = dist.get(tid)
    assert info.state is TaskState.DISPATCHED and info.collector_id == REMOTE
    assert dist.snapshot(0.5)["tasks_remote"] == 1 and dist.snapshot(0.5)["tasks_spilled"] == 1
    dist.remote_result(remote(tid, 1), "b", 0.8)
    info = dist.get(tid)
    assert info.state is TaskState.SUCCEEDED and info.collector_id == "cb@b" and info.result is not None
    assert dist.snapshot(0.8)["tasks_remote"] == 0


def test_without_spilling_or_a_host_offering_the_operation_the_task_stays_queued() -> None:
    off = TaskDistributor()
    tid, _ = off.submit(TaskRequest(operation="echo"), 0.0)
    assert spills(off.tick(100.0)) == [] and off.state(tid) is TaskState.QUEUED
    dist = cluster()
    other, _ = dist.submit(TaskRequest(operation="sleep"), 0.0)
    assert spills(dist.tick(5.0)) == [] and dist.state(other) is TaskState.QUEUED
    (s,) = spills(dist.set_remote_offers(frozenset({"echo", "sleep"}), 5.1))  # a host offering it joined
    assert s.task.task_id == other
    young, _ = dist.submit(TaskRequest(operation="sleep"), 6.0)
    dist.set_remote_offers(frozenset({"echo"}), 6.1)
    assert spills(dist.set_remote_offers(frozenset({"echo", "sleep"}), 6.2)) == []  # not waited long enough
    (s,) = spills(dist.tick(6.5))
    assert s.task.task_id == young


def test_spilling_at_once_with_nobody_offering_the_operation_waits_without_spinning() -> None:
    dist = TaskDistributor(DistributorConfig(spill_after_s=0.0))
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    for now in (0.0, 0.05, 0.1):
        assert spills(dist.tick(now)) == []
    assert dist.state(tid) is TaskState.QUEUED and dist.next_timer() is None


def test_a_task_a_local_collector_takes_in_time_is_not_spilled() -> None:
    dist = cluster()
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    (d,) = dispatches(dist.register(cap("c1"), 0.2))
    assert spills(dist.tick(1.0)) == [] and dist.get(tid).collector_id == "c1" and d.attempt == 1


def test_a_remote_attempt_that_times_out_is_retried_and_its_late_result_is_stale() -> None:
    dist = cluster(max_retries=2)
    tid, _ = dist.submit(TaskRequest(operation="echo", timeout_ms=1000), 0.0)
    dist.tick(0.5)
    dist.tick(0.5 + 1.0 + 5.0)  # timeout_ms + spill_grace_s
    info = dist.get(tid)
    assert info.state is TaskState.RETRYING and info.retries == 1 and dist.snapshot(7.0)["tasks_remote"] == 0
    dist.tick(30.0)  # retried: queued, then spilled again as attempt 2
    (s,) = spills(dist.tick(30.5)) or spills(dist.tick(31.0))
    assert s.attempt == 2
    dist.remote_result(remote(tid, 1), "b", 31.5)  # the first host finished after all
    assert dist.state(tid) is TaskState.DISPATCHED and dist.snapshot(31.5)["stale_messages"] == 1
    dist.remote_result(remote(tid, 2), "c", 32.0)
    assert dist.get(tid).state is TaskState.SUCCEEDED and dist.get(tid).collector_id == "cb@c"


def test_a_failed_remote_attempt_uses_a_retry_and_an_unsent_one_does_not() -> None:
    dist = cluster(max_retries=1)
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.tick(0.5)
    dist.remote_unsent(tid, 1, 0.6)  # NATS refused it: queued here again
    assert dist.state(tid) is TaskState.QUEUED and dist.get(tid).retries == 0
    (s,) = spills(dist.tick(1.1))
    dist.remote_result(remote(tid, s.attempt, success=False), "b", 1.2)
    assert dist.state(tid) is TaskState.RETRYING and dist.get(tid).retries == 1


def test_cancelling_a_spilled_task_ends_its_remote_attempt_and_asks_the_cluster_to_stop_it() -> None:
    dist = cluster()
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.tick(0.5)
    actions = dist.cancel(tid, 0.6)
    assert [a for a in actions if isinstance(a, Cancel)] == [Cancel(REMOTE, tid, 1, "cancelled")]
    assert dist.state(tid) is TaskState.CANCELLED and dist.snapshot(0.6)["tasks_remote"] == 0
    dist.remote_result(remote(tid, 1), "b", 0.7)
    assert dist.state(tid) is TaskState.CANCELLED


def test_a_spilled_attempt_goes_on_across_a_restart_and_its_result_is_taken() -> None:
    dist = cluster()
    dist.journal = True
    tid, _ = dist.submit(TaskRequest(operation="echo", timeout_ms=1000), 0.0)
    (s,) = spills(dist.tick(0.5))
    store = written(dist)
    back = restart(store, 2.0, spill_after_s=0.5, spill_grace_s=5.0)
    info = back.get(tid)
    assert (info.state, info.collector_id, info.attempt) == (TaskState.DISPATCHED, REMOTE, 1)
    assert back.snapshot(2.0)["tasks_remote"] == 1 and spills(back.tick(2.1)) == []
    back.remote_result(remote(tid, s.attempt), "b", 3.0)  # sent while this host was down: read after
    assert back.get(tid).state is TaskState.SUCCEEDED and back.snapshot(3.0)["tasks_remote"] == 0


def test_a_restored_spilled_attempt_that_never_answers_times_out_and_is_retried() -> None:
    dist = cluster()
    dist.journal = True
    tid, _ = dist.submit(TaskRequest(operation="echo", timeout_ms=1000), 0.0)
    spills(dist.tick(0.5))
    back = restart(written(dist), 2.0, spill_after_s=0.5, spill_grace_s=5.0)
    back.set_remote_offers(frozenset({"echo"}), 2.0)
    back.tick(7.9)
    assert back.get(tid).state is TaskState.DISPATCHED  # a whole timeout again from the restart: 2 + 1 + 5
    back.tick(8.1)
    assert back.get(tid).state is TaskState.RETRYING and back.snapshot(8.1)["tasks_remote"] == 0


def test_without_spilling_a_restored_spilled_attempt_is_over_and_the_task_queued() -> None:
    dist = cluster()
    dist.journal = True
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    spills(dist.tick(0.5))
    back = restart(written(dist), 2.0)
    info = back.get(tid)
    assert info.state is TaskState.QUEUED and back.snapshot(2.0)["tasks_remote"] == 0


def test_a_task_id_is_a_key_of_the_results_bucket() -> None:
    from eventbus.cluster_results import result_key

    assert result_key("3f2a9c") == "3f2a9c" and result_key("sched.beat.1700000000000") == "sched.beat.1700000000000"
    assert result_key("t:a:2") == "t=a=2"
    for odd in ("a..b", ".a", "a.", "..."):
        key = result_key(odd)
        assert key.startswith("h") and len(key) == 65 and key != result_key(odd + "x")


def test_with_spill_after_zero_a_task_no_local_collector_takes_spills_in_the_event_that_queued_it() -> None:
    dist = cluster(spill_after_s=0.0)
    dist.register(cap("c1", slots=1), 0.0)
    first, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    assert spills(actions) == [] and dist.get(first).collector_id == "c1"  # local room: taken here
    second, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    (s,) = spills(actions)  # no room left here: handed over at once, no timer tick needed
    assert s.task.task_id == second and dist.get(second).collector_id == REMOTE


def test_in_shared_mode_a_task_spills_before_local_collectors_are_tried() -> None:
    dist = cluster(spill_after_s=0.0, spill_first=True)
    dist.register(cap("c1", slots=4), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    assert dispatches(actions) == [] and [s.task.task_id for s in spills(actions)] == [tid]


def test_in_shared_mode_a_task_nobody_offers_spills_once_a_host_offers_it() -> None:
    dist = TaskDistributor(DistributorConfig(spill_after_s=0.0, spill_first=True))
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    assert spills(actions) == [] and dist.state(tid) is TaskState.QUEUED
    (s,) = spills(dist.set_remote_offers(frozenset({"echo"}), 1.0))
    assert s.task.task_id == tid


def test_a_task_another_host_spilled_here_runs_here_and_never_spills_again() -> None:
    dist = cluster(spill_after_s=0.0, spill_first=True)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0, local=True)
    assert spills(actions) == [] and spills(dist.tick(5.0)) == []
    assert spills(dist.set_remote_offers(frozenset(), 6.0)) == []
    assert spills(dist.set_remote_offers(frozenset({"echo"}), 6.0)) == []  # offered again: still not spilled
    (d,) = dispatches(dist.register(cap("c1"), 7.0))
    assert d.task.task_id == tid and dist.get(tid).collector_id == "c1"


def test_with_spill_after_zero_a_spill_that_could_not_be_handed_over_tries_again_a_second_later() -> None:
    dist = cluster(spill_after_s=0.0)
    tid, actions = dist.submit(TaskRequest(operation="echo"), 0.0)
    (s,) = spills(actions)
    assert spills(dist.remote_unsent(tid, s.attempt, 0.1)) == []  # not again at once: NATS may be failing fast
    assert dist.state(tid) is TaskState.QUEUED and spills(dist.tick(1.0)) == []
    (again,) = spills(dist.tick(1.1))
    assert again.task.task_id == tid and again.attempt == s.attempt + 1

"""Priority aging (opt-in): bounded waits for low priorities under a stream of high ones, strict order when off."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from distributor import Dispatch, DistributorConfig, TaskDistributor, TaskRequest, TaskState
from distributor.models import PRIORITY_MAX
from tests.test_distributor import cap, dispatches, ok

SERVICE_S = 1.0  # every attempt runs this long


def stream(
    aging_interval_s: float | None, *, low: int, high: int, backlog: int, horizon_s: float, max_boost: int = 9
) -> float | None:
    """One collector with one slot; ``backlog`` high tasks and one low one at 0, then one high task per
    SERVICE_S, each running SERVICE_S (the queue never empties). When is the low task dispatched?"""
    dist = TaskDistributor(DistributorConfig(aging_interval_s=aging_interval_s, aging_max_boost=max_boost))
    for _ in range(backlog):
        dist.submit(TaskRequest(operation="echo", priority=high), 0.0)
    low_id, _ = dist.submit(TaskRequest(operation="echo", priority=low), 0.0)
    running: Dispatch | None = None
    (running,) = dispatches(dist.register(cap("c1", slots=1), 0.0))
    now = 0.0
    while now < horizon_s:
        if running.task.task_id == low_id:
            return now
        now += SERVICE_S
        dist.submit(TaskRequest(operation="echo", priority=high), now)
        (running,) = dispatches(dist.complete(ok(running), now))
    return None


@settings(max_examples=60, deadline=None)
@given(
    interval=st.floats(0.5, 5.0),
    low=st.integers(1, 9),
    gap=st.integers(1, 9),
    backlog=st.integers(0, 20),
)
def test_with_aging_a_low_priority_task_is_dispatched_within_a_bound(
    interval: float, low: int, gap: int, backlog: int
) -> None:
    high = min(PRIORITY_MAX, low + gap)
    # it reaches the highest level after (10 - low) intervals; there only the tasks queued before it go first
    bound = (PRIORITY_MAX - low) * interval + (backlog + 2) * SERVICE_S
    dispatched = stream(interval, low=low, high=high, backlog=backlog, horizon_s=bound + 50)
    assert dispatched is not None and dispatched <= bound, (dispatched, bound)


@settings(max_examples=20, deadline=None)
@given(low=st.integers(1, 9), gap=st.integers(1, 9), backlog=st.integers(1, 5))
def test_without_aging_a_low_priority_task_waits_as_long_as_higher_ones_keep_coming(
    low: int, gap: int, backlog: int
) -> None:
    high = min(PRIORITY_MAX, low + gap)
    assert stream(None, low=low, high=high, backlog=backlog, horizon_s=300) is None


def test_a_boost_too_small_to_reach_the_stream_leaves_the_task_waiting() -> None:
    # documented: only a boost that spans the gap makes a priority starvation-free
    assert stream(1.0, low=1, high=10, backlog=1, horizon_s=300, max_boost=8) is None
    assert stream(1.0, low=1, high=10, backlog=1, horizon_s=300, max_boost=9) is not None


@settings(max_examples=60, deadline=None)
@given(priorities=st.lists(st.integers(1, 10), min_size=1, max_size=40))
def test_without_aging_tasks_are_taken_by_priority_then_in_order(priorities: list[int]) -> None:
    dist = TaskDistributor()
    ids = [dist.submit(TaskRequest(operation="echo", priority=p), float(i))[0] for i, p in enumerate(priorities)]
    order: list[str] = []
    (d,) = dispatches(dist.register(cap("c1", slots=1), 1000.0))
    now = 1000.0
    while True:
        order.append(d.task.task_id or "")
        now += 100.0  # long waits: with aging on this would reorder them
        nxt = dispatches(dist.complete(ok(d), now))
        if not nxt:
            break
        (d,) = nxt
    expected = [
        tid for _, _, tid in sorted((-p, i, tid) for i, (p, tid) in enumerate(zip(priorities, ids, strict=True)))
    ]
    assert order == expected


def test_the_effective_priority_is_shown_beside_the_own_one_and_capped() -> None:
    dist = TaskDistributor(DistributorConfig(aging_interval_s=10.0, aging_max_boost=3))
    tid, _ = dist.submit(TaskRequest(operation="echo", priority=2), 0.0)
    assert (dist.get(tid, 0.0).priority, dist.get(tid, 0.0).effective_priority) == (2, 2)
    assert dist.get(tid, 25.0).effective_priority == 4
    assert dist.get(tid, 1000.0).effective_priority == 5  # capped at 3 levels
    (info,) = [i for _, i in dist.tasks_before(None, now=1000.0)]
    assert info.effective_priority == 5
    dist.register(cap("c1"), 1000.0)
    assert dist.get(tid).state is TaskState.DISPATCHED and dist.get(tid).effective_priority is None


def test_within_an_effective_priority_the_older_task_goes_first() -> None:
    dist = TaskDistributor(DistributorConfig(aging_interval_s=10.0))
    old_low, _ = dist.submit(TaskRequest(operation="echo", priority=4), 0.0)  # 4 + 1 at 10 s
    dist.submit(TaskRequest(operation="echo", priority=5), 5.0)
    (d,) = dispatches(dist.register(cap("c1", slots=1), 10.0))
    assert d.task.task_id == old_low  # both at 5: the one queued first
    dist2 = TaskDistributor(DistributorConfig(aging_interval_s=10.0))
    dist2.submit(TaskRequest(operation="echo", priority=4), 0.0)
    high2, _ = dist2.submit(TaskRequest(operation="echo", priority=5), 5.0)
    (d2,) = dispatches(dist2.register(cap("c1", slots=1), 9.9))
    assert d2.task.task_id == high2  # not aged yet: strict order


def test_aging_applies_across_operations_when_a_freed_slot_picks_the_next_operation() -> None:
    dist = TaskDistributor(DistributorConfig(aging_interval_s=1.0))
    low, _ = dist.submit(TaskRequest(operation="a", priority=1), 0.0)
    dist.submit(TaskRequest(operation="b", priority=5), 5.0)
    (d,) = dispatches(dist.register(cap("c1", ops=("a", "b"), slots=1), 6.0))
    assert d.task.task_id == low  # 1 + 6 levels beats 5 + 1


def test_reconfiguring_aging_takes_effect_at_once() -> None:
    dist = TaskDistributor()
    low, _ = dist.submit(TaskRequest(operation="echo", priority=1), 0.0)
    dist.submit(TaskRequest(operation="echo", priority=9), 50.0)
    dist.reconfigure(DistributorConfig(aging_interval_s=5.0), 100.0)
    assert dist.get(low, 100.0).effective_priority == 10
    (d,) = dispatches(dist.register(cap("c1", slots=1), 100.0))
    assert d.task.task_id == low

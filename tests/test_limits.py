"""Rate limits in the sans-I/O distributor: token buckets, concurrency caps, per operation and per collector type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributor import (
    CollectorCapability,
    Dispatch,
    DistributorConfig,
    InvalidRequest,
    TaskDistributor,
    TaskRequest,
    TaskState,
)
from distributor.limits import COLLECTOR_TYPE, OPERATION, Limit, Rate, parse_rate
from distributor.timers import TimerKind
from tests.test_distributor import cap, dispatches, ok


def typed(cid: str, ctype: str, ops: tuple[str, ...] = ("echo",), slots: int = 4) -> CollectorCapability:
    return CollectorCapability(
        collector_id=cid, collector_type=ctype, supported_operations=list(ops), max_concurrent_tasks=slots
    )


def many(dist: TaskDistributor, n: int, now: float, operation: str = "echo") -> list[str]:
    return [dist.submit(TaskRequest(operation=operation), now)[0] for _ in range(n)]


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/s", Rate(10, 1.0)),
        ("100/60s", Rate(100, 60.0)),
        ("5/m", Rate(5, 60.0)),
        ("2/5m", Rate(2, 300.0)),
        ("1000/h", Rate(1000, 3600.0)),
        (" 3 / 2.5s ", Rate(3, 2.5)),
    ],
)
def test_rates_read_as_n_per_period(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("text", ["", "7", "x/s", "10/", "0/s", "-1/s", "1.5/s", "10/0s", "10/s/s", "10/w"])
def test_a_bad_rate_is_refused_with_the_format(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"rate"):
        parse_rate(text)


def test_a_limit_needs_something_to_limit() -> None:
    with pytest.raises(InvalidRequest, match="needs a rate"):
        Limit()
    with pytest.raises(InvalidRequest, match="max_in_flight"):
        Limit(max_in_flight=0)


def run_by_timers(dist: TaskDistributor, until: float, start: float = 0.0) -> list[float]:
    """Drive the distributor from its own timers, completing each attempt at once; the dispatch times."""
    times: list[float] = []
    now = start
    pending: list[Dispatch] = []
    while True:
        times.extend(now for _ in pending)
        done, pending = pending, []
        for d in done:
            pending += dispatches(dist.complete(ok(d), now))
        if pending:
            continue
        nxt = dist.next_timer()
        if nxt is None or nxt > until:
            return times
        now = nxt
        pending = dispatches(dist.tick(now))


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 50), per_s=st.sampled_from([0.5, 1.0, 2.5, 60.0]), window=st.integers(1, 20))
def test_a_token_bucket_admits_exactly_its_rate_over_a_long_window(count: int, per_s: float, window: int) -> None:
    dist = TaskDistributor(
        DistributorConfig(max_queue_size=100_000, max_queued_per_operation=100_000, heartbeat_timeout_s=1e9)
    )
    dist.set_limit(OPERATION, "echo", Limit(rate=Rate(count, per_s)), 0.0)
    horizon = per_s * window  # `window` whole periods
    n = count * (window + 2)
    many(dist, n, 0.0)
    first = dispatches(dist.register(cap("c1", slots=1000), 0.0))
    assert len(first) == count  # a full bucket: one burst of `count`
    for d in first:
        dist.complete(ok(d), 0.0)
    later = run_by_timers(dist, horizon + 1e-6)  # (the last token is due at the horizon, within rounding)
    # then `count` per period, each as soon as its token is there: never more, never later
    assert len(later) == count * window
    for i, at in enumerate(later):
        assert at == pytest.approx((i + 1) * per_s / count, rel=1e-9, abs=1e-9)


def test_max_in_flight_caps_attempts_and_a_held_operation_blocks_no_other() -> None:
    dist = TaskDistributor()
    dist.set_limit(OPERATION, "slow", Limit(max_in_flight=2), 0.0)
    many(dist, 5, 0.0, "slow")
    many(dist, 5, 0.0, "fast")
    out = dispatches(dist.register(cap("c1", ops=("slow", "fast"), slots=20), 1.0))
    ops = [d.task.operation for d in out]
    assert ops.count("slow") == 2 and ops.count("fast") == 5
    slow = [d for d in out if d.task.operation == "slow"]
    nxt = dispatches(dist.complete(ok(slow[0]), 2.0))
    assert [d.task.operation for d in nxt] == ["slow"]  # one ended, one more goes
    (view,) = dist.limits(2.0)
    assert view["name"] == "slow" and view["in_flight"] == 2 and view["max_in_flight"] == 2 and view["held"]


def test_the_time_a_task_waited_on_a_limit_is_reported() -> None:
    dist = TaskDistributor()
    dist.set_limit(OPERATION, "echo", Limit(rate=Rate(1, 1.0)), 0.0)
    ids = many(dist, 3, 0.0)
    dist.register(cap("c1", slots=10), 0.0)
    run_by_timers(dist, 10.0)
    waits = [dist.get(tid).limit_wait_s for tid in ids]
    assert waits == pytest.approx([0.0, 1.0, 2.0])
    (view,) = dist.limits(10.0)
    assert view["tasks_waited"] == 2 and view["waited_s"] == pytest.approx(3.0) and not view["held"]


def test_time_spent_waiting_for_a_collector_is_not_charged_to_the_limit() -> None:
    dist = TaskDistributor()
    dist.set_limit(OPERATION, "echo", Limit(rate=Rate(100, 1.0)), 0.0)
    (tid,) = many(dist, 1, 0.0)
    dist.register(cap("c1"), 30.0)  # no collector for 30 s, the limit never refused it
    assert dist.state(tid) is TaskState.DISPATCHED and dist.get(tid).limit_wait_s == 0.0


def test_a_collector_type_limit_sends_work_to_other_types_then_holds_it() -> None:
    dist = TaskDistributor()
    dist.set_limit(COLLECTOR_TYPE, "gpu", Limit(max_in_flight=1), 0.0)
    dist.register(typed("g1", "gpu", slots=10), 0.0)
    dist.register(typed("c1", "cpu", slots=2), 0.0)
    many(dist, 6, 1.0)
    snap = {c.collector_id: c.current_tasks for c in dist.registry}
    assert snap == {"g1": 1, "c1": 2}
    assert dist.snapshot(1.0)["tasks_queued"] == 3
    # lifting the limit lets the held tasks go at once
    out = dispatches(dist.set_limit(COLLECTOR_TYPE, "gpu", None, 2.0))
    assert len(out) == 3 and {d.collector_id for d in out} == {"g1"}


def test_a_collector_type_limit_releases_held_tasks_when_its_attempt_ends() -> None:
    dist = TaskDistributor()
    dist.set_limit(COLLECTOR_TYPE, "gpu", Limit(max_in_flight=1), 0.0)
    many(dist, 2, 0.0)
    (first,) = dispatches(dist.register(typed("g1", "gpu", slots=10), 1.0))
    (second,) = dispatches(dist.complete(ok(first), 3.0))
    info = dist.get(second.task.task_id or "")
    assert info.collector_id == "g1" and info.limit_wait_s == pytest.approx(2.0)


def test_a_type_rate_limit_wakes_the_operation_when_its_bucket_refills() -> None:
    dist = TaskDistributor()
    dist.set_limit(COLLECTOR_TYPE, "gpu", Limit(rate=Rate(1, 2.0)), 0.0)
    many(dist, 3, 0.0)
    (first,) = dispatches(dist.register(typed("g1", "gpu", slots=10), 0.0))
    dist.complete(ok(first), 0.0)
    assert run_by_timers(dist, 10.0, 0.0) == [2.0, 4.0]
    assert dist.snapshot(10.0)["tasks_succeeded"] == 3


def test_a_limit_set_while_attempts_run_counts_them() -> None:
    dist = TaskDistributor()
    many(dist, 4, 0.0)
    dist.register(cap("c1", slots=3), 0.0)
    dist.set_limit(OPERATION, "echo", Limit(max_in_flight=2), 1.0)
    assert dist.limits(1.0)[0]["in_flight"] == 3
    running = [t for t in dist.tasks(state=TaskState.DISPATCHED)]
    first = running[0]
    out = dist.complete(
        ok(Dispatch("c1", "demo", TaskRequest(operation="echo", task_id=first.task_id), first.attempt, None)), 2.0
    )
    assert dispatches(out) == []  # 2 still run: at the cap
    assert dist.limits(2.0)[0]["in_flight"] == 2


def test_an_unknown_limit_kind_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="operation or a collector_type"):
        TaskDistributor().set_limit("queue", "echo", Limit(max_in_flight=1), 0.0)


def test_without_limits_no_timer_and_no_clock_is_made() -> None:
    dist = TaskDistributor()
    many(dist, 3, 0.0)
    dist.register(cap("c1"), 0.0)
    assert dist.limits(0.0) == [] and not dist._m.limits.clocks
    assert all(t.kind is not TimerKind.LIMIT for t in dist._m._timers._heap)


def test_a_task_held_by_several_type_limits_goes_when_the_first_of_them_opens() -> None:
    dist = TaskDistributor(DistributorConfig(heartbeat_timeout_s=1e9))
    dist.set_limit(COLLECTOR_TYPE, "gpu", Limit(rate=Rate(1, 10.0)), 0.0)
    dist.set_limit(COLLECTOR_TYPE, "tpu", Limit(rate=Rate(1, 2.0)), 0.0)
    many(dist, 3, 0.0)
    first = dispatches(dist.register(typed("g1", "gpu"), 0.0)) + dispatches(dist.register(typed("t1", "tpu"), 0.0))
    assert len(first) == 2  # one on each; the third waits for a token of either type
    assert run_by_timers(dist, 20.0) == [2.0]
    (late,) = [t for t in dist.tasks(state=TaskState.SUCCEEDED) if t.limit_wait_s > 0]
    assert late.collector_id == "t1" and late.limit_wait_s == pytest.approx(2.0)

"""Strategies, constraints, dependencies and deadlines in every state, driven without I/O."""

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
    InvalidRequest,
    TaskDistributor,
    TaskRequest,
    TaskResult,
    TaskState,
    UnknownTask,
    make_strategy,
    parse_constraint,
)
from distributor.models import AttrValue


def cap(cid: str, slots: int = 1, ops: tuple[str, ...] = ("work",), **attrs: AttrValue) -> CollectorCapability:
    return CollectorCapability(
        collector_id=cid,
        collector_type="t",
        supported_operations=list(ops),
        max_concurrent_tasks=slots,
        attributes=attrs,
    )


def dispatches(actions: list[Action]) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def result(d: Dispatch, success: bool = True) -> TaskResult:
    error = None if success else ErrorInfo(type="E", message="no")
    return TaskResult(
        task_id=d.task.task_id or "", attempt=d.attempt, collector_id=d.collector_id, success=success, error=error
    )


def run_all(dist: TaskDistributor, n: int, now: float = 1.0, **task: object) -> Counter[str]:
    """Submit n tasks one at a time, completing each at once; count where they ran."""
    where: Counter[str] = Counter()
    for _ in range(n):
        (d,) = dispatches(dist.submit(TaskRequest(operation="work", **task), now)[1])
        where[d.collector_id] += 1
        dist.complete(result(d), now)
    return where


def with_strategy(name: str, seed: int = 1) -> TaskDistributor:
    rng = random.Random(seed)
    return TaskDistributor(DistributorConfig(), strategy=make_strategy(name, rng), rng=rng)


def test_round_robin_spreads_evenly() -> None:
    dist = with_strategy("round_robin")
    for cid in ("a", "b", "c", "d"):
        dist.register(cap(cid, slots=4), 0.0)
    assert run_all(dist, 100) == {"a": 25, "b": 25, "c": 25, "d": 25}


def test_first_available_fills_the_earliest_registered_first() -> None:
    dist = with_strategy("first_available")
    dist.register(cap("a", slots=2), 0.0)
    dist.register(cap("b", slots=2), 0.0)
    sent = [dispatches(dist.submit(TaskRequest(operation="work"), 1.0)[1])[0].collector_id for _ in range(4)]
    assert sent == ["a", "a", "b", "b"]


def test_least_loaded_picks_the_collector_with_the_smallest_share_of_busy_slots() -> None:
    dist = with_strategy("least_loaded")
    dist.register(cap("small", slots=2), 0.0)
    dist.register(cap("big", slots=8), 0.0)
    sent = Counter(dispatches(dist.submit(TaskRequest(operation="work"), 1.0)[1])[0].collector_id for _ in range(10))
    assert sent == {"small": 2, "big": 8}


def test_random_uses_every_collector_roughly_evenly() -> None:
    dist = with_strategy("random", seed=42)
    for cid in ("a", "b", "c"):
        dist.register(cap(cid, slots=4), 0.0)
    where = run_all(dist, 3000)
    assert set(where) == {"a", "b", "c"}
    assert all(800 < n < 1200 for n in where.values())


def test_best_fit_sends_work_to_the_best_scoring_collector() -> None:
    dist = with_strategy("best_fit")
    dist.register(cap("flaky", slots=4), 0.0)
    dist.register(cap("solid", slots=4), 0.0)
    state = {c.collector_id: c for c in dist.registry}
    state["flaky"].tasks_failed = 5
    state["solid"].tasks_completed = 20
    for s in state.values():
        dist.registry.refresh(s)
    assert state["solid"].score > state["flaky"].score
    assert run_all(dist, 10) == {"solid": 10}


def test_best_fit_gives_the_highest_priority_task_to_the_best_collector() -> None:
    dist = with_strategy("best_fit")
    dist.register(cap("prep", ops=("prep",)), 0.0)
    dist.register(cap("novice"), 0.0)
    dist.register(cap("veteran"), 0.0)
    for c in dist.registry:
        c.tasks_completed = 50 if c.collector_id == "veteran" else 0
        dist.registry.refresh(c)
    parent, actions = dist.submit(TaskRequest(operation="prep"), 0.0)
    low = dist.submit(TaskRequest(operation="work", priority=2, depends_on=[parent]), 0.0)[0]
    high = dist.submit(TaskRequest(operation="work", priority=9, depends_on=[parent]), 0.0)[0]
    # both children become runnable at once, with both collectors idle
    placed = {d.task.task_id: d.collector_id for d in dispatches(dist.complete(result(dispatches(actions)[0]), 1.0))}
    assert placed == {high: "veteran", low: "novice"}


def test_switching_strategy_takes_effect_on_the_next_decision() -> None:
    dist = with_strategy("first_available")
    dist.register(cap("a", slots=10), 0.0)
    dist.register(cap("b", slots=10), 0.0)
    assert run_all(dist, 4) == {"a": 4}
    dist.set_strategy(make_strategy("round_robin"))
    assert run_all(dist, 4) == {"a": 2, "b": 2}


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="known: best_fit"):
        make_strategy("coin_flip")


# ---- constraints -----------------------------------------------------------


def test_skill_constraint_only_ever_routes_to_the_skilled_collector() -> None:
    dist = TaskDistributor()
    dist.register(cap("s3", slots=4, skill=3), 0.0)
    dist.register(cap("s8", slots=4, skill=8), 0.0)
    assert run_all(dist, 50, constraints=["skill>=5"]) == {"s8": 50}
    unconstrained = [dispatches(dist.submit(TaskRequest(operation="work"), 2.0)[1])[0] for _ in range(8)]
    assert Counter(d.collector_id for d in unconstrained) == {"s3": 4, "s8": 4}


@pytest.mark.parametrize(
    ("text", "attrs", "expected"),
    [
        ("region==eu", {"region": "eu"}, True),
        ("region==eu", {"region": "us"}, False),
        ("region!=eu", {"region": "us"}, True),
        ("gpu in [a100,h100]", {"gpu": "h100"}, True),
        ("gpu in [a100, h100]", {"gpu": "t4"}, False),
        ("skill>=5", {"skill": 5}, True),
        ("skill>5", {"skill": 5}, False),
        ("skill<=2.5", {"skill": 2}, True),
        ("skill<3", {}, False),
        ("skill>=5", {"skill": "high"}, False),
        ("fast==true", {"fast": True}, True),
        ("level==3", {"level": 3}, True),
    ],
)
def test_constraint_semantics(text: str, attrs: dict[str, AttrValue], expected: bool) -> None:
    assert parse_constraint(text).holds(attrs) is expected


@pytest.mark.parametrize("text", ["skill>=high", "skill ~ 3", "gpu in a100", "gpu in []", "=5", "skill=>5"])
def test_bad_constraints_are_rejected_at_submit(text: str) -> None:
    with pytest.raises(InvalidRequest):
        TaskDistributor().submit(TaskRequest(operation="work", constraints=[text]), 0.0)


def test_a_task_no_collector_satisfies_waits_without_blocking_others() -> None:
    dist = TaskDistributor()
    dist.register(cap("s3", slots=1, skill=3), 0.0)
    hard, actions = dist.submit(TaskRequest(operation="work", constraints=["skill>=9"], priority=9), 0.0)
    assert dispatches(actions) == []
    (d,) = dispatches(dist.submit(TaskRequest(operation="work", priority=1), 0.0)[1])
    assert d.collector_id == "s3"
    (d9,) = dispatches(dist.register(cap("s9", skill=9), 1.0))
    assert d9.task.task_id == hard


def test_a_retry_goes_to_another_collector_when_one_is_eligible() -> None:
    dist = TaskDistributor(rng=random.Random(3))
    dist.register(cap("a", slots=2), 0.0)
    dist.register(cap("b", slots=2), 0.0)
    (first,) = dispatches(dist.submit(TaskRequest(operation="work"), 0.0)[1])
    dist.complete(result(first, success=False), 0.5)
    (second,) = dispatches(dist.tick(5.0))
    assert second.collector_id != first.collector_id


# ---- dependencies ----------------------------------------------------------


def test_a_dependant_waits_pending_until_its_parents_succeed() -> None:
    dist = TaskDistributor()
    dist.register(cap("a", slots=4), 0.0)
    p1, a1 = dist.submit(TaskRequest(operation="work"), 0.0)
    p2, a2 = dist.submit(TaskRequest(operation="work"), 0.0)
    child, a3 = dist.submit(TaskRequest(operation="work", depends_on=[p1, p2]), 0.0)
    assert dispatches(a3) == [] and dist.get(child).state is TaskState.PENDING
    dist.complete(result(dispatches(a1)[0]), 1.0)
    assert dist.get(child).state is TaskState.PENDING
    (d,) = dispatches(dist.complete(result(dispatches(a2)[0]), 2.0))
    assert d.task.task_id == child


def test_a_parent_failing_fails_the_whole_chain_with_dependency_failed() -> None:
    dist = TaskDistributor(DistributorConfig(max_retries=0))
    dist.register(cap("a", slots=4), 0.0)
    parent, actions = dist.submit(TaskRequest(operation="work"), 0.0)
    chain = [parent]
    for _ in range(2000):  # deep chains resolve without recursion
        chain.append(dist.submit(TaskRequest(operation="work", depends_on=[chain[-1]]), 0.0)[0])
    dist.complete(result(dispatches(actions)[0], success=False), 1.0)
    assert dist.get(parent).state is TaskState.FAILED
    last = dist.get(chain[-1])
    assert last.state is TaskState.FAILED
    assert last.error is not None and last.error.type == "dependency_failed"


def test_depending_on_an_already_failed_task_fails_at_once() -> None:
    dist = TaskDistributor()
    parent = dist.submit(TaskRequest(operation="work"), 0.0)[0]
    dist.cancel(parent, 0.5)
    child = dist.submit(TaskRequest(operation="work", depends_on=[parent]), 1.0)[0]
    info = dist.get(child)
    assert info.state is TaskState.FAILED and info.error is not None
    assert info.error.type == "dependency_failed"


def test_unknown_parents_and_self_cycles_are_rejected() -> None:
    dist = TaskDistributor()
    with pytest.raises(InvalidRequest, match="unknown task"):
        dist.submit(TaskRequest(operation="work", depends_on=["ghost"]), 0.0)
    with pytest.raises(InvalidRequest, match="cycle"):
        dist.submit(TaskRequest(operation="work", task_id="me", depends_on=["me"]), 0.0)


def test_dag_runs_in_dependency_order() -> None:
    dist = TaskDistributor()
    dist.register(cap("a", slots=8), 0.0)
    order: list[str] = []
    ids: dict[str, str] = {}
    pending: list[Dispatch] = []
    for name, parents in [("root", []), ("left", ["root"]), ("right", ["root"]), ("join", ["left", "right"])]:
        request = TaskRequest(operation="work", task_id=name, depends_on=[ids[p] for p in parents])
        tid, actions = dist.submit(request, 0.0)
        ids[name] = tid
        pending += dispatches(actions)
    while pending:
        d = pending.pop(0)
        order.append(d.task.task_id or "")
        pending += dispatches(dist.complete(result(d), 1.0))
    assert order[0] == "root" and order[-1] == "join" and set(order[1:3]) == {"left", "right"}


# ---- deadlines and cancel in every state ------------------------------------


def test_deadline_expires_a_pending_task() -> None:
    dist = TaskDistributor()
    parent = dist.submit(TaskRequest(operation="work"), 0.0)[0]
    child = dist.submit(TaskRequest(operation="work", depends_on=[parent], deadline=5.0), 0.0)[0]
    dist.tick(5.0)
    info = dist.get(child)
    assert info.state is TaskState.EXPIRED and info.error is not None
    assert "depends on" in info.error.message


class _LongestBackoff(random.Random):
    """Full jitter that always draws the cap: the retry surely waits past the deadline."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_deadline_expires_a_retrying_task() -> None:
    dist = TaskDistributor(
        DistributorConfig(retry_backoff_base_ms=60_000, retry_backoff_max_ms=60_000), rng=_LongestBackoff()
    )
    dist.register(cap("a"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="work", deadline=1.0), 0.0)
    dist.complete(result(dispatches(actions)[0], success=False), 0.1)
    assert dist.get(tid).state is TaskState.RETRYING
    dist.tick(1.0)
    info = dist.get(tid)
    assert info.state is TaskState.EXPIRED and info.error is not None and "retry" in info.error.message


def test_cancel_a_pending_and_a_retrying_task() -> None:
    dist = TaskDistributor(DistributorConfig(retry_backoff_base_ms=60_000))
    dist.register(cap("a"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="work"), 0.0)
    dependant = dist.submit(TaskRequest(operation="work", depends_on=[tid]), 0.0)[0]
    dist.cancel(dependant, 0.1)
    assert dist.get(dependant).state is TaskState.CANCELLED
    dist.complete(result(dispatches(actions)[0], success=False), 0.2)
    dist.cancel(tid, 0.3)
    assert dist.get(tid).state is TaskState.CANCELLED
    assert dist.snapshot(1.0)["tasks_pending"] == 0


def test_timeouts_retry_then_fail_with_the_timeout_error() -> None:
    dist = TaskDistributor(DistributorConfig(max_retries=2), rng=random.Random(0))
    dist.register(cap("a"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="work", timeout_ms=100), 0.0)
    cancels: list[Cancel] = []
    now = 0.0
    while not dist.get(tid).state.terminal:
        now += 0.05
        dist.heartbeat("a", now)
        cancels += [a for a in dist.tick(now) if isinstance(a, Cancel)]
    info = dist.get(tid)
    assert info.state is TaskState.FAILED and info.error is not None and info.error.type == "Timeout"
    assert [c.reason for c in cancels] == ["timeout"] * 3
    assert info.attempt == 3


# ---- regressions -------------------------------------------------------------


def test_an_easy_task_is_not_stuck_behind_many_hard_ones_of_the_same_operation() -> None:
    dist = TaskDistributor()
    dist.register(cap("expert", skill=9), 0.0)
    dist.register(cap("novice", slots=4, skill=1), 0.0)
    for _ in range(40):
        dist.submit(TaskRequest(operation="work", constraints=["skill>=8"]), 0.0)
    easy, actions = dist.submit(TaskRequest(operation="work", constraints=["skill>=1"]), 0.0)
    (d,) = dispatches(actions)
    assert (d.task.task_id, d.collector_id) == (easy, "novice")


def test_a_drained_collector_stays_drained_after_recovering_from_unhealthy() -> None:
    dist = TaskDistributor(DistributorConfig(heartbeat_timeout_s=10))
    dist.register(cap("a"), 0.0)
    dist.drain("a", 1.0)
    dist.tick(11.0)
    (state,) = list(dist.registry)
    assert state.status.value == "unhealthy"
    dist.heartbeat("a", 12.0)
    assert state.status.value == "draining"
    assert dispatches(dist.submit(TaskRequest(operation="work"), 12.0)[1]) == []


def test_a_rejected_attempt_is_requeued_elsewhere_without_using_a_retry() -> None:
    dist = TaskDistributor()
    dist.register(cap("leaving"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="work"), 0.0)
    (d,) = dispatches(actions)
    dist.register(cap("staying"), 0.5)
    (again,) = dispatches(dist.reject("leaving", tid, d.attempt, 1.0))
    assert again.collector_id == "staying"
    assert dist.get(tid).retries == 0


def test_an_undeliverable_collector_is_suspended_and_its_attempts_redelivered() -> None:
    dist = TaskDistributor()
    dist.register(cap("gone"), 0.0)
    tid, _ = dist.submit(TaskRequest(operation="work"), 0.0)
    dist.register(cap("there"), 0.0)
    (d,) = dispatches(dist.suspect("gone", 1.0))
    assert d.collector_id == "there" and dist.get(tid).retries == 0


def test_an_unhealthy_collector_is_forgotten_after_a_while() -> None:
    dist = TaskDistributor(DistributorConfig(heartbeat_timeout_s=10, forget_unhealthy_after_s=100))
    dist.register(cap("a"), 0.0)
    dist.tick(10.0)
    assert len(dist.registry) == 1
    dist.tick(111.0)
    assert len(dist.registry) == 0


def test_timers_of_a_forgotten_task_do_not_touch_a_new_task_with_the_same_id() -> None:
    dist = TaskDistributor(DistributorConfig(max_finished_tasks=1))
    dist.submit(TaskRequest(operation="work", task_id="same", deadline=10.0), 0.0)
    dist.cancel("same", 1.0)
    other, _ = dist.submit(TaskRequest(operation="other"), 1.0)
    dist.cancel(other, 1.5)  # history holds one finished task: "same" is forgotten
    with pytest.raises(UnknownTask):
        dist.get("same")
    dist.submit(TaskRequest(operation="work", task_id="same"), 2.0)
    dist.tick(10.0)  # the first task's deadline timer fires
    assert dist.get("same").state is TaskState.QUEUED


def test_non_finite_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        TaskRequest(operation="work", deadline=float("nan"))


@pytest.mark.parametrize(
    ("text", "attrs", "expected"),
    [
        ("gpu==1", {"gpu": True}, False),
        ("n==true", {"n": 1}, False),
        ("n in [0]", {"n": False}, False),
        ("n in [0]", {"n": 0}, True),
        ("v==1", {"v": "1"}, False),
        ("v=='1'", {"v": "1"}, True),
    ],
)
def test_values_only_equal_values_of_the_same_kind(text: str, attrs: dict[str, AttrValue], expected: bool) -> None:
    assert parse_constraint(text).holds(attrs) is expected


@pytest.mark.parametrize("text", ["x>=nan", "x==inf", "x in [1, nan]", "x===1", "x>=<1"])
def test_non_finite_numbers_and_doubled_operators_are_rejected(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_constraint(text)


def test_one_operation_does_not_take_every_freed_slot_from_another() -> None:
    dist = TaskDistributor()
    for _ in range(50):
        dist.submit(TaskRequest(operation="a"), 0.0)
        dist.submit(TaskRequest(operation="b"), 0.0)
    (d,) = dispatches(dist.register(cap("both", slots=1, ops=("a", "b")), 0.0))
    ran: Counter[str] = Counter()
    for _ in range(40):
        ran[d.task.operation] += 1
        (d,) = dispatches(dist.complete(result(d), 1.0))
    assert ran["a"] >= 15 and ran["b"] >= 15


def test_a_cancelled_child_whose_id_is_reused_is_not_failed_by_its_old_parent() -> None:
    dist = TaskDistributor(DistributorConfig(max_finished_tasks=1, max_retries=0))
    dist.register(cap("a"), 0.0)
    parent, actions = dist.submit(TaskRequest(operation="work"), 0.0)
    dist.submit(TaskRequest(operation="work", task_id="c", depends_on=[parent]), 0.0)
    dist.cancel("c", 0.1)
    other, _ = dist.submit(TaskRequest(operation="other"), 0.2)
    dist.cancel(other, 0.3)  # "c" is forgotten
    q, _ = dist.submit(TaskRequest(operation="other"), 0.4)
    dist.submit(TaskRequest(operation="work", task_id="c", depends_on=[q]), 0.5)
    dist.complete(result(dispatches(actions)[0], success=False), 1.0)
    assert dist.get("c").state is TaskState.PENDING


def test_suspect_and_recovery_keep_a_single_heartbeat_check() -> None:
    dist = TaskDistributor()
    dist.register(cap("a"), 0.0)
    for i in range(50):
        dist.suspect("a", float(i))
        dist.heartbeat("a", i + 0.5)
    dist.heartbeat("a", 999.0)
    dist.tick(1000.0)  # every stale check comes due once and is not re-armed
    assert len(dist._m._timers) == 1


def test_a_huge_integer_attribute_is_rejected_at_registration() -> None:
    with pytest.raises(ValueError):
        cap("a", big=10**400)


def test_a_collector_that_rejects_an_attempt_is_drained() -> None:
    dist = TaskDistributor()
    dist.register(cap("leaving"), 0.0)
    tid, actions = dist.submit(TaskRequest(operation="work"), 0.0)
    (d,) = dispatches(actions)
    assert dispatches(dist.reject("leaving", tid, d.attempt, 1.0)) == []  # not offered back to it
    (state,) = list(dist.registry)
    assert state.status.value == "draining" and dist.get(tid).state is TaskState.QUEUED


def test_the_registry_lists_operations_and_their_supporters_without_the_others() -> None:
    dist = TaskDistributor()
    dist.register(cap("a1", ops=("echo", "sleep")), 0.0)
    dist.register(cap("b1", ops=("sleep",)), 0.0)
    assert set(dist.registry.operations()) == {"echo", "sleep"}
    assert sorted(c.collector_id for c in dist.registry.supporters("sleep")) == ["a1", "b1"]
    assert [c.collector_id for c in dist.registry.supporters("echo")] == ["a1"]
    assert list(dist.registry.supporters("nothing")) == []
    dist.deregister("a1", 1.0)
    assert set(dist.registry.operations()) == {"sleep"}

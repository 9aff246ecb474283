"""Model-based tests: the queue against a sorted list, the task state machine against its invariants."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from distributor import (
    Action,
    CollectorCapability,
    CollectorStatus,
    Dispatch,
    DistributorConfig,
    ErrorInfo,
    Finished,
    QueueFull,
    TaskDistributor,
    TaskQueue,
    TaskRequest,
    TaskResult,
    TaskState,
    UnknownCollector,
)
from distributor.constraints import parse_constraints, satisfied
from distributor.limits import COLLECTOR_TYPE, OPERATION, Limit, parse_rate

OPS = ("a", "b", "c")


class QueueMachine(RuleBasedStateMachine):
    """TaskQueue agrees with a plain list of (priority, shape, arrival) kept in order."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = TaskQueue(max_size=50)
        self.model: dict[str, list[tuple[int, int, str, str]]] = {op: [] for op in OPS}
        self.n = 0

    def expected_heads(self, op: str) -> list[tuple[int, str]]:
        """Per priority (high first): the oldest task of each shape, oldest first."""
        heads: dict[tuple[int, str], tuple[int, int, str, str]] = {}
        for entry in sorted(self.model[op]):
            heads.setdefault((entry[0], entry[3]), entry)
        ordered = sorted(heads.values())
        return [(-e[0], e[2]) for e in ordered]

    @rule(op=st.sampled_from(OPS), priority=st.integers(1, 10), shape=st.sampled_from(["", "x", "y"]))
    def push(self, op: str, priority: int, shape: str) -> None:
        self.n += 1
        tid = f"t{self.n}"
        try:
            self.queue.push(tid, op, priority, shape=shape)
        except QueueFull:
            assert sum(len(v) for v in self.model.values()) == 50
            return
        self.model[op].append((-priority, self.n, tid, shape))

    @rule(op=st.sampled_from(OPS), data=st.data())
    def remove(self, op: str, data: st.DataObject) -> None:
        if self.model[op]:
            entry = data.draw(st.sampled_from(self.model[op]))
            assert self.queue.remove(entry[2])
            self.model[op].remove(entry)

    @rule(op=st.sampled_from(OPS), data=st.data())
    def pop_a_head(self, op: str, data: st.DataObject) -> None:
        heads = self.expected_heads(op)
        if not heads:
            assert next(self.queue.candidates(op), None) is None
            return
        _, tid = data.draw(st.sampled_from(heads))
        self.queue.pop(tid)
        self.model[op] = [e for e in self.model[op] if e[2] != tid]

    @invariant()
    def queue_agrees_with_the_model(self) -> None:
        assert len(self.queue) == sum(len(v) for v in self.model.values())
        for op in OPS:
            assert self.queue.depth(op) == len(self.model[op])
            assert list(self.queue.candidates(op)) == self.expected_heads(op)


TestQueue = QueueMachine.TestCase
TestQueue.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


class DistributorMachine(RuleBasedStateMachine):
    """Any interleaving of events keeps the distributor's promises."""

    def __init__(self) -> None:
        super().__init__()
        cfg = DistributorConfig(max_queue_size=40, max_retries=2, heartbeat_timeout_s=10, max_queued_bytes=60_000)
        self.dist = TaskDistributor(cfg, rng=random.Random(0))
        self.now = 0.0
        self.submitted: list[str] = []
        self.sizes: dict[str, int] = {}
        self.finished: Counter[str] = Counter()
        self.in_flight: dict[tuple[str, int], Dispatch] = {}
        self.n = 0

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Finished):
                self.finished[action.task_id] += 1
            elif isinstance(action, Dispatch):
                self.check_eligible(action)
                self.in_flight[(action.task.task_id or "", action.attempt)] = action

    def check_eligible(self, d: Dispatch) -> None:
        state = self.dist.registry.get(d.collector_id)
        cap = state.capability
        assert d.task.operation in cap.supported_operations
        assert d.task.priority in cap.priority_levels
        assert satisfied(parse_constraints(d.task.constraints), cap.attributes)
        assert state.status is CollectorStatus.AVAILABLE
        assert state.current_tasks <= cap.max_concurrent_tasks

    @rule(
        cid=st.sampled_from(["c1", "c2", "c3"]),
        ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=3, unique=True),
        slots=st.integers(1, 3),
        skill=st.integers(1, 9),
        low_only=st.booleans(),
    )
    def register(self, cid: str, ops: list[str], slots: int, skill: int, low_only: bool) -> None:
        cap = CollectorCapability(
            collector_id=cid,
            collector_type="u" if cid == "c3" else "t",
            supported_operations=ops,
            max_concurrent_tasks=slots,
            priority_levels=[1, 2, 3, 4, 5] if low_only else list(range(1, 11)),
            attributes={"skill": skill},
        )
        self.apply(self.dist.register(cap, self.now))

    @rule(
        kind=st.sampled_from([OPERATION, COLLECTOR_TYPE]),
        which=st.integers(0, 1),
        cap=st.none() | st.integers(1, 4),
        rate=st.none() | st.sampled_from(["1/s", "3/2s", "2/m"]),
    )
    def limit(self, kind: str, which: int, cap: int | None, rate: str | None) -> None:
        name = (OPS if kind == OPERATION else ["t", "u"])[which]
        running = self.under(kind, name)
        if cap is not None:
            cap = max(cap, running)  # (a cap below what runs now holds until enough end: not checked here)
        limit = None if cap is None and rate is None else Limit(cap, None if rate is None else parse_rate(rate))
        self.apply(self.dist.set_limit(kind, name, limit, self.now))

    def under(self, kind: str, name: str) -> int:
        if kind == OPERATION:
            return sum(1 for (tid, _) in self.in_flight_now() if self.dist.get(tid).operation == name)
        return sum(c.current_tasks for c in self.dist.registry if c.capability.collector_type == name)

    def in_flight_now(self) -> list[tuple[str, str]]:
        return [(tid, c.collector_id) for c in self.dist.registry for tid in c.attempts]

    @invariant()
    def limits_count_exactly_the_attempts_under_them(self) -> None:
        for view in self.dist.limits(self.now):
            assert view["in_flight"] == self.under(view["kind"], view["name"]), view
            if view["max_in_flight"] is not None:
                assert view["in_flight"] <= view["max_in_flight"], view

    @rule(cid=st.sampled_from(["c1", "c2", "c3"]))
    def deregister(self, cid: str) -> None:
        try:
            self.apply(self.dist.deregister(cid, self.now))
        except UnknownCollector:
            assert self.dist.registry.find(cid) is None

    @rule(cid=st.sampled_from(["c1", "c2", "c3"]), drain=st.booleans())
    def drain(self, cid: str, drain: bool) -> None:
        if self.dist.registry.find(cid) is not None:
            fn = self.dist.drain if drain else self.dist.undrain
            self.apply(fn(cid, self.now))

    @rule(
        op=st.sampled_from(OPS),
        priority=st.integers(1, 10),
        skill=st.none() | st.integers(1, 9),
        timeout_ms=st.sampled_from([500, 5000, 60000]),
        deadline_in=st.none() | st.floats(0.5, 30),
        after=st.booleans(),
        size=st.integers(0, 5000),
        delay=st.none() | st.floats(0.0, 20),
    )
    def submit(
        self,
        op: str,
        priority: int,
        skill: int | None,
        timeout_ms: int,
        deadline_in: float | None,
        after: bool,
        size: int,
        delay: float | None,
    ) -> None:
        self.n += 1
        deadline = None if deadline_in is None else self.now + deadline_in
        not_before = None if delay is None else self.now + delay
        if not_before is not None and deadline is not None and not_before >= deadline:
            not_before = None  # (refused: it could never run)
        request = TaskRequest(
            task_id=f"t{self.n}",
            operation=op,
            priority=priority,
            timeout_ms=timeout_ms,
            constraints=[f"skill>={skill}"] if skill else [],
            deadline=deadline,
            not_before=not_before,
            depends_on=[self.submitted[-1]] if after and self.submitted else [],
        )
        try:
            tid, actions = self.dist.submit(request, self.now, size=size)
        except QueueFull:
            return
        self.sizes[tid] = size
        self.submitted.append(tid)
        self.apply(actions)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), success=st.booleans(), late=st.booleans())
    def report(self, data: st.DataObject, success: bool, late: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        d = self.in_flight[key] if late else self.in_flight.pop(key)
        result = TaskResult(
            task_id=key[0],
            attempt=key[1],
            collector_id=d.collector_id,
            success=success,
            error=None if success else ErrorInfo(type="E", message="x"),
        )
        before = self.dist.get(key[0]) if key[0] in self.dist._m._tasks else None
        self.apply(self.dist.complete(result, self.now))
        if before is not None and before.state.terminal:
            assert self.dist.get(key[0]) == before  # a final task never changes

    @precondition(lambda self: bool(self.submitted))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.submitted))
        if not self.dist.get(tid).state.terminal:
            self.apply(self.dist.cancel(tid, self.now))

    @rule(dt=st.floats(0.01, 15), beat=st.booleans())
    def advance(self, dt: float, beat: bool) -> None:
        self.now += dt
        if beat:
            for c in self.dist.registry:
                self.apply(self.dist.heartbeat(c.collector_id, self.now))
        self.apply(self.dist.tick(self.now))

    @invariant()
    def each_task_is_finished_at_most_once_and_final_ones_exactly_once(self) -> None:
        assert all(n == 1 for n in self.finished.values())
        for tid in self.submitted:
            info = self.dist.get(tid)
            assert (self.finished[tid] == 1) == info.state.terminal

    @invariant()
    def the_state_counts_agree_with_the_tasks_and_scheduled_ones_are_not_due(self) -> None:
        held = Counter(self.dist.get(tid).state for tid in self.submitted)
        counts = self.dist._m.counts
        for state in TaskState:
            if not state.terminal:
                assert counts[state] == held[state], state
        for tid in self.submitted:
            info = self.dist.get(tid)
            if info.state is TaskState.SCHEDULED:
                assert info.not_before is not None and info.not_before > self.now

    @invariant()
    def unfinished_tasks_hold_exactly_their_bytes(self) -> None:
        unfinished = sum(self.sizes[tid] for tid in self.submitted if not self.dist.get(tid).state.terminal)
        assert self.dist.snapshot(self.now)["unfinished_bytes"] == unfinished

    @invariant()
    def no_task_is_lost_and_capacity_holds(self) -> None:
        on_collectors: dict[str, str] = {}
        for c in self.dist.registry:
            # (a collector re-registering with fewer slots may briefly run more than
            # its new maximum; no dispatch ever exceeds it: see check_eligible)
            assert c.current_tasks == len(c.attempts)
            for tid in c.attempts:
                on_collectors[tid] = c.collector_id
        for tid in self.submitted:
            info = self.dist.get(tid)
            if info.state in (TaskState.DISPATCHED, TaskState.RUNNING):
                assert on_collectors.get(tid) == info.collector_id
            elif info.state is TaskState.QUEUED:
                assert tid in self.dist.queue
            else:
                assert tid not in self.dist.queue and tid not in on_collectors


TestDistributor = DistributorMachine.TestCase
TestDistributor.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)

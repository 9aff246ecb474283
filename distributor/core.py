"""The TaskDistributor: the sans-I/O state machine at the heart of eventbus.

Feed it events (register, heartbeat, submit, results, cancel, tick) with the
current time; each call returns the actions the host must carry out, in
order. It never reads a clock, touches a socket or sleeps, so a plain loop
can drive thousands of simulated collectors.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from distributor.actions import Action, Cancel, Dispatch, Finished
from distributor.constraints import parse_constraints, satisfied
from distributor.errors import DuplicateTask, InvalidRequest, InvalidState, QueueFull, UnknownTask
from distributor.events import collector_event, task_event
from distributor.models import (
    CollectorCapability,
    CollectorInfo,
    CollectorStatus,
    ErrorInfo,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
)
from distributor.queue import TaskQueue
from distributor.registry import CapabilityRegistry, CollectorState, Pool
from distributor.stats import Stats
from distributor.strategies import LeastLoaded, RoutingStrategy
from distributor.tasks import TaskRecord
from distributor.timers import TimerHeap, TimerKind

#: queued tasks looked at per priority level when the head cannot be placed
#: (its constraints or priority fit no collector with room right now)
SCAN_PER_LEVEL = 32


@dataclass(slots=True)
class DistributorConfig:
    """The distributor's limits; the daemon fills it from its settings."""

    max_queue_size: int = 10_000
    max_retries: int = 3
    heartbeat_timeout_s: float = 30.0
    retry_backoff_base_ms: float = 100.0
    retry_backoff_max_ms: float = 30_000.0
    max_finished_tasks: int = 100_000


def _new_task_id() -> str:
    return uuid.uuid4().hex


class TaskDistributor:
    """Routes tasks to collectors; keeps every task's state until it is final.

    Every public method takes ``now`` (epoch seconds, supplied by the host)
    and returns the list of :mod:`distributor.actions` to perform.
    """

    def __init__(
        self,
        config: DistributorConfig | None = None,
        *,
        strategy: RoutingStrategy | None = None,
        rng: random.Random | None = None,
        new_task_id: Callable[[], str] = _new_task_id,
    ) -> None:
        self.config = config or DistributorConfig()
        self._rng = rng or random.Random()
        self.strategy: RoutingStrategy = strategy or LeastLoaded(self._rng)
        self.registry = CapabilityRegistry(self.strategy.key)
        self.queue = TaskQueue(self.config.max_queue_size)
        self.stats = Stats()
        self._new_task_id = new_task_id
        self._tasks: dict[str, TaskRecord] = {}
        self._finished: deque[str] = deque()
        self._timers = TimerHeap()
        self._dirty: set[str] = set()
        self._actions: list[Action] = []
        self._now = 0.0
        self._pending = 0
        self._in_flight = 0
        self._dispatches = 0

    # ---- queries -------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo:
        """The public view of a task; :class:`UnknownTask` if it is not known."""
        return self._task(task_id).info()

    def tasks(self, state: TaskState | None = None, operation: str | None = None) -> Iterator[TaskInfo]:
        """Known tasks, newest first, optionally filtered."""
        for task in reversed(list(self._tasks.values())):
            if (state is None or task.state is state) and (operation is None or task.request.operation == operation):
                yield task.info()

    def collectors(self, now: float) -> list[CollectorInfo]:
        return [c.info(now) for c in self.registry]

    def next_timer(self) -> float | None:
        """When :meth:`tick` next has work to do (None: only on new events)."""
        return self._timers.next_due()

    def snapshot(self, now: float) -> dict[str, Any]:
        """Counters and gauges for ``status`` and ``stats``."""
        collectors = list(self.registry)
        return self.stats.snapshot(
            tasks_queued=len(self.queue),
            tasks_pending=self._pending,
            tasks_in_flight=self._in_flight,
            active_collectors=sum(1 for c in collectors if c.status is CollectorStatus.AVAILABLE),
            collectors=len(collectors),
            queue_depths=self.queue.depths(),
            tasks_known=len(self._tasks),
            utilization={c.collector_id: round(c.utilization(now), 4) for c in collectors},
        )

    # ---- collector events ---------------------------------------------

    def register(self, capability: CollectorCapability, now: float) -> list[Action]:
        """A collector advertises its capabilities (first time or again after a reconnect)."""
        self._now = now
        state = self.registry.find(capability.collector_id)
        if state is None:
            state = self.registry.add(capability, now)
            self._schedule_heartbeat_check(state)
            self._actions.append(collector_event("joined", state, now))
        else:
            self.registry.replace_capability(state, capability)
            self._alive(state, now)
        self._dirty.update(capability.supported_operations)
        return self._drain()

    def heartbeat(self, collector_id: str, now: float) -> list[Action]:
        """A collector is alive; :class:`UnknownCollector` tells it to register again."""
        self._now = now
        self._alive(self.registry.get(collector_id), now)
        return self._drain()

    def deregister(self, collector_id: str, now: float) -> list[Action]:
        """A collector leaves; its attempts in flight go back to the queue without using a retry."""
        self._now = now
        state = self.registry.get(collector_id)
        self._take_back(state)
        self.registry.remove(collector_id)
        self._actions.append(collector_event("left", state, now))
        return self._drain()

    def drain(self, collector_id: str, now: float) -> list[Action]:
        """Stop routing new work to a collector; its running attempts continue."""
        self._now = now
        state = self.registry.get(collector_id)
        if state.status is CollectorStatus.AVAILABLE:
            state.status = CollectorStatus.DRAINING
            self.registry.refresh(state)
            self._actions.append(collector_event("drained", state, now))
        return self._drain()

    def undrain(self, collector_id: str, now: float) -> list[Action]:
        """Resume routing work to a drained collector."""
        self._now = now
        state = self.registry.get(collector_id)
        if state.status is CollectorStatus.DRAINING:
            state.status = CollectorStatus.AVAILABLE
            self.registry.refresh(state)
            self._dirty.update(state.capability.supported_operations)
            self._actions.append(collector_event("joined", state, now))
        return self._drain()

    def accepted(self, collector_id: str, task_id: str, attempt: int, now: float) -> list[Action]:
        """The collector started running an attempt."""
        self._now = now
        task = self._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        elif task.state is TaskState.DISPATCHED:
            task.state = TaskState.RUNNING
            self._actions.append(task_event(task, now))
        return self._drain()

    def progress(
        self, collector_id: str, task_id: str, attempt: int, fraction: float, message: str, now: float
    ) -> list[Action]:
        """The collector reports progress on a running attempt."""
        self._now = now
        task = self._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        else:
            self._actions.append(task_event(task, now, "progress", fraction=fraction, message=message))
        return self._drain()

    def complete(self, result: TaskResult, now: float) -> list[Action]:
        """An attempt finished. Results of attempts that are no longer current are ignored."""
        self._now = now
        task = self._live(result.task_id, result.attempt, result.collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return self._drain()
        state = self.registry.get(result.collector_id)
        state.total_execution_s += result.execution_time_s
        if result.success:
            state.tasks_completed += 1
            self._release(state, task)
            task.result, task.error = result, None
            self._finish(task, TaskState.SUCCEEDED)
        else:
            state.tasks_failed += 1
            self._release(state, task)
            task.failed_on.add(state.collector_id)
            self._attempt_failed(task, result.error or ErrorInfo(type="Error", message="attempt failed"), result)
        return self._drain()

    # ---- client events -------------------------------------------------

    def submit(self, request: TaskRequest, now: float) -> tuple[str, list[Action]]:
        """Accept a task; returns its id. Raises QueueFull, DuplicateTask or InvalidRequest."""
        self._now = now
        task_id = request.task_id or self._new_task_id()
        if task_id in self._tasks:
            raise DuplicateTask(f"task {task_id!r} already exists")
        if request.deadline is not None and request.deadline <= now:
            raise InvalidRequest(f"deadline {request.deadline} is already past (now {now:.3f})")
        constraints = parse_constraints(request.constraints)
        parents = self._parents(task_id, request.depends_on)
        if len(self.queue) + self._pending >= self.config.max_queue_size:
            raise QueueFull(f"queue is full ({self.config.max_queue_size} tasks)")
        created = request.created_at or now
        request = request.model_copy(update={"task_id": task_id, "created_at": created})
        task = TaskRecord(request, task_id, created_at=created, constraints=constraints)
        self._tasks[task_id] = task
        self.stats.tasks_submitted += 1
        if request.deadline is not None:
            self._timers.add(request.deadline, TimerKind.DEADLINE, task_id)
        self._start(task, parents)
        return task_id, self._drain()

    def cancel(self, task_id: str, now: float) -> list[Action]:
        """Cancel a task that is not final yet (pending, queued, retrying or running)."""
        self._now = now
        task = self._task(task_id)
        if task.state.terminal:
            raise InvalidState(f"task {task_id!r} is already {task.state.value}")
        self._stop(task, "cancelled")
        task.error = ErrorInfo(type="Cancelled", message="cancelled by request")
        self._finish(task, TaskState.CANCELLED)
        return self._drain()

    def tick(self, now: float) -> list[Action]:
        """Fire every timer due by ``now``: attempt timeouts, deadlines, retries, heartbeat checks."""
        self._now = now
        while (timer := self._timers.pop_due(now)) is not None:
            if timer.kind is TimerKind.HEARTBEAT_CHECK:
                self._check_heartbeat(timer.key, timer.token)
                continue
            task = self._tasks.get(timer.key)
            if task is None or task.state.terminal:
                continue
            if timer.kind is TimerKind.DEADLINE:
                self._expire(task)
            elif timer.token == task.attempt:
                if timer.kind is TimerKind.ATTEMPT_TIMEOUT and task.in_flight:
                    self._time_out(task)
                elif timer.kind is TimerKind.RETRY and task.state is TaskState.RETRYING:
                    self._enqueue(task)
        return self._drain()

    def set_strategy(self, strategy: RoutingStrategy) -> None:
        """Switch the routing strategy; the next decision uses it."""
        self.strategy = strategy
        self.registry.set_order(strategy.key)

    # ---- routing -------------------------------------------------------

    def _drain(self) -> list[Action]:
        while self._dirty:
            self._pump(self._dirty.pop())
        actions, self._actions = self._actions, []
        return actions

    def _pump(self, operation: str) -> None:
        """Dispatch queued tasks of one operation while an eligible collector has room."""
        pool = self.registry.pool(operation)
        while pool and self.queue.depth(operation):
            unplaceable: set[tuple[int, tuple[Any, ...]]] = set()
            for priority, task_id in self.queue.candidates(operation, SCAN_PER_LEVEL):
                task = self._tasks[task_id]
                shape = (priority, task.constraints)
                if shape in unplaceable and not task.failed_on:
                    continue  # an identical task found no collector a moment ago
                state = self._choose(task, pool, priority)
                if state is not None:
                    self.queue.pop(task_id)
                    self._dispatch(task, state)
                    break
                unplaceable.add(shape)
            else:
                return

    def _choose(self, task: TaskRecord, pool: Pool, priority: int) -> CollectorState | None:
        constraints = task.constraints

        def eligible(c: CollectorState) -> bool:
            return priority in c.priorities and (not constraints or satisfied(constraints, c.capability.attributes))

        if task.failed_on:  # a retry goes to another collector when one is eligible
            failed = task.failed_on
            state = self.strategy.select(task.request, pool, lambda c: c.collector_id not in failed and eligible(c))
            if state is not None:
                return state
        return self.strategy.select(task.request, pool, eligible)

    def _dispatch(self, task: TaskRecord, state: CollectorState) -> None:
        now = self._now
        task.attempt += 1
        task.state = TaskState.DISPATCHED
        task.collector_id = state.collector_id
        task.dispatched_at = now
        self._dispatches += 1
        state.last_dispatch = self._dispatches
        state.current_tasks += 1
        state.attempts[task.task_id] = task.attempt
        self._in_flight += 1
        self.registry.refresh(state)
        request = task.request
        self._timers.add(now + request.timeout_ms / 1000.0, TimerKind.ATTEMPT_TIMEOUT, task.task_id, task.attempt)
        self.stats.dispatched(request.operation, now - (task.queued_at or now))
        collector_type = state.capability.collector_type
        self._actions.append(Dispatch(state.collector_id, collector_type, request, task.attempt, request.deadline))
        self._actions.append(task_event(task, now))

    def _release(self, state: CollectorState, task: TaskRecord) -> None:
        """The attempt of ``task`` no longer occupies a slot on ``state``."""
        if state.attempts.pop(task.task_id, None) is not None:
            state.current_tasks -= 1
            self._in_flight -= 1
            state.busy_slot_s += max(0.0, self._now - (task.dispatched_at or self._now))
            self.registry.refresh(state)
            self._dirty.update(state.capability.supported_operations)

    # ---- task lifecycle ------------------------------------------------

    def _task(self, task_id: str) -> TaskRecord:
        task = self._tasks.get(task_id)
        if task is None:
            raise UnknownTask(f"no task with id {task_id!r}")
        return task

    def _live(self, task_id: str, attempt: int, collector_id: str) -> TaskRecord | None:
        task = self._tasks.get(task_id)
        if task is None or not task.in_flight or task.attempt != attempt or task.collector_id != collector_id:
            return None
        return task

    def _parents(self, task_id: str, depends_on: list[str]) -> list[TaskRecord]:
        """The known parents of a new task; unknown ones and self-references are rejected."""
        parents = []
        for parent_id in dict.fromkeys(depends_on):
            if parent_id == task_id:
                raise InvalidRequest(f"task {task_id!r} depends on itself (a cycle)")
            parent = self._tasks.get(parent_id)
            if parent is None:
                raise InvalidRequest(f"depends_on names unknown task {parent_id!r}")
            parents.append(parent)
        return parents

    def _start(self, task: TaskRecord, parents: list[TaskRecord]) -> None:
        """Queue a new task, or hold it pending until its parents have succeeded."""
        failed = next((p for p in parents if p.state.terminal and p.state is not TaskState.SUCCEEDED), None)
        if failed is not None:
            self._dependency_failed(task, failed)
            return
        task.waiting_on = {p.task_id for p in parents if p.state is not TaskState.SUCCEEDED}
        if not task.waiting_on:
            self._enqueue(task, admit=True)
            return
        for parent_id in task.waiting_on:
            self._tasks[parent_id].children.append(task.task_id)
        task.state = TaskState.PENDING
        self._pending += 1
        self._actions.append(task_event(task, self._now))

    def _enqueue(self, task: TaskRecord, *, front: bool = False, admit: bool = False) -> None:
        if task.state is TaskState.PENDING:
            self._pending -= 1
        task.state = TaskState.QUEUED
        task.collector_id = None
        task.queued_at = self._now
        # with admit=False (retry, redelivery, released dependant) a task is
        # always taken back, even past max_queue_size: it was acknowledged
        self.queue.push(task.task_id, task.request.operation, task.request.priority, front=front, admit=admit)
        self._dirty.add(task.request.operation)
        self._actions.append(task_event(task, self._now))

    def _stop(self, task: TaskRecord, reason: str) -> None:
        """Take a non-final task out of the queue, off its collector, or out of pending."""
        if task.in_flight and task.collector_id is not None:
            self._actions.append(Cancel(task.collector_id, task.task_id, task.attempt, reason))
            state = self.registry.find(task.collector_id)
            if state is not None:
                self._release(state, task)
        elif task.state is TaskState.QUEUED:
            self.queue.remove(task.task_id)
        elif task.state is TaskState.PENDING:
            self._pending -= 1

    def _attempt_failed(self, task: TaskRecord, error: ErrorInfo, result: TaskResult | None = None) -> None:
        task.error, task.result = error, result
        if task.retries >= self.config.max_retries:
            self._finish(task, TaskState.FAILED)
            return
        task.retries += 1
        task.state = TaskState.RETRYING
        task.collector_id = None
        delay = self.backoff_s(task.retries)
        self._timers.add(self._now + delay, TimerKind.RETRY, task.task_id, task.attempt)
        self.stats.tasks_retried += 1
        self._actions.append(task_event(task, self._now, delay_s=delay, error=error.model_dump()))

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): full jitter over an exponential cap."""
        cfg = self.config
        cap = min(cfg.retry_backoff_max_ms, cfg.retry_backoff_base_ms * 2.0 ** (retry - 1))
        return self._rng.uniform(0.0, cap) / 1000.0

    def _time_out(self, task: TaskRecord) -> None:
        state = self.registry.find(task.collector_id or "")
        if state is not None:
            state.tasks_failed += 1
            task.failed_on.add(state.collector_id)
        self._stop(task, "timeout")
        self.stats.attempts_timed_out += 1
        message = f"attempt {task.attempt} exceeded timeout_ms={task.request.timeout_ms}"
        self._attempt_failed(task, ErrorInfo(type="Timeout", message=message))

    def _expire(self, task: TaskRecord) -> None:
        where = {
            TaskState.QUEUED: "while queued: no eligible collector took it before the deadline",
            TaskState.RETRYING: "while waiting to retry",
            TaskState.PENDING: "while waiting for the tasks it depends on",
        }.get(task.state, f"while running on {task.collector_id}")
        self._stop(task, "deadline")
        task.error = ErrorInfo(type="DeadlineExpired", message=f"deadline passed {where}")
        self._finish(task, TaskState.EXPIRED)

    def _dependency_failed(self, task: TaskRecord, parent: TaskRecord) -> None:
        self._stop(task, "dependency_failed")
        message = f"task {parent.task_id} it depends on was {parent.state.value}"
        task.error = ErrorInfo(type="dependency_failed", message=message)
        self._settle(task, TaskState.FAILED)

    def _finish(self, task: TaskRecord, state: TaskState) -> None:
        """Make a task final and resolve the tasks that wait on it (a whole chain, without recursion)."""
        self._settle(task, state)
        stack = [task]
        while stack:
            parent = stack.pop()
            children, parent.children = parent.children, []
            for child_id in children:
                child = self._tasks.get(child_id)
                if child is None or child.state is not TaskState.PENDING:
                    continue
                if parent.state is not TaskState.SUCCEEDED:
                    self._dependency_failed(child, parent)
                    stack.append(child)
                    continue
                child.waiting_on.discard(parent.task_id)
                if not child.waiting_on:
                    self._enqueue(child)

    def _settle(self, task: TaskRecord, state: TaskState) -> None:
        task.state = state
        task.finished_at = self._now
        self.stats.finished(state, self._now - task.created_at)
        self._actions.append(task_event(task, self._now))
        self._actions.append(Finished(task.task_id))
        self._finished.append(task.task_id)
        while len(self._finished) > self.config.max_finished_tasks:
            self._tasks.pop(self._finished.popleft(), None)

    # ---- collector liveness -------------------------------------------

    def _schedule_heartbeat_check(self, state: CollectorState) -> None:
        due = state.last_heartbeat + self.config.heartbeat_timeout_s
        self._timers.add(due, TimerKind.HEARTBEAT_CHECK, state.collector_id, state.order)

    def _check_heartbeat(self, collector_id: str, order: int) -> None:
        state = self.registry.find(collector_id)
        if state is None or state.order != order or state.status is CollectorStatus.UNHEALTHY:
            return
        if state.last_heartbeat + self.config.heartbeat_timeout_s > self._now:
            self._schedule_heartbeat_check(state)
            return
        state.status = CollectorStatus.UNHEALTHY
        state.orphans.extend(state.attempts.items())
        self._take_back(state)
        self.registry.refresh(state)
        self._actions.append(collector_event("unhealthy", state, self._now))

    def _alive(self, state: CollectorState, now: float) -> None:
        state.last_heartbeat = now
        if state.status is not CollectorStatus.UNHEALTHY:
            return
        state.status = CollectorStatus.AVAILABLE
        for task_id, attempt in state.orphans:
            self._actions.append(Cancel(state.collector_id, task_id, attempt, "reassigned"))
        state.orphans.clear()
        self.registry.refresh(state)
        self._schedule_heartbeat_check(state)
        self._dirty.update(state.capability.supported_operations)
        self._actions.append(collector_event("joined", state, now))

    def _take_back(self, state: CollectorState) -> None:
        """Requeue every attempt in flight on a collector that left or died (no retry used)."""
        for task_id in list(state.attempts):
            task = self._tasks[task_id]
            self._release(state, task)
            self.stats.tasks_redelivered += 1
            self._enqueue(task, front=True)

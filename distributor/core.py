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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributor.actions import Action, Cancel, Dispatch, Finished, Publish
from distributor.errors import DuplicateTask, InvalidRequest, InvalidState, UnknownTask
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
from distributor.registry import CapabilityRegistry, CollectorState
from distributor.stats import Stats
from distributor.strategies import LeastLoaded, RoutingStrategy
from distributor.timers import TimerHeap, TimerKind

_IN_FLIGHT = (TaskState.DISPATCHED, TaskState.RUNNING)


@dataclass(slots=True)
class DistributorConfig:
    """The distributor's limits; the daemon fills it from its settings."""

    max_queue_size: int = 10_000
    max_retries: int = 3
    heartbeat_timeout_s: float = 30.0
    retry_backoff_base_ms: float = 100.0
    retry_backoff_max_ms: float = 30_000.0
    max_finished_tasks: int = 100_000


@dataclass(slots=True, eq=False)
class _Task:
    request: TaskRequest
    task_id: str
    created_at: float
    state: TaskState = TaskState.QUEUED
    attempt: int = 0  # number of the latest attempt dispatched: the fencing token
    retries: int = 0  # failed attempts counted against max_retries
    collector_id: str | None = None
    queued_at: float | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    result: TaskResult | None = None
    error: ErrorInfo | None = None

    def info(self) -> TaskInfo:
        return TaskInfo(
            task_id=self.task_id,
            operation=self.request.operation,
            priority=self.request.priority,
            state=self.state,
            attempt=self.attempt,
            retries=self.retries,
            collector_id=self.collector_id,
            created_at=self.created_at,
            queued_at=self.queued_at,
            dispatched_at=self.dispatched_at,
            finished_at=self.finished_at,
            result=self.result,
            error=self.error,
        )


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
        self.strategy: RoutingStrategy = strategy or LeastLoaded()
        self.registry = CapabilityRegistry()
        self.queue = TaskQueue(self.config.max_queue_size)
        self.stats = Stats()
        self._rng = rng or random.Random()
        self._new_task_id = new_task_id
        self._tasks: dict[str, _Task] = {}
        self._finished: deque[str] = deque()
        self._timers = TimerHeap()
        self._dirty: set[str] = set()
        self._actions: list[Action] = []
        self._now = 0.0

    # ---- queries -------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo:
        """The public view of a task; :class:`UnknownTask` if it is not known."""
        return self._task(task_id).info()

    def collectors(self) -> list[CollectorInfo]:
        return [c.info() for c in self.registry]

    def next_timer(self) -> float | None:
        """When :meth:`tick` next has work to do (None: only on new events)."""
        return self._timers.next_due()

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges for ``status`` and ``stats``."""
        in_flight = sum(c.current_tasks for c in self.registry)
        active = sum(1 for c in self.registry if c.status is CollectorStatus.AVAILABLE)
        return self.stats.snapshot(
            tasks_queued=len(self.queue),
            tasks_in_flight=in_flight,
            active_collectors=active,
            collectors=len(self.registry),
            queue_depths=self.queue.depths(),
            tasks_known=len(self._tasks),
        )

    # ---- collector events ---------------------------------------------

    def register(self, capability: CollectorCapability, now: float) -> list[Action]:
        """A collector advertises its capabilities (first time or again after a reconnect)."""
        self._now = now
        state = self.registry.find(capability.collector_id)
        if state is None:
            state = self.registry.add(capability, now)
            self._schedule_heartbeat_check(state)
            self._publish_collector("joined", state)
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
        self._publish_collector("left", state)
        return self._drain()

    def drain(self, collector_id: str, now: float) -> list[Action]:
        """Stop routing new work to a collector; its running attempts continue."""
        self._now = now
        state = self.registry.get(collector_id)
        if state.status is CollectorStatus.AVAILABLE:
            state.status = CollectorStatus.DRAINING
            self.registry.refresh(state)
            self._publish_collector("drained", state)
        return self._drain()

    def undrain(self, collector_id: str, now: float) -> list[Action]:
        """Resume routing work to a drained collector."""
        self._now = now
        state = self.registry.get(collector_id)
        if state.status is CollectorStatus.DRAINING:
            state.status = CollectorStatus.AVAILABLE
            self.registry.refresh(state)
            self._dirty.update(state.capability.supported_operations)
            self._publish_collector("joined", state)
        return self._drain()

    def accepted(self, collector_id: str, task_id: str, attempt: int, now: float) -> list[Action]:
        """The collector started running an attempt."""
        self._now = now
        task = self._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        elif task.state is TaskState.DISPATCHED:
            task.state = TaskState.RUNNING
            self._publish_task(task)
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
            self._publish_task(task, state="progress", fraction=fraction, message=message)
        return self._drain()

    def complete(self, result: TaskResult, now: float) -> list[Action]:
        """An attempt finished. Results of attempts that are no longer current are ignored."""
        self._now = now
        task = self._live(result.task_id, result.attempt, result.collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return self._drain()
        state = self.registry.get(result.collector_id)
        self._release(state, task)
        state.total_execution_s += result.execution_time_s
        if result.success:
            state.tasks_completed += 1
            task.result, task.error = result, None
            self._finish(task, TaskState.SUCCEEDED)
        else:
            state.tasks_failed += 1
            error = result.error or ErrorInfo(type="Error", message="attempt failed")
            self._attempt_failed(task, error, result)
        return self._drain()

    # ---- client events -------------------------------------------------

    def submit(self, request: TaskRequest, now: float) -> tuple[str, list[Action]]:
        """Queue a task; returns its id. Raises QueueFull, DuplicateTask or InvalidRequest."""
        self._now = now
        task_id = request.task_id or self._new_task_id()
        if task_id in self._tasks:
            raise DuplicateTask(f"task {task_id!r} already exists")
        if request.deadline is not None and request.deadline <= now:
            raise InvalidRequest(f"deadline {request.deadline} is already past (now {now:.3f})")
        self.queue.push(task_id, request.operation, request.priority)
        request = request.model_copy(update={"task_id": task_id, "created_at": request.created_at or now})
        task = _Task(request, task_id, created_at=request.created_at or now, queued_at=now)
        self._tasks[task_id] = task
        self.stats.tasks_submitted += 1
        if request.deadline is not None:
            self._timers.add(request.deadline, TimerKind.DEADLINE, task_id)
        self._publish_task(task)
        self._dirty.add(request.operation)
        return task_id, self._drain()

    def cancel(self, task_id: str, now: float) -> list[Action]:
        """Cancel a task that is not final yet (queued, retrying or running)."""
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
                if timer.kind is TimerKind.ATTEMPT_TIMEOUT and task.state in _IN_FLIGHT:
                    self._time_out(task)
                elif timer.kind is TimerKind.RETRY and task.state is TaskState.RETRYING:
                    self._enqueue(task)
        return self._drain()

    def set_strategy(self, strategy: RoutingStrategy) -> None:
        """Switch the routing strategy; the next decision uses it."""
        self.strategy = strategy

    # ---- internals -----------------------------------------------------

    def _drain(self) -> list[Action]:
        while self._dirty:
            self._pump(self._dirty.pop())
        actions, self._actions = self._actions, []
        return actions

    def _task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise UnknownTask(f"no task with id {task_id!r}")
        return task

    def _live(self, task_id: str, attempt: int, collector_id: str) -> _Task | None:
        task = self._tasks.get(task_id)
        if task is None or task.state not in _IN_FLIGHT or task.attempt != attempt or task.collector_id != collector_id:
            return None
        return task

    def _pump(self, operation: str) -> None:
        """Dispatch queued tasks of one operation while an eligible collector has room."""
        available = self.registry.available(operation)
        while available and self.queue.depth(operation):
            for priority, task_id in self.queue.heads(operation):
                candidates = [c for c in available.values() if priority in c.priorities]
                if candidates:
                    task = self._tasks[task_id]
                    self.queue.pop(task_id)
                    self._dispatch(task, self.strategy.select(task.request, candidates))
                    break
            else:
                return  # no queued priority level is accepted by a collector with room

    def _dispatch(self, task: _Task, state: CollectorState) -> None:
        task.attempt += 1
        task.state = TaskState.DISPATCHED
        task.collector_id = state.collector_id
        task.dispatched_at = self._now
        state.current_tasks += 1
        state.attempts[task.task_id] = task.attempt
        self.registry.refresh(state)
        request = task.request
        self._timers.add(self._now + request.timeout_ms / 1000.0, TimerKind.ATTEMPT_TIMEOUT, task.task_id, task.attempt)
        self.stats.dispatched(request.operation, self._now - (task.queued_at or self._now))
        self._actions.append(
            Dispatch(state.collector_id, state.capability.collector_type, request, task.attempt, request.deadline)
        )
        self._publish_task(task)

    def _release(self, state: CollectorState, task: _Task) -> None:
        """The attempt of ``task`` no longer occupies a slot on ``state``."""
        if state.attempts.pop(task.task_id, None) is not None:
            state.current_tasks -= 1
            self.registry.refresh(state)
            self._dirty.update(state.capability.supported_operations)

    def _stop(self, task: _Task, reason: str) -> None:
        """Take a non-final task out of the queue or off its collector."""
        if task.state in _IN_FLIGHT and task.collector_id is not None:
            self._actions.append(Cancel(task.collector_id, task.task_id, task.attempt, reason))
            state = self.registry.find(task.collector_id)
            if state is not None:
                self._release(state, task)
        elif task.state is TaskState.QUEUED:
            self.queue.remove(task.task_id)

    def _enqueue(self, task: _Task, *, front: bool = False) -> None:
        task.state = TaskState.QUEUED
        task.collector_id = None
        task.queued_at = self._now
        # an acknowledged task is always taken back, even past max_queue_size
        self.queue.push(task.task_id, task.request.operation, task.request.priority, front=front, admit=False)
        self._dirty.add(task.request.operation)
        self._publish_task(task)

    def _attempt_failed(self, task: _Task, error: ErrorInfo, result: TaskResult | None = None) -> None:
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
        self._publish_task(task, delay_s=delay, error=error.model_dump())

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): full jitter over an exponential cap."""
        cfg = self.config
        cap = min(cfg.retry_backoff_max_ms, cfg.retry_backoff_base_ms * 2.0 ** (retry - 1))
        return self._rng.uniform(0.0, cap) / 1000.0

    def _time_out(self, task: _Task) -> None:
        state = self.registry.find(task.collector_id or "")
        if state is not None:
            state.tasks_failed += 1
        self._stop(task, "timeout")
        self.stats.attempts_timed_out += 1
        message = f"attempt {task.attempt} exceeded timeout_ms={task.request.timeout_ms}"
        self._attempt_failed(task, ErrorInfo(type="Timeout", message=message))

    def _expire(self, task: _Task) -> None:
        where = {
            TaskState.QUEUED: "while queued: no eligible collector took it before the deadline",
            TaskState.RETRYING: "while waiting to retry",
        }.get(task.state, f"while running on {task.collector_id}")
        self._stop(task, "deadline")
        task.error = ErrorInfo(type="DeadlineExpired", message=f"deadline passed {where}")
        self._finish(task, TaskState.EXPIRED)

    def _finish(self, task: _Task, state: TaskState) -> None:
        task.state = state
        task.finished_at = self._now
        self.stats.finished(state, self._now - task.created_at)
        self._publish_task(task)
        self._actions.append(Finished(task.task_id))
        self._finished.append(task.task_id)
        while len(self._finished) > self.config.max_finished_tasks:
            self._tasks.pop(self._finished.popleft(), None)

    # ---- collector liveness -------------------------------------------

    def _schedule_heartbeat_check(self, state: CollectorState) -> None:
        due = state.last_heartbeat + self.config.heartbeat_timeout_s
        self._timers.add(due, TimerKind.HEARTBEAT_CHECK, state.collector_id, state.generation)

    def _check_heartbeat(self, collector_id: str, generation: int) -> None:
        state = self.registry.find(collector_id)
        if state is None or state.generation != generation or state.status is CollectorStatus.UNHEALTHY:
            return
        if state.last_heartbeat + self.config.heartbeat_timeout_s > self._now:
            self._schedule_heartbeat_check(state)
            return
        state.status = CollectorStatus.UNHEALTHY
        state.orphans.extend(state.attempts.items())
        self._take_back(state)
        self.registry.refresh(state)
        self._publish_collector("unhealthy", state)

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
        self._publish_collector("joined", state)

    def _take_back(self, state: CollectorState) -> None:
        """Requeue every attempt in flight on a collector that left or died (no retry used)."""
        for task_id in list(state.attempts):
            task = self._tasks[task_id]
            self._release(state, task)
            self.stats.tasks_redelivered += 1
            self._enqueue(task, front=True)

    # ---- events --------------------------------------------------------

    def _publish_task(self, task: _Task, state: str | None = None, **extra: Any) -> None:
        name = state or task.state.value
        body: dict[str, Any] = {
            "task_id": task.task_id,
            "state": name,
            "operation": task.request.operation,
            "attempt": task.attempt,
            "collector_id": task.collector_id,
            "at": self._now,
        }
        body.update(extra)
        self._actions.append(Publish(f"events.task.{name}.{task.request.operation}", body))

    def _publish_collector(self, event: str, state: CollectorState) -> None:
        cap = state.capability
        body = {"collector_id": cap.collector_id, "collector_type": cap.collector_type, "at": self._now}
        self._actions.append(Publish(f"events.collector.{event}.{cap.collector_type}", body))

"""The TaskDistributor: the sans-I/O state machine at the heart of eventbus.

Feed it events (register, heartbeat, submit, results, cancel, tick) with the
current time; each call returns the actions the host must carry out, in
order. It never reads a clock, touches a socket or sleeps, so a plain loop
can drive thousands of simulated collectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from distributor.actions import Action
from distributor.config import DistributorConfig
from distributor.constraints import parse_constraints
from distributor.errors import DuplicateTask, InvalidRequest, InvalidState
from distributor.models import (
    CollectorCapability,
    CollectorInfo,
    CollectorStatus,
    ErrorInfo,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
    compact,
)
from distributor.recovery import Recovering
from distributor.strategies import RoutingStrategy
from distributor.tasks import TaskRecord, idempotency_scope
from distributor.timers import TimerKind

__all__ = ["DistributorConfig", "TaskDistributor"]


class TaskDistributor(Recovering):
    """Routes tasks to collectors; keeps every task's state until it is final.

    Every public method takes ``now`` (epoch seconds, supplied by the host)
    and returns the list of :mod:`distributor.actions` to perform.
    """

    # ---- queries -------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo:
        """The public view of a task; :class:`UnknownTask` if it is not known."""
        return self._task(task_id).info()

    def state(self, task_id: str) -> TaskState:
        """A task's state, without building its view; :class:`UnknownTask` if it is not known."""
        return self._task(task_id).state

    def owner(self, task_id: str) -> int | None:
        """Who submitted a task (as passed to :meth:`submit`); :class:`UnknownTask` if it is not known."""
        return self._task(task_id).owner

    def tasks(self, state: TaskState | None = None, operation: str | None = None) -> Iterator[TaskInfo]:
        """Known tasks, newest first, optionally filtered."""
        for _, info in self.tasks_before(None, state, operation):
            yield info

    def tasks_before(
        self, cursor: int | None, state: TaskState | None = None, operation: str | None = None
    ) -> Iterator[tuple[int, TaskInfo]]:
        """``(cursor, task)`` for known tasks older than ``cursor`` (None: all), newest first, optionally filtered.

        A task's cursor continues the listing after it. Consume the iterator
        before the next event: it reads the live task table.
        """
        for task in self._listing.older_than(cursor):
            if (state is None or task.state is state) and (operation is None or task.request.operation == operation):
                yield task.serial, task.info()

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
            unfinished_bytes=self.open_bytes,
            tasks_in_flight=self._in_flight,
            active_collectors=sum(1 for c in collectors if c.status is CollectorStatus.AVAILABLE),
            collectors=len(collectors),
            queue_depths=self.queue.depths(),
            tasks_known=len(self._tasks),
            tasks_evicted=self.history.evicted,
            finished_bytes=self.history.bytes,
            utilization={c.collector_id: round(c.utilization(now), 4) for c in collectors},
        )

    def outcomes(self, now: float) -> dict[str, Any]:
        """The operator's report: outcomes and completion times per operation, collectors, errors by type."""
        return {
            "operations": self.report.operations(),
            "collectors": [
                {
                    "collector_id": c.collector_id,
                    "status": c.status.value,
                    "utilization": round(c.utilization, 4),
                    "success_rate": c.success_rate,
                    "tasks_completed": c.tasks_completed,
                    "tasks_failed": c.tasks_failed,
                }
                for c in self.collectors(now)
            ],
            "errors": self.report.errors(),
        }

    # ---- collector events ---------------------------------------------

    def register(self, capability: CollectorCapability, now: float) -> list[Action]:
        """A collector advertises its capabilities (first time or again after a reconnect)."""
        self._now = now
        state = self.registry.find(capability.collector_id)
        if state is None:
            state = self.registry.add(capability, now)
            record = self._collector_records.pop(capability.collector_id, None)
            if record is not None:  # known before the daemon restarted: its record carries on
                state.tasks_completed, state.tasks_failed, state.total_execution_s = record
            self._schedule_heartbeat_check(state)
            self._collector_event("joined", state)
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
        self._collector_event("left", state)
        return self._drain()

    def drain(self, collector_id: str, now: float) -> list[Action]:
        """Stop routing new work to a collector; its running attempts continue."""
        self._now = now
        state = self.registry.get(collector_id)
        if not state.drained:
            state.drained = True
            if state.status is CollectorStatus.AVAILABLE:
                state.status = CollectorStatus.DRAINING
                self.registry.refresh(state)
            self._collector_event("drained", state)
        return self._drain()

    def undrain(self, collector_id: str, now: float) -> list[Action]:
        """Resume routing work to a drained collector."""
        self._now = now
        state = self.registry.get(collector_id)
        if state.drained:
            state.drained = False
            if state.status is CollectorStatus.DRAINING:
                state.status = CollectorStatus.AVAILABLE
                self.registry.refresh(state)
                self._dirty.update(state.capability.supported_operations)
            self._collector_event("joined", state)
        return self._drain()

    def reject(self, collector_id: str, task_id: str, attempt: int, now: float) -> list[Action]:
        """A collector declines an attempt it was sent (it is shutting down): requeued, no retry used.

        The collector is drained too, so the task is not offered to it again.
        """
        self._now = now
        collector = self.registry.find(collector_id)
        if collector is not None and not collector.drained:
            collector.drained = True
            if collector.status is CollectorStatus.AVAILABLE:
                collector.status = CollectorStatus.DRAINING
                self.registry.refresh(collector)
            self._collector_event("drained", collector)
        task = self._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return self._drain()
        self._release(self.registry.get(collector_id), task)
        task.failed_on |= {collector_id}
        self.stats.tasks_redelivered += 1
        self._enqueue(task, front=True)
        return self._drain()

    def suspect(self, collector_id: str, now: float) -> list[Action]:
        """The host could not deliver to a collector: treat it as dead until it heartbeats again."""
        self._now = now
        state = self.registry.find(collector_id)
        if state is not None and state.status is not CollectorStatus.UNHEALTHY:
            self._mark_unhealthy(state)
        return self._drain()

    def accepted(self, collector_id: str, task_id: str, attempt: int, now: float) -> list[Action]:
        """The collector started running an attempt."""
        self._now = now
        task = self._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        elif task.state is TaskState.DISPATCHED:
            task.state = TaskState.RUNNING
            self._task_event(task)
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
            self._task_event(task, "progress", fraction=fraction, message=message)
        return self._drain()

    def complete(self, result: TaskResult, now: float, *, size: int = 0) -> list[Action]:
        """An attempt finished. Results of attempts that are no longer current are ignored.

        ``size`` is the encoded size of the result as received; the finished-task
        history charges it against ``max_finished_bytes``.
        """
        self._now = now
        task = self._live(result.task_id, result.attempt, result.collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return self._drain()
        if task.state is TaskState.DISPATCHED:  # ``accepted`` is optional: the attempt ran
            task.state = TaskState.RUNNING
            self._task_event(task)
        state = self.registry.get(result.collector_id)
        state.total_execution_s += result.execution_time_s
        self._collector_changed(state)
        self.timings.ran(task.request.operation, now - (task.dispatched_at or now))
        task.result_size = size
        if result.success:
            state.tasks_completed += 1
            self._release(state, task)
            task.result, task.error = result, None
            self._finish(task, TaskState.SUCCEEDED)
        else:
            state.tasks_failed += 1
            self._release(state, task)
            task.failed_on |= {state.collector_id}
            self._attempt_failed(task, result.error or ErrorInfo(type="Error", message="attempt failed"), result)
        return self._drain()

    # ---- client events -------------------------------------------------

    def submit(
        self, request: TaskRequest, now: float, *, owner: int | None = None, size: int = 0
    ) -> tuple[str, list[Action]]:
        """Accept a task; returns its id. Raises QueueFull, DuplicateTask or InvalidRequest.

        ``owner`` identifies the submitter for the host's own access rules (see
        :meth:`owner`); ``size`` is what the task costs in memory (the host's
        frame size), counted against ``max_queued_bytes`` until it finishes.
        A request repeating the ``idempotency_key`` of a task of the same owner
        submitted within ``idempotency_ttl_s`` returns that task's id and changes
        nothing (:meth:`find_idempotent` tells the two cases apart).
        """
        self._now = now
        key = request.idempotency_key
        if key is not None:
            known = self.find_idempotent(key, owner, now)
            if known is not None:
                return known, self._drain()
        task_id = request.task_id or self._new_task_id()
        if task_id in self._tasks:
            raise DuplicateTask(f"task {task_id!r} already exists")
        if request.deadline is not None and request.deadline <= now:
            raise InvalidRequest(f"deadline {request.deadline} is already past (now {now:.3f})")
        constraints = parse_constraints(request.constraints) if request.constraints else ()
        parents = self._parents(task_id, request.depends_on) if request.depends_on else []
        self._admit(request.operation, size)
        created = request.created_at or now
        request = compact(request, task_id=task_id, created_at=created)
        self._serial += 1
        task = TaskRecord(
            request, task_id, created_at=created, serial=self._serial, constraints=constraints, owner=owner, size=size
        )
        self._hold(task, size)
        self._tasks[task_id] = task
        if key is not None:
            self._keys[idempotency_scope(owner, key)] = task_id
        self.stats.tasks_submitted += 1
        if request.deadline is not None:
            self._timers.add(request.deadline, TimerKind.DEADLINE, task_id, task.serial)
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
                self._check_heartbeat(timer.key, timer.serial, timer.token)
                continue
            if timer.kind is TimerKind.FORGET_COLLECTOR:
                self._forget(timer.key, timer.serial)
                continue
            task = self._tasks.get(timer.key)
            if task is None or task.serial != timer.serial or task.state.terminal:
                continue
            if timer.kind is TimerKind.DEADLINE:
                self._expire(task)
            elif timer.token == task.attempt:
                if timer.kind is TimerKind.ATTEMPT_TIMEOUT and task.in_flight:
                    self._time_out(task)
                elif timer.kind is TimerKind.RETRY and task.state is TaskState.RETRYING:
                    self._enqueue(task)
        return self._drain()

    def reconfigure(self, config: DistributorConfig, now: float) -> list[Action]:
        """Apply new limits to later decisions; tasks already taken stay, a smaller history evicts now."""
        self._now = now
        self.config = config
        self.queue.max_size = config.max_queue_size
        self.history.max_tasks = config.max_finished_tasks
        self.history.max_bytes = config.max_finished_bytes
        return self._drain()

    def set_strategy(self, strategy: RoutingStrategy) -> None:
        """Switch the routing strategy; the next decision uses it."""
        self.strategy = strategy
        self.registry.set_order(strategy.key)

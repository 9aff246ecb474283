"""The TaskDistributor: the sans-I/O state machine at the heart of eventbus.

Feed it events (register, heartbeat, submit, results, cancel, tick) with the
current time; each call returns the actions the host must carry out, in
order. It never reads a clock, touches a socket or sleeps, so a plain loop
can drive thousands of simulated collectors.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Concatenate, ParamSpec

from distributor import gating, liveness, recovery, spill
from distributor.actions import Action
from distributor.config import DistributorConfig
from distributor.errors import InvalidState, UnknownSchedule
from distributor.history import FinishedHistory
from distributor.limits import OPERATION, Limit
from distributor.machine import TaskMachine, new_task_id
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
from distributor.recovery import Changes, CollectorRecord
from distributor.registry import CapabilityRegistry
from distributor.report import ReportBook
from distributor.schedules import Schedule, Scheduler, ScheduleSpec
from distributor.stats import Stats
from distributor.strategies import RoutingStrategy
from distributor.tasks import TaskRecord
from distributor.timers import Timer, TimerKind
from distributor.timings import Timings

__all__ = ["DistributorConfig", "TaskDistributor"]


def _task_timer(m: TaskMachine, timer: Timer, task: TaskRecord) -> None:
    """A timer of a task that is not final: its deadline, its due time, its spill, its attempt's timeout, its retry."""
    if timer.kind is TimerKind.DEADLINE:
        m._expire(task)
    elif timer.kind is TimerKind.DUE:
        if task.state is TaskState.SCHEDULED:
            m._enqueue(task)
    elif timer.kind is TimerKind.SPILL:
        spill.due(m, task)
    elif timer.token == task.attempt:
        if timer.kind is TimerKind.ATTEMPT_TIMEOUT and task.in_flight:
            m._time_out(task)
        elif timer.kind is TimerKind.RETRY and task.state is TaskState.RETRYING:
            m._enqueue(task)


_P = ParamSpec("_P")


def _event(
    method: Callable[Concatenate[TaskDistributor, _P], None],
) -> Callable[Concatenate[TaskDistributor, _P], list[Action]]:
    """An event of the public API: the machine takes it at its ``now`` argument, then hands out its actions."""
    names = list(inspect.signature(method).parameters)
    at = names.index("now") - 1  # its position among the arguments after self

    @functools.wraps(method)
    def event(self: TaskDistributor, /, *args: _P.args, **kwargs: _P.kwargs) -> list[Action]:
        m = self._m
        m.at(kwargs["now"] if len(args) <= at else args[at])  # type: ignore[arg-type]
        method(self, *args, **kwargs)
        return m.flush()

    return event


class TaskDistributor:
    """Routes tasks to collectors; keeps every task's state until it is final.

    Every event method takes ``now`` (epoch seconds, supplied by the host)
    and returns the list of :mod:`distributor.actions` to perform. The state
    lives in a :class:`~distributor.machine.TaskMachine`, which this class
    holds and feeds.
    """

    def __init__(
        self,
        config: DistributorConfig | None = None,
        *,
        strategy: RoutingStrategy | None = None,
        rng: random.Random | None = None,
        new_task_id: Callable[[], str] = new_task_id,
    ) -> None:
        self._m = m = TaskMachine(config, strategy=strategy, rng=rng, new_task_id=new_task_id)
        # the machine's parts a host reads (they stay the same objects for the distributor's life)
        self.registry: CapabilityRegistry = m.registry
        self.queue: TaskQueue = m.queue
        self.stats: Stats = m.stats
        self.timings: Timings = m.timings
        self.history: FinishedHistory = m.history
        self.report: ReportBook = m.report
        self._scheduler = Scheduler(m)

    @property
    def config(self) -> DistributorConfig:
        return self._m.config

    @property
    def strategy(self) -> RoutingStrategy:
        return self._m.strategy

    @property
    def events(self) -> bool:
        """Whether task and collector events are published (a host with no subscriber turns this off)."""
        return self._m.events

    @events.setter
    def events(self, on: bool) -> None:
        self._m.events = on

    @property
    def journal(self) -> bool:
        """Whether the distributor notes what a store must keep (see :meth:`take_changes`)."""
        return self._m.journal

    @journal.setter
    def journal(self, on: bool) -> None:
        self._m.journal = on

    # ---- queries -------------------------------------------------------

    def get(self, task_id: str, now: float | None = None) -> TaskInfo:
        """A task's public view at ``now`` (None: the last event's time); :class:`UnknownTask` if it is not known."""
        return self._info(self._m._task(task_id), now)

    def _info(self, task: TaskRecord, now: float | None) -> TaskInfo:
        if task.state is not TaskState.QUEUED:
            return task.info()
        return task.info(self.queue.effective(task.task_id, self._m._now if now is None else now))

    def state(self, task_id: str) -> TaskState:
        """A task's state, without building its view; :class:`UnknownTask` if it is not known."""
        return self._m._task(task_id).state

    def owner(self, task_id: str) -> int | None:
        """Who submitted a task (as passed to :meth:`submit`); :class:`UnknownTask` if it is not known."""
        return self._m._task(task_id).owner

    def tasks(self, state: TaskState | None = None, operation: str | None = None) -> Iterator[TaskInfo]:
        """Known tasks, newest first, optionally filtered."""
        for _, info in self.tasks_before(None, state, operation):
            yield info

    def tasks_before(
        self,
        cursor: int | None,
        state: TaskState | None = None,
        operation: str | None = None,
        now: float | None = None,
    ) -> Iterator[tuple[int, TaskInfo]]:
        """``(cursor, task)`` for known tasks older than ``cursor`` (None: all), newest first, optionally filtered.

        A task's cursor continues the listing after it; views are as at ``now`` (see :meth:`get`). Consume the iterator
        before the next event: it reads the live task table.
        """
        for task in self._m._listing.older_than(cursor):
            if (state is None or task.state is state) and (operation is None or task.request.operation == operation):
                yield task.serial, self._info(task, now)

    def find_idempotent(self, key: str, owner: int | None, now: float) -> str | None:
        """The id of the task ``owner`` submitted with ``key`` within ``idempotency_ttl_s``, if it is held."""
        return self._m.find_idempotent(key, owner, now)

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): full jitter over an exponential cap."""
        return self._m.backoff_s(retry)

    def holds(self, task_id: str) -> bool:
        """Whether a task with this id is held in memory (unfinished, or finished and not evicted yet)."""
        return task_id in self._m._tasks

    @property
    def has_changes(self) -> bool:
        """Whether a task record changed since :meth:`take_changes` (only with ``journal`` on)."""
        return bool(self._m._changed) or bool(self._scheduler.changed)

    def take_changes(self) -> Changes:
        """The task and collector records changed since the last call, each once, in the order they first changed.

        The task records are the live ones: the host must read what it keeps of
        them before it hands any further event to the distributor.
        """
        changes = recovery.take_changes(self._m)
        changes.schedules = self._scheduler.take_changes()
        return changes

    def collectors(self, now: float) -> list[CollectorInfo]:
        return [c.info(now) for c in self.registry]

    def next_timer(self) -> float | None:
        """When :meth:`tick` next has work to do (None: only on new events)."""
        return self._m._timers.next_due()

    def snapshot(self, now: float) -> dict[str, Any]:
        """Counters and gauges for ``status`` and ``stats``."""
        m = self._m
        collectors = list(self.registry)
        return self.stats.snapshot(
            tasks_queued=len(self.queue),
            tasks_pending=m.counts[TaskState.PENDING],
            tasks_scheduled=m.counts[TaskState.SCHEDULED],
            unfinished_bytes=m.open_bytes,
            tasks_in_flight=m._in_flight,
            tasks_remote=m.remote_in_flight,
            active_collectors=sum(1 for c in collectors if c.status is CollectorStatus.AVAILABLE),
            collectors=len(collectors),
            queue_depths=self.queue.depths(),
            tasks_known=len(m._tasks),
            tasks_evicted=self.history.evicted,
            finished_bytes=self.history.bytes,
            utilization={c.collector_id: round(c.utilization(now), 4) for c in collectors},
            limits=m.limits.view(now),
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

    @_event
    def register(self, capability: CollectorCapability, now: float) -> None:
        """A collector advertises its capabilities (first time or again after a reconnect)."""
        m = self._m
        state = self.registry.find(capability.collector_id)
        if state is None:
            state = self.registry.add(capability, now)
            record = m._collector_records.pop(capability.collector_id, None)
            if record is not None:  # known before the daemon restarted: its record carries on
                state.tasks_completed, state.tasks_failed, state.total_execution_s = record
            liveness.schedule_check(m, state)
            m._collector_event("joined", state)
        else:
            self.registry.replace_capability(state, capability)
            liveness.alive(m, state, now)
        m._dirty.update(capability.supported_operations)

    @_event
    def heartbeat(self, collector_id: str, now: float) -> None:
        """A collector is alive; :class:`UnknownCollector` tells it to register again."""
        m = self._m
        liveness.alive(m, self.registry.get(collector_id), now)

    @_event
    def deregister(self, collector_id: str, now: float) -> None:
        """A collector leaves; its attempts in flight go back to the queue without using a retry."""
        m = self._m
        state = self.registry.get(collector_id)
        m._take_back(state)
        self.registry.remove(collector_id)
        m._collector_event("left", state)

    @_event
    def drain(self, collector_id: str, now: float) -> None:
        """Stop routing new work to a collector; its running attempts continue."""
        m = self._m
        state = self.registry.get(collector_id)
        if not state.drained:
            state.drained = True
            if state.status is CollectorStatus.AVAILABLE:
                state.status = CollectorStatus.DRAINING
                self.registry.refresh(state)
            m._collector_event("drained", state)

    @_event
    def undrain(self, collector_id: str, now: float) -> None:
        """Resume routing work to a drained collector."""
        m = self._m
        state = self.registry.get(collector_id)
        if state.drained:
            state.drained = False
            if state.status is CollectorStatus.DRAINING:
                state.status = CollectorStatus.AVAILABLE
                self.registry.refresh(state)
                m._dirty.update(state.capability.supported_operations)
            m._collector_event("joined", state)

    @_event
    def reject(self, collector_id: str, task_id: str, attempt: int, now: float) -> None:
        """A collector declines an attempt it was sent (it is shutting down): requeued, no retry used.

        The collector is drained too, so the task is not offered to it again.
        """
        m = self._m
        collector = self.registry.find(collector_id)
        if collector is not None and not collector.drained:
            collector.drained = True
            if collector.status is CollectorStatus.AVAILABLE:
                collector.status = CollectorStatus.DRAINING
                self.registry.refresh(collector)
            m._collector_event("drained", collector)
        task = m._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return
        m._release(self.registry.get(collector_id), task)
        task.failed_on |= {collector_id}
        self.stats.tasks_redelivered += 1
        m._enqueue(task, front=True)

    @_event
    def suspect(self, collector_id: str, now: float) -> None:
        """The host could not deliver to a collector: treat it as dead until it heartbeats again."""
        m = self._m
        state = self.registry.find(collector_id)
        if state is not None and state.status is not CollectorStatus.UNHEALTHY:
            liveness.mark_unhealthy(m, state)

    @_event
    def accepted(self, collector_id: str, task_id: str, attempt: int, now: float) -> None:
        """The collector started running an attempt."""
        m = self._m
        task = m._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        elif task.state is TaskState.DISPATCHED:
            m._to(task, TaskState.RUNNING)
            m._task_event(task)

    @_event
    def progress(
        self, collector_id: str, task_id: str, attempt: int, fraction: float, message: str, now: float
    ) -> None:
        """The collector reports progress on a running attempt."""
        m = self._m
        task = m._live(task_id, attempt, collector_id)
        if task is None:
            self.stats.stale_messages += 1
        else:
            m._task_event(task, "progress", fraction=fraction, message=message)

    @_event
    def complete(self, result: TaskResult, now: float, *, size: int = 0) -> None:
        """An attempt finished. Results of attempts that are no longer current are ignored.

        ``size`` is the encoded size of the result as received; the finished-task
        history charges it against ``max_finished_bytes``.
        """
        m = self._m
        task = m._live(result.task_id, result.attempt, result.collector_id)
        if task is None:
            self.stats.stale_messages += 1
            return
        if task.state is TaskState.DISPATCHED:  # ``accepted`` is optional: the attempt ran
            m._to(task, TaskState.RUNNING)
            m._task_event(task)
        state = self.registry.get(result.collector_id)
        state.total_execution_s += result.execution_time_s
        m._collector_changed(state)
        self.timings.ran(task.request.operation, now - (task.dispatched_at or now))
        task.result_size = size
        if result.success:
            state.tasks_completed += 1
            m._release(state, task)
            task.result, task.error = result, None
            m._finish(task, TaskState.SUCCEEDED)
        else:
            state.tasks_failed += 1
            m._release(state, task)
            task.failed_on |= {state.collector_id}
            m._attempt_failed(task, result.error or ErrorInfo(type="Error", message="attempt failed"), result)

    # ---- client events -------------------------------------------------

    @_event
    def restore(
        self,
        tasks: Iterable[TaskRecord],
        now: float,
        *,
        parents: Mapping[str, TaskState] | None = None,
        last_serial: int = 0,
        collectors: Mapping[str, CollectorRecord] | None = None,
    ) -> None:
        """Take back the unfinished tasks a store kept, before any other event (a restart).

        ``tasks`` are records as they were last written: pending, scheduled,
        queued, dispatched, running or retrying. They go back in serial
        (submission) order, so priority and FIFO order hold. An attempt that was
        in flight is over: the task is queued again without using a retry, and
        its next attempt gets the next number, so a late result of the old one
        is stale; but an attempt spilled to another host goes on (with spilling
        on), since its result reaches this host even after a restart.
        Deadlines and ``not_before`` times still apply (one already past fires
        on the next tick, or queues the task now). A pending task
        waits for its parents still held, and looks up the others in
        ``parents`` (final states of finished tasks): one that did not succeed,
        or is not known any more, fails it with ``dependency_failed``.
        ``last_serial`` is the highest serial the store has seen (finished tasks
        included), so new serials continue after it; ``collectors`` are the
        records of collectors, applied when they register.
        """
        recovery.restore(self._m, tasks, parents=parents, last_serial=last_serial, collectors=collectors)

    def submit(
        self, request: TaskRequest, now: float, *, owner: int | None = None, size: int = 0, local: bool = False
    ) -> tuple[str, list[Action]]:
        """Accept a task; returns its id. Raises QueueFull, DuplicateTask or InvalidRequest.

        ``owner`` identifies the submitter for the host's own access rules (see
        :meth:`owner`); ``size`` is what the task costs in memory (the host's
        frame size), counted against ``max_queued_bytes`` until it finishes.
        A ``local`` task runs on this host only: it is never spilled (a task
        another host spilled here).
        A request repeating the ``idempotency_key`` of a task of the same owner
        submitted within ``idempotency_ttl_s`` returns that task's id and changes
        nothing (:meth:`find_idempotent` tells the two cases apart).
        """
        m = self._m
        m.at(now)
        key = request.idempotency_key
        if key is not None:
            known = self.find_idempotent(key, owner, now)
            if known is not None:
                return known, m.flush()
        task_id = m.accept(request, owner, size, local=local)
        return task_id, m.flush()

    @_event
    def cancel(self, task_id: str, now: float) -> None:
        """Cancel a task that is not final yet (pending, queued, retrying or running)."""
        m = self._m
        task = m._task(task_id)
        if task.state.terminal:
            raise InvalidState(f"task {task_id!r} is already {task.state.value}")
        m._stop(task, "cancelled")
        task.error = ErrorInfo(type="Cancelled", message="cancelled by request")
        m._finish(task, TaskState.CANCELLED)

    @_event
    def tick(self, now: float) -> None:
        """Fire every timer due by ``now``: attempt timeouts, deadlines, retries, due times, heartbeat checks."""
        m = self._m
        while (timer := m._timers.pop_due(now)) is not None:
            if timer.kind is TimerKind.LIMIT:
                gating.opened(m, timer.key, timer.serial)
                continue
            if timer.kind is TimerKind.SCHEDULE:
                self._scheduler.fire(timer.key, timer.token, now)
                continue
            if timer.kind is TimerKind.HEARTBEAT_CHECK:
                liveness.check(m, timer.key, timer.serial, timer.token)
                continue
            if timer.kind is TimerKind.FORGET_COLLECTOR:
                liveness.forget(m, timer.key, timer.serial)
                continue
            task = m._tasks.get(timer.key)
            if task is not None and task.serial == timer.serial and not task.state.terminal:
                _task_timer(m, timer, task)

    @_event
    def reconfigure(self, config: DistributorConfig, now: float) -> None:
        """Apply new limits to later decisions; tasks already taken stay, a smaller history evicts now."""
        self._m.config = config
        self.queue.max_size = config.max_queue_size
        self.queue.aging = config.aging
        self.history.max_tasks = config.max_finished_tasks
        self.history.max_bytes = config.max_finished_bytes

    @_event
    def set_limit(self, kind: str, name: str, limit: Limit | None, now: float) -> None:
        """Put a limit in force for an operation or a collector type (``kind``), or lift it (None).

        It applies to the next dispatch; attempts already in flight count against a new limit.
        """
        m, limits = self._m, self._m.limits
        old = limits.gates(kind).get(name)
        if limit is None:
            limits.remove(kind, name)
        else:
            in_flight = 0 if old is not None else self._in_flight_under(kind, name)
            limits.put(kind, name, limit, now, in_flight)
        # a looser limit (or none) may let held tasks go now
        if kind == OPERATION:
            m._dirty.add(name)
        elif old is not None:
            m._dirty.update(old.waiting)

    def _in_flight_under(self, kind: str, name: str) -> int:
        """Attempts in flight of an operation, or on collectors of a type."""
        if kind == OPERATION:
            tasks = self._m._tasks
            return sum(1 for c in self.registry for task_id in c.attempts if tasks[task_id].request.operation == name)
        return sum(c.current_tasks for c in self.registry if c.capability.collector_type == name)

    def limits(self, now: float) -> list[dict[str, Any]]:
        """Every limit in force: its rate and cap, attempts under it, its bucket, and (operations) what it held."""
        return self._m.limits.view(now)

    # ---- other hosts ---------------------------------------------------

    @_event
    def set_remote_offers(self, operations: frozenset[str], now: float) -> None:
        """The operations other hosts' collectors offer: a task of one of them may be spilled to them."""
        spill.offered(self._m, operations)

    @_event
    def remote_result(self, result: TaskResult, node: str, now: float, *, size: int = 0) -> None:
        """The result of a spilled attempt, run on ``node``; a result of an older attempt is stale."""
        spill.result(self._m, result, node, size)

    @_event
    def remote_unsent(self, task_id: str, attempt: int, now: float) -> None:
        """A spilled attempt could not be handed to the cluster: the task is queued here again, no retry used."""
        spill.unsent(self._m, task_id, attempt)

    # ---- schedules -----------------------------------------------------

    @_event
    def put_schedule(self, spec: ScheduleSpec, now: float) -> None:
        """Add a periodic schedule, or redefine the one of that name (its last due time handled stays)."""
        self._scheduler.put(spec, now)

    @_event
    def remove_schedule(self, name: str, now: float) -> None:
        """Remove a schedule (its runs already submitted go on); :class:`UnknownSchedule` if there is none."""
        if self._scheduler.remove(name) is None:
            raise UnknownSchedule(f"no schedule named {name!r}")

    @_event
    def pause_schedule(self, name: str, paused: bool, now: float) -> None:
        """Pause (no runs) or resume (next due after now, the paused time not caught up) a schedule."""
        if self._scheduler.pause(name, paused, now) is None:
            raise UnknownSchedule(f"no schedule named {name!r}")

    @_event
    def restore_schedules(self, records: Iterable[dict[str, Any]], now: float) -> None:
        """Take back the schedules a store kept (see :meth:`restore`): a due time missed meanwhile runs once."""
        self._scheduler.restore([Schedule.from_record(r) for r in records], now)

    @_event
    def set_schedules_active(self, active: bool, now: float) -> None:
        """Run the schedules here, or not (a cluster's leader runs them; see :meth:`schedule_handled`)."""
        self._scheduler.set_active(active, now)

    def schedule_handled(self, name: str, due: float) -> None:
        """Another node ran schedule ``name`` for ``due``: it is not run here for that time or an earlier one."""
        self._scheduler.handled(name, due)

    def schedule_last_dues(self) -> dict[str, float]:
        """The last due time handled of each schedule that has one (what a leader shares)."""
        return self._scheduler.last_dues()

    @property
    def schedules_active(self) -> bool:
        return self._scheduler.active

    def schedule(self, name: str) -> dict[str, Any]:
        """A schedule with its last runs (newest first); :class:`UnknownSchedule` if there is none."""
        found = self._scheduler.get(name)
        if found is None:
            raise UnknownSchedule(f"no schedule named {name!r}")
        return self._scheduler.view(found)

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, by name, with its last runs."""
        return [self._scheduler.view(s) for _, s in sorted(self._scheduler.schedules.items())]

    def schedule_spec(self, name: str) -> ScheduleSpec | None:
        found = self._scheduler.get(name)
        return None if found is None else found.spec

    def set_strategy(self, strategy: RoutingStrategy) -> None:
        """Switch the routing strategy; the next decision uses it."""
        self._m.strategy = strategy
        self.registry.set_order(strategy.key)

"""The internals of the TaskDistributor: routing, task transitions and collector liveness.

:class:`TaskMachine` holds the state; a :class:`~distributor.core.TaskDistributor`
holds one and feeds it the events of its public API. Every change of a task's
state goes through :meth:`TaskMachine._to`, which checks it against the table
of :mod:`distributor.transitions`. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from distributor import gating, spill
from distributor.actions import Action, Cancel, Dispatch, Finished
from distributor.config import DistributorConfig
from distributor.constraints import parse_constraints
from distributor.errors import DuplicateTask, InvalidRequest, QueueFull, UnknownTask
from distributor.events import collector_event, task_event
from distributor.history import FinishedHistory
from distributor.limits import Limits
from distributor.listing import TaskListing
from distributor.models import (
    INVALID_RESULT,
    PRIORITY_MAX,
    ErrorInfo,
    TaskRequest,
    TaskResult,
    TaskState,
    compact,
    with_fields,
)
from distributor.queue import TaskQueue
from distributor.registry import CapabilityRegistry, CollectorState, Pool
from distributor.report import ReportBook
from distributor.stats import Stats
from distributor.strategies import LeastLoaded, RoutingStrategy
from distributor.tasks import TaskRecord, idempotency_scope
from distributor.timers import TimerHeap, TimerKind
from distributor.timings import Timings
from distributor.transitions import BORN, MOVES, WAITING, check

#: bytes a kept task id or constraint string costs in a finished record (string, list slot)
_KEPT_PER_ITEM = 256


def _anyone(state: CollectorState) -> bool:
    return True


def new_task_id() -> str:
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


class TaskMachine:
    """State and transitions shared by every event of the distributor."""

    def __init__(
        self,
        config: DistributorConfig | None = None,
        *,
        strategy: RoutingStrategy | None = None,
        rng: random.Random | None = None,
        new_task_id: Callable[[], str] = new_task_id,
    ) -> None:
        self.config = config or DistributorConfig()
        self._rng = rng or random.Random()
        self.strategy: RoutingStrategy = strategy or LeastLoaded(self._rng)
        self.registry = CapabilityRegistry(self.strategy.key)
        self.queue = TaskQueue(self.config.max_queue_size, self.config.aging)
        self.limits = Limits()
        self.stats = Stats()
        self.report = ReportBook()
        self.timings = Timings()
        self._new_task_id = new_task_id
        self._tasks: dict[str, TaskRecord] = {}
        self._listing = TaskListing(self._tasks)
        self.history = FinishedHistory(self.config.max_finished_tasks, self.config.max_finished_bytes)
        self._calls = 0
        self._timers = TimerHeap()
        self._dirty: set[str] = set()
        self._actions: list[Action] = []
        self._now = 0.0
        #: tasks in each state (final ones included), and per operation those waiting (pending or scheduled)
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._waiting_by_operation: Counter[str] = Counter()
        #: bytes of the tasks not finished yet (their submitted size), in all and per operation
        self.open_bytes = 0
        self._open_bytes_by_operation: Counter[str] = Counter()
        self._in_flight = 0
        #: attempts running on other hosts, and the operations other hosts offer (see distributor.spill)
        self.remote_in_flight = 0
        self.remote: frozenset[str] = frozenset()
        #: tasks queued in this event that spill when it ends (spill_after_s 0, or spill_first)
        self.spill_now: list[TaskRecord] = []
        self._dispatches = 0
        self._serial = 0
        #: publish task and collector events; a host with no subscriber turns this off
        self.events = True
        #: record what a store must keep (a host with a journal turns this on): see :meth:`take_changes`
        self.journal = False
        self._changed: dict[str, TaskRecord] = {}
        self._changed_collectors: dict[str, CollectorState] = {}
        #: idempotency scope (see :func:`idempotency_scope`) -> id of the task held in memory that has it
        self._keys: dict[str, str] = {}
        #: counters of collectors known before a restart, applied when they register again
        self._collector_records: dict[str, tuple[int, int, float]] = {}

    def at(self, now: float) -> None:
        """An event happens at ``now``: every decision until :meth:`flush` is taken at that time."""
        self._now = now

    # ---- transitions ---------------------------------------------------

    def _to(self, task: TaskRecord, new: TaskState, *, born: bool = False) -> None:
        """Move a task to ``new`` (:class:`IllegalTransition` if the table forbids it); ``born``: its first state."""
        counts = self.counts
        if born:
            if new not in BORN:
                check(None, new)
        else:
            old = task.state
            if new not in MOVES[old]:
                check(old, new)  # raises, naming both
            counts[old] -= 1
            if old in WAITING:
                self._waiting_by_operation[task.request.operation] -= 1
        counts[new] += 1
        if new in WAITING:
            self._waiting_by_operation[task.request.operation] += 1
        task.state = new

    @property
    def waiting(self) -> int:
        """Tasks that wait for their parents or their time: held, not queued yet."""
        counts = self.counts
        return counts[TaskState.PENDING] + counts[TaskState.SCHEDULED]

    # ---- events --------------------------------------------------------

    def _task_event(self, task: TaskRecord, state: str | None = None, **extra: Any) -> None:
        # every transition of a task, and nothing else, reports an event; a store need not know that an
        # attempt it has as dispatched started running (after a restart both are an attempt to redo)
        if self.journal and state is None and task.state is not TaskState.RUNNING:
            self._changed[task.task_id] = task
        if self.events:
            self._actions.append(task_event(task, self._now, state, **extra))

    def _collector_event(self, event: str, state: CollectorState) -> None:
        if self.events:
            self._actions.append(collector_event(event, state, self._now))

    # ---- routing -------------------------------------------------------

    def flush(self) -> list[Action]:
        """End of every event: dispatch what can be, forget old tasks, hand out the actions to carry out."""
        dirty, queue, has_room, limits = self._dirty, self.queue, self.registry.has_room, self.limits
        if self.spill_now and self.config.spill_first:
            spill.now(self)  # (shared mode: before local collectors are tried)
        while dirty:
            # one dispatch per operation per round, most urgent operation first (highest
            # priority, then longest waiting), so no operation takes every freed slot;
            # an operation whose collectors are all busy dispatches nothing, so it needs no rank
            ready: list[str] = []
            for op in dirty:
                if not queue.depth(op):
                    if limits.clocks:
                        limits.unhold(op, self._now)
                    continue
                if has_room(op):
                    if not limits.active or not gating.held_by_limit(self, op):
                        ready.append(op)
                else:
                    self._pump_one(op)  # dispatches nothing
            if len(ready) > 1:
                now = self._now
                ready.sort(key=lambda op: queue.rank(op, now))
            dirty.clear()
            for operation in ready:
                if self._pump_one(operation):
                    dirty.add(operation)
        if self.spill_now:
            spill.now(self)  # (what no local collector took just now)
        self._evict()
        self._calls += 1
        actions, self._actions = self._actions, []
        return actions

    def _evict(self) -> None:
        """Forget the oldest finished tasks past the history limits (never those finished in this call)."""
        history = self.history
        if len(history) <= history.max_tasks and history.bytes <= history.max_bytes:
            return
        keys = self._keys
        for task_id in history.overflow(self._calls):
            task = self._tasks.pop(task_id, None)
            scope = task.idempotency_scope if task is not None else None
            if scope is not None and keys.get(scope) == task_id:
                del keys[scope]

    def _hold(self, task: TaskRecord, size: int) -> None:
        """Count ``size`` more (or, negative, fewer) bytes held by unfinished tasks."""
        if not size:
            return
        operation = task.request.operation
        self.open_bytes += size
        self._open_bytes_by_operation[operation] += size
        if not self._open_bytes_by_operation[operation]:
            del self._open_bytes_by_operation[operation]

    def _admit(self, operation: str, size: int) -> None:
        """Raise :class:`QueueFull` unless a new task of ``operation`` and ``size`` bytes fits the queue limits."""
        cfg = self.config
        if len(self.queue) + self.waiting >= cfg.max_queue_size:
            raise QueueFull(f"queue is full ({cfg.max_queue_size} tasks, max_queue_size)")
        if self.open_bytes + size > cfg.max_queued_bytes:
            raise QueueFull(
                f"unfinished tasks hold {self.open_bytes} bytes; a task of {size} more exceeds "
                f"max_queued_bytes={cfg.max_queued_bytes}"
            )
        held, share = self._open_bytes_by_operation.get(operation, 0), cfg.per_operation_bytes
        if held + size > share:
            raise QueueFull(
                f"operation {operation!r} already holds {held} bytes of unfinished tasks; a task of {size} more "
                f"exceeds its share {share} of max_queued_bytes (as max_queued_per_operation is of max_queue_size)"
            )
        limit = cfg.per_operation_limit
        if self.queue.depth(operation) + self._waiting_by_operation.get(operation, 0) >= limit:
            raise QueueFull(
                f"operation {operation!r} already has {limit} tasks queued, pending or scheduled "
                "(max_queued_per_operation)"
            )

    def _pump_one(self, operation: str) -> bool:
        """Dispatch the first queued task of ``operation`` that an eligible collector has room for."""
        registry = self.registry
        if not registry.supports(operation):
            return False
        if not registry.has_room(operation) and not registry.restricted(operation) and self.queue.plain(operation):
            # Nobody can take a task now. Walking the queue would look up one pool, that of
            # unconstrained tasks, for each of its tasks in turn; that lookup (which builds
            # the pool the first time) is all the walk leaves behind, so make it once.
            registry.pool(operation, PRIORITY_MAX, ())
            return False
        closed = self.limits.closed_types(self._now) if self.limits.types else None
        held = False
        for priority, task_id in self.queue.candidates(operation, self._now):
            task = self._tasks[task_id]
            pool = self.registry.pool(operation, priority, task.constraints)
            if not pool:
                continue
            state = self._choose(task, pool, closed)
            if state is not None:
                self.queue.pop(task_id)
                self._dispatch(task, state)
                return True
            if closed:
                held = gating.held_by_type(self, operation, task, pool, closed) or held
        if held:
            self.limits.hold(operation, self._now)
        return False  # no queued shape fits a collector with room right now

    def _choose(self, task: TaskRecord, pool: Pool, closed: Mapping[str, float] | None = None) -> CollectorState | None:
        """Every member of ``pool`` can take the task; a retry prefers one it has not failed on.

        ``closed``: collector types whose limit refuses a dispatch now (their collectors are passed over).
        """
        select, request = self.strategy.select, task.request
        usable = _anyone if not closed else lambda c: c.capability.collector_type not in closed
        if task.failed_on:
            failed = task.failed_on
            state = select(request, pool, lambda c: c.collector_id not in failed and usable(c))
            if state is not None:
                return state
        return select(request, pool, usable)

    def _dispatch(self, task: TaskRecord, state: CollectorState) -> None:
        now = self._now
        task.attempt += 1
        self._to(task, TaskState.DISPATCHED)
        task.collector_id = state.collector_id
        task.dispatched_at = now
        self._dispatches += 1
        state.last_dispatch = self._dispatches
        state.current_tasks += 1
        state.attempts[task.task_id] = task.attempt
        self._in_flight += 1
        self.registry.refresh(state)
        request = task.request
        timeout_at = now + request.timeout_ms / 1000.0
        self._timers.add(timeout_at, TimerKind.ATTEMPT_TIMEOUT, task.task_id, task.serial, task.attempt)
        waited = now - (task.queued_at or now)
        limits = self.limits
        if limits.active or limits.clocks:
            task.limit_wait_s += limits.dispatched(
                request.operation, state.capability.collector_type, now, task.limit_mark
            )
        self.stats.dispatched(request.operation, waited)
        self.timings.dispatched(request.operation, waited)
        collector_type = state.capability.collector_type
        self._actions.append(Dispatch(state.collector_id, collector_type, request, task.attempt, request.deadline))
        self._task_event(task)

    def _release(self, state: CollectorState, task: TaskRecord) -> None:
        """The attempt of ``task`` no longer occupies a slot on ``state``."""
        if state.attempts.pop(task.task_id, None) is not None:
            state.current_tasks -= 1
            self._in_flight -= 1
            state.busy_slot_s += max(0.0, self._now - (task.dispatched_at or self._now))
            self.registry.refresh(state)
            self._dirty.update(state.capability.supported_operations)
            if self.limits.active:
                self._dirty.update(self.limits.released(task.request.operation, state.capability.collector_type))

    # ---- task lifecycle ------------------------------------------------

    def _task(self, task_id: str) -> TaskRecord:
        task = self._tasks.get(task_id)
        if task is None:
            raise UnknownTask(self.history.unknown(task_id))
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

    def accept(self, request: TaskRequest, owner: int | None, size: int, *, local: bool = False) -> str:
        """Take a new task (see :meth:`TaskDistributor.submit`); returns its id."""
        now = self._now
        task_id = request.task_id or self._new_task_id()
        if task_id in self._tasks:
            raise DuplicateTask(f"task {task_id!r} already exists")
        if request.deadline is not None and request.deadline <= now:
            raise InvalidRequest(f"deadline {request.deadline} is already past (now {now:.3f})")
        if request.not_before is not None and request.deadline is not None and request.not_before >= request.deadline:
            raise InvalidRequest(
                f"not_before {request.not_before} is not before the deadline {request.deadline}: it could never run"
            )
        constraints = parse_constraints(request.constraints) if request.constraints else ()
        parents = self._parents(task_id, request.depends_on) if request.depends_on else []
        self._admit(request.operation, size)
        created = request.created_at or now
        request = compact(request, task_id=task_id, created_at=created)
        self._serial += 1
        task = TaskRecord(
            request, task_id, created_at=created, serial=self._serial, constraints=constraints, owner=owner, size=size
        )
        task.local = local
        self._hold(task, size)
        self._tasks[task_id] = task
        key = request.idempotency_key
        if key is not None:
            self._keys[idempotency_scope(owner, key)] = task_id
        self.stats.tasks_submitted += 1
        if request.deadline is not None:
            self._timers.add(request.deadline, TimerKind.DEADLINE, task_id, task.serial)
        self._start(task, parents)
        return task_id

    def _start(self, task: TaskRecord, parents: list[TaskRecord], *, admit: bool = True) -> None:
        """A task is born: held pending until its parents have succeeded, scheduled until its time, or queued.

        ``admit``: a new submission, checked against ``max_queue_size`` (a task
        taken back after a restart is not: it was acknowledged).
        """
        failed = next((p for p in parents if p.state.terminal and p.state is not TaskState.SUCCEEDED), None)
        if failed is not None:
            self._dependency_failed(task, failed, born=True)
            return
        if parents:  # (an empty frozenset built from a generator is one more object per task)
            task.waiting_on = frozenset(p.task_id for p in parents if p.state is not TaskState.SUCCEEDED)
        if not task.waiting_on:
            self._ready(task, born=True, admit=admit)
            return
        for parent_id in task.waiting_on:
            parent = self._tasks[parent_id]
            if isinstance(parent.children, tuple):
                parent.children = []
            parent.children.append(task.task_id)
        self._to(task, TaskState.PENDING, born=True)
        self._task_event(task)

    def _ready(self, task: TaskRecord, *, born: bool = False, admit: bool = False) -> None:
        """A task whose parents have succeeded: scheduled until its ``not_before`` time, else queued."""
        not_before = task.request.not_before
        if not_before is not None and not_before > self._now:
            self._to(task, TaskState.SCHEDULED, born=born)
            self._timers.add(not_before, TimerKind.DUE, task.task_id, task.serial)
            self._task_event(task)
        else:
            self._enqueue(task, admit=admit, born=born)

    def _enqueue(
        self,
        task: TaskRecord,
        *,
        front: bool = False,
        admit: bool = False,
        born: bool = False,
        since: float | None = None,
    ) -> None:
        """Queue a task; ``since``: when it started waiting there, if before now (a task taken back at a restart)."""
        self._to(task, TaskState.QUEUED, born=born)
        task.collector_id = None
        task.queued_at = self._now if since is None else since
        if self.config.spill_after_s is not None and not task.local:
            spill.arm(self, task)
        if self.limits.clocks:
            task.limit_mark = self.limits.mark(task.request.operation, self._now)
        # with admit=False (retry, redelivery, released dependant) a task is
        # always taken back, even past max_queue_size: it was acknowledged
        request = task.request
        self.queue.push(
            task.task_id,
            request.operation,
            request.priority,
            shape=task.constraints,
            front=front,
            admit=admit,
            now=task.queued_at,
        )
        self._dirty.add(task.request.operation)
        self._task_event(task)

    def _stop(self, task: TaskRecord, reason: str) -> None:
        """Take a non-final task out of the queue, off its collector, or out of pending."""
        if task.in_flight and task.collector_id is not None:
            # (on REMOTE: the host asks whichever host runs it to stop; a result still sent is stale)
            self._actions.append(Cancel(task.collector_id, task.task_id, task.attempt, reason))
            state = self.registry.find(task.collector_id)
            if state is not None:
                self._release(state, task)
            spill.ended(self, task)
        elif task.state is TaskState.QUEUED:
            self.queue.remove(task.task_id)

    def _attempt_failed(self, task: TaskRecord, error: ErrorInfo, result: TaskResult | None = None) -> None:
        task.error, task.result = error, result
        if task.retries >= self.config.max_retries or error.type == INVALID_RESULT:
            self._finish(task, TaskState.FAILED)
            return
        task.retries += 1
        self._to(task, TaskState.RETRYING)
        task.collector_id = None
        delay = self.backoff_s(task.retries)
        task.retry_at = self._now + delay
        self._timers.add(task.retry_at, TimerKind.RETRY, task.task_id, task.serial, task.attempt)
        self.stats.tasks_retried += 1
        self._task_event(task, delay_s=delay, error=error.model_dump())

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): full jitter over an exponential cap."""
        cfg = self.config
        cap = min(cfg.retry_backoff_max_ms, cfg.retry_backoff_base_ms * 2.0 ** (retry - 1))
        return self._rng.uniform(0.0, cap) / 1000.0

    def _time_out(self, task: TaskRecord) -> None:
        state = self.registry.find(task.collector_id or "")
        if state is not None:
            state.tasks_failed += 1
            task.failed_on |= {state.collector_id}
            self._collector_changed(state)
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

    def _dependency_failed(self, task: TaskRecord, parent: TaskRecord, *, born: bool = False) -> None:
        message = f"task {parent.task_id} it depends on was {parent.state.value}"
        self._fail_dependency(task, message, born=born)

    def _fail_dependency(self, task: TaskRecord, message: str, *, born: bool = False) -> None:
        if not born:
            self._stop(task, "dependency_failed")
        task.error = ErrorInfo(type="dependency_failed", message=message)
        self._settle(task, TaskState.FAILED, born=born)

    def _finish(self, task: TaskRecord, state: TaskState) -> None:
        """Make a task final and resolve the tasks that wait on it (a whole chain, without recursion)."""
        self._settle(task, state)
        stack = [task]
        while stack:
            parent = stack.pop()
            children = parent.children
            if not children:
                continue
            parent.children = ()
            for child_id in children:
                child = self._tasks.get(child_id)
                # (a child id may name a newer task after the old one was forgotten)
                if child is None or child.state is not TaskState.PENDING or parent.task_id not in child.waiting_on:
                    continue
                if parent.state is not TaskState.SUCCEEDED:
                    self._dependency_failed(child, parent)
                    stack.append(child)
                    continue
                child.waiting_on -= {parent.task_id}
                if not child.waiting_on:
                    self._ready(child)

    def _settle(self, task: TaskRecord, state: TaskState, *, born: bool = False) -> None:
        self._to(task, state, born=born)
        task.finished_at = self._now
        self._hold(task, -task.size)
        task.size = 0
        total = self._now - task.created_at
        self.stats.finished(state, total)
        operation = task.request.operation
        self.report.finished(operation, state, total, task.error.type if task.error else None)
        if state is TaskState.SUCCEEDED:
            self.timings.succeeded(operation, total)
        self._task_event(task)
        self._actions.append(Finished(task.task_id))
        # payload and metadata are not part of the task's public view: only the result is worth keeping
        request = task.request
        if request.payload is not None or request.metadata:
            request = task.request = with_fields(request, payload=None, metadata={})
        # what the record still holds besides its fixed overhead: the result, dependencies, constraints
        kept = (task.result_size if task.result is not None else 0) + _KEPT_PER_ITEM * (
            len(request.depends_on) + len(request.constraints)
        )
        self.history.add(task.task_id, self._calls, kept)

    def find_idempotent(self, key: str, owner: int | None, now: float) -> str | None:
        """The id of the task ``owner`` submitted with ``key`` within ``idempotency_ttl_s``, if it is held."""
        scope = idempotency_scope(owner, key)
        task_id = self._keys.get(scope)
        if task_id is None:
            return None
        task = self._tasks.get(task_id)
        if task is None or task.created_at + self.config.idempotency_ttl_s <= now:
            del self._keys[scope]
            return None
        return task_id

    # ---- collector liveness -------------------------------------------

    def _collector_changed(self, state: CollectorState) -> None:
        """A collector's record (tasks completed and failed, execution time) changed."""
        if self.journal:
            self._changed_collectors[state.collector_id] = state

    def _take_back(self, state: CollectorState) -> None:
        """Requeue every attempt in flight on a collector that left or died (no retry used)."""
        for task_id in list(state.attempts):
            task = self._tasks[task_id]
            self._release(state, task)
            self.stats.tasks_redelivered += 1
            self._enqueue(task, front=True)

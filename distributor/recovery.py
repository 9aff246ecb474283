"""What a store keeps of the distributor, and how the distributor takes it back after a restart.

The distributor does no I/O: with ``journal`` on, it notes which task records
and collector records changed, and the host takes them (:meth:`take_changes`)
to write them wherever it keeps them. After a restart the host hands back
what it kept (:meth:`restore`) before any other event. The records are the
distributor's own :class:`~distributor.tasks.TaskRecord` and
:class:`~distributor.registry.CollectorState`; the host reads their fields,
and builds records to restore from the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from distributor.actions import Action
from distributor.machine import TaskMachine
from distributor.models import ErrorInfo, TaskState
from distributor.registry import CollectorState
from distributor.tasks import TaskRecord, idempotency_scope
from distributor.timers import TimerKind

#: (tasks_completed, tasks_failed, total_execution_s) of a collector
CollectorRecord = tuple[int, int, float]


@dataclass(slots=True)
class Changes:
    """Records that changed since the host last took them, each as it is now."""

    tasks: list[TaskRecord] = field(default_factory=list)
    collectors: list[tuple[str, CollectorRecord]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.collectors)


class Recovering(TaskMachine):
    """The journal side of the distributor: changes out, a restart's records in, idempotency keys."""

    @property
    def has_changes(self) -> bool:
        """Whether a task record changed since :meth:`take_changes` (only with ``journal`` on)."""
        return bool(self._changed)

    def holds(self, task_id: str) -> bool:
        """Whether a task with this id is held in memory (unfinished, or finished and not evicted yet)."""
        return task_id in self._tasks

    def take_changes(self) -> Changes:
        """The task and collector records changed since the last call, each once, in the order they first changed.

        The task records are the live ones: the host must read what it keeps of
        them before it hands any further event to the distributor.
        """
        tasks, self._changed = list(self._changed.values()), {}
        collectors = [(cid, collector_record(s)) for cid, s in self._changed_collectors.items()]
        self._changed_collectors = {}
        return Changes(tasks, collectors)

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

    def restore(
        self,
        tasks: Iterable[TaskRecord],
        now: float,
        *,
        parents: Mapping[str, TaskState] | None = None,
        last_serial: int = 0,
        collectors: Mapping[str, CollectorRecord] | None = None,
    ) -> list[Action]:
        """Take back the unfinished tasks a store kept, before any other event (a restart).

        ``tasks`` are records as they were last written: pending, queued,
        dispatched, running or retrying. They go back to their queues in serial
        (submission) order, so priority and FIFO order hold. An attempt that was
        in flight is over: the task is queued again without using a retry, and
        its next attempt gets the next number, so a late result of the old one
        is stale. Deadlines still apply (one already past fires on the next
        tick). A pending task waits for its parents still held, and looks up
        the others in ``parents`` (final states of finished tasks): one that
        did not succeed, or is not known any more, fails it with
        ``dependency_failed``. ``last_serial`` is the highest serial the store
        has seen (finished tasks included), so new serials continue after it;
        ``collectors`` are the records of collectors, applied when they register.
        """
        self._now = now
        known = parents or {}
        restored = sorted(tasks, key=lambda t: t.serial)
        before = {t.task_id: t.state for t in restored}
        for task in restored:
            self._tasks[task.task_id] = task
            self._serial = max(self._serial, task.serial)
            self._hold(task, task.size)
            scope = task.idempotency_scope
            if scope is not None:
                self._keys[scope] = task.task_id
        self._serial = max(self._serial, last_serial)
        self._collector_records.update(collectors or {})
        for task in restored:
            self.stats.tasks_recovered += 1
            deadline = task.request.deadline
            if deadline is not None:
                self._timers.add(deadline, TimerKind.DEADLINE, task.task_id, task.serial)
            state, task.state, task.collector_id = task.state, TaskState.QUEUED, None
            if state is TaskState.PENDING:
                self._repend(task, known)
            elif state is TaskState.RETRYING and task.retry_at is not None and task.retry_at > now:
                task.state = TaskState.RETRYING
                self._timers.add(task.retry_at, TimerKind.RETRY, task.task_id, task.serial, task.attempt)
            else:
                if state in (TaskState.DISPATCHED, TaskState.RUNNING):
                    self.stats.tasks_redelivered += 1
                queued_at = task.queued_at
                self._enqueue(task)
                if state is TaskState.QUEUED:
                    task.queued_at = queued_at  # it has waited since then
        # only what restoring changed needs writing again, not every task it read
        self._changed = {tid: t for tid, t in self._changed.items() if t.state is not before[tid]}
        return self._drain()

    def _repend(self, task: TaskRecord, known: Mapping[str, TaskState]) -> None:
        """A restored pending task waits again for its parents, or fails if one cannot succeed any more."""
        waiting: list[TaskRecord] = []
        for parent_id in dict.fromkeys(task.request.depends_on):
            parent = self._tasks.get(parent_id)
            if parent is not None:
                waiting.append(parent)
                continue
            state = known.get(parent_id)
            if state is TaskState.SUCCEEDED:
                continue
            why = "is no longer known" if state is None else f"was {state.value}"
            task.error = ErrorInfo(type="dependency_failed", message=f"task {parent_id} it depends on {why}")
            self._settle(task, TaskState.FAILED)
            return
        if waiting:
            self._start(task, waiting)
        else:  # its parents all succeeded meanwhile: queued, even past max_queue_size (it was acknowledged)
            self._enqueue(task)


def collector_record(state: CollectorState) -> CollectorRecord:
    """The part of a collector's state a store keeps."""
    return state.tasks_completed, state.tasks_failed, state.total_execution_s

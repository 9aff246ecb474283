"""What a store keeps of the distributor, and how the distributor takes it back after a restart.

The distributor does no I/O: with ``journal`` on, it notes which task records
and collector records changed, and the host takes them (:func:`take_changes`)
to write them wherever it keeps them. After a restart the host hands back
what it kept (:func:`restore`) before any other event. Both work on the
:class:`~distributor.machine.TaskMachine`'s own tables: this module is the
machine's journal side, kept apart from its routing. The records are the
distributor's own :class:`~distributor.tasks.TaskRecord` and
:class:`~distributor.registry.CollectorState`; the host reads their fields,
and builds records to restore from the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distributor import spill
from distributor.machine import TaskMachine
from distributor.models import TaskState
from distributor.registry import CollectorState
from distributor.tasks import TaskRecord
from distributor.timers import TimerKind

#: (tasks_completed, tasks_failed, total_execution_s) of a collector
CollectorRecord = tuple[int, int, float]


@dataclass(slots=True)
class Changes:
    """Records that changed since the host last took them, each as it is now."""

    tasks: list[TaskRecord] = field(default_factory=list)
    collectors: list[tuple[str, CollectorRecord]] = field(default_factory=list)
    #: schedules as records of plain values (see :meth:`Schedule.record`), or None: removed
    schedules: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.collectors or self.schedules)


def take_changes(m: TaskMachine) -> Changes:
    """The task and collector records changed since the last call, each once, in the order they first changed.

    The task records are the live ones: the host must read what it keeps of
    them before it hands any further event to the distributor.
    """
    tasks, m._changed = list(m._changed.values()), {}
    collectors = [(cid, collector_record(s)) for cid, s in m._changed_collectors.items()]
    m._changed_collectors = {}
    return Changes(tasks, collectors)


def restore(
    m: TaskMachine,
    tasks: Iterable[TaskRecord],
    *,
    parents: Mapping[str, TaskState] | None = None,
    last_serial: int = 0,
    collectors: Mapping[str, CollectorRecord] | None = None,
) -> None:
    """Take back the unfinished tasks a store kept (see :meth:`TaskDistributor.restore`)."""
    known = parents or {}
    now = m._now
    restored = sorted(tasks, key=lambda t: t.serial)
    before = {t.task_id: t.state for t in restored}
    for task in restored:
        m._tasks[task.task_id] = task
        m._serial = max(m._serial, task.serial)
        m._hold(task, task.size)
        scope = task.idempotency_scope
        if scope is not None:
            m._keys[scope] = task.task_id
    m._serial = max(m._serial, last_serial)
    m._collector_records.update(collectors or {})
    for task in restored:
        m.stats.tasks_recovered += 1
        deadline = task.request.deadline
        if deadline is not None:
            m._timers.add(deadline, TimerKind.DEADLINE, task.task_id, task.serial)
        state, spilled = task.state, task.collector_id == spill.REMOTE
        task.collector_id = None
        if state is TaskState.PENDING:
            _repend(m, task, known)
        elif state is TaskState.SCHEDULED:
            m._ready(task, born=True)
        elif state is TaskState.RETRYING and task.retry_at is not None and task.retry_at > now:
            m._to(task, TaskState.RETRYING, born=True)
            m._timers.add(task.retry_at, TimerKind.RETRY, task.task_id, task.serial, task.attempt)
        elif spilled and state in (TaskState.DISPATCHED, TaskState.RUNNING) and m.config.spill_after_s is not None:
            spill.resume(m, task)  # that attempt lives on in the cluster: its result may still come
        else:
            if state in (TaskState.DISPATCHED, TaskState.RUNNING):
                m.stats.tasks_redelivered += 1
            # a task that was queued has waited since then (for its wait time, and for aging)
            m._enqueue(task, born=True, since=task.queued_at if state is TaskState.QUEUED else None)
    # only what restoring changed needs writing again, not every task it read
    m._changed = {tid: t for tid, t in m._changed.items() if t.state is not before[tid]}


def _repend(m: TaskMachine, task: TaskRecord, known: Mapping[str, TaskState]) -> None:
    """A restored pending task waits again for its parents, or fails if one cannot succeed any more."""
    waiting: list[TaskRecord] = []
    for parent_id in dict.fromkeys(task.request.depends_on):
        parent = m._tasks.get(parent_id)
        if parent is not None:
            waiting.append(parent)
            continue
        state = known.get(parent_id)
        if state is TaskState.SUCCEEDED:
            continue
        why = "is no longer known" if state is None else f"was {state.value}"
        m._fail_dependency(task, f"task {parent_id} it depends on {why}", born=True)
        return
    # (with none left to wait on: its parents all succeeded meanwhile; queued even past max_queue_size)
    m._start(task, waiting, admit=False)


def collector_record(state: CollectorState) -> CollectorRecord:
    """The part of a collector's state a store keeps."""
    return state.tasks_completed, state.tasks_failed, state.total_execution_s

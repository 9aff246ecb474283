"""Handing tasks to other hosts (a cluster's ``overflow`` mode): functions of the machine.

A queued task that no local collector took within ``spill_after_s`` is
*spilled* when another host offers its operation (:attr:`TaskMachine.remote`):
it leaves the queue as an attempt on the :data:`REMOTE` target, with the next
attempt number, and a :class:`~distributor.actions.Spill` action asks the host
to publish it. The attempt ends like any other: by the result another host
sends back (:func:`result`), by its timeout (``timeout_ms`` plus
``spill_grace_s``: then it is retried as usual), by cancel or deadline, or by the
host failing to publish it (:func:`unsent`: queued again, no retry used). A
result of an older attempt is stale, so a task run twice after a host died
still has one final result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributor.actions import Spill
from distributor.models import ErrorInfo, TaskResult, TaskState
from distributor.timers import TimerKind

if TYPE_CHECKING:
    from distributor.machine import TaskMachine
    from distributor.tasks import TaskRecord

#: the collector id of an attempt that runs on another host (never a real collector id: not a segment)
REMOTE = "@cluster"
#: with spill_after_s 0, a task whose spill could not be handed over tries again this much later, not at once
RESPILL_AFTER_S = 1.0


def arm(m: TaskMachine, task: TaskRecord) -> None:
    """A task was queued: look at it again after ``spill_after_s`` (only when spilling is on).

    With ``spill_after_s`` 0 that is at the end of the event that queued it
    (after local collectors were tried, or before with ``spill_first``),
    without waiting for a timer's tick.
    """
    after = m.config.spill_after_s
    if after is None or task.queued_at is None:
        return
    if after <= 0:
        m.spill_now.append(task)
    else:
        m._timers.add(task.queued_at + after, TimerKind.SPILL, task.task_id, task.serial, task.attempt)


def now(m: TaskMachine) -> None:
    """The end of an event: spill the tasks it queued that are still queued (see :func:`arm`)."""
    tasks, m.spill_now = m.spill_now, []
    for task in tasks:
        due(m, task)


def due(m: TaskMachine, task: TaskRecord) -> None:
    """A task's spill timer: spill it if it is still queued since then and another host offers its operation."""
    after = m.config.spill_after_s
    if after is None or task.state is not TaskState.QUEUED or task.queued_at is None:
        return
    if m._now < task.queued_at + after - 1e-9:
        return  # queued again since: a later timer covers it
    if task.request.operation not in m.remote:
        return  # nobody else offers it (yet): see offered()
    _spill(m, task)


def offered(m: TaskMachine, operations: frozenset[str]) -> None:
    """Other hosts now offer ``operations``: spill the tasks of the newly offered ones that waited long enough."""
    new, m.remote = operations - m.remote, operations
    after = m.config.spill_after_s
    if not new or after is None:
        return
    late = m._now - after + 1e-9
    tasks = m._tasks
    due_tasks = [
        task
        for task_id, operation in m.queue.queued()
        if operation in new
        for task in (tasks[task_id],)
        if task.queued_at is not None and task.queued_at <= late and not task.local
    ]
    for task in due_tasks:
        _spill(m, task)


def _spill(m: TaskMachine, task: TaskRecord) -> None:
    m.queue.remove(task.task_id)
    now, request = m._now, task.request
    task.attempt += 1
    m._to(task, TaskState.DISPATCHED)
    task.dispatched_at = now
    _away(m, task)
    m.stats.tasks_spilled += 1
    m._actions.append(Spill(request, task.attempt, request.deadline))
    m._task_event(task)


def resume(m: TaskMachine, task: TaskRecord) -> None:
    """A task taken back from a store while its attempt ran on another host: that attempt goes on.

    Its result reaches this host even if it comes while the host was down, so
    the task is dispatched on :data:`REMOTE` again (born queued, as a restored
    task is, and dispatched at once, with the same attempt), and its attempt
    gets a whole timeout again.
    """
    m._to(task, TaskState.QUEUED, born=True)
    m._to(task, TaskState.DISPATCHED)
    _away(m, task)


def _away(m: TaskMachine, task: TaskRecord) -> None:
    """A dispatched task's attempt runs on another host from now: its timeout is ``timeout_ms`` + the grace."""
    task.collector_id = REMOTE
    m.remote_in_flight += 1
    timeout_at = m._now + task.request.timeout_ms / 1000.0 + m.config.spill_grace_s
    m._timers.add(timeout_at, TimerKind.ATTEMPT_TIMEOUT, task.task_id, task.serial, task.attempt)


def ended(m: TaskMachine, task: TaskRecord) -> None:
    """A remote attempt is over (result, timeout, cancel, deadline)."""
    if task.collector_id == REMOTE:
        m.remote_in_flight -= 1


def result(m: TaskMachine, outcome: TaskResult, node: str, size: int) -> bool:
    """The result of a remote attempt, run by ``node``; False if it is stale (an older attempt, or a final task)."""
    task = m._live(outcome.task_id, outcome.attempt, REMOTE)
    if task is None:
        m.stats.stale_messages += 1
        return False
    if task.state is TaskState.DISPATCHED:
        m._to(task, TaskState.RUNNING)
    ended(m, task)
    operation = task.request.operation
    m.timings.ran(operation, m._now - (task.dispatched_at or m._now))
    task.result_size = size
    task.collector_id = f"{outcome.collector_id}@{node}"
    if outcome.success:
        task.result, task.error = outcome, None
        m._finish(task, TaskState.SUCCEEDED)
    else:
        m._attempt_failed(task, outcome.error or ErrorInfo(type="Error", message="attempt failed"), outcome)
    return True


def unsent(m: TaskMachine, task_id: str, attempt: int) -> None:
    """The host could not hand a spilled attempt to the cluster: the task is queued here again, no retry used."""
    task = m._live(task_id, attempt, REMOTE)
    if task is None:
        return
    ended(m, task)
    m.stats.tasks_redelivered += 1
    m._enqueue(task, front=True)
    if task in m.spill_now:  # (spill_after_s 0: not again in this same event, which would spin while NATS fails)
        m.spill_now.remove(task)
        m._timers.add(m._now + RESPILL_AFTER_S, TimerKind.SPILL, task.task_id, task.serial, task.attempt)

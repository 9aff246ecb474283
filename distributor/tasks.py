"""The distributor's record of one task (internal; the public view is :class:`TaskInfo`)."""

from __future__ import annotations

from dataclasses import dataclass

from distributor.constraints import Constraint
from distributor.models import ErrorInfo, TaskInfo, TaskRequest, TaskResult, TaskState, built

IN_FLIGHT = (TaskState.DISPATCHED, TaskState.RUNNING)


@dataclass(slots=True, eq=False)
class TaskRecord:
    """Mutable state of a task, owned by the TaskDistributor."""

    request: TaskRequest
    task_id: str
    created_at: float
    serial: int  # unique per record: timers of a forgotten task with the same id never match
    constraints: tuple[Constraint, ...] = ()
    #: who submitted it, as the host identifies submitters (the daemon: a uid); None if unknown
    owner: int | None = None
    #: bytes the task was submitted in (held until it finishes, counted against max_queued_bytes)
    size: int = 0
    state: TaskState = TaskState.QUEUED
    attempt: int = 0  # number of the latest attempt dispatched: the fencing token
    retries: int = 0  # failed attempts counted against max_retries
    collector_id: str | None = None
    queued_at: float | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    #: when a retrying task is queued again
    retry_at: float | None = None
    #: the host's own mark: its store has the task's row (later changes write only its state)
    stored: bool = False
    #: runs on this host only, never spilled (a task another host spilled here)
    local: bool = False
    result: TaskResult | None = None
    #: encoded size of ``result`` as the host received it (0: not known)
    result_size: int = 0
    error: ErrorInfo | None = None
    #: the hold clock of its operation when it was queued, and the time it has waited on limits so far
    #: (see distributor.limits)
    limit_mark: float = 0.0
    limit_wait_s: float = 0.0
    # The three below are empty for most tasks: they start as shared empty values
    # and a record gets containers of its own only once it needs them (the history
    # keeps many records, and every container costs memory and garbage-collector work).
    #: collectors on which an attempt failed: a retry goes elsewhere when it can
    failed_on: frozenset[str] = frozenset()
    #: parents that have not succeeded yet (the task is pending while non-empty)
    waiting_on: frozenset[str] = frozenset()
    #: tasks that wait on this one
    children: tuple[str, ...] | list[str] = ()

    @property
    def idempotency_scope(self) -> str | None:
        """The task's idempotency key as the distributor indexes it: per submitter."""
        key = self.request.idempotency_key
        return None if key is None else idempotency_scope(self.owner, key)

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    def info(self, effective_priority: int | None = None) -> TaskInfo:
        """The public view of the task, built without validation: every field is the record's own.

        ``effective_priority``: what the queue says of it while it is queued (see :meth:`TaskQueue.effective`).
        """
        return built(
            TaskInfo,
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
            constraints=list(self.request.constraints),
            depends_on=list(self.request.depends_on),
            idempotency_key=self.request.idempotency_key,
            not_before=self.request.not_before,
            effective_priority=effective_priority,
            limit_wait_s=self.limit_wait_s,
            truncated=False,
        )


def idempotency_scope(owner: int | None, key: str) -> str:
    """An idempotency key is the submitter's own: the same key from another uid names another task."""
    return f"{'' if owner is None else owner}:{key}"

"""How a task is written to a store and read back: rows of plain values, the same for every backend.

A row is a tuple in the order of :data:`COLUMNS`; records, results and errors
are msgpack blobs of plain values (lists, not maps: they are written for every
task). Rows are built on the event loop's thread from the distributor's live
records (which change with the next event), so a backend's writer only ever
sees values it owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from pydantic import ValidationError

from distributor.constraints import parse_constraints
from distributor.models import (
    ErrorInfo,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
    built,
    compact,
    shared_empties,
)
from distributor.recovery import Changes
from distributor.tasks import TaskRecord
from eventbus.errors import StateCorrupt
from eventbus.store import Batch

#: the store's kind of a schedule's definition (its record: :meth:`distributor.schedules.Schedule.record`)
SCHEDULE = "schedule"

#: the columns of a task row, in order
COLUMNS = (
    "serial",  # submission order: FIFO order within a priority, and the listing cursor
    "task_id",
    "operation",
    "state",
    "owner",
    "size",
    "attempt",
    "retries",
    "collector_id",
    "created_at",
    "queued_at",
    "dispatched_at",
    "finished_at",
    "retry_at",
    "failed_on",  # msgpack list of collector ids, or NULL
    "request",  # msgpack of the request's fields other than the payload (see _REQUEST)
    "payload",  # msgpack of the payload; NULL once the task is final
    "result",  # msgpack of the final attempt's result (see _RESULT), or NULL
    "error",  # msgpack [type, message], or NULL
    "idem",  # the idempotency scope (see distributor.tasks.idempotency_scope), or NULL
    "bytes",  # what the row holds, counted against max_result_bytes once it is final
)
#: the columns an update of a task already written sets (then ``serial``, to find it)
STATE_COLUMNS = ("state", "attempt", "retries", "collector_id", "queued_at", "dispatched_at", "retry_at", "failed_on")

_REQUEST = (
    "operation",
    "priority",
    "timeout_ms",
    "deadline",
    "constraints",
    "depends_on",
    "idempotency_key",
    "metadata",
    "correlation_id",
    "not_before",  # (rows written before it was added have one field less)
)
_RESULT = (
    "attempt",
    "collector_id",
    "success",
    "value",
    "error",
    "execution_time_s",
    "started_at",
    "finished_at",
)
#: what a row costs besides its blobs (numbers, ids, index entries), for the byte cap
ROW_OVERHEAD = 256

_pack = msgpack.Packer(use_bin_type=True).pack


def batch(changes: Changes) -> Batch:
    """The rows that write ``changes``: whole rows for new and final tasks, state updates for the others.

    Marks each task as written (``stored``), so the next change of a task writes only its state.
    """
    out = Batch(collectors=changes.collectors)
    for name, record in changes.schedules:
        out.definitions.append((SCHEDULE, name, None if record is None else _pack(record)))
    for task in changes.tasks:
        # (a task only starting to run is no change: the distributor does not report it)
        if not task.stored or task.state.terminal:
            out.rows.append(task_row(task))
        else:
            out.updates.append(state_row(task))
        task.stored = True
    return out


def task_row(task: TaskRecord) -> tuple[Any, ...]:
    """The whole row of a task (a new one, or one that became final)."""
    request = task.request
    blob = _pack([getattr(request, name) for name in _REQUEST])
    final = task.state.terminal
    payload = None if final or request.payload is None else _pack(request.payload)
    result = None if task.result is None else _pack(_result_fields(task.result))
    error = None if task.error is None else _pack([task.error.type, task.error.message])
    failed_on = _pack(sorted(task.failed_on)) if task.failed_on else None
    held = ROW_OVERHEAD + sum(len(b) for b in (blob, payload, result, error, failed_on) if b is not None)
    return (
        task.serial,
        task.task_id,
        request.operation,
        task.state.value,
        task.owner,
        task.size,
        task.attempt,
        task.retries,
        task.collector_id,
        task.created_at,
        task.queued_at,
        task.dispatched_at,
        task.finished_at,
        task.retry_at,
        failed_on,
        blob,
        payload,
        result,
        error,
        task.idempotency_scope,
        held,
    )


def state_row(task: TaskRecord) -> tuple[Any, ...]:
    """The changed state of a task already written, in :data:`STATE_COLUMNS` order, then its serial."""
    return (
        task.state.value,
        task.attempt,
        task.retries,
        task.collector_id,
        task.queued_at,
        task.dispatched_at,
        task.retry_at,
        _pack(sorted(task.failed_on)) if task.failed_on else None,
        task.serial,
    )


def _result_fields(result: TaskResult) -> list[Any]:
    values = [getattr(result, name) for name in _RESULT]
    if result.error is not None:
        values[4] = [result.error.type, result.error.message]
    return values


def record(row: Sequence[Any], *, validate: bool = False) -> TaskRecord:
    """The distributor's record of an unfinished task from its row; :class:`StateCorrupt` if it does not read.

    The request is rebuilt from what this module wrote, from a validated request, in a database
    whose integrity was checked: it is not validated again unless ``validate`` (``--check-state``),
    which would cost more than everything else of a recovery.
    """
    (serial, task_id, _, state, owner, size, attempt, retries, collector_id, created_at, queued_at, dispatched_at,
     finished_at, retry_at, failed_on, blob, payload, _, _, _, _) = row  # fmt: skip
    try:
        fields = _request_fields(blob)
        fields.update(task_id=task_id, created_at=created_at, payload=None if payload is None else _unpack(payload))
        if validate:
            request = compact(TaskRequest.model_validate(fields))
        else:
            request = built(TaskRequest, **shared_empties(fields, fields))
        constraints = parse_constraints(request.constraints) if request.constraints else ()
        return TaskRecord(
            request,
            task_id,
            created_at=created_at,
            serial=serial,
            constraints=constraints,
            owner=owner,
            size=size,
            state=TaskState(state),
            attempt=attempt,
            retries=retries,
            collector_id=collector_id,
            queued_at=queued_at,
            dispatched_at=dispatched_at,
            finished_at=finished_at,
            retry_at=retry_at,
            failed_on=frozenset(_unpack(failed_on)) if failed_on else frozenset(),
            stored=True,
        )
    except (ValueError, TypeError, ValidationError, msgpack.UnpackException) as exc:
        raise StateCorrupt(f"task {task_id!r} (serial {serial}) does not read back: {exc}") from exc


def info(row: Sequence[Any]) -> TaskInfo:
    """The public view of a task from its row (a finished task no longer held in memory)."""
    (_, task_id, _, state, _, _, attempt, retries, collector_id, created_at, queued_at, dispatched_at,
     finished_at, _, _, blob, _, result, error, _, _) = row  # fmt: skip
    try:
        request = _request_fields(blob)
        return built(
            TaskInfo,
            task_id=task_id,
            operation=request["operation"],
            priority=request["priority"],
            state=TaskState(state),
            attempt=attempt,
            retries=retries,
            collector_id=collector_id,
            created_at=created_at,
            queued_at=queued_at,
            dispatched_at=dispatched_at,
            finished_at=finished_at,
            result=None if result is None else _result(_unpack(result), task_id),
            error=None if error is None else ErrorInfo(type=(e := _unpack(error))[0], message=e[1]),
            constraints=list(request["constraints"]),
            depends_on=list(request["depends_on"]),
            idempotency_key=request["idempotency_key"],
            not_before=request["not_before"],
            effective_priority=None,
            limit_wait_s=0.0,
            truncated=False,
        )
    except (ValueError, TypeError, KeyError, IndexError, ValidationError, msgpack.UnpackException) as exc:
        raise StateCorrupt(f"task {task_id!r} does not read back: {exc}") from exc


def _request_fields(blob: bytes) -> dict[str, Any]:
    """The request fields of a row's ``request`` blob; a field added since the row was written is None."""
    values = _unpack(blob)
    if not isinstance(values, list) or not _REQUEST_BEFORE_NOT_BEFORE <= len(values) <= len(_REQUEST):
        raise ValueError(f"a request is a list of {len(_REQUEST)} fields, not {type(values).__name__} {values!r:.60}")
    return dict(zip(_REQUEST, values + [None] * (len(_REQUEST) - len(values)), strict=True))


#: fields of the rows written before ``not_before`` was added
_REQUEST_BEFORE_NOT_BEFORE = _REQUEST.index("not_before")


def _result(values: list[Any], task_id: str) -> TaskResult:
    fields = dict(zip(_RESULT, values, strict=True))
    if fields["error"] is not None:
        fields["error"] = {"type": fields["error"][0], "message": fields["error"][1]}
    return TaskResult.model_validate({**fields, "task_id": task_id})


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)

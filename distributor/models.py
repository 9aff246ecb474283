"""Wire-facing records of the distributor: capabilities, task requests, results.

These are validated once, at the boundary where untrusted input enters; the
core never re-validates them. Field names are the public contract
(ARCHITECTURE.md, docs/PROTOCOL.md).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: One topic segment; operations, collector types and ids appear in topics.
SEGMENT = r"^[a-z0-9_-]+$"
Segment = Annotated[str, Field(pattern=SEGMENT, min_length=1, max_length=64)]
TaskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", min_length=1, max_length=128)]
#: attribute values; integers are bounded so every number converts to a float exactly enough
AttrValue = bool | Annotated[int, Field(ge=-(2**53), le=2**53)] | float | Annotated[str, Field(max_length=1024)]

#: free-form labels of a task or collector: bounded, since the daemon keeps them
Metadata = dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=1024)]]

PRIORITY_MIN = 1
PRIORITY_MAX = 10
ALL_PRIORITIES = tuple(range(PRIORITY_MIN, PRIORITY_MAX + 1))


class TaskState(enum.StrEnum):
    """Lifecycle of a task; the last four are terminal (every legal change: :mod:`distributor.transitions`)."""

    PENDING = "pending"
    #: waiting for its ``not_before`` time
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED})


class CollectorStatus(enum.StrEnum):
    """Whether the registry routes new work to a collector."""

    AVAILABLE = "available"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"


class _Record(BaseModel):
    # NaN or infinite times would break timer ordering: rejected everywhere
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CollectorCapability(_Record):
    """What a collector advertises when it registers."""

    collector_id: Segment
    collector_type: Segment
    supported_operations: list[Segment] = Field(min_length=1, max_length=1024)
    max_concurrent_tasks: int = Field(ge=1, le=100_000)
    priority_levels: list[Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]] = Field(
        default_factory=lambda: list(ALL_PRIORITIES), min_length=1
    )
    attributes: dict[Annotated[str, Field(max_length=64)], AttrValue] = Field(default_factory=dict, max_length=64)
    metadata: Metadata = Field(default_factory=dict, max_length=64)


class TaskRequest(_Record):
    """A unit of work as submitted by a client.

    ``task_id`` and ``created_at`` are filled in by the daemon when absent.
    """

    task_id: TaskId | None = None
    operation: Segment
    priority: int = Field(default=5, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    payload: Any = None
    timeout_ms: int = Field(default=30_000, ge=1, le=7 * 86_400_000)
    deadline: float | None = Field(default=None, description="absolute epoch seconds")
    #: not queued before this time (absolute epoch seconds): the task is ``scheduled`` until then
    not_before: float | None = Field(default=None, description="absolute epoch seconds")
    constraints: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=32)
    depends_on: list[TaskId] = Field(default_factory=list, max_length=256)
    #: a resubmission with the same key (from the same uid) within ``idempotency_ttl_s``
    #: returns the first task instead of making a second one
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: Metadata = Field(default_factory=dict, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=256)
    created_at: float | None = None


class ErrorInfo(_Record):
    """Why an attempt or a task failed."""

    type: str = Field(max_length=256)
    message: str = Field(max_length=65_536)


#: error type of an attempt whose result the collector could not send (a map key that is not a
#: string, nested too deep, too large, not msgpack): not retried, another attempt would do the same
INVALID_RESULT = "InvalidResult"


class TaskResult(_Record):
    """The outcome of one attempt, as reported by the collector that ran it."""

    task_id: TaskId
    attempt: int = Field(ge=1)
    collector_id: Segment
    success: bool
    value: Any = None
    error: ErrorInfo | None = None
    execution_time_s: float = Field(default=0.0, ge=0, le=1e9)
    started_at: float | None = None
    finished_at: float | None = None


_R = TypeVar("_R", bound=_Record)


def with_fields(record: _R, **changes: Any) -> _R:
    """``record.model_copy(update=changes)``: a copy with some fields replaced, not validated again.

    The same result as pydantic's own copy (values, fields set) for our records,
    which have no extra fields and no private attributes, at a fraction of its
    cost: the distributor copies every task's request as it is accepted and
    again as it finishes.
    """
    cls = type(record)
    copied = cls.__new__(cls)
    object.__setattr__(copied, "__dict__", {**record.__dict__, **changes})
    object.__setattr__(copied, "__pydantic_fields_set__", fields_set(record.__pydantic_fields_set__ | changes.keys()))
    object.__setattr__(copied, "__pydantic_extra__", None)
    object.__setattr__(copied, "__pydantic_private__", None)
    return copied


#: one set per distinct set of field names: every record of a kind shares it (a set per record costs
#: 200-700 bytes, and the daemon may hold 100,000 queued tasks). Never changed in place: our records are
#: frozen, and pydantic's ``model_copy`` copies the set before it adds to it.
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


def fields_set(names: Iterable[str]) -> set[str]:
    """The shared set of ``names``, for a record's ``__pydantic_fields_set__``."""
    key = frozenset(names)
    shared = _FIELDS_SETS.get(key)
    if shared is None:
        shared = _FIELDS_SETS[key] = set(key)
    return shared


#: empty containers shared by every request that has none (see :func:`compact`); never mutated
_NO_STRINGS: list[str] = []
_NO_METADATA: dict[str, str] = {}
_EMPTIES = (("constraints", _NO_STRINGS), ("depends_on", _NO_STRINGS), ("metadata", _NO_METADATA))


def compact(request: TaskRequest, **changes: Any) -> TaskRequest:
    """``with_fields(request, **changes)``, its empty lists and maps replaced by shared ones.

    A request's empty ``constraints``, ``depends_on`` and ``metadata`` are three containers
    of its own (about 180 bytes); a queued task needs none.
    """
    return with_fields(request, **shared_empties(request.__dict__, changes))


def shared_empties(fields: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """``into``, plus the shared empty container for each of a request's ``fields`` that is empty."""
    for name, empty in _EMPTIES:
        if not fields.get(name):
            into[name] = empty
    return into


_V = TypeVar("_V", bound=BaseModel)


def built(cls: type[_V], **values: Any) -> _V:
    """A view (or a record) from trusted values, every field given: not validated, and without the per-field work
    of ``model_construct`` (which costs more than the distributor's whole routing decision)."""
    view = cls.__new__(cls)
    object.__setattr__(view, "__dict__", values)
    object.__setattr__(view, "__pydantic_fields_set__", fields_set(values))
    object.__setattr__(view, "__pydantic_extra__", None)
    object.__setattr__(view, "__pydantic_private__", None)
    return view


class _View(BaseModel):
    # what the daemon reports: a newer daemon may add fields, which older readers skip
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class TaskInfo(_View):
    """A task's public view: state, attempts, timings, final result."""

    task_id: str
    operation: str
    priority: int
    state: TaskState
    attempt: int
    retries: int
    collector_id: str | None
    created_at: float
    queued_at: float | None
    dispatched_at: float | None
    finished_at: float | None
    result: TaskResult | None
    error: ErrorInfo | None
    constraints: list[str]
    depends_on: list[str]
    idempotency_key: str | None = None
    #: not queued before this time (the task is ``scheduled`` until then)
    not_before: float | None = None
    #: while queued: the priority it is taken at now (its own, or higher once priority aging raised it)
    effective_priority: int | None = None
    #: seconds it waited in its queue held back by a rate limit although a collector had room
    limit_wait_s: float = 0.0
    #: the reply left out ``result.value``: with it the frame would exceed the size limit
    truncated: bool = False


class CollectorInfo(_View):
    """A collector's public view as shown by ``eventbusctl collectors``."""

    collector_id: str
    collector_type: str
    supported_operations: list[str]
    attributes: dict[str, AttrValue]
    current_tasks: int
    max_concurrent_tasks: int
    status: CollectorStatus
    last_heartbeat: float
    tasks_completed: int
    tasks_failed: int
    success_rate: float | None
    total_execution_s: float
    mean_execution_s: float | None
    utilization: float
    score: float

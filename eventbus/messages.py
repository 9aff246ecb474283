"""Bodies of the control messages other than the distributor's own records.

Topics and bodies are specified in docs/PROTOCOL.md. Every body is validated
once, where it enters the daemon (or the client, for what the daemon sends).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from distributor.models import Segment, TaskId, TaskInfo, TaskRequest, TaskResult, TaskState
from distributor.schedules import ScheduleSpec, parse_every
from eventbus.errors import InvalidRequest

# request topics (client -> daemon)
SUBMIT = "control.task.submit"
BATCH = "control.task.batch"
GET = "control.task.get"
CANCEL = "control.task.cancel"
LIST = "control.task.list"
STATUS = "control.admin.status"
COLLECTORS = "control.admin.collectors"
STATS = "control.admin.stats"
REPORT = "control.admin.report"
METRICS = "control.admin.metrics"
STRATEGY = "control.admin.strategy"
ADMIN_DRAIN = "control.admin.drain"
ADMIN_UNDRAIN = "control.admin.undrain"
ADMIN_STOP = "control.admin.stop"
LIMITS = "control.admin.limits"
LIMIT_SET = "control.admin.limit.set"
LIMIT_RM = "control.admin.limit.rm"
CLUSTER = "control.admin.cluster"
SCHEDULES = "control.admin.schedules"
SCHEDULE_ADD = "control.admin.schedule.add"
SCHEDULE_SHOW = "control.admin.schedule.show"
SCHEDULE_PAUSE = "control.admin.schedule.pause"
SCHEDULE_RESUME = "control.admin.schedule.resume"
SCHEDULE_RM = "control.admin.schedule.rm"
SUBSCRIBE = "control.subscribe"
UNSUBSCRIBE = "control.unsubscribe"
# collector -> daemon
REGISTER = "control.collector.register"
DEREGISTER = "control.collector.deregister"
DRAIN = "control.collector.drain"
CLAIM = "control.collector.claim"
HEARTBEAT_PREFIX = "control.health.heartbeat"
RESULT_PREFIX = "control.collector.result"
# daemon -> collector
TASK_PREFIX = "control.collector.task"
CANCEL_PREFIX = "control.collector.cancel"
SHUTDOWN = "control.shutdown"
# daemon -> subscriber
#: ``{dropped: int}``: that many events matching its patterns were lost just before the next one
SUBSCRIPTION_DROPPED = "control.subscription.dropped"
#: ``{}``: nothing to do; sent to a subscriber the daemon sent nothing for half a heartbeat interval
SUBSCRIPTION_PING = "control.subscription.ping"


#: a position in the task list, opaque to clients (valid while the daemon runs)
Cursor = Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: how long a ``control.task.submit`` with ``wait`` holds its answer when it gives no ``wait_s``
SUBMIT_WAIT_DEFAULT_S = 60.0


class SubmitWait(_Body):
    """The fields a ``control.task.submit`` may carry besides the TaskRequest: answer when final."""

    wait: StrictBool = False
    wait_s: float = Field(
        default=SUBMIT_WAIT_DEFAULT_S, gt=0, le=3600, description="with wait: answer when final, or after this long"
    )


#: the keys of :class:`SubmitWait`, taken out of a submit body before the TaskRequest is read
SUBMIT_WAIT_KEYS = ("wait", "wait_s")


#: submit specs in one ``control.task.batch``, at most (larger lists are sent as several batches)
MAX_BATCH_TASKS = 1024


class BatchBody(SubmitWait):
    """``control.task.batch``: many submit specs (TaskRequest bodies, read one by one) and whether to wait.

    With ``wait``, the results follow the first reply as the tasks become final,
    in further replies with the same id (docs/PROTOCOL.md).
    """

    tasks: list[Any] = Field(min_length=1, max_length=MAX_BATCH_TASKS)


class GetBody(_Body):
    task_id: TaskId
    wait_s: float | None = Field(default=None, ge=0, le=3600, description="answer when final, or after this long")


class TaskIdBody(_Body):
    task_id: TaskId


class ListBody(_Body):
    state: TaskState | None = None
    operation: Segment | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    after: Cursor | None = Field(default=None, description="the ``next`` of the previous page")


class TaskPage(BaseModel):
    """A ``control.task.list`` reply: tasks newest first and where to continue.

    ``next`` is None when no task is left; ``truncated`` is true when the
    daemon cut the page to fit the frame limit before ``limit`` tasks (or
    dropped a task's result value, see ``TaskInfo.truncated``).
    """

    model_config = ConfigDict(frozen=True)

    tasks: list[TaskInfo]
    next: Cursor | None = None
    truncated: bool = False


class StrategyBody(_Body):
    name: str | None = None


class LimitKey(_Body):
    """Which limit: of an operation (the default) or of a collector type."""

    kind: Literal["operation", "collector_type"] = "operation"
    name: Segment


class LimitSetBody(LimitKey):
    rate: str | None = Field(default=None, max_length=64, description="N/PERIOD: 10/s, 100/60s, 5/m, 1000/h")
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000_000)


class ScheduleName(_Body):
    name: Segment


class ScheduleFields(_Body):
    """A periodic schedule as the config file and ``control.admin.schedule.add`` write it."""

    operation: Segment
    every: str | None = Field(default=None, max_length=32, description="a period: 30s, 5m, 1h, 1d")
    cron: str | None = Field(default=None, max_length=256, description="5 fields, e.g. '*/5 * * * *'")
    timezone: str | None = Field(default=None, max_length=64, description="of cron; default the daemon's")
    payload: Any = None
    priority: int = Field(default=5, ge=1, le=10)
    timeout_ms: int = Field(default=30_000, ge=1, le=7 * 86_400_000)
    constraints: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=32)
    jitter_s: float = Field(default=0.0, ge=0, le=86_400)
    overlap: Literal["skip", "queue"] = "skip"

    @model_validator(mode="after")
    def _when(self) -> ScheduleFields:
        try:
            if (self.every is None) == (self.cron is None):
                raise InvalidRequest("give one of every (e.g. 30s) or cron (e.g. '*/5 * * * *')")
            # the rest as the distributor checks it (name and operation are checked above)
            ScheduleSpec(
                name="x",
                operation=self.operation,
                every_s=None if self.every is None else parse_every(self.every),
                cron=self.cron,
                timezone=self.timezone or "UTC",
                constraints=tuple(self.constraints),
            )
        except InvalidRequest as exc:
            raise ValueError(exc.message.replace("schedule 'x': ", "")) from None
        return self


class ScheduleBody(ScheduleFields):
    name: Segment
    #: replace a schedule of that name (else adding one that exists is refused)
    replace: StrictBool = False


class StopBody(_Body):
    collector_id: Segment | None = Field(default=None, description="None: every collector")


class CollectorIdBody(_Body):
    collector_id: Segment


class HeartbeatBody(_Body):
    current_tasks: int = Field(default=0, ge=0)


class SubscribeBody(_Body):
    patterns: list[str] = Field(min_length=1, max_length=64)


class AttemptEvent(_Body):
    """What a collector reports about an attempt on ``control.collector.result.<id>``."""

    event: Literal["accepted", "rejected", "progress", "result"]
    task_id: TaskId
    attempt: int = Field(ge=1)
    fraction: float | None = Field(default=None, ge=0, le=1)
    message: str = Field(default="", max_length=4096)
    result: TaskResult | None = None


class DispatchBody(_Body):
    """``control.collector.task.<type>.<id>``: run this attempt."""

    task: TaskRequest
    attempt: int
    deadline: float | None = None


class CancelBody(_Body):
    """``control.collector.cancel.<id>``: stop this attempt."""

    task_id: str
    attempt: int
    reason: str


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: dict[str, Any]) -> M:
    """Validate a body; the first problem becomes a one-line :class:`InvalidRequest`."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    """``field.path: message`` of the first error, plus how many more there are."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}"

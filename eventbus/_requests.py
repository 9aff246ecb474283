"""The verbs both clients speak, described once and free of I/O.

Each verb is a :class:`Call`: the request to send and how its reply body
becomes the result. :class:`~eventbus.sync_client.SyncClient` sends a call
and blocks, :class:`~eventbus.client.Client` sends it and awaits; neither
builds a body or reads a reply itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distributor.models import CollectorInfo, CollectorStatus, TaskInfo
from eventbus import messages as m
from eventbus.errors import error_from_code
from eventbus.wire import Envelope, Kind

T = TypeVar("T")

#: a wait is split into server-side waits of at most this long
WAIT_CHUNK_S = 60.0
#: the shortest wait a submit asks for (the daemon takes only waits > 0)
MIN_WAIT_S = 0.001


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: ``topic`` and ``body`` to send, ``parse`` to turn the reply body into the result.

    ``timeout`` None leaves the client's own timeout.
    """

    topic: str
    body: dict[str, Any]
    parse: Callable[[dict[str, Any]], T]
    timeout: float | None = None


def wait_chunk(deadline: float | None, now: float) -> float:
    """The next server-side wait: a chunk, or what is left before ``deadline``."""
    return WAIT_CHUNK_S if deadline is None else max(0.0, min(WAIT_CHUNK_S, deadline - now))


def reply_body(env: Envelope) -> dict[str, Any]:
    """The body of a reply; a daemon's error reply is raised as its typed error."""
    if env.kind is Kind.ERROR:
        raise error_from_code(str(env.body.get("code", "internal")), str(env.body.get("message", "")))
    return env.body


def submit_body(operation: str, payload: Any = None, **fields: Any) -> dict[str, Any]:
    """A ``control.task.submit`` body; fields left as None take the daemon's defaults."""
    body = {"operation": operation, "payload": payload}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def list_body(state: str | None, operation: str | None, limit: int, after: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": limit}
    if state is not None:
        body["state"] = state
    if operation is not None:
        body["operation"] = operation
    if after is not None:
        body["after"] = after
    return body


def next_page(so_far: m.TaskPage, reply: dict[str, Any], limit: int) -> tuple[m.TaskPage, bool]:
    """``so_far`` followed by the page in ``reply``, and whether to ask for another page."""
    page = m.TaskPage.model_validate(reply)
    merged = m.TaskPage(
        tasks=[*so_far.tasks, *page.tasks], next=page.next, truncated=so_far.truncated or page.truncated
    )
    return merged, bool(page.tasks) and page.next is not None and len(merged.tasks) < limit


def offers(infos: list[CollectorInfo], operation: str) -> bool:
    """Whether any of ``infos`` is available (not draining, not silent) and offers ``operation``."""
    return any(c.status is CollectorStatus.AVAILABLE and operation in c.supported_operations for c in infos)


# ---- the verbs ----------------------------------------------------------


def _as_is(reply: dict[str, Any]) -> dict[str, Any]:
    return reply


def _nothing(reply: dict[str, Any]) -> None:
    return None


def _task_id(reply: dict[str, Any]) -> str:
    return str(reply["task_id"])


def _strategy(reply: dict[str, Any]) -> str:
    return str(reply["strategy"])


def _collectors(reply: dict[str, Any]) -> list[CollectorInfo]:
    return [CollectorInfo.model_validate(c) for c in reply["collectors"]]


def _asked(reply: dict[str, Any]) -> list[str]:
    return [str(cid) for cid in reply["collectors"]]


def submit(operation: str, payload: Any = None, **fields: Any) -> Call[str]:
    """Submit a task; the result is its id."""
    return Call(m.SUBMIT, submit_body(operation, payload, **fields), _task_id)


def new_task_id() -> str:
    """A task id chosen by the client (as the daemon would choose it), so a wait can ask for it after a reset."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a submit with ``wait``: the task (final, unless the wait ran out) and whether a
    live collector offers its operation (False: the daemon answered at once rather than wait)."""

    info: TaskInfo
    offered: bool


def _submitted(reply: dict[str, Any]) -> Submitted:
    return Submitted(TaskInfo.model_validate(reply), reply.get("offered") is not False)


def submit_wait(operation: str, payload: Any, wait_s: float, timeout: float, **fields: Any) -> Call[Submitted]:
    """Submit and have the answer held until the task is final (or ``wait_s`` passed): one round trip."""
    body = submit_body(operation, payload, **fields)
    body["wait"] = True
    body["wait_s"] = max(wait_s, MIN_WAIT_S)
    return Call(m.SUBMIT, body, _submitted, body["wait_s"] + timeout)


def get(task_id: str, wait_s: float | None, timeout: float) -> Call[TaskInfo]:
    """A task's state; with ``wait_s`` the answer may take that long on top of ``timeout``."""
    return Call(m.GET, {"task_id": task_id, "wait_s": wait_s}, TaskInfo.model_validate, (wait_s or 0) + timeout)


def cancel(task_id: str) -> Call[TaskInfo]:
    return Call(m.CANCEL, {"task_id": task_id}, TaskInfo.model_validate)


def list_page(state: str | None, operation: str | None, limit: int, after: str | None) -> Call[dict[str, Any]]:
    """One ``control.task.list`` request; its reply goes to :func:`next_page`."""
    return Call(m.LIST, list_body(state, operation, limit, after), _as_is)


def status() -> Call[dict[str, Any]]:
    return Call(m.STATUS, {}, _as_is)


def stats() -> Call[dict[str, Any]]:
    return Call(m.STATS, {}, _as_is)


def report() -> Call[dict[str, Any]]:
    """The operator's report: completion times per operation, collectors, errors by type, uptime."""
    return Call(m.REPORT, {}, _as_is)


def _text(reply: dict[str, Any]) -> str:
    return str(reply["text"])


def metrics() -> Call[str]:
    """The daemon's metrics in the Prometheus text exposition format."""
    return Call(m.METRICS, {}, _text)


def collectors() -> Call[list[CollectorInfo]]:
    return Call(m.COLLECTORS, {}, _collectors)


def strategy(name: str | None) -> Call[str]:
    """The routing strategy in use; with ``name``, switch to it first."""
    return Call(m.STRATEGY, {"name": name} if name else {}, _strategy)


def drain(collector_id: str) -> Call[CollectorInfo]:
    return Call(m.ADMIN_DRAIN, {"collector_id": collector_id}, CollectorInfo.model_validate)


def undrain(collector_id: str) -> Call[CollectorInfo]:
    return Call(m.ADMIN_UNDRAIN, {"collector_id": collector_id}, CollectorInfo.model_validate)


def stop_collectors(collector_id: str | None) -> Call[list[str]]:
    """Ask a collector (None: every collector) to drain and exit; the result is whom it asked."""
    return Call(m.ADMIN_STOP, {"collector_id": collector_id} if collector_id else {}, _asked)


def _limits(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return list(reply["limits"])


def limits() -> Call[list[dict[str, Any]]]:
    """The rate limits in force, each with its source (config or runtime) and state."""
    return Call(m.LIMITS, {}, _limits)


def set_limit(kind: str, name: str, rate: str | None, max_in_flight: int | None) -> Call[dict[str, Any]]:
    """Set (replace) the runtime limit of an operation or a collector type; the result is the limit in force."""
    body = {"kind": kind, "name": name, "rate": rate, "max_in_flight": max_in_flight}
    return Call(m.LIMIT_SET, {k: v for k, v in body.items() if v is not None}, _as_is)


def remove_limit(kind: str, name: str) -> Call[list[dict[str, Any]]]:
    """Remove a runtime limit (the config file's, if it has one, applies again); the result is the limits left."""
    return Call(m.LIMIT_RM, {"kind": kind, "name": name}, _limits)


def cluster() -> Call[dict[str, Any]]:
    """This daemon's view of its cluster: node, leader, NATS connection, hosts (``{"enabled": false}`` when off)."""
    return Call(m.CLUSTER, {}, _as_is)


def _schedules(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return list(reply["schedules"])


def schedules() -> Call[list[dict[str, Any]]]:
    """Every periodic schedule with its next due time and last runs."""
    return Call(m.SCHEDULES, {}, _schedules)


def add_schedule(name: str, operation: str, replace: bool, **fields: Any) -> Call[dict[str, Any]]:
    """Add a periodic schedule (fields as ``control.admin.schedule.add``); the result is the schedule."""
    body = {"name": name, "operation": operation, **{k: v for k, v in fields.items() if v is not None}}
    if replace:
        body["replace"] = True
    return Call(m.SCHEDULE_ADD, body, _as_is)


def schedule_verb(topic: str, name: str) -> Call[dict[str, Any]]:
    """show, pause, resume or rm of one schedule (``topic``); the result is the schedule (rm: its name)."""
    return Call(topic, {"name": name}, _as_is)


def subscribe(patterns: tuple[str, ...]) -> Call[None]:
    return Call(m.SUBSCRIBE, {"patterns": list(patterns)}, _nothing)

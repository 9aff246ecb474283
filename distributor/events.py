"""Builders of the events the distributor publishes (topics in ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Any

from distributor.actions import Publish
from distributor.models import TaskState
from distributor.registry import CollectorState
from distributor.tasks import TaskRecord

#: each state's name as a plain string, looked up (an enum's ``.value`` is a slower descriptor)
_NAMES = {state: state.value for state in TaskState}


def task_event(task: TaskRecord, now: float, state: str | None = None, **extra: Any) -> Publish:
    """``events.task.<state>.<operation>`` for a task (its current state unless ``state`` is given)."""
    name = state or _NAMES[task.state]
    operation = task.request.operation
    body: dict[str, Any] = {
        "task_id": task.task_id,
        "state": name,
        "operation": operation,
        "attempt": task.attempt,
        "collector_id": task.collector_id,
        "at": now,
    }
    if task.error is not None and task.state.terminal:
        body["error"] = task.error.model_dump()
    if extra:
        body.update(extra)
    return Publish(f"events.task.{name}.{operation}", body)


def collector_event(event: str, state: CollectorState, now: float) -> Publish:
    """``events.collector.<event>.<type>``: joined, left, unhealthy, drained."""
    cap = state.capability
    body = {"collector_id": cap.collector_id, "collector_type": cap.collector_type, "at": now}
    return Publish(f"events.collector.{event}.{cap.collector_type}", body)

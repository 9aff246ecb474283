"""Collector liveness: heartbeat checks, unhealthy collectors and their attempts, forgetting the long silent.

Functions of the :class:`~distributor.machine.TaskMachine`, kept apart from its routing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributor.actions import Cancel
from distributor.models import CollectorStatus
from distributor.timers import TimerKind

if TYPE_CHECKING:
    from distributor.machine import TaskMachine
    from distributor.registry import CollectorState


def schedule_check(m: TaskMachine, state: CollectorState) -> None:
    """(Re)arm the collector's single heartbeat check; older checks become stale."""
    state.check_token += 1
    due = state.last_heartbeat + m.config.heartbeat_timeout_s
    m._timers.add(due, TimerKind.HEARTBEAT_CHECK, state.collector_id, state.order, state.check_token)


def check(m: TaskMachine, collector_id: str, order: int, token: int) -> None:
    state = m.registry.find(collector_id)
    if state is None or state.order != order or state.check_token != token or state.status is CollectorStatus.UNHEALTHY:
        return
    if state.last_heartbeat + m.config.heartbeat_timeout_s > m._now:
        schedule_check(m, state)
        return
    mark_unhealthy(m, state)


def mark_unhealthy(m: TaskMachine, state: CollectorState) -> None:
    state.status = CollectorStatus.UNHEALTHY
    state.unhealthy_since = m._now
    state.orphans.extend(state.attempts.items())
    m._take_back(state)
    m.registry.refresh(state)
    forget_at = m._now + m.config.forget_unhealthy_after_s
    m._timers.add(forget_at, TimerKind.FORGET_COLLECTOR, state.collector_id, state.order)
    m._collector_event("unhealthy", state)


def forget(m: TaskMachine, collector_id: str, order: int) -> None:
    state = m.registry.find(collector_id)
    if state is None or state.order != order or state.status is not CollectorStatus.UNHEALTHY:
        return
    since = state.unhealthy_since or m._now
    if since + m.config.forget_unhealthy_after_s > m._now:
        return  # it came back and died again since: a newer timer covers it
    m.registry.remove(collector_id)
    m._collector_event("left", state)


def alive(m: TaskMachine, state: CollectorState, now: float) -> None:
    state.last_heartbeat = now
    if state.status is not CollectorStatus.UNHEALTHY:
        return
    state.status = CollectorStatus.DRAINING if state.drained else CollectorStatus.AVAILABLE
    state.unhealthy_since = None
    for task_id, attempt in state.orphans:
        m._actions.append(Cancel(state.collector_id, task_id, attempt, "reassigned"))
    state.orphans.clear()
    m.registry.refresh(state)
    schedule_check(m, state)
    m._dirty.update(state.capability.supported_operations)
    m._collector_event("joined", state)

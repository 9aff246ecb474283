"""Every legal change of a task's state, in one table: an illegal one raises :class:`IllegalTransition`.

A task is born (:data:`BORN`) when it is submitted, or taken back from a store
after a restart: it starts waiting on its parents (``pending``), on its time
(``scheduled``), in its queue (``queued``), or already ``failed`` (a parent it
depends on cannot succeed); one taken back while it waited to retry is born
``retrying``. From there it moves only along :data:`MOVES`; the
four final states lead nowhere.

::

    pending ──> scheduled ──> queued ──> dispatched ──> running ──> succeeded
       │            │          ^  ^          │             │
       │            │          │  └──────────┴─────────────┤  (redelivered: its collector left or died)
       │            │          └── retrying <──────────────┘  (an attempt failed or timed out)
       └────────────┴── and every state not final ──> failed | cancelled | expired
"""

from __future__ import annotations

from distributor.errors import EventBusError
from distributor.models import TaskState

PENDING, SCHEDULED, QUEUED = TaskState.PENDING, TaskState.SCHEDULED, TaskState.QUEUED
DISPATCHED, RUNNING, RETRYING = TaskState.DISPATCHED, TaskState.RUNNING, TaskState.RETRYING
SUCCEEDED, FAILED, CANCELLED, EXPIRED = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED

#: the states a task may be born in
BORN = frozenset({PENDING, SCHEDULED, QUEUED, FAILED, RETRYING})

#: state -> the states it may move to
MOVES: dict[TaskState, frozenset[TaskState]] = {
    # its parents succeeded (queued, or scheduled when its time is still ahead), or one did not (failed)
    PENDING: frozenset({SCHEDULED, QUEUED, FAILED, CANCELLED, EXPIRED}),
    SCHEDULED: frozenset({QUEUED, CANCELLED, EXPIRED}),
    QUEUED: frozenset({DISPATCHED, CANCELLED, EXPIRED}),
    # back to queued: its collector left, died or declined it (no retry used); a failed attempt retries
    # or fails the task; ``running`` is optional (a result may be the first the daemon hears of an attempt)
    DISPATCHED: frozenset({RUNNING, QUEUED, RETRYING, FAILED, CANCELLED, EXPIRED}),
    RUNNING: frozenset({QUEUED, RETRYING, SUCCEEDED, FAILED, CANCELLED, EXPIRED}),
    RETRYING: frozenset({QUEUED, CANCELLED, EXPIRED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    EXPIRED: frozenset(),
}

#: the states in which a task waits for something other than a collector (counted as not yet queued)
WAITING = frozenset({PENDING, SCHEDULED})


class IllegalTransition(EventBusError):
    """A task was asked to change state in a way :data:`MOVES` does not list: a defect of the distributor."""

    code = "internal"


def check(old: TaskState | None, new: TaskState) -> None:
    """Raise :class:`IllegalTransition` unless a task may go from ``old`` (None: being born) to ``new``."""
    legal = BORN if old is None else MOVES[old]
    if new not in legal:
        raise IllegalTransition(f"a task cannot go from {'birth' if old is None else old.value} to {new.value}")

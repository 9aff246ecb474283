"""What the distributor asks its host to do. The host carries these out in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributor.models import TaskRequest


@dataclass(slots=True, frozen=True)
class Dispatch:
    """Send attempt ``attempt`` of ``task`` to a collector on ``control.collector.task.<type>.<id>``."""

    collector_id: str
    collector_type: str
    task: TaskRequest
    attempt: int
    deadline: float | None


@dataclass(slots=True, frozen=True)
class Cancel:
    """Tell a collector to stop running an attempt (timeout, deadline, user cancel, orphan).

    ``collector_id`` :data:`~distributor.spill.REMOTE`: the attempt was spilled,
    and the host tells the cluster (whichever host runs it stops it).
    """

    collector_id: str
    task_id: str
    attempt: int
    reason: str


@dataclass(slots=True, frozen=True)
class Publish:
    """Publish an event to subscribers whose pattern matches ``topic``."""

    topic: str
    body: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Finished:
    """A task reached a terminal state; whoever waits on it may be answered."""

    task_id: str


@dataclass(slots=True, frozen=True)
class Spill:
    """Hand attempt ``attempt`` of ``task`` to the cluster: another host's collector runs it."""

    task: TaskRequest
    attempt: int
    deadline: float | None


Action = Dispatch | Cancel | Publish | Finished | Spill

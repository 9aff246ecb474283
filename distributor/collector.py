"""One registered collector as the distributor sees it: capability, status, load and record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributor.models import CollectorCapability, CollectorInfo, CollectorStatus

#: smaller sorts first: the collector a strategy prefers
OrderKey = Callable[["CollectorState"], Any]
Eligible = Callable[["CollectorState"], bool]


@dataclass(slots=True, eq=False)
class CollectorState:
    """One registered collector: its capability, its load and its record."""

    capability: CollectorCapability
    last_heartbeat: float
    registered_at: float
    order: int  # registration order, unique: the final tie-breaker everywhere
    status: CollectorStatus = CollectorStatus.AVAILABLE
    #: drained by request; kept apart from health so recovering from
    #: unhealthy restores "draining", not "available"
    drained: bool = False
    unhealthy_since: float | None = None
    current_tasks: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    total_execution_s: float = 0.0
    busy_slot_s: float = 0.0
    last_dispatch: int = 0  # global dispatch counter when it last got work
    check_token: int = 0  # names its one live heartbeat check timer
    #: its key in the active strategy's order while it is in the pools (None: not filed)
    key: Any = None
    #: counted by the registry among the available supporters of its operations
    counted_available: bool = False
    #: task_id -> attempt number of every attempt in flight on this collector
    attempts: dict[str, int] = field(default_factory=dict)
    #: attempts taken away while it was unhealthy; cancelled when it comes back
    orphans: list[tuple[str, int]] = field(default_factory=list)
    priorities: frozenset[int] = frozenset()
    #: ``capability.collector_id``, which a re-registration never changes; a plain
    #: attribute because the pools read it on every dispatch and every result
    collector_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.priorities = frozenset(self.capability.priority_levels)
        self.collector_id = self.capability.collector_id

    @property
    def has_room(self) -> bool:
        return self.current_tasks < self.capability.max_concurrent_tasks

    @property
    def load(self) -> float:
        """Fraction of the collector's slots in use."""
        return self.current_tasks / self.capability.max_concurrent_tasks

    @property
    def success_rate(self) -> float:
        """Completed / finished, with one neutral pseudo-success and pseudo-failure: 0.5 for a new collector."""
        return (self.tasks_completed + 1) / (self.tasks_completed + self.tasks_failed + 2)

    @property
    def experience(self) -> float:
        """Tasks completed, normalised to [0, 1): 0 for a new collector, 0.5 after 10."""
        return self.tasks_completed / (self.tasks_completed + 10)

    @property
    def score(self) -> float:
        """best_fit's ranking: success rate x 0.7 + experience x 0.3."""
        return self.success_rate * 0.7 + self.experience * 0.3

    def utilization(self, now: float) -> float:
        """Share of its slot-time spent running attempts since it registered."""
        elapsed = (now - self.registered_at) * self.capability.max_concurrent_tasks
        return min(1.0, self.busy_slot_s / elapsed) if elapsed > 0 else 0.0

    def info(self, now: float) -> CollectorInfo:
        done = self.tasks_completed + self.tasks_failed
        cap = self.capability
        return CollectorInfo(
            collector_id=cap.collector_id,
            collector_type=cap.collector_type,
            supported_operations=list(cap.supported_operations),
            attributes=dict(cap.attributes),
            current_tasks=self.current_tasks,
            max_concurrent_tasks=cap.max_concurrent_tasks,
            status=self.status,
            last_heartbeat=self.last_heartbeat,
            tasks_completed=self.tasks_completed,
            tasks_failed=self.tasks_failed,
            success_rate=self.tasks_completed / done if done else None,
            total_execution_s=self.total_execution_s,
            mean_execution_s=self.total_execution_s / done if done else None,
            utilization=self.utilization(now),
            score=self.score,
        )

"""The CapabilityRegistry: who is connected, what they can do, and who has room now."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from distributor.errors import UnknownCollector
from distributor.models import CollectorCapability, CollectorInfo, CollectorStatus


@dataclass(slots=True, eq=False)
class CollectorState:
    """One registered collector: its capability, its load and its record."""

    capability: CollectorCapability
    last_heartbeat: float
    generation: int
    status: CollectorStatus = CollectorStatus.AVAILABLE
    current_tasks: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    total_execution_s: float = 0.0
    #: task_id -> attempt number of every attempt in flight on this collector
    attempts: dict[str, int] = field(default_factory=dict)
    #: attempts taken away while it was unhealthy; cancelled when it comes back
    orphans: list[tuple[str, int]] = field(default_factory=list)
    priorities: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self.priorities = frozenset(self.capability.priority_levels)

    @property
    def collector_id(self) -> str:
        return self.capability.collector_id

    @property
    def has_room(self) -> bool:
        return self.current_tasks < self.capability.max_concurrent_tasks

    @property
    def load(self) -> float:
        """Fraction of the collector's slots in use."""
        return self.current_tasks / self.capability.max_concurrent_tasks

    def info(self) -> CollectorInfo:
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
        )


class CapabilityRegistry:
    """Collectors indexed by operation, with a per-operation set of those that can take work.

    Finding the candidates for an operation never walks collectors that do
    not support it; the availability sets are updated on every load or
    status change (cost: the number of operations of that collector).
    """

    def __init__(self) -> None:
        self._collectors: dict[str, CollectorState] = {}
        self._available: dict[str, dict[str, CollectorState]] = {}
        self._supporting: dict[str, int] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._collectors)

    def __iter__(self) -> Iterator[CollectorState]:
        return iter(list(self._collectors.values()))

    def find(self, collector_id: str) -> CollectorState | None:
        return self._collectors.get(collector_id)

    def get(self, collector_id: str) -> CollectorState:
        state = self._collectors.get(collector_id)
        if state is None:
            raise UnknownCollector(f"collector {collector_id!r} is not registered")
        return state

    def add(self, capability: CollectorCapability, now: float) -> CollectorState:
        """Register a new collector (its id must not be registered)."""
        self._generation += 1
        state = CollectorState(capability, last_heartbeat=now, generation=self._generation)
        self._collectors[capability.collector_id] = state
        self._index(state)
        self.refresh(state)
        return state

    def replace_capability(self, state: CollectorState, capability: CollectorCapability) -> None:
        """A known collector re-registered (e.g. after reconnect), possibly with new capabilities."""
        self._unindex(state)
        state.capability = capability
        state.priorities = frozenset(capability.priority_levels)
        self._index(state)
        self.refresh(state)

    def remove(self, collector_id: str) -> CollectorState:
        state = self.get(collector_id)
        self._unindex(state)
        del self._collectors[collector_id]
        return state

    def refresh(self, state: CollectorState) -> None:
        """Re-file a collector after its load or status changed."""
        cid = state.collector_id
        can_take = state.status is CollectorStatus.AVAILABLE and state.has_room
        for op in state.capability.supported_operations:
            avail = self._available[op]
            if can_take:
                avail[cid] = state
            else:
                avail.pop(cid, None)

    def available(self, operation: str) -> dict[str, CollectorState]:
        """Collectors supporting ``operation`` that are available and have room, oldest first."""
        return self._available.get(operation) or {}

    def supporting(self, operation: str) -> int:
        """How many registered collectors support ``operation`` (any status)."""
        return self._supporting.get(operation, 0)

    def _index(self, state: CollectorState) -> None:
        for op in state.capability.supported_operations:
            self._supporting[op] = self._supporting.get(op, 0) + 1
            self._available.setdefault(op, {})

    def _unindex(self, state: CollectorState) -> None:
        cid = state.collector_id
        for op in state.capability.supported_operations:
            self._supporting[op] -= 1
            self._available[op].pop(cid, None)
            if not self._supporting[op]:
                del self._supporting[op]
                del self._available[op]

"""The CapabilityRegistry: who is connected, what they can do, and who has room now."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from distributor.errors import UnknownCollector
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


class Pool:
    """The collectors of one operation that can take work now, in the active strategy's order.

    Collectors are kept in buckets of equal key, the distinct keys in a sorted
    list: finding the preferred eligible collector looks at the smallest key's
    bucket first, and moving a collector to another key is a few dict
    operations. There are few distinct keys for most strategies (a load
    fraction, a counter), so neither grows with the number of collectors.
    Within a bucket the collector that entered it first (the one that has
    waited longest) comes first.
    """

    __slots__ = ("_buckets", "_ids", "_index", "_keys", "_where", "members")

    def __init__(self) -> None:
        self.members: dict[str, CollectorState] = {}
        self._keys: list[Any] = []  # sorted distinct keys
        self._buckets: dict[Any, dict[str, CollectorState]] = {}
        self._where: dict[str, Any] = {}  # collector_id -> its key here
        self._ids: list[str] = []  # members in an array, for uniform sampling
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.members)

    def put(self, state: CollectorState, key: Any) -> None:
        """File a collector under ``key`` (a no-op when it is already there)."""
        cid = state.collector_id
        old = self._where.get(cid, _MISSING)
        if old == key:
            return
        if old is not _MISSING:
            self._unfile(cid, old)
        else:
            self.members[cid] = state
            self._index[cid] = len(self._ids)
            self._ids.append(cid)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            bisect.insort(self._keys, key)
        bucket[cid] = state
        self._where[cid] = key

    def discard(self, cid: str) -> None:
        if self.members.pop(cid, None) is None:
            return
        self._unfile(cid, self._where.pop(cid))
        i = self._index.pop(cid)
        last = self._ids.pop()
        if last != cid:
            self._ids[i] = last
            self._index[last] = i

    def _unfile(self, cid: str, key: Any) -> None:
        bucket = self._buckets[key]
        del bucket[cid]
        if not bucket:
            del self._buckets[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def best(self, eligible: Eligible) -> CollectorState | None:
        """The first eligible member in key order."""
        buckets = self._buckets
        for key in self._keys:
            for state in buckets[key].values():
                if eligible(state):
                    return state
        return None

    def sample(self, eligible: Eligible, rng: random.Random, tries: int = 16) -> CollectorState | None:
        """A uniformly random eligible member."""
        ids = self._ids
        for _ in range(min(tries, len(ids))):
            state = self.members[ids[rng.randrange(len(ids))]]
            if eligible(state):
                return state
        candidates = [s for s in self.members.values() if eligible(s)]
        return rng.choice(candidates) if candidates else None

    def reorder(self) -> None:
        """Re-file every member under its current key (after a strategy switch)."""
        members = list(self.members.values())
        self._keys, self._buckets, self._where = [], {}, {}
        for state in members:
            bucket = self._buckets.get(state.key)
            if bucket is None:
                bucket = self._buckets[state.key] = {}
                bisect.insort(self._keys, state.key)
            bucket[state.collector_id] = state
            self._where[state.collector_id] = state.key


_MISSING = object()


def _registration_order(state: CollectorState) -> Any:
    return state.order


class CapabilityRegistry:
    """Collectors indexed by operation, with a per-operation :class:`Pool` of those that can take work.

    Finding a collector for a task never walks collectors that do not support
    its operation; re-filing a collector after its load or status changed
    costs a few dict operations for each of its k operations.
    """

    def __init__(self, order: OrderKey = _registration_order) -> None:
        self._collectors: dict[str, CollectorState] = {}
        self._pools: dict[str, Pool] = {}
        self._supporting: dict[str, int] = {}
        self._order = order
        self._seq = 0

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
        self._seq += 1
        state = CollectorState(capability, last_heartbeat=now, registered_at=now, order=self._seq)
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

    def set_order(self, order: OrderKey) -> None:
        """Re-sort every pool for a new strategy."""
        self._order = order
        for state in self._collectors.values():
            if state.key is not None:
                state.key = order(state)
        for pool in self._pools.values():
            pool.reorder()

    def refresh(self, state: CollectorState) -> None:
        """Re-file a collector after its load, record or status changed."""
        cid = state.collector_id
        ops = state.capability.supported_operations
        if state.status is CollectorStatus.AVAILABLE and state.has_room:
            key = state.key = self._order(state)
            pools = self._pools
            for op in ops:
                pools[op].put(state, key)
        else:
            state.key = None
            for op in ops:
                self._pools[op].discard(cid)

    def pool(self, operation: str) -> Pool | None:
        """Collectors supporting ``operation`` that are available and have room."""
        return self._pools.get(operation)

    def available(self, operation: str) -> dict[str, CollectorState]:
        pool = self._pools.get(operation)
        return pool.members if pool else {}

    def supporting(self, operation: str) -> int:
        """How many registered collectors support ``operation`` (any status)."""
        return self._supporting.get(operation, 0)

    def _index(self, state: CollectorState) -> None:
        for op in state.capability.supported_operations:
            self._supporting[op] = self._supporting.get(op, 0) + 1
            if op not in self._pools:
                self._pools[op] = Pool()

    def _unindex(self, state: CollectorState) -> None:
        cid = state.collector_id
        state.key = None
        for op in state.capability.supported_operations:
            self._supporting[op] -= 1
            self._pools[op].discard(cid)
            if not self._supporting[op]:
                del self._supporting[op]
                del self._pools[op]

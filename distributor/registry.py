"""The CapabilityRegistry: who is connected, what they can do, and who has room now."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from distributor.collector import CollectorState, OrderKey
from distributor.constraints import Constraint, satisfied
from distributor.errors import UnknownCollector
from distributor.models import ALL_PRIORITIES, CollectorCapability, CollectorStatus
from distributor.pool import Pool

__all__ = ["CapabilityRegistry", "CollectorState", "Pool"]


def _registration_order(state: CollectorState) -> Any:
    return state.order


#: a task shape for routing: (priority, constraints); priority None when no
#: collector of the operation restricts its priority levels
ShapeKey = tuple[int | None, tuple[Constraint, ...]]
#: shape pools kept per operation (least recently used ones are dropped and rebuilt on demand)
MAX_SHAPES = 32


class CapabilityRegistry:
    """Collectors indexed by operation, with pools of those that can take a task of a given shape now.

    A pool holds exactly the collectors that support the operation, accept
    the priority, satisfy the constraints, are available and have room. So
    choosing a collector never walks one that could not take the task, and
    re-filing a collector after its load or status changed costs a few dict
    operations for each pool of each of its operations. A pool is built (one
    pass over the operation's collectors) the first time a shape is routed.
    """

    def __init__(self, order: OrderKey = _registration_order) -> None:
        self._collectors: dict[str, CollectorState] = {}
        self._by_op: dict[str, dict[str, CollectorState]] = {}  # every supporter, any status
        self._shapes: dict[str, OrderedDict[ShapeKey, Pool]] = {}
        self._restricted: dict[str, int] = {}  # supporters that do not accept every priority
        # per operation, supporters that are available, and those of them with room (in the
        # pools); an operation with none is absent. Kept up to date by refresh().
        self._available: dict[str, int] = {}
        self._open: dict[str, int] = {}
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
        for shapes in self._shapes.values():
            for pool in shapes.values():
                pool.reorder()

    def refresh(self, state: CollectorState) -> None:
        """Re-file a collector after its load, record or status changed."""
        old = state.key
        cap = state.capability
        available = state.status is CollectorStatus.AVAILABLE
        if available is not state.counted_available:
            state.counted_available = available
            self._count(self._available, state, +1 if available else -1)
        if available and state.current_tasks < cap.max_concurrent_tasks:
            key = self._order(state)
            if old is not None and key == old:
                return  # filed under this key in every pool it fits already
            state.key = key
            if old is None:
                self._count(self._open, state, +1)
            priorities, attributes = state.priorities, cap.attributes
            for op in cap.supported_operations:
                for (priority, constraints), pool in self._shapes[op].items():
                    # _fits, inlined: this runs for every dispatch and every result
                    if (priority is None or priority in priorities) and (
                        not constraints or satisfied(constraints, attributes)
                    ):
                        pool.put(state, key)
        elif old is not None:  # an unfiled collector is in no pool
            state.key = None
            self._count(self._open, state, -1)
            cid = cap.collector_id
            for op in cap.supported_operations:
                for pool in self._shapes[op].values():
                    pool.discard(cid)

    def supports(self, operation: str) -> bool:
        """Whether any registered collector (of any status) offers ``operation``."""
        return operation in self._by_op

    def operations(self) -> Iterable[str]:
        """Every operation some registered collector (of any status) offers."""
        return self._by_op.keys()

    def supporters(self, operation: str) -> Iterable[CollectorState]:
        """The registered collectors (of any status) that offer ``operation``, without walking the others."""
        return self._by_op.get(operation, {}).values()

    def restricted(self, operation: str) -> bool:
        """Whether a collector offering ``operation`` accepts only some priorities (pools are then per priority)."""
        return bool(self._restricted.get(operation))

    def has_room(self, operation: str) -> bool:
        """Whether an available collector offering ``operation`` has a free slot now (any task shape)."""
        return operation in self._open

    def offered(self, operation: str) -> bool:
        """Whether an available collector (not draining, not unhealthy) offers ``operation`` now."""
        return operation in self._available

    def pool(self, operation: str, priority: int, constraints: tuple[Constraint, ...] = ()) -> Pool | None:
        """The collectors that can take a task of this shape right now (None: nobody offers the operation)."""
        supporters = self._by_op.get(operation)
        if supporters is None:
            return None
        shapes = self._shapes[operation]
        shape: ShapeKey = (priority if self._restricted.get(operation) else None, constraints)
        pool = shapes.get(shape)
        if pool is not None:
            shapes.move_to_end(shape)
            return pool
        pool = Pool()
        for state in supporters.values():
            if state.key is not None and _fits(state, shape):
                pool.put(state, state.key)
        shapes[shape] = pool
        if len(shapes) > MAX_SHAPES:
            shapes.popitem(last=False)
        return pool

    def _index(self, state: CollectorState) -> None:
        restricted = state.priorities != _ALL
        for op in state.capability.supported_operations:
            self._by_op.setdefault(op, {})[state.collector_id] = state
            self._shapes.setdefault(op, OrderedDict())
            if restricted:
                self._count_restricted(op, +1)

    def _unindex(self, state: CollectorState) -> None:
        cid = state.collector_id
        if state.key is not None:
            state.key = None
            self._count(self._open, state, -1)
        if state.counted_available:
            state.counted_available = False
            self._count(self._available, state, -1)
        restricted = state.priorities != _ALL
        for op in state.capability.supported_operations:
            for pool in self._shapes[op].values():
                pool.discard(cid)
            if restricted:
                self._count_restricted(op, -1)
            supporters = self._by_op[op]
            del supporters[cid]
            if not supporters:
                del self._by_op[op]
                del self._shapes[op]

    @staticmethod
    def _count(counts: dict[str, int], state: CollectorState, delta: int) -> None:
        """Count ``state`` in (+1) or out (-1) for every operation it supports."""
        for op in state.capability.supported_operations:
            after = counts.get(op, 0) + delta
            if after:
                counts[op] = after
            else:
                del counts[op]

    def _count_restricted(self, op: str, delta: int) -> None:
        before = self._restricted.get(op, 0)
        after = self._restricted[op] = before + delta
        if (before == 0) != (after == 0):
            self._shapes[op].clear()  # shape keys now do (or no longer) depend on the priority


_ALL = frozenset(ALL_PRIORITIES)


def _fits(state: CollectorState, shape: ShapeKey) -> bool:
    """Whether a collector can ever take tasks of this shape (room and status aside)."""
    priority, constraints = shape
    if priority is not None and priority not in state.priorities:
        return False
    return not constraints or satisfied(constraints, state.capability.attributes)

"""A Pool: the collectors of one operation (and task shape) that can take work now, in strategy order."""

from __future__ import annotations

import bisect
import random
from typing import Any

from distributor.collector import CollectorState, Eligible


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
        where, buckets = self._where, self._buckets
        old = where.get(cid, _MISSING)
        if old == key:
            return
        if old is not _MISSING:
            # (_unfile, inlined: a collector moves to another key on every dispatch and result)
            left = buckets[old]
            del left[cid]
            if not left:
                del buckets[old]
                del self._keys[bisect.bisect_left(self._keys, old)]
        else:
            self.members[cid] = state
            self._index[cid] = len(self._ids)
            self._ids.append(cid)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = {}
            bisect.insort(self._keys, key)
        bucket[cid] = state
        where[cid] = key

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

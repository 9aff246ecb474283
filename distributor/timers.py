"""A heap of timers keyed by what they are about; stale ones are skipped by the caller."""

from __future__ import annotations

import enum
import heapq
from typing import NamedTuple


class TimerKind(enum.IntEnum):
    """What a timer is for."""

    ATTEMPT_TIMEOUT = 1
    DEADLINE = 2
    RETRY = 3
    HEARTBEAT_CHECK = 4
    FORGET_COLLECTOR = 5
    #: a scheduled task's ``not_before`` time
    DUE = 6
    #: a rate limit's bucket has a token again
    LIMIT = 7
    #: a periodic schedule is due
    SCHEDULE = 8
    #: a queued task may go to another host (a cluster's overflow mode)
    SPILL = 9


class Timer(NamedTuple):
    """Due at ``when`` for ``key`` (a task or collector id).

    ``serial`` names the record (a task id may be reused after its record was
    forgotten) and ``token`` the attempt; the owner ignores timers whose
    serial or token no longer match. Timers order by ``(when, seq)``: ``seq``
    is unique, so the fields after it are never compared. A plain tuple is
    compared by the interpreter itself, which keeps a push onto a heap of
    many (mostly stale) attempt timeouts cheap.
    """

    when: float
    seq: int
    kind: TimerKind
    key: str
    serial: int
    token: int


class TimerHeap:
    """Timers in due order. Cancelling is lazy: the owner checks ``token`` when one fires."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, kind: TimerKind, key: str, serial: int, token: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, Timer(when, self._seq, kind, key, serial, token))

    def pop_due(self, now: float) -> Timer | None:
        """The earliest timer due at or before ``now``, removed; None when none is due."""
        if self._heap and self._heap[0].when <= now:
            return heapq.heappop(self._heap)
        return None

    def next_due(self) -> float | None:
        return self._heap[0].when if self._heap else None

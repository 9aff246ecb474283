"""Fixed-bucket histograms of task timings per operation: queue wait, run time, end to end.

They feed the daemon's Prometheus exposition. Buckets never change, so an
observation costs a binary search and two additions, and a histogram's size
is fixed. Operations are bounded as in :mod:`distributor.report`: past
:data:`~distributor.report.MAX_KEYS` operations the rest share the
:data:`~distributor.report.OTHER` histograms.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from distributor.report import bounded_key

#: upper bounds of the buckets, in seconds; one more bucket (+Inf) takes the rest
BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket (not cumulative; the last bucket is +Inf), and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        # a clock stepped back, or a client's created_at ahead of ours, must not make the sum shrink
        seconds = max(0.0, seconds)
        # a bucket holds the values up to and including its bound
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """``(upper bound, observations up to it)`` for every bucket, ending with ``(inf, count)``."""
        total = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            yield bound, total


@dataclass(slots=True)
class OperationTimings:
    """The three histograms of one operation."""

    #: from the moment a task became ready to run (queued) to its dispatch; one per dispatch
    queue_wait: Histogram = field(default_factory=Histogram)
    #: from a dispatch to the result its collector reported (success or failure); one per such attempt
    run: Histogram = field(default_factory=Histogram)
    #: from submission to success; one per succeeded task
    end_to_end: Histogram = field(default_factory=Histogram)


@dataclass(slots=True)
class Timings:
    """Histograms per operation, bounded in the number of operations."""

    _operations: dict[str, OperationTimings] = field(default_factory=dict)

    def _of(self, operation: str) -> OperationTimings:
        found = self._operations.get(operation)
        if found is None:
            found = self._operations.setdefault(bounded_key(self._operations, operation), OperationTimings())
        return found

    def dispatched(self, operation: str, waited_s: float) -> None:
        """A task of ``operation`` was dispatched after waiting ``waited_s`` in the queue."""
        self._of(operation).queue_wait.observe(waited_s)

    def ran(self, operation: str, run_s: float) -> None:
        """A collector reported the result of an attempt ``run_s`` after it was dispatched."""
        self._of(operation).run.observe(run_s)

    def succeeded(self, operation: str, total_s: float) -> None:
        """A task of ``operation`` succeeded ``total_s`` after it was submitted."""
        self._of(operation).end_to_end.observe(total_s)

    def operations(self) -> dict[str, OperationTimings]:
        """The histograms by operation name (a live view: read it before the next event)."""
        return self._operations

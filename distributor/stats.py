"""Counters and latency percentiles kept by the distributor."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from distributor.models import TaskState

#: latency samples kept for percentiles (the most recent ones)
SAMPLES = 10_000


def percentiles(samples: deque[float]) -> dict[str, float | None]:
    """p50/p95/p99 of ``samples`` in seconds (None when there are none)."""
    if not samples:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {f"p{q}": ordered[min(last, round(last * q / 100))] for q in (50, 95, 99)}


@dataclass(slots=True)
class Stats:
    """What the distributor has done since it started."""

    tasks_submitted: int = 0
    tasks_distributed: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    tasks_expired: int = 0
    tasks_cancelled: int = 0
    tasks_retried: int = 0
    tasks_redelivered: int = 0
    attempts_timed_out: int = 0
    stale_messages: int = 0
    tasks_by_type: Counter[str] = field(default_factory=Counter)
    queue_wait_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    end_to_end_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def dispatched(self, operation: str, waited_s: float) -> None:
        self.tasks_distributed += 1
        self.tasks_by_type[operation] += 1
        self.queue_wait_s.append(waited_s)

    def finished(self, state: TaskState, total_s: float) -> None:
        if state is TaskState.SUCCEEDED:
            self.tasks_succeeded += 1
            self.end_to_end_s.append(total_s)
        elif state is TaskState.FAILED:
            self.tasks_failed += 1
        elif state is TaskState.EXPIRED:
            self.tasks_expired += 1
        elif state is TaskState.CANCELLED:
            self.tasks_cancelled += 1

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        return {
            "tasks_submitted": self.tasks_submitted,
            "tasks_distributed": self.tasks_distributed,
            "tasks_succeeded": self.tasks_succeeded,
            "tasks_failed": self.tasks_failed,
            "tasks_expired": self.tasks_expired,
            "tasks_cancelled": self.tasks_cancelled,
            "tasks_retried": self.tasks_retried,
            "tasks_redelivered": self.tasks_redelivered,
            "attempts_timed_out": self.attempts_timed_out,
            "stale_messages": self.stale_messages,
            "tasks_by_type": dict(self.tasks_by_type),
            "latency_queue_wait_s": percentiles(self.queue_wait_s),
            "latency_end_to_end_s": percentiles(self.end_to_end_s),
            **gauges,
        }

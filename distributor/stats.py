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


#: the final states, as the keys that count them
FINAL_KEYS = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.EXPIRED: "expired",
    TaskState.CANCELLED: "cancelled",
}


def final_counts(finals: Counter[TaskState], prefix: str = "") -> dict[str, int]:
    """How many tasks ended in each final state, keyed ``<prefix>succeeded`` and so on."""
    return {prefix + key: finals[state] for state, key in FINAL_KEYS.items()}


@dataclass(slots=True)
class Stats:
    """What the distributor has done since it started."""

    tasks_submitted: int = 0
    tasks_distributed: int = 0
    #: tasks that ended, by final state
    finals: Counter[TaskState] = field(default_factory=Counter)
    tasks_retried: int = 0
    tasks_redelivered: int = 0
    tasks_spilled: int = 0
    #: unfinished tasks taken back from a store at startup
    tasks_recovered: int = 0
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
        self.finals[state] += 1
        if state is TaskState.SUCCEEDED:
            self.end_to_end_s.append(total_s)

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        return {
            "tasks_submitted": self.tasks_submitted,
            "tasks_distributed": self.tasks_distributed,
            **final_counts(self.finals, "tasks_"),
            "tasks_retried": self.tasks_retried,
            "tasks_redelivered": self.tasks_redelivered,
            "tasks_spilled": self.tasks_spilled,
            "tasks_recovered": self.tasks_recovered,
            "attempts_timed_out": self.attempts_timed_out,
            "stale_messages": self.stale_messages,
            "tasks_by_type": dict(self.tasks_by_type),
            "latency_queue_wait_s": percentiles(self.queue_wait_s),
            "latency_end_to_end_s": percentiles(self.end_to_end_s),
            **gauges,
        }

"""What the operator's report needs and ``stats`` does not keep: outcomes per operation and per error type.

Everything here is bounded: each operation keeps its most recent completion
times only, and past :data:`MAX_KEYS` operations (or error types) the rest
are counted under :data:`OTHER`, so a client inventing names cannot grow it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from distributor.models import TaskState
from distributor.stats import final_counts, percentiles

#: completion times kept per operation (the most recent ones)
SAMPLES_PER_OPERATION = 1_000
#: operations and error types tracked by name; the rest share the :data:`OTHER` bucket
MAX_KEYS = 1_000
OTHER = "other"


@dataclass(slots=True)
class _Outcomes:
    finals: Counter[TaskState] = field(default_factory=Counter)
    completion_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES_PER_OPERATION))


def bounded_key(table: dict[str, Any] | Counter[str], key: str) -> str:
    """``key`` itself while it is known or there is room for it, else :data:`OTHER`."""
    return key if key in table or len(table) < MAX_KEYS - 1 else OTHER


@dataclass(slots=True)
class ReportBook:
    """Final outcomes per operation and error counts per error type, bounded."""

    _operations: dict[str, _Outcomes] = field(default_factory=dict)
    _errors: Counter[str] = field(default_factory=Counter)

    def finished(self, operation: str, state: TaskState, total_s: float, error_type: str | None) -> None:
        """A task of ``operation`` became final ``state`` ``total_s`` after it was submitted."""
        outcomes = self._operations.get(operation)
        if outcomes is None:
            outcomes = self._operations.setdefault(bounded_key(self._operations, operation), _Outcomes())
        outcomes.finals[state] += 1
        if state is TaskState.SUCCEEDED:
            outcomes.completion_s.append(total_s)
        if state is not TaskState.SUCCEEDED and error_type is not None:
            self._errors[bounded_key(self._errors, error_type)] += 1

    def operations(self) -> dict[str, dict[str, Any]]:
        """Per operation: final counts and completion-time percentiles (seconds, of succeeded tasks)."""
        return {
            name: {**final_counts(o.finals), "completion_s": percentiles(o.completion_s)}
            for name, o in sorted(self._operations.items())
        }

    def errors(self) -> dict[str, int]:
        """Tasks that ended without success, by the type of their last error, most frequent first."""
        return dict(self._errors.most_common())

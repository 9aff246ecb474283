"""Routing strategies: given the eligible collectors for a task, pick one.

A strategy only chooses; eligibility (operation, priority, status, room)
is decided by the distributor before it is asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from distributor.errors import InvalidRequest
from distributor.models import TaskRequest
from distributor.registry import CollectorState


class RoutingStrategy(ABC):
    """Picks one collector among eligible candidates (never empty)."""

    name: ClassVar[str]

    @abstractmethod
    def select(self, task: TaskRequest, candidates: Sequence[CollectorState]) -> CollectorState:
        """Return the collector that gets this attempt of ``task``."""


class LeastLoaded(RoutingStrategy):
    """The candidate with the smallest fraction of busy slots; ties go to the oldest."""

    name = "least_loaded"

    def select(self, task: TaskRequest, candidates: Sequence[CollectorState]) -> CollectorState:
        best = candidates[0]
        best_load = best.load
        for c in candidates:
            load = c.load
            if load < best_load:
                best, best_load = c, load
        return best


STRATEGIES: dict[str, type[RoutingStrategy]] = {LeastLoaded.name: LeastLoaded}


def make_strategy(name: str) -> RoutingStrategy:
    """Build a strategy by name; unknown names are an :class:`InvalidRequest`."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise InvalidRequest(f"unknown strategy {name!r} (known: {known})") from None

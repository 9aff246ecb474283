"""Routing strategies: among the collectors eligible for a task, which one gets it.

A strategy orders a :class:`~distributor.registry.Pool` (its ``key``: smaller
is preferred) and picks from it; eligibility (operation, priority, status,
room, constraints) is decided by the distributor and passed in. Switching
strategies re-sorts the pools; the next decision uses the new one.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from distributor.collector import CollectorState, Eligible
from distributor.errors import InvalidRequest
from distributor.models import TaskRequest
from distributor.pool import Pool


class RoutingStrategy(ABC):
    """Orders the collectors of an operation and picks one for a task."""

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    @abstractmethod
    def key(self, state: CollectorState) -> Any:
        """Sort key; the eligible collector with the smallest key is chosen."""

    def select(self, task: TaskRequest, pool: Pool, eligible: Eligible) -> CollectorState | None:
        """The collector for this task, or None when no member of ``pool`` is eligible."""
        return pool.best(eligible)


# Keys are plain numbers where possible: the pools compare them on every
# push and pop, and a number compares several times faster than a tuple.


class LeastLoaded(RoutingStrategy):
    name = "least_loaded"
    description = "the smallest share of busy slots; ties to the one waiting longest"

    def key(self, state: CollectorState) -> Any:
        return state.current_tasks / state.capability.max_concurrent_tasks


class RoundRobin(RoutingStrategy):
    name = "round_robin"
    description = "in turn: the collector that got work least recently"

    def key(self, state: CollectorState) -> Any:
        return state.last_dispatch


class FirstAvailable(RoutingStrategy):
    name = "first_available"
    description = "the earliest registered collector with room"

    def key(self, state: CollectorState) -> Any:
        return state.order


class RandomChoice(RoutingStrategy):
    name = "random"
    description = "uniformly at random among eligible collectors"

    def key(self, state: CollectorState) -> Any:
        return state.order

    def select(self, task: TaskRequest, pool: Pool, eligible: Eligible) -> CollectorState | None:
        return pool.sample(eligible, self.rng)


class BestFit(RoutingStrategy):
    name = "best_fit"
    description = "highest score (success rate x 0.7 + experience x 0.3); ties to the least loaded"

    def key(self, state: CollectorState) -> Any:
        return (-state.score, state.load, state.order)


STRATEGIES: dict[str, type[RoutingStrategy]] = {
    cls.name: cls for cls in (LeastLoaded, RoundRobin, FirstAvailable, RandomChoice, BestFit)
}


def make_strategy(name: str, rng: random.Random | None = None) -> RoutingStrategy:
    """Build a strategy by name; unknown names are an :class:`InvalidRequest`."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise InvalidRequest(f"unknown strategy {name!r} (known: {known})") from None
    return cls(rng)

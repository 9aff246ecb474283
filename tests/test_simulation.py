"""The simulation behind benchmarks/simulate.py runs to completion with every task accounted for."""

from __future__ import annotations

import pytest

from benchmarks.simulate import simulate


@pytest.mark.parametrize("strategy", ["least_loaded", "round_robin", "first_available", "random", "best_fit"])
def test_a_thousand_collectors_complete_every_task(strategy: str) -> None:
    run = simulate(collectors=1000, operations=200, tasks=3000, strategy=strategy)
    assert run.succeeded == 3000
    assert run.dispatches == 3000  # every attempt succeeded the first time: one decision per task

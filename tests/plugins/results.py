"""A collector used by the tests: operations whose results the daemon cannot take, or can only just."""

from __future__ import annotations

from typing import Any

from collectors import Collector, operation


class ResultsCollector(Collector):
    collector_type = "results"
    max_concurrent_tasks = 2

    @operation
    async def int_keys(self, payload: Any) -> Any:
        """A map whose key is an int: valid Python, not a valid protocol map."""
        return {1: "x"}

    @operation
    async def nested(self, payload: Any) -> Any:
        """Lists nested ``payload`` levels deep."""
        value: Any = "bottom"
        for _ in range(int(payload)):
            value = [value]
        return value

    @operation
    async def blob(self, payload: Any) -> str:
        """A string of ``payload`` characters."""
        return "x" * int(payload)

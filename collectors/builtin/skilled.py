"""The ``skilled`` collector: ``solve`` succeeds only when the collector's skill reaches the difficulty.

Start with ``--attr skill=N`` (default 5) and optionally ``--attr time_scale=S``
(seconds of work per difficulty point, default 0.1).
"""

from __future__ import annotations

import asyncio
from typing import Any

from collectors.sdk import Collector, TaskContext, operation


class SkillTooLow(Exception):
    """The task is harder than this collector's skill."""


class SkilledCollector(Collector):
    """One operation, ``solve {difficulty}``, that models workers of different skill."""

    collector_type = "skilled"
    max_concurrent_tasks = 2
    attributes = {"skill": 5, "time_scale": 0.1}

    @operation
    async def solve(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Work ``difficulty x time_scale`` seconds; succeed iff skill >= difficulty."""
        if not isinstance(payload, dict) or not isinstance(payload.get("difficulty"), int | float):
            raise TypeError('payload must be {"difficulty": <number>}')
        difficulty = float(payload["difficulty"])
        skill = float(self.attributes["skill"])
        await asyncio.sleep(max(0.0, difficulty * float(self.attributes["time_scale"])))
        if skill < difficulty:
            raise SkillTooLow(f"difficulty {difficulty:g} is above skill {skill:g}")
        ctx.report_progress(1.0, "solved")
        return {"difficulty": difficulty, "skill": skill, "collector_id": ctx.collector_id}

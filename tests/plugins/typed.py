"""A collector used by the tests: pydantic-typed operations and a cooperative sync operation."""

from __future__ import annotations

import time

from pydantic import BaseModel

from collectors import Collector, TaskContext, operation


class Order(BaseModel):
    item: str
    quantity: int


class Receipt(BaseModel):
    item: str
    total: float


class TypedCollector(Collector):
    collector_type = "typed"
    max_concurrent_tasks = 2

    @operation
    async def price(self, order: Order) -> Receipt:
        return Receipt(item=order.item, total=order.quantity * 2.5)

    @operation
    def spin(self, payload: dict[str, float], ctx: TaskContext) -> str:
        """Busy-wait in a thread until cancelled or ``seconds`` pass."""
        end = time.monotonic() + payload.get("seconds", 30)
        while time.monotonic() < end:
            if ctx.cancelled.is_set():
                return "stopped"
            time.sleep(0.01)
        return "finished"

"""The ``demo`` collector: small operations for trying eventbus out and for tests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from typing import Any

from collectors.sdk import Collector, TaskContext, operation


def _field(payload: Any, name: str, default: Any) -> Any:
    if payload is None:
        return default
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a JSON object with {name!r}, got {type(payload).__name__}")
    return payload.get(name, default)


class DemoCollector(Collector):
    """echo, sleep, compute, io and fail."""

    collector_type = "demo"
    max_concurrent_tasks = 4

    @operation
    async def echo(self, payload: Any) -> Any:
        """Return the payload unchanged."""
        return payload

    @operation
    async def sleep(self, payload: Any, ctx: TaskContext) -> dict[str, float]:
        """Sleep ``seconds`` (default 1), reporting progress ten times."""
        seconds = float(_field(payload, "seconds", 1.0))
        if not 0 <= seconds <= 86_400:
            raise ValueError(f"seconds must be between 0 and 86400, got {seconds}")
        for step in range(10):
            await asyncio.sleep(seconds / 10)
            ctx.report_progress((step + 1) / 10, f"slept {seconds * (step + 1) / 10:.2f}s")
        return {"slept": seconds}

    @operation
    def compute(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Hash a buffer ``n`` times (CPU-bound, runs in a thread; stops when cancelled)."""
        n = int(_field(payload, "n", 1000))
        if not 0 <= n <= 100_000_000:
            raise ValueError(f"n must be between 0 and 100000000, got {n}")
        digest = b"eventbus"
        for i in range(n):
            if i % 10_000 == 0 and ctx.cancelled.is_set():
                raise InterruptedError("cancelled")
            digest = hashlib.sha256(digest).digest()
        return {"n": n, "sha256": digest.hex()}

    @operation
    def io(self, payload: Any) -> dict[str, int]:
        """Write and read back ``bytes`` random bytes through a temporary file."""
        size = int(_field(payload, "bytes", 4096))
        if not 0 <= size <= 64 << 20:
            raise ValueError(f"bytes must be between 0 and {64 << 20}, got {size}")
        data = os.urandom(size)
        with tempfile.TemporaryFile() as fh:
            fh.write(data)
            fh.flush()
            fh.seek(0)
            back = fh.read()
        return {"bytes": len(back), "ok": back == data}

    @operation
    async def fail(self, payload: Any) -> None:
        """Always fail, with ``message`` as the error."""
        raise RuntimeError(str(_field(payload, "message", "failed on purpose")))

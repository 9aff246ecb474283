"""``run``: submit and wait in one request, through the real daemon, with both clients."""

from __future__ import annotations

import asyncio

import pytest

from eventbus.client import Client
from eventbus.errors import RequestTimeout
from tests.e2e.conftest import Bus

pytestmark = pytest.mark.e2e


def test_sync_run_returns_the_final_task(bus: Bus) -> None:
    bus.start_collector("run-1")
    with bus.client() as c:
        info = c.run("echo", {"hello": 1})
        assert info.state.value == "succeeded" and info.result is not None
        assert info.result.value == {"hello": 1}
        failed = c.run("fail", {"message": "nope"}, priority=9)
        assert failed.state.value == "failed" and failed.error is not None and "nope" in failed.error.message


def test_async_run_returns_the_final_task_of_many_at_once(bus: Bus) -> None:
    bus.start_collector("run-1", "demo", "--concurrency", "16")

    async def main() -> list[object]:
        async with Client(bus.socket) as client:
            infos = await asyncio.gather(*(client.run("echo", i) for i in range(200)))
            return [i.result.value if i.result else None for i in infos]

    assert asyncio.run(main()) == list(range(200))


def test_run_says_when_no_live_collector_offers_the_operation_and_keeps_waiting(bus: Bus) -> None:
    unoffered: list[str] = []
    with bus.client() as c, pytest.raises(RequestTimeout):
        c.run("nobody-offers", timeout=0.5, on_unoffered=unoffered.append)
    assert len(unoffered) == 1
    with bus.client() as c:
        assert c.get(unoffered[0]).state.value == "queued"

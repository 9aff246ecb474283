from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator

import pytest
from hypothesis import settings

from tests.service_harness import Harness


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Expose each phase's report on the item, so fixtures can print logs for failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# Machines here are noisy: a per-example deadline would turn load into failures.
settings.register_profile("eventbus", deadline=None)
settings.load_profile("eventbus")


@pytest.fixture
def harness() -> Iterator[Harness]:
    """A Service without sockets (see tests/service_harness.py), on an event loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        yield Harness(loop)
    finally:
        loop.close()

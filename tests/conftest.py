from __future__ import annotations

import asyncio
import os
import tempfile
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


# No daemon a test starts may write to the user's state directory: each e2e daemon gets a state
# directory of its own (tests/e2e/conftest.py); anything else lands in this throwaway one.
_STATE_HOME = tempfile.TemporaryDirectory(prefix="eb-state-")
os.environ["XDG_STATE_HOME"] = _STATE_HOME.name
os.environ.pop("STATE_DIRECTORY", None)
os.environ.pop("EVENTBUS_STATE_DIR", None)

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

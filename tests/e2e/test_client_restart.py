"""Waiting clients across a daemon crash or stop: they notice the reset and fail fast (exit 3), never hang."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest

from eventbus.client import Client
from eventbus.errors import DaemonRestarted, DaemonUnreachable
from eventbus.exitcodes import EXIT_UNREACHABLE
from tests.e2e.conftest import Bus, Proc, command, wait_until

pytestmark = pytest.mark.e2e

#: generous bound for "promptly": these waits used to end only after 70 s
PROMPT_S = 15.0
SIGNALS = [pytest.param(signal.SIGKILL, id="kill-9"), pytest.param(signal.SIGTERM, id="sigterm")]


@pytest.fixture
def demo(bus: Bus) -> Iterator[Proc]:
    """A demo collector, killed at teardown: stopped politely it would first finish its 30 s sleep."""
    proc = bus.start_collector("demo1")
    yield proc
    proc.signal(signal.SIGKILL)


def _in_flight(bus: Bus, count: int = 1) -> None:
    def check() -> bool:
        with bus.client() as c:
            return int(c.status()["tasks_in_flight"]) == count

    wait_until(check, 15, f"{count} task(s) running")


def _waiting_ctl(bus: Bus) -> Proc:
    """``submit sleep --wait`` in the background, once its task runs on the demo collector."""
    argv = [command("eventbusctl"), "submit", "sleep", "--payload", '{"seconds": 30}', "--wait"]
    waiter = bus.spawn(argv, "waiter")
    _in_flight(bus)
    return waiter


def _stop_daemon(bus: Bus, sig: int) -> None:
    """Stop the daemon with ``sig``; a SIGTERM is sent twice, or the running 30 s task would hold the daemon."""
    daemon = bus.daemon
    assert daemon is not None
    daemon.signal(sig)
    if sig == signal.SIGTERM:
        wait_until(lambda: "SIGTERM: stopping" in daemon.output(), 5, "the daemon to begin stopping")
        daemon.signal(sig)
    daemon.wait(10)


#: what a waiting client says: a killed daemon is found gone (or restarted); a stopping one answers shutting_down
GONE: dict[int, str] = {signal.SIGKILL: "restarted", signal.SIGTERM: "stopped before task"}


@pytest.mark.parametrize("sig", SIGNALS)
def test_wait_across_a_daemon_restart_exits_3_saying_the_fate_is_unknown(bus: Bus, demo: Proc, sig: int) -> None:
    waiter = _waiting_ctl(bus)
    stopped = time.monotonic()
    _stop_daemon(bus, sig)
    bus.start_daemon("--no-durable")  # a new daemon, which does not know the task
    assert waiter.wait(PROMPT_S) == EXIT_UNREACHABLE, waiter.output()
    assert time.monotonic() - stopped < PROMPT_S
    out = waiter.output()
    assert GONE[sig] in out and "unknown" in out, out
    assert "Traceback" not in out


def test_wait_across_a_kill_9_of_a_durable_daemon_ends_with_the_result(bus: Bus) -> None:
    """The restarted daemon knows the task (it was committed before the id was given out): the wait goes on."""
    collector = bus.start_collector("demo1")
    argv = [command("eventbusctl"), "--json", "submit", "sleep", "--payload", '{"seconds": 1}', "--wait"]
    waiter = bus.spawn(argv, "waiter")
    _in_flight(bus)
    _stop_daemon(bus, signal.SIGKILL)
    bus.start_daemon()
    assert waiter.wait(PROMPT_S) == 0, waiter.output()
    info = json.loads(waiter.output())
    assert info["state"] == "succeeded" and info["attempt"] == 2, info  # attempt 1 died with the daemon's lease
    collector.signal(signal.SIGKILL)


@pytest.mark.parametrize("sig", SIGNALS)
def test_wait_on_a_daemon_that_does_not_come_back_exits_3_promptly(bus: Bus, demo: Proc, sig: int) -> None:
    waiter = _waiting_ctl(bus)
    stopped = time.monotonic()
    _stop_daemon(bus, sig)
    assert waiter.wait(PROMPT_S) == EXIT_UNREACHABLE, waiter.output()
    assert time.monotonic() - stopped < PROMPT_S
    out = waiter.output()
    gone = "went away" if sig == signal.SIGKILL else "stopped before task"
    assert gone in out and "unknown" in out, out


def test_async_wait_across_a_kill_9_and_restart_raises_daemon_restarted(bus: Bus, demo: Proc) -> None:

    async def scenario() -> None:
        async with Client(bus.socket) as client:
            task_id = await client.submit("sleep", {"seconds": 30})
            waiting = asyncio.create_task(client.wait(task_id))
            await asyncio.to_thread(_in_flight, bus)
            _stop_daemon(bus, signal.SIGKILL)
            await asyncio.to_thread(bus.start_daemon, "--no-durable")
            with pytest.raises(DaemonRestarted, match="unknown"):
                await asyncio.wait_for(waiting, PROMPT_S)

    asyncio.run(scenario())


def test_async_pending_request_fails_with_daemon_unreachable_when_the_daemon_dies(bus: Bus, demo: Proc) -> None:

    async def scenario() -> None:
        async with Client(bus.socket) as client:
            task_id = await client.submit("sleep", {"seconds": 30})
            await asyncio.to_thread(_in_flight, bus)
            pending = asyncio.create_task(client.get(task_id, wait_s=40))
            await asyncio.sleep(0.2)  # the get is with the daemon
            _stop_daemon(bus, signal.SIGKILL)
            with pytest.raises(DaemonUnreachable, match="reset"):
                await asyncio.wait_for(pending, 5)

    asyncio.run(scenario())

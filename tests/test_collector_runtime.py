"""The collector runtime against the in-memory twin of its transport: no socket, no process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from collectors import session as session_module
from collectors.runtime import CollectorRuntime
from collectors.sdk import Collector, operation
from distributor.models import TaskState
from eventbus import messages as m
from eventbus.client import Client
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope, Kind
from tests.memory_transport import PATH, MemoryDaemon, unpack

T = TypeVar("T")
CID = "c1"
#: heartbeats every 20 ms, so a lost daemon is noticed within tens of milliseconds
FAST = DaemonSettings(heartbeat_interval_s=0.02, heartbeat_timeout_s=5.0)


class Gated(Collector):
    """``echo`` answers at once; ``hold`` runs until the test opens the gate."""

    collector_type = "gated"
    max_concurrent_tasks = 2

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    @operation
    async def echo(self, payload: Any) -> Any:
        return payload

    @operation
    async def hold(self, payload: Any) -> Any:
        self.started += 1
        await self.gate.wait()
        return payload


class Scene:
    """A daemon, a collector runtime serving ``Gated`` on it, and an admin client."""

    def __init__(self, daemon: MemoryDaemon) -> None:
        self.daemon = daemon
        self.collector = Gated()
        self.runtime = CollectorRuntime(
            self.collector, collector_id=CID, socket=str(PATH), request_timeout_s=0.05, transport=daemon
        )
        self.stop = asyncio.Event()
        self.admin = Client(PATH, timeout=2, reconnect_grace=1, transport=daemon)

    async def until(self, check: Callable[[], bool], what: str) -> None:
        for _ in range(400):
            if check():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"gave up waiting for {what}")

    async def registered(self) -> None:
        async def known() -> bool:
            return any(c.collector_id == CID for c in await self.admin.collectors())

        for _ in range(400):
            if await known():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the collector never registered")

    def sent(self, topic: str) -> list[Envelope]:
        """What the collector sent on ``topic`` (to any daemon), in order."""
        return [env for f in self.daemon.frames_from(CID.encode()) for env in unpack(f) if env.topic == topic]


def play(scenario: Callable[[Scene], Awaitable[T]], settings: DaemonSettings = FAST) -> T:
    async def main() -> T:
        scene = Scene(MemoryDaemon(asyncio.get_running_loop(), settings))
        await scene.admin.connect()
        serving = asyncio.ensure_future(scene.runtime.run(scene.stop))
        try:
            await scene.registered()
            return await asyncio.wait_for(scenario(scene), 5)
        finally:
            scene.collector.gate.set()
            scene.stop.set()
            scene.daemon.start(forget=False) if not scene.daemon.running else None
            await asyncio.wait_for(serving, 5)
            await scene.admin.close()

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "RECONNECT_BASE_S", 0.01)


def test_a_dispatched_task_runs_and_its_result_is_reported() -> None:
    async def scenario(scene: Scene) -> None:
        info = await scene.admin.run("echo", {"n": 1}, timeout=2)
        assert info.state is TaskState.SUCCEEDED and info.result is not None
        assert info.result.value == {"n": 1} and info.collector_id == CID

    play(scenario)


def test_a_result_made_while_the_daemon_is_away_is_sent_again_once_it_is_back() -> None:
    async def scenario(scene: Scene) -> None:
        task_id = await scene.admin.submit("hold", {"kept": True})
        await scene.until(lambda: scene.collector.started == 1, "the task to start")
        scene.daemon.stop()
        scene.collector.gate.set()  # the result is made while nobody listens
        await scene.until(lambda: bool(scene.runtime._outbox), "the result to wait in the outbox")
        await asyncio.sleep(0.1)  # its delivery failed: it stays
        assert list(scene.runtime._outbox) == [(task_id, 1)]
        scene.daemon.start(forget=False)
        info = await scene.admin.wait(task_id, timeout=3)
        assert info.state is TaskState.SUCCEEDED and info.result is not None and info.result.value == {"kept": True}
        await scene.until(lambda: not scene.runtime._outbox, "the acknowledgement")

    play(scenario)


def test_a_result_made_while_the_daemon_is_away_goes_to_the_daemon_that_comes_back() -> None:
    async def scenario(scene: Scene) -> None:
        task_id = await scene.admin.submit("hold", {"kept": True})
        await scene.until(lambda: scene.collector.started == 1, "the task to start")
        scene.daemon.stop()
        scene.collector.gate.set()
        await scene.until(lambda: bool(scene.runtime._outbox), "the result to wait in the outbox")
        scene.daemon.start()  # a new daemon: it knows neither the collector nor the task
        await scene.until(lambda: not scene.runtime._outbox, "the result to be sent again")
        # the new daemon answered it (it cannot know the task: its fate went with the old daemon)
        answered = [env for env in scene.daemon.harness.to(CID.encode()) if env.topic == f"{m.RESULT_PREFIX}.{CID}"]
        assert len(answered) == 1
        assert task_id not in [t.task_id for t in await scene.admin.tasks()]

    play(scenario)


def test_the_collector_registers_again_with_a_daemon_that_restarted() -> None:
    async def scenario(scene: Scene) -> None:
        scene.daemon.stop()
        await asyncio.sleep(0.05)
        scene.daemon.start()  # a new daemon: it knows no collector
        await scene.registered()
        info = await scene.admin.run("echo", "again", timeout=2)
        assert info.state is TaskState.SUCCEEDED

    play(scenario)


def test_no_more_tasks_than_its_capacity_are_dispatched_to_it() -> None:
    async def scenario(scene: Scene) -> None:
        ids = [await scene.admin.submit("hold", i) for i in range(3)]
        await scene.until(lambda: scene.collector.started == 2, "two tasks to start")
        await asyncio.sleep(0.05)
        states = [(await scene.admin.get(task_id)).state for task_id in ids]
        assert scene.collector.started == 2 and states.count(TaskState.QUEUED) == 1
        scene.collector.gate.set()
        finals = [(await scene.admin.wait(t, timeout=3)).state for t in ids]
        assert finals == [TaskState.SUCCEEDED] * 3

    play(scenario)


def test_a_dispatch_that_arrives_while_draining_is_handed_back_rejected() -> None:
    async def scenario(scene: Scene) -> None:
        await scene.admin.submit("hold", 0)
        await scene.until(lambda: scene.collector.started == 1, "the task to start")
        scene.stop.set()  # drains: the running task may finish, nothing new is taken
        await scene.until(lambda: bool(scene.sent(m.DRAIN)), "the drain request")
        task = {"task_id": "late", "operation": "echo", "payload": None, "created_at": 1.0}
        body = {"task": task, "attempt": 1, "deadline": None}
        scene.daemon.push(CID.encode(), Envelope(Kind.PUBLISH, "", f"{m.TASK_PREFIX}.gated.{CID}", body))

        def answers() -> list[dict[str, Any]]:
            return [e.body for e in scene.sent(f"{m.RESULT_PREFIX}.{CID}") if e.body["task_id"] == "late"]

        await scene.until(lambda: bool(answers()), "the answer to the dispatch")
        assert answers() == [{"event": "rejected", "task_id": "late", "attempt": 1}]
        assert scene.collector.started == 1

    play(scenario)

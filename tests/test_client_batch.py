"""Batches of tasks through the asyncio client (``submit_many``, ``run_many``, ``map``) on the in-memory twin."""

from __future__ import annotations

import asyncio

import pytest

from distributor.models import TaskInfo, TaskState
from eventbus import messages as m
from eventbus.errors import EventBusError, InvalidRequest
from tests.memory_transport import unpack
from tests.test_collector_runtime import Scene, play


def _requests(scene: Scene, topic: str) -> int:
    """How many requests on ``topic`` reached the daemon."""
    return sum(1 for f in scene.daemon.frames_from() for env in unpack(f) if env.topic == topic)


def test_submit_many_answers_every_spec_in_order_and_splits_past_1024() -> None:
    async def scenario(scene: Scene) -> None:
        specs = [{"operation": "echo", "payload": i} for i in range(2500)]
        specs[1234] = {"operation": "echo", "priority": 0}
        outcomes = await scene.admin.submit_many(specs)
        assert len(outcomes) == 2500
        error = outcomes[1234]
        assert isinstance(error, InvalidRequest) and error.message.startswith("tasks[1234]: priority")
        ids = [o for i, o in enumerate(outcomes) if i != 1234]
        assert all(isinstance(o, str) for o in ids) and len(set(ids)) == 2499
        assert _requests(scene, m.BATCH) == 3  # 1024 + 1024 + 452 specs
        last = await scene.admin.get(str(outcomes[2499]))
        assert last.operation == "echo" and last.priority == 5

    play(scenario)


def test_run_many_yields_each_final_task_in_input_order() -> None:
    async def scenario(scene: Scene) -> None:
        specs = [{"operation": "echo", "payload": i, "priority": 1 + i % 10} for i in range(300)]
        specs.insert(7, {"operation": "no such op!"})
        got = [o async for o in scene.admin.run_many(specs, timeout=4)]
        assert len(got) == 301
        assert isinstance(got[7], EventBusError) and got[7].code == "invalid"
        values = [o.result.value for o in got if isinstance(o, TaskInfo) and o.result is not None]
        assert values == list(range(300))
        assert all(o.state is TaskState.SUCCEEDED for o in got if isinstance(o, TaskInfo))
        assert _requests(scene, m.BATCH) == 1 and _requests(scene, m.GET) == 0  # one round trip

    play(scenario)


def test_map_yields_tasks_in_order_and_raises_a_refused_spec() -> None:
    async def scenario(scene: Scene) -> None:
        infos = [i async for i in scene.admin.map("echo", range(50), priority=9)]
        assert [i.result.value if i.result else None for i in infos] == list(range(50))
        with pytest.raises(InvalidRequest, match=r"tasks\[0\]"):
            [i async for i in scene.admin.map("echo", [1], priority=99)]

    play(scenario)


def test_run_many_past_its_timeout_yields_unfinished_tasks_in_their_current_state() -> None:
    async def scenario(scene: Scene) -> None:
        specs = [{"operation": "echo", "payload": 1}, {"operation": "hold", "payload": 2}]
        got = [o async for o in scene.admin.run_many(specs, timeout=0.3)]
        assert isinstance(got[0], TaskInfo) and got[0].state is TaskState.SUCCEEDED
        assert isinstance(got[1], TaskInfo) and got[1].state in (TaskState.DISPATCHED, TaskState.RUNNING)

    play(scenario)


def test_run_many_goes_on_across_a_daemon_that_comes_back_knowing_the_tasks() -> None:
    async def scenario(scene: Scene) -> None:
        async def restart_when_started() -> None:
            await scene.until(lambda: scene.collector.started == 2, "both tasks to start")
            scene.daemon.stop()
            await asyncio.sleep(0.05)
            scene.daemon.start(forget=False)
            scene.collector.gate.set()

        restarting = asyncio.ensure_future(restart_when_started())
        specs = [{"operation": "hold", "payload": i} for i in range(2)]
        got = [o async for o in scene.admin.run_many(specs, timeout=4)]
        await restarting
        assert [o.result.value if isinstance(o, TaskInfo) and o.result else o for o in got] == [0, 1]

    play(scenario)


def test_run_many_reports_tasks_a_restarted_daemon_does_not_know_as_lost() -> None:
    async def scenario(scene: Scene) -> None:
        async def restart_when_started() -> None:
            await scene.until(lambda: scene.collector.started == 1, "the task to start")
            scene.daemon.stop()
            await asyncio.sleep(0.05)
            scene.daemon.start()  # a new daemon: it knows no task

        restarting = asyncio.ensure_future(restart_when_started())
        [got] = [o async for o in scene.admin.run_many([{"operation": "hold"}], timeout=4)]
        await restarting
        assert isinstance(got, EventBusError) and got.code == "daemon_restarted"

    play(scenario)


def test_a_repeated_idempotency_key_names_the_first_task_in_every_verb() -> None:
    async def scenario(scene: Scene) -> None:
        admin = scene.admin
        first = await admin.submit("echo", {"n": 1}, idempotency_key="k1")
        (again,) = await admin.submit_many([{"operation": "echo", "payload": {"n": 2}, "idempotency_key": "k1"}])
        assert again == first  # the daemon's id, not the one this client proposed for the spec
        assert await admin.submit("echo", {"n": 3}, idempotency_key="k1") == first
        (ran,) = [o async for o in admin.run_many([{"operation": "echo", "idempotency_key": "k1"}], timeout=4)]
        assert isinstance(ran, TaskInfo) and ran.task_id == first and ran.result is not None
        assert ran.result.value == {"n": 1} and ran.idempotency_key == "k1"
        waited = await admin.run("echo", {"n": 4}, idempotency_key="k1", timeout=4)
        assert waited.task_id == first
        assert len(await admin.tasks()) == 1

    play(scenario)

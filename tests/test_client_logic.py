"""The asyncio client's logic against the in-memory twin of its transport: no socket, no process."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import zmq

from distributor.errors import UnknownTask
from distributor.models import CollectorCapability, CollectorStatus, TaskState
from eventbus import messages as m
from eventbus.client import Client
from eventbus.errors import (
    ConnectionReset,
    DaemonRestarted,
    DaemonUnreachable,
    Forbidden,
    RequestTimeout,
)
from eventbus.wire import Kind, decode_batch, is_batch
from tests.memory_transport import PATH, MemoryDaemon, unpack

T = TypeVar("T")


def play(scenario: Callable[[MemoryDaemon], Awaitable[T]]) -> T:
    """Run ``scenario`` against a fresh in-memory daemon on a loop of its own."""

    async def main() -> T:
        return await asyncio.wait_for(scenario(MemoryDaemon(asyncio.get_running_loop())), 5)

    return asyncio.run(main())


def client(daemon: MemoryDaemon, **kw: Any) -> Client:
    kw.setdefault("timeout", 2.0)
    return Client(PATH, transport=daemon, **kw)


async def held_get(c: Client, task_id: str) -> Any:
    """A ``control.task.get`` the daemon holds (the task is not final)."""
    return await c.request(m.GET, {"task_id": task_id, "wait_s": 30})


async def register(daemon: MemoryDaemon, cid: str = "c1", **kw: Any) -> Client:
    """A collector connection ``cid``, registered for ``echo``."""
    c = client(daemon, identity=cid, **kw)
    await c.connect()
    cap = CollectorCapability(
        collector_id=cid, collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=4
    )
    await c.request(m.REGISTER, cap.model_dump())
    return c


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ---- request and reply --------------------------------------------------


def test_replies_reach_the_requests_they_answer_and_errors_come_typed() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            status, missing, strategy = await asyncio.gather(
                c.status(), c.get("no-such-task"), c.strategy(), return_exceptions=True
            )
            assert isinstance(status, dict) and status["strategy"] == strategy
            assert isinstance(missing, UnknownTask)

    play(scenario)


def test_a_request_the_daemon_never_answers_times_out() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, timeout=0.05) as c:
            daemon.paused = True
            with pytest.raises(RequestTimeout, match=r"within 0\.05s \(control\.admin\.status\)"):
                await c.status()

    play(scenario)


def test_requests_made_in_one_loop_turn_go_out_in_one_version_2_batch_frame_and_come_back_in_one() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            await asyncio.gather(c.status(), c.stats(), c.collectors())
            [frame] = daemon.frames_from()
            assert is_batch(frame)
            assert [env.version for env in unpack(frame)] == [2, 2, 2]
            [identity] = daemon.received
            [answers] = daemon.received[identity]
            assert is_batch(answers) and len(decode_batch(answers)) == 3

    play(scenario)


def test_requests_of_separate_turns_go_out_in_separate_frames() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            await c.status()
            await c.status()
            assert [len(unpack(f)) for f in daemon.frames_from()] == [1, 1]

    play(scenario)


def test_published_events_go_to_on_publish() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        seen: list[str] = []
        async with client(daemon, on_publish=lambda topic, body: seen.append(topic)) as c:
            await c.subscribe("events.task.#")
            await c.submit("echo")
            await settle()
        assert seen == ["events.task.queued.echo"]

    play(scenario)


# ---- the connection -----------------------------------------------------


def test_a_request_waiting_when_the_daemon_goes_away_fails_with_connection_reset_at_once() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, timeout=5) as c:
            task_id = await c.submit("echo")
            waiting = asyncio.ensure_future(held_get(c, task_id))
            await settle()
            started = time.monotonic()
            daemon.stop()
            with pytest.raises(ConnectionReset, match="whether it acted on the request is unknown"):
                await waiting
            assert time.monotonic() - started < 0.5

    play(scenario)


def test_a_request_made_while_down_waits_for_the_daemon_to_come_back() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=1) as c:
            daemon.stop()
            await settle()
            asyncio.get_running_loop().call_later(0.01, daemon.start)
            assert (await c.status())["collectors"] == 0

    play(scenario)


def test_a_request_made_while_down_fails_unreachable_with_the_cause_after_the_grace() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=0.02) as c:
            daemon.stop()
            await settle()
            with pytest.raises(DaemonUnreachable, match="not running: no socket"):
                await c.status()

    play(scenario)


def test_a_refused_connection_fails_requests_with_forbidden() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            daemon.refuse()
            await settle()
            with pytest.raises(Forbidden, match="refused the connection"):
                await c.status()

    play(scenario)


def test_a_daemon_that_stops_reading_fails_the_request_at_once() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, timeout=5) as c:
            daemon.stalled = True
            started = time.monotonic()
            with pytest.raises(RequestTimeout, match=r"not reading.*\(control\.admin\.status\)"):
                await c.status()
            assert time.monotonic() - started < 0.5

    play(scenario)


# ---- foreign errors, and a failed connection stays failed ---------------


def test_a_zmq_error_from_send_becomes_daemon_unreachable_with_the_zmq_error_as_cause() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            daemon.send_raises = zmq.ZMQError(errno.ENOTSOCK)
            with pytest.raises(DaemonUnreachable) as caught:
                await c.status()
            assert isinstance(caught.value.__cause__, zmq.ZMQError)

    play(scenario)


def test_zmq_again_from_send_becomes_request_timeout() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            daemon.send_raises = zmq.Again()
            with pytest.raises(RequestTimeout) as caught:
                await c.status()
            assert isinstance(caught.value.__cause__, zmq.Again)
            daemon.send_raises = None
            await c.status()  # not sticky: the connection is fine

    play(scenario)


def test_after_the_socket_failed_requests_fail_at_once_with_the_cause_until_reconnect() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, timeout=5) as c:
            task_id = await c.submit("echo")
            waiting = asyncio.ensure_future(held_get(c, task_id))
            await settle()
            broken = zmq.ZMQError(errno.EBADF)
            daemon.fail(broken)
            with pytest.raises(DaemonUnreachable):
                await waiting
            started = time.monotonic()
            for _ in range(2):
                with pytest.raises(DaemonUnreachable, match="failed") as caught:
                    await c.status()
                assert caught.value.__cause__ is broken
            assert time.monotonic() - started < 0.1
            await c.reconnect()
            assert (await c.get(task_id)).task_id == task_id

    play(scenario)


def test_a_closed_client_fails_at_once_and_connect_opens_it_again() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        c = client(daemon, timeout=5)
        with pytest.raises(DaemonUnreachable, match="not connected"):
            await c.status()
        await c.connect()
        await c.close()
        with pytest.raises(DaemonUnreachable, match="closed"):
            await c.status()
        await c.connect()
        await c.status()
        await c.close()

    play(scenario)


def test_connect_to_a_daemon_that_is_not_there_raises_unreachable() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        daemon.stop()
        with pytest.raises(DaemonUnreachable, match="not running"):
            await client(daemon).connect()

    play(scenario)


# ---- waits across a restart, and run -----------------------------------


def test_a_wait_across_a_restart_raises_daemon_restarted_when_the_new_daemon_does_not_know_the_task() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=1) as c:
            task_id = await c.submit("echo")
            waiting = asyncio.ensure_future(c.wait(task_id, timeout=5))
            await settle()
            daemon.stop()
            await settle()
            daemon.start()
            with pytest.raises(DaemonRestarted, match=f"task {task_id}.*fate is unknown"):
                await waiting

    play(scenario)


def test_a_wait_across_a_reset_goes_on_when_the_daemon_knows_the_task() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=1) as c, client(daemon) as admin:
            task_id = await c.submit("echo")
            waiting = asyncio.ensure_future(c.wait(task_id, timeout=5))
            await settle()
            daemon.stop()
            await settle()
            daemon.start(forget=False)
            await settle()
            await admin.cancel(task_id)
            assert (await waiting).state is TaskState.CANCELLED

    play(scenario)


def test_a_wait_whose_daemon_never_comes_back_raises_unreachable() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=0.02) as c:
            task_id = await c.submit("echo")
            waiting = asyncio.ensure_future(c.wait(task_id, timeout=5))
            await settle()
            daemon.stop()
            with pytest.raises(DaemonUnreachable, match=r"went away.*fate is unknown"):
                await waiting

    play(scenario)


def test_run_says_when_nobody_offers_the_operation_and_goes_on_waiting() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        unoffered: list[str] = []
        async with client(daemon) as c, client(daemon) as admin:
            running = asyncio.ensure_future(c.run("echo", task_id="t-1", on_unoffered=unoffered.append))
            while not unoffered:
                await asyncio.sleep(0)
            await admin.cancel("t-1")
            info = await running
        assert unoffered == ["t-1"] and info.state is TaskState.CANCELLED

    play(scenario)


def test_run_returns_the_final_task_from_the_submit_alone_when_it_finishes_at_once() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            parent = await c.submit("echo")
            await c.cancel(parent)
            info = await c.run("echo", depends_on=[parent])
        assert info.state is TaskState.FAILED
        assert [env.topic for f in daemon.frames_from() for env in unpack(f)][-1] == m.SUBMIT

    play(scenario)


def test_run_whose_submit_is_reset_asks_the_daemon_that_comes_back() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon, reconnect_grace=1) as c:
            daemon.paused = True  # the submit is taken and never answered
            running = asyncio.ensure_future(c.run("echo", task_id="t-2", timeout=5))
            await settle()
            daemon.paused = False
            daemon.stop()
            await settle()
            daemon.start()
            with pytest.raises(DaemonRestarted, match="t-2"):
                await running

    play(scenario)


# ---- the admin verbs both clients have ----------------------------------


def test_drain_undrain_and_stop_collectors() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        commands: list[str] = []
        collector = await register(daemon, on_publish=lambda topic, body: commands.append(topic))
        async with client(daemon) as admin:
            assert (await admin.drain("c1")).status is CollectorStatus.DRAINING
            assert (await admin.undrain("c1")).status is CollectorStatus.AVAILABLE
            assert await admin.stop_collectors("c1") == ["c1"]
        await settle()
        assert commands == [f"{m.SHUTDOWN}.c1"]
        await collector.close()

    play(scenario)


def test_the_daemon_answers_a_version_2_peer_in_batches_and_a_plain_map_when_alone() -> None:
    async def scenario(daemon: MemoryDaemon) -> None:
        async with client(daemon) as c:
            await c.status()
            [identity] = daemon.received
            [alone] = daemon.received[identity]
            assert not is_batch(alone) and unpack(alone)[0].kind is Kind.REPLY
            assert identity in daemon.batching

    play(scenario)

"""Clients across a daemon restart, against an in-process fake daemon that can keep its tasks.

The real daemon keeps tasks in memory, so only a fake can show a wait that
re-attaches after a restart: a daemon that answers for the old task id.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from distributor.models import TaskInfo, TaskResult, TaskState
from eventbus import messages as m
from eventbus.client import Client, SyncClient
from eventbus.errors import ConnectionReset, DaemonRestarted, DaemonUnreachable
from eventbus.exitcodes import EXIT_UNREACHABLE, exit_code_for
from eventbus.paths import endpoint
from eventbus.wire import Envelope, Kind, decode, encode

T = TypeVar("T")
TASK = "t-1"


def task(state: TaskState) -> TaskInfo:
    done = state is TaskState.SUCCEEDED
    result = TaskResult(task_id=TASK, attempt=1, collector_id="c1", success=True, value={"slept": 30.0})
    return TaskInfo(
        task_id=TASK,
        operation="sleep",
        priority=5,
        state=state,
        attempt=1,
        retries=0,
        collector_id="c1",
        created_at=1.0,
        queued_at=1.0,
        dispatched_at=1.0,
        finished_at=2.0 if done else None,
        result=result if done else None,
        error=None,
        constraints=[],
        depends_on=[],
    )


class FakeDaemon:
    """A ROUTER on ``path`` served by a thread: answers ``control.task.get`` from ``tasks``.

    A get with ``wait_s`` for a task that is not final is held, never answered, as the
    daemon holds it until the task ends; :meth:`crash` closes the socket under it.
    """

    def __init__(self, path: Path, tasks: dict[str, TaskInfo]) -> None:
        self.path = path
        self.tasks = tasks
        self.gets = 0
        self._stop = threading.Event()
        bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(bound,), daemon=True)
        self._thread.start()
        assert bound.wait(5), "the fake daemon did not bind"

    def _serve(self, bound: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(endpoint(self.path))
            bound.set()
            while not self._stop.is_set():
                if sock.poll(20, zmq.POLLIN):
                    identity, frame = sock.recv_multipart()
                    reply = self._answer(decode(frame))
                    if reply is not None:
                        sock.send_multipart([identity, encode(reply)])
        finally:
            sock.close(linger=0)
            ctx.term()

    def _answer(self, env: Envelope) -> Envelope | None:
        assert env.topic == m.GET, env.topic
        self.gets += 1
        info = self.tasks.get(str(env.body["task_id"]))
        if info is None:
            return Envelope(Kind.ERROR, env.id, env.topic, {"code": "not_found", "message": "no such task"})
        if env.body.get("wait_s") and not info.state.terminal:
            return None
        return Envelope(Kind.REPLY, env.id, env.topic, info.model_dump(mode="json"))

    def crash(self) -> None:
        """Close the socket: every connection to it is reset."""
        self._stop.set()
        self._thread.join(5)


class Fakes:
    """Fake daemons started one after another on one path; all are stopped at teardown."""

    def __init__(self, root: Path) -> None:
        self.path = root / "eb.sock"
        self.started: list[FakeDaemon] = []

    def start(self, tasks: dict[str, TaskInfo]) -> FakeDaemon:
        fake = FakeDaemon(self.path, tasks)
        self.started.append(fake)
        return fake

    def restart_once_waited_on(self, tasks: dict[str, TaskInfo]) -> None:
        """Once the running daemon holds a wait, crash it and start one that knows ``tasks``."""
        current = self.started[-1]
        deadline = time.monotonic() + 10
        while current.gets == 0:
            assert time.monotonic() < deadline, "the client never asked"
            time.sleep(0.02)
        time.sleep(0.1)  # the get is held
        current.crash()
        self.start(tasks)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    root = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    made = Fakes(root)
    try:
        yield made
    finally:
        for fake in made.started:
            fake.crash()
        shutil.rmtree(root, ignore_errors=True)


def in_thread(call: Callable[[], T], then: Callable[[], None], limit: float = 20) -> T:
    """Run ``call`` in a thread while this one runs ``then``; the call's result (or its exception)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        then()
        return future.result(limit)


def test_sync_wait_reattaches_when_the_daemon_that_comes_back_knows_the_task(fakes: Fakes) -> None:
    fakes.start({TASK: task(TaskState.RUNNING)})

    def wait() -> TaskInfo:
        with SyncClient(fakes.path, timeout=3) as client:
            return client.wait(TASK, timeout=20)

    info = in_thread(wait, lambda: fakes.restart_once_waited_on({TASK: task(TaskState.SUCCEEDED)}))
    assert info.state is TaskState.SUCCEEDED
    assert info.result is not None and info.result.value == {"slept": 30.0}


def test_async_wait_reattaches_when_the_daemon_that_comes_back_knows_the_task(fakes: Fakes) -> None:
    fakes.start({TASK: task(TaskState.RUNNING)})

    async def scenario() -> TaskInfo:
        async with Client(fakes.path, timeout=3) as client:
            waiting = asyncio.create_task(client.wait(TASK, timeout=20))
            await asyncio.to_thread(fakes.restart_once_waited_on, {TASK: task(TaskState.SUCCEEDED)})
            return await asyncio.wait_for(waiting, 15)

    assert asyncio.run(scenario()).state is TaskState.SUCCEEDED


def test_sync_wait_after_a_restart_that_lost_the_task_raises_daemon_restarted_exit_3(fakes: Fakes) -> None:
    fakes.start({TASK: task(TaskState.RUNNING)})

    def wait() -> TaskInfo:
        with SyncClient(fakes.path, timeout=3) as client:
            return client.wait(TASK, timeout=20)

    with pytest.raises(DaemonRestarted, match="fate is unknown") as caught:
        in_thread(wait, lambda: fakes.restart_once_waited_on({}))
    assert exit_code_for(caught.value.code) == EXIT_UNREACHABLE


def test_sync_get_fails_with_connection_reset_when_the_daemon_goes_away(fakes: Fakes) -> None:
    fake = fakes.start({TASK: task(TaskState.RUNNING)})

    def get() -> TaskInfo:
        with SyncClient(fakes.path, timeout=3) as client:
            return client.get(TASK, wait_s=20)

    def crash() -> None:
        while fake.gets == 0:
            time.sleep(0.02)
        fake.crash()

    started = time.monotonic()
    with pytest.raises(ConnectionReset, match=re.escape(m.GET)):
        in_thread(get, crash)
    assert time.monotonic() - started < 10  # it used to wait out wait_s + timeout (23 s)


def test_sync_wait_gives_a_vanished_daemon_no_longer_than_the_wait_timeout(fakes: Fakes) -> None:
    fake = fakes.start({TASK: task(TaskState.RUNNING)})

    def wait() -> TaskInfo:
        with SyncClient(fakes.path, timeout=10) as client:
            return client.wait(TASK, timeout=1.5)

    def crash() -> None:
        while fake.gets == 0:
            time.sleep(0.02)
        fake.crash()

    started = time.monotonic()
    with pytest.raises(DaemonUnreachable, match=r"went away.*fate is unknown"):
        in_thread(wait, crash)
    assert time.monotonic() - started < 5  # within --wait-timeout, not the 5 s grace

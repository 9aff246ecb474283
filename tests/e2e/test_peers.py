"""Peers: one live connection per collector id, and only the allowed Unix users are served."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import msgpack
import pytest
import zmq

from eventbus.wire import decode
from tests.e2e.conftest import Bus, Proc, command, wait_until

pytestmark = pytest.mark.e2e

FAST = ("--heartbeat-interval-s", "0.2", "--heartbeat-timeout-s", "1")
NOBODY = 65534


def _holder_pid(bus: Bus, collector_id: str) -> int | None:
    with bus.client() as c:
        reply = c.request("control.collector.claim", {"collector_id": collector_id})
    return None if reply["free"] else int(reply["pid"])


@pytest.mark.timeout(300)
def _says(proc: Proc, text: str) -> bool:
    return text in proc.output()


def _holds(bus: Bus, collector_id: str, proc: Proc) -> bool:
    return _holder_pid(bus, collector_id) == proc.pid


def test_twin_collectors_with_one_id_killed_in_turn_lose_no_task(bare_bus: Bus) -> None:
    """20 rounds: a twin starts under the live collector's id, then either one is killed."""
    bus = bare_bus
    daemon = bus.start_daemon(*FAST)
    holder = bus.start_collector("twin", "demo")
    task_ids: list[str] = []
    takeovers = 0
    for round_no in range(20):
        twin = bus.spawn(
            [command("eventbus-collector"), "run", "demo", "--id", "twin", "--log-level", "debug"], f"twin-{round_no}"
        )
        wait_until(partial(_says, twin, "is held by a live process"), 15, "the twin to find the id held")
        with bus.client() as c:
            task_ids += [c.submit("sleep", {"seconds": 0.05}) for _ in range(3)]
        assert _holder_pid(bus, "twin") == holder.pid
        victim, survivor = (holder, twin) if round_no % 2 == 0 else (twin, holder)
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        if victim is holder:
            wait_until(partial(_holds, bus, "twin", survivor), 15, "the twin to take the id over")
            takeovers += 1
        holder = survivor
        assert daemon.popen.poll() is None, daemon.output()
    with bus.client() as c:
        finals = [c.wait(tid, timeout=30) for tid in task_ids]
    assert [f.state.value for f in finals] == ["succeeded"] * len(task_ids)
    assert takeovers == 10
    assert daemon.output().count("takes over from") == 10
    assert daemon.popen.poll() is None
    assert "Assertion failed" not in daemon.output()


@pytest.fixture
def dealer(bus: Bus) -> Iterator[Callable[[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def connect(routing_id: bytes) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.connect(f"ipc://{bus.socket}")
        socks.append(sock)
        return sock

    try:
        yield connect
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


def _register(sock: zmq.Socket[bytes], collector_id: str) -> tuple[str, dict[str, object]]:
    body = {
        "collector_id": collector_id,
        "collector_type": "raw",
        "supported_operations": ["echo"],
        "max_concurrent_tasks": 1,
    }
    sock.send(
        msgpack.packb({"v": 1, "kind": "request", "id": "r1", "topic": "control.collector.register", "body": body})
    )
    env = decode(sock.recv())
    return env.kind.value, env.body


def test_a_register_for_a_live_collector_id_from_another_process_is_forbidden(bus: Bus, dealer: Any) -> None:
    holder = bus.start_collector("c1", "demo")
    kind, body = _register(dealer(b"c1"), "c1")
    assert (kind, body["code"]) == ("error", "forbidden")
    assert f"pid {holder.pid}" in str(body["message"])
    # the refusal is logged with both processes' credentials
    wait_until(lambda: f"register from pid={os.getpid()}" in bus.daemon.output(), 5, "the refusal in the log")  # type: ignore[union-attr]
    assert f"held by pid={holder.pid}" in bus.daemon.output()  # type: ignore[union-attr]


def test_a_collector_whose_routing_id_differs_from_its_collector_id_is_refused(bus: Bus, dealer: Any) -> None:
    kind, body = _register(dealer(b"someone-else"), "c2")
    assert (kind, body["code"]) == ("error", "forbidden")
    assert "routing id" in str(body["message"])


def test_a_dead_holders_id_is_taken_over_and_its_attempts_requeued(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon(*FAST)
    old = bus.start_collector("c3", "demo")
    with bus.client() as c:
        tid = c.submit("sleep", {"seconds": 30})
        wait_until(lambda: c.get(tid).state.value == "running", 10, "the task to run")
    old.signal(signal.SIGKILL)
    old.wait(10)
    new = bus.spawn([command("eventbus-collector"), "run", "demo", "--id", "c3"], "collector-c3-new")
    wait_until(lambda: _holder_pid(bus, "c3") == new.pid, 15, "the new process to hold the id")
    with bus.client() as c:
        wait_until(lambda: c.get(tid).attempt == 2, 10, "the task to be dispatched again")
        info = c.get(tid)
        # requeued at the takeover and running again on the new process, no retry used
        assert info.retries == 0 and info.attempt == 2
        c.cancel(tid)
    assert "takes over from" in bus.daemon.output()  # type: ignore[union-attr]


# ---- peer authorization (needs root to act as another uid) -------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another uid needs root (setpriv)")


def _open_to_everyone(bus: Bus) -> None:
    """Let any uid reach the socket, so only the daemon's own check stands between them."""
    os.chmod(bus.socket.parent, 0o755)
    os.chmod(bus.socket, 0o666)
    assert stat.S_IMODE(bus.socket.stat().st_mode) == 0o666


def _ctl_as(bus: Bus, uid: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", command("eventbusctl"), *args]
    return subprocess.run(argv, env=bus.env, capture_output=True, text=True, timeout=30, check=False)


@needs_root
def test_another_uid_is_refused_forbidden_and_counted(bus: Bus) -> None:
    _open_to_everyone(bus)
    out = _ctl_as(bus, NOBODY, "status")
    assert out.returncode == 4, out
    assert "forbidden" in out.stderr or "not allowed" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    out = _ctl_as(bus, NOBODY, "submit", "echo")
    assert out.returncode == 4, out
    with bus.client() as c:
        stats = c.stats()
        # refused during the handshake: never served, and nothing was queued
        assert stats["connections_refused"] >= 2 and stats["tasks_submitted"] == 0
    assert f"uid={NOBODY}" in bus.daemon.output()  # type: ignore[union-attr]


@needs_root
def test_a_refused_uid_cannot_take_a_collectors_routing_id(bus: Bus) -> None:
    bus.start_collector("c9", "demo")
    _open_to_everyone(bus)
    # a process of a uid the daemon does not serve connects with the collector's routing id
    script = (
        "import zmq, time; c = zmq.Context(); s = c.socket(zmq.DEALER); s.setsockopt(zmq.ROUTING_ID, b'c9');"
        f"s.setsockopt(zmq.LINGER, 0); s.connect('ipc://{bus.socket}'); time.sleep(3); "
        "print('got', s.poll(0)); s.close(); c.term()"
    )
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c", script]
    intruder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        with bus.client() as c:  # dispatches keep reaching the real collector
            assert [c.wait(c.submit("echo", i), timeout=10).state.value for i in range(3)] == ["succeeded"] * 3
        out, _ = intruder.communicate(timeout=10)
    finally:
        intruder.kill()
    assert out.strip() == "got 0"


@needs_root
def test_an_allowed_uid_is_served_but_not_for_admin_verbs(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--allowed-uids", str(NOBODY))
    _open_to_everyone(bus)
    assert _ctl_as(bus, NOBODY, "status").returncode == 0
    assert _ctl_as(bus, NOBODY, "strategy").returncode == 0  # showing it is not admin
    for args in (("strategy", "random"), ("drain", "x"), ("undrain", "x"), ("stop", "--all")):
        out = _ctl_as(bus, NOBODY, *args)
        assert out.returncode == 4 and "admin" in out.stderr, (args, out)
    with bus.client() as c:
        assert c.strategy() == "least_loaded"


@needs_root
def test_an_admin_uid_may_change_the_strategy(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--allowed-uids", str(NOBODY), "--admin-uids", str(NOBODY))
    _open_to_everyone(bus)
    out = _ctl_as(bus, NOBODY, "strategy", "random")
    assert out.returncode == 0, out
    with bus.client() as c:
        assert c.strategy() == "random"


@needs_root
def test_a_member_of_an_allowed_group_is_served(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--allowed-gids", str(NOBODY))
    _open_to_everyone(bus)
    assert _ctl_as(bus, NOBODY, "status").returncode == 0
    assert _ctl_as(bus, 1, "status").returncode == 4  # daemon (uid 1) is in no allowed group


@needs_root
def test_a_served_uid_may_cancel_its_own_tasks_but_not_anothers(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--allowed-uids", str(NOBODY), "--allowed-uids", "1")
    _open_to_everyone(bus)
    with bus.client() as c:
        mine = c.submit("nobody-serves-this")  # submitted by this test's uid (root)
    out = _ctl_as(bus, NOBODY, "cancel", mine)
    assert out.returncode == 4 and "may not cancel a task submitted by uid 0" in out.stderr, out
    theirs = _ctl_as(bus, NOBODY, "submit", "nobody-serves-this").stdout.strip()
    assert _ctl_as(bus, 1, "cancel", theirs).returncode == 4
    out = _ctl_as(bus, NOBODY, "cancel", theirs)
    assert out.returncode == 0 and "cancelled" in out.stdout, out
    with bus.client() as c:  # root is an admin: it may cancel anyone's
        assert c.cancel(mine).state.value == "cancelled"

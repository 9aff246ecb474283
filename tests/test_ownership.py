"""One live process per collector id, decided from connection credentials (no sockets)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from eventbus.errors import Forbidden
from eventbus.ownership import Ownership
from eventbus.peers import AccessPolicy, Peer, PeerCache
from eventbus.waiters import Waiter, Waiters


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


ME = Peer(uid=1000, gid=1000, pid=os.getpid(), conn=1, served=True)
TWIN = Peer(uid=1000, gid=1000, pid=os.getppid(), conn=2, served=True)  # another live process


class Clock:
    def __init__(self) -> None:
        self.silence: dict[str, float] = {}

    def __call__(self, collector_id: str) -> float | None:
        return self.silence.get(collector_id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def owners(clock: Clock) -> Ownership:
    return Ownership(heartbeat_interval_s=5.0, silence=clock)


def test_a_live_holders_id_is_refused_to_another_process(owners: Ownership, clock: Clock) -> None:
    assert owners.register("c1", b"c1", ME) is None
    clock.silence["c1"] = 1.0
    with pytest.raises(Forbidden, match=f"pid {ME.pid}"):
        owners.register("c1", b"c1", TWIN)
    assert owners.holder("c1") is not None and owners.holder("c1").peer == ME  # type: ignore[union-attr]


def test_a_holder_silent_for_two_intervals_is_taken_over(owners: Ownership, clock: Clock) -> None:
    owners.register("c1", b"c1", ME)
    clock.silence["c1"] = 10.5
    assert owners.register("c1", b"c1", TWIN) == ME
    with pytest.raises(Forbidden):
        owners.check("c1", b"c1", ME)  # the old process may no longer act for it


def test_a_dead_holders_id_is_taken_over(owners: Ownership, clock: Clock) -> None:
    ghost = Peer(uid=1000, gid=1000, pid=_dead_pid(), conn=1, served=True)
    owners.register("c1", b"c1", ghost)
    clock.silence["c1"] = 0.1
    assert owners.register("c1", b"c1", TWIN) == ghost


def test_the_same_process_reconnecting_keeps_its_id(owners: Ownership, clock: Clock) -> None:
    owners.register("c1", b"c1", ME)
    clock.silence["c1"] = 0.1
    again = Peer(uid=ME.uid, gid=ME.gid, pid=ME.pid, conn=7, served=True)
    assert owners.register("c1", b"c1", again) is None
    owners.check("c1", b"c1", again)


def test_the_routing_id_must_be_the_collector_id(owners: Ownership) -> None:
    with pytest.raises(Forbidden, match="routing id"):
        owners.register("c1", b"\x00k\x8b", ME)


def test_another_connection_may_not_act_for_a_collector(owners: Ownership, clock: Clock) -> None:
    owners.register("c1", b"c1", ME)
    with pytest.raises(Forbidden):
        owners.check("c1", b"\x00anon", ME)  # a client connection of the same process
    with pytest.raises(Forbidden):
        owners.check("c1", b"c1", TWIN)


def test_an_id_the_distributor_forgot_is_free(owners: Ownership, clock: Clock) -> None:
    owners.register("c1", b"c1", ME)
    assert owners.holder("c1") is None  # no silence known: the distributor forgot it
    assert owners.route("c1") is None


def test_ids_the_distributor_forgot_are_swept_as_new_ones_register(owners: Ownership, clock: Clock) -> None:
    for i in range(1000):
        clock.silence[f"c{i}"] = 0.0  # known while it registers ...
        owners.register(f"c{i}", f"c{i}".encode(), ME)
        if i % 10:
            del clock.silence[f"c{i}"]  # ... then forgotten by the distributor, except every tenth
    assert len(owners) <= 2 * 100 + 64 + 1


def test_user_ids_parse_back_to_the_peer_and_garbage_is_not_served() -> None:
    cache = PeerCache()
    assert cache.get(ME.user_id()) == ME
    assert not cache.get("1:2:x").served
    assert not cache.get(None).served


def test_the_policy_serves_own_uid_root_and_the_allowed_and_admins_are_narrower() -> None:
    policy = AccessPolicy.build(own_uid=1000, allowed_uids=[2000], allowed_gids=[3000], admin_uids=[2001])
    assert policy.serves(1000, 1, 1) and policy.serves(0, 0, 1) and policy.serves(2000, 1, 1)
    assert policy.serves(4000, 3000, 1)  # primary group allowed
    assert not policy.serves(4000, 4000, _dead_pid())
    assert policy.is_admin(Peer(0, 0, 1, 1, True)) and policy.is_admin(Peer(2001, 1, 1, 1, True))
    assert not policy.is_admin(Peer(2000, 1, 1, 1, True))


def test_waiters_past_the_limit_are_not_held_and_each_is_answered_once() -> None:
    answered: list[tuple[str, str]] = []

    async def scenario() -> None:
        waiters = Waiters(asyncio.get_running_loop(), lambda w, t: answered.append((w.correlation_id, t)), limit=2)
        assert waiters.add("t1", Waiter(b"p", "a", "x"), 0.01)
        assert waiters.add("t1", Waiter(b"p", "b", "x"), 30)
        assert not waiters.add("t2", Waiter(b"p", "c", "x"), 30)
        await asyncio.sleep(0.05)  # "a" expires
        waiters.finished("t1")  # "b" is answered; "a" is not answered twice
        waiters.finished("t1")
        assert len(waiters) == 0

    asyncio.run(scenario())
    assert answered == [("a", "t1"), ("b", "t1")]

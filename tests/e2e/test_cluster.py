"""Daemons federated through a private nats-server: membership, the leader lease, schedules run by the leader."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.exitcodes import EXIT_OK, EXIT_REJECTED
from tests import nats
from tests.e2e.conftest import Bus, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def nats_url(short_tmp: Path) -> Iterator[str]:
    with nats.nats_server(short_tmp) as url:
        yield url


def node(short_tmp: Path, name: str, url: str, *extra: str, env: dict[str, str] | None = None) -> Bus:
    """A daemon of the cluster on its own socket and state directory, named ``name``."""
    bus = Bus(short_tmp / name)
    bus.root.mkdir()
    bus.env.update(
        EVENTBUS_CLUSTER_NATS_URL=url,
        EVENTBUS_CLUSTER_NODE=name,
        EVENTBUS_CLUSTER_HEARTBEAT_S="0.5",
        EVENTBUS_CLUSTER_LEASE_TTL_S="2",
        **(env or {}),
    )
    bus.start_daemon(*extra)
    return bus


def view(bus: Bus) -> dict[str, Any]:
    out = bus.ctl("--json", "cluster")
    assert out.returncode == EXIT_OK, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture
def two(short_tmp: Path, nats_url: str) -> Iterator[tuple[Bus, Bus]]:
    a = node(short_tmp, "a", nats_url)
    b = node(short_tmp, "b", nats_url)
    try:
        yield a, b
    finally:
        for bus in (a, b):
            bus.close()


def leader_of(a: Bus, b: Bus) -> str | None:
    leaders = {str(view(bus)["leader"]) for bus in (a, b) if view(bus)["connected"]}
    return leaders.pop() if len(leaders) == 1 else None


def test_two_daemons_see_each_other_and_agree_on_one_leader(two: tuple[Bus, Bus]) -> None:
    a, b = two
    a.start_collector("ca")
    wait_until(lambda: {h["node"] for h in view(a)["hosts"]} == {"a", "b"}, 10, "both hosts")
    wait_until(lambda: leader_of(a, b) in ("a", "b"), 10, "one leader")
    hosts = {h["node"]: h for h in view(b)["hosts"]}
    assert hosts["a"]["operations"] and "echo" in hosts["a"]["operations"] and hosts["a"]["collectors"] == 1
    assert sum(1 for bus in (a, b) if view(bus)["is_leader"]) == 1
    status = a.ctl("status")
    assert "cluster" in status.stdout and "node a, connected" in status.stdout
    shown = a.ctl("cluster")
    assert shown.returncode == EXIT_OK and "NODE" in shown.stdout and "COLLECTOR IDS" in shown.stdout
    a_row = next(line for line in shown.stdout.splitlines() if line.startswith("a "))
    assert a_row.split()[-1] == "ca" and hosts["a"]["collector_ids"] == ["ca"]
    assert view(a)["totals"] == {
        "hosts": 2,
        "collectors": 1,
        "slots": hosts["a"]["slots"],
        "tasks_in_flight": 0,
        "tasks_queued": 0,
        "stream_tasks": 0,
    }
    lead, follow = (a, b) if view(a)["is_leader"] else (b, a)
    with lead.client() as c:
        text = c.metrics()
    assert "eventbus_cluster_hosts 2.0" in text and "eventbus_cluster_leader 1.0" in text
    with follow.client() as c:
        text = c.metrics()
    assert "eventbus_cluster_hosts" not in text and "eventbus_cluster_connected 1.0" in text  # (counted once)


def test_when_the_leader_is_killed_the_other_takes_over_within_the_lease(two: tuple[Bus, Bus]) -> None:
    a, b = two
    wait_until(lambda: leader_of(a, b) in ("a", "b"), 10, "one leader")
    first = leader_of(a, b)
    dead, alive = (a, b) if first == "a" else (b, a)
    assert dead.daemon is not None
    dead.daemon.signal(signal.SIGKILL)
    dead.daemon.wait(10)
    killed = time.monotonic()
    wait_until(lambda: view(alive)["is_leader"] is True, 10, "the takeover")
    took = time.monotonic() - killed
    print(f"takeover {took:.2f} s after kill -9 (lease TTL 2 s, heartbeat 0.5 s)")
    assert took < 2 + 0.5 + 1.5, took  # lease TTL + a heartbeat, and the CLI's own time


def test_a_schedule_both_daemons_define_runs_once_per_due_time_across_a_takeover(
    short_tmp: Path, nats_url: str
) -> None:
    config = short_tmp / "eventbusd.toml"
    config.write_text('[schedules.beat]\noperation = "echo"\nevery = "1s"\noverlap = "queue"\n')
    a = node(short_tmp, "a", nats_url, "--config", str(config))
    b = node(short_tmp, "b", nats_url, "--config", str(config))
    try:
        wait_until(lambda: leader_of(a, b) in ("a", "b"), 10, "one leader")
        time.sleep(3)
        first = leader_of(a, b)
        dead, alive = (a, b) if first == "a" else (b, a)
        assert dead.daemon is not None
        dead.daemon.signal(signal.SIGKILL)
        dead.daemon.wait(10)
        wait_until(lambda: view(alive)["is_leader"] is True, 10, "the takeover")
        time.sleep(3)
        dead.start_daemon("--config", str(config))  # back, as a follower: its record shows what it ran
        with alive.client() as c:
            ran_alive = [r["due"] for r in c.schedule("beat")["runs"] if r["task_id"]]
        with dead.client() as c:
            ran_dead = [r["due"] for r in c.schedule("beat")["runs"] if r["task_id"]]
        assert ran_alive and ran_dead
        assert not set(ran_alive) & set(ran_dead), (ran_alive, ran_dead)  # no due time ran on both
        dues = sorted(ran_alive + ran_dead)
        assert dues == sorted(set(dues))
    finally:
        for bus in (a, b):
            bus.close()


def test_a_daemon_whose_nats_is_unreachable_serves_locally_and_says_so(short_tmp: Path) -> None:
    bus = Bus(short_tmp)
    bus.env.update(EVENTBUS_CLUSTER_NATS_URL=f"nats://127.0.0.1:{nats.free_port()}", EVENTBUS_CLUSTER_NODE="lone")
    bus.start_daemon()
    try:
        bus.start_collector("c1")
        done = bus.ctl("submit", "echo", "--payload", "1", "--wait")
        assert done.returncode == EXIT_OK and done.stdout.strip() == "1"
        shown = view(bus)
        assert shown["connected"] is False and shown["leader"] is None
        wait_until(lambda: view(bus)["last_error"] is not None, 10, "the connection error")
        assert "NOT connected" in bus.ctl("status").stdout
    finally:
        bus.close()


def test_a_leader_cut_off_from_nats_steps_down_before_its_lease_can_expire(short_tmp: Path) -> None:
    with nats.nats_server(short_tmp) as url:
        a = node(short_tmp, "a", url)
        wait_until(lambda: view(a)["is_leader"] is True, 10, "the lease")
    cut = time.monotonic()  # the server is gone
    try:
        wait_until(lambda: view(a)["is_leader"] is False, 10, "the step-down")
        # TTL 2 s from its last renewal (at most a heartbeat, 0.5 s, before the cut); it steps down at TTL - 0.5 s
        assert time.monotonic() - cut < 2.0 + 0.5, time.monotonic() - cut
        a.start_collector("c1")
        done = a.ctl("submit", "echo", "--payload", "2", "--wait")
        assert done.returncode == EXIT_OK and done.stdout.strip() == "2"
        assert "NOT connected" in a.ctl("status").stdout
    finally:
        a.close()


def serving(host: Bus, seen_by: Bus, collector: str, *args: str, timeout: float = 10) -> None:
    """Start a demo collector on ``host``, and wait until ``seen_by`` knows ``host`` offers ``sleep``."""
    host.start_collector(collector, "demo", *args)
    node_name = host.env["EVENTBUS_CLUSTER_NODE"]
    wait_until(lambda: offers(seen_by, node_name, "sleep"), timeout, f"host {node_name}'s record")
    time.sleep(1.0)  # seen_by reads the records every heartbeat


def in_flight(bus: Bus) -> int:
    with bus.client() as client:
        return int(client.stats()["tasks_in_flight"])


def offers(bus: Bus, node_name: str, operation: str) -> bool:
    return any(h["node"] == node_name and operation in h["operations"] for h in view(bus)["hosts"])


def test_a_task_only_another_host_can_run_runs_there_and_its_result_comes_back(two: tuple[Bus, Bus]) -> None:
    a, b = two
    b.start_collector("cb")
    wait_until(lambda: offers(a, "b", "echo"), 10, "host b's record")
    time.sleep(1.0)  # a reads the records every heartbeat
    out = a.ctl("--json", "submit", "echo", "--payload", '{"n": 7}', "--wait", "--wait-timeout", "30")
    assert out.returncode == EXIT_OK, out.stderr
    info = json.loads(out.stdout)
    assert info["result"]["value"] == {"n": 7} and info["collector_id"] == "cb@b" and info["attempt"] == 1
    with a.client() as c:
        stats = c.stats()
    assert stats["tasks_spilled"] == 1 and stats["tasks_remote"] == 0
    # b never had it under that id, yet answers about it: from the cluster's results bucket
    tid = info["task_id"]
    wait_until(lambda: b.ctl("task", tid).returncode == EXIT_OK, 10, "the result in the cluster's bucket")
    shown = json.loads(b.ctl("--json", "task", tid).stdout)
    assert shown["collector_id"] == "cb@b" and shown["result"]["value"] == {"n": 7} and shown["state"] == "succeeded"
    missing = b.ctl("task", "no-such-task")
    assert missing.returncode == EXIT_REJECTED and "nor has the cluster's results bucket it" in missing.stderr
    assert int(view(a)["results_shared"]) >= 1


def test_spilled_tasks_of_a_killed_daemon_finish_on_a_third_one_once_each(short_tmp: Path, nats_url: str) -> None:
    buses: list[Bus] = []
    try:
        for name in ("a", "b", "c"):
            buses.append(node(short_tmp, name, nats_url, env={"EVENTBUS_CLUSTER_ACK_WAIT_S": "2"}))
        a, b, c = buses
        serving(b, a, "cb", "--concurrency", "8")
        with a.client() as client:
            ids = [client.submit("sleep", {"seconds": 3}) for _ in range(6)]
            wait_until(lambda: all(client.get(t).state == "dispatched" for t in ids), 15, "the tasks to spill")
        wait_until(lambda: in_flight(b) == 6, 15, "b to run them")
        # in the stream until done: the depth every daemon reads from JetStream
        wait_until(lambda: view(c)["stream_depths"] == {"sleep": 6}, 10, "the stream's depth")
        assert "stream eventbus_tasks: sleep 6" in a.ctl("cluster").stdout
        c.start_collector("cc", "demo", "--concurrency", "8")
        assert b.daemon is not None
        b.daemon.signal(signal.SIGKILL)
        b.daemon.wait(10)
        killed = time.monotonic()
        with a.client() as client:
            infos = [client.wait(t, timeout=40) for t in ids]
            stale = int(client.stats()["stale_messages"])
        took = time.monotonic() - killed
        print(f"6 spilled tasks of a killed daemon done {took:.1f} s after the kill (ack wait 2 s, tasks of 3 s)")
        assert [i.state for i in infos] == ["succeeded"] * 6
        assert {i.collector_id for i in infos} == {"cc@c"} and all(i.attempt == 1 for i in infos)
        with c.client() as client:
            ran_on_c = [t for t in client.tasks() if t.operation == "sleep"]
        assert len(ran_on_c) == 6 and stale == 0  # each ran once more, and one result came back for each
        wait_until(lambda: view(a)["stream_depths"] == {}, 10, "an empty stream")
    finally:
        for bus in reversed(buses):
            bus.close()


def test_a_result_sent_while_the_spilling_daemon_was_down_reaches_it_after_its_restart(
    two: tuple[Bus, Bus],
) -> None:
    a, b = two
    serving(b, a, "cb", "--concurrency", "4")
    with a.client() as client:
        tid = client.submit("sleep", {"seconds": 2})
        wait_until(lambda: client.get(tid).state == "dispatched", 15, "the task to spill")
    wait_until(lambda: in_flight(b) == 1, 15, "b to run it")
    assert a.daemon is not None
    a.daemon.signal(signal.SIGKILL)
    a.daemon.wait(10)
    wait_until(lambda: in_flight(b) == 0, 15, "b to finish it, with its origin down")
    a.start_daemon()
    with a.client() as client:
        info = client.wait(tid, timeout=20)
        stats = client.stats()
    assert (info.state, info.collector_id, info.attempt) == ("succeeded", "cb@b", 1)
    assert stats["stale_messages"] == 0


def test_a_spilled_task_whose_takers_keep_dying_fails_after_max_retries_plus_one_deliveries(
    short_tmp: Path, nats_url: str
) -> None:
    buses: list[Bus] = []
    quick = {"EVENTBUS_CLUSTER_ACK_WAIT_S": "2"}
    try:
        buses.append(node(short_tmp, "a", nats_url, env={**quick, "EVENTBUS_MAX_RETRIES": "0"}))
        for name in ("b", "c"):
            buses.append(node(short_tmp, name, nats_url, env=quick))
        a, b, c = buses
        serving(b, a, "cb")
        with a.client() as client:
            tid = client.submit("sleep", {"seconds": 30}, timeout_ms=60_000)
        wait_until(lambda: in_flight(b) == 1, 15, "b to run it")
        c.start_collector("cc", "demo")
        assert b.daemon is not None
        b.daemon.signal(signal.SIGKILL)  # its one delivery (max_retries 0) is used up
        b.daemon.wait(10)
        with a.client() as client:
            info = client.wait(tid, timeout=30)
        assert info.state == "failed" and info.error is not None and info.error.type == "DeliveryLimit", info
        assert in_flight(c) == 0  # c was given it a second time, and did not run it
    finally:
        for bus in reversed(buses):
            bus.close()


def test_a_nats_node_killed_under_load_loses_no_acknowledged_task(short_tmp: Path) -> None:
    with nats.nats_cluster(short_tmp, 3) as servers:
        urls = ",".join(s.url for s in servers)
        env = {"EVENTBUS_CLUSTER_REPLICAS": "3", "EVENTBUS_CLUSTER_ACK_WAIT_S": "2"}
        a = node(short_tmp, "a", urls, env=env)
        b = node(short_tmp, "b", urls, env=env)
        try:
            serving(b, a, "cb", "--concurrency", "8", timeout=20)
            with a.client() as client:
                ids = [client.submit("sleep", {"seconds": 0.2}, timeout_ms=5000) for _ in range(80)]
                wait_until(lambda: int(client.stats()["tasks_spilled"]) >= 16, 20, "spilling under way")
            leader = nats.stream_leader(servers, "eventbus_tasks")
            victim = next(s for s in servers if s.name == leader)
            victim.kill()  # the server leading the task stream: the survivors elect another
            killed = time.monotonic()
            with a.client() as client:
                infos = [client.wait(t, timeout=90) for t in ids]
                stats = client.stats()
            took = time.monotonic() - killed
            states = [i.state for i in infos]
            print(f"80 tasks, NATS node {leader} (stream leader) killed: all final {took:.1f} s after; {stats}")
            assert states == ["succeeded"] * 80, {s: states.count(s) for s in set(states)}
            assert len({i.task_id for i in infos}) == 80 and all(i.collector_id == "cb@b" for i in infos)
        finally:
            for bus in (a, b):
                bus.close()


def test_in_shared_mode_every_task_goes_through_the_stream_and_any_daemon_runs_it(
    short_tmp: Path, nats_url: str
) -> None:
    shared = {"EVENTBUS_CLUSTER_MODE": "shared"}
    a = node(short_tmp, "a", nats_url, env=shared)
    b = node(short_tmp, "b", nats_url, env=shared)
    try:
        a.start_collector("ca", "demo", "--concurrency", "4")
        b.start_collector("cb", "demo", "--concurrency", "4")
        wait_until(lambda: offers(a, "a", "sleep") and offers(a, "b", "sleep"), 10, "both hosts' records")
        time.sleep(1.0)
        with a.client() as client:
            ids = [client.submit("sleep", {"seconds": 0.5}) for _ in range(16)]
            infos = [client.wait(t, timeout=30) for t in ids]
            stats = client.stats()
        assert [i.state for i in infos] == ["succeeded"] * 16
        ran_on = {i.collector_id for i in infos}
        assert ran_on == {"ca@a", "cb@b"}, ran_on  # a's own collector, too, took them from the stream
        assert stats["tasks_spilled"] == 16 and "(shared)" in a.ctl("status").stdout
    finally:
        for bus in (a, b):
            bus.close()


def test_a_higher_priority_task_spilled_behind_many_lower_ones_is_taken_first(short_tmp: Path, nats_url: str) -> None:
    a = node(short_tmp, "a", nats_url, env={"EVENTBUS_CLUSTER_SPILL_AFTER_MS": "0"})
    b = node(short_tmp, "b", nats_url)
    try:
        serving(b, a, "cb", "--concurrency", "1")
        with a.client() as client:
            low = [client.submit("sleep", {"seconds": 0.1}, priority=1) for _ in range(20)]
            wait_until(lambda: int(client.stats()["tasks_spilled"]) == 20, 15, "the low ones to spill")
            high = client.submit("sleep", {"seconds": 0.1}, priority=9)
            lows = [client.wait(t, timeout=30) for t in low]
            top = client.wait(high, timeout=30)
        assert top.state == "succeeded" and all(i.state == "succeeded" for i in lows)
        after = sum(1 for i in lows if (i.finished_at or 0) > (top.finished_at or 0))
        assert after >= 17, after  # taken at b's next free slot, not after the 20 published before it
    finally:
        for bus in (a, b):
            bus.close()


def test_cancelling_a_spilled_task_stops_it_on_the_host_running_it(two: tuple[Bus, Bus]) -> None:
    a, b = two
    serving(b, a, "cb")
    with a.client() as client:
        tid = client.submit("sleep", {"seconds": 60}, timeout_ms=120_000)
    wait_until(lambda: in_flight(b) == 1, 15, "b to run it")
    out = a.ctl("cancel", tid)
    assert out.returncode == EXIT_OK, out.stderr
    wait_until(lambda: in_flight(b) == 0, 10, "b to stop it")
    with b.client() as client:
        (ran,) = [t for t in client.tasks() if t.operation == "sleep"]
    assert ran.state == "cancelled"
    with a.client() as client:
        assert client.get(tid).state == "cancelled" and client.stats()["tasks_remote"] == 0


def test_a_spilled_task_cancelled_before_any_host_took_it_is_dropped_unrun(two: tuple[Bus, Bus]) -> None:
    a, b = two
    serving(b, a, "cb", "--concurrency", "1")
    with a.client() as client:
        first = client.submit("sleep", {"seconds": 2})
        wait_until(lambda: in_flight(b) == 1, 15, "b to run the first")
        second = client.submit("sleep", {"seconds": 0.1})
        wait_until(lambda: client.get(second).state == "dispatched", 10, "the second to spill")
        client.cancel(second)
        assert client.wait(first, timeout=20).state == "succeeded"
    wait_until(lambda: view(a)["stream_depths"] == {}, 10, "the second's message to be dropped")
    with b.client() as client:
        ran = [t for t in client.tasks() if t.operation == "sleep"]
    assert len(ran) == 1 and ran[0].state == "succeeded"


def test_a_daemon_restarted_while_running_a_spilled_task_still_sends_its_result(short_tmp: Path, nats_url: str) -> None:
    quick = {"EVENTBUS_CLUSTER_ACK_WAIT_S": "2"}
    a = node(short_tmp, "a", nats_url, env=quick)
    b = node(short_tmp, "b", nats_url, env=quick)
    try:
        serving(b, a, "cb")
        with a.client() as client:
            tid = client.submit("sleep", {"seconds": 2})
        wait_until(lambda: in_flight(b) == 1, 15, "b to run it")
        assert b.daemon is not None
        b.daemon.signal(signal.SIGKILL)
        b.daemon.wait(10)
        b.start_daemon()  # it kept the task; the message comes back to it after the ack wait
        with a.client() as client:
            info = client.wait(tid, timeout=40)
        assert (info.state, info.attempt, info.retries, info.collector_id) == ("succeeded", 1, 0, "cb@b"), info
    finally:
        for bus in (a, b):
            bus.close()


def test_the_leader_removes_tasks_past_their_deadline_from_the_stream(two: tuple[Bus, Bus]) -> None:
    a, b = two
    serving(b, a, "cb", "--concurrency", "1")
    with a.client() as client:
        busy = client.submit("sleep", {"seconds": 8}, timeout_ms=20_000)
        wait_until(lambda: in_flight(b) == 1, 15, "b to be busy")
        late = client.submit("sleep", {"seconds": 0.1}, deadline=time.time() + 1.5)
        wait_until(lambda: client.get(late).state == "dispatched", 10, "the second to spill")
        wait_until(lambda: view(a)["stream_depths"] == {"sleep": 2}, 10, "both in the stream")
        assert client.wait(late, timeout=10).state == "expired"  # (its origin's own deadline)
    # nobody takes it while b is busy: the leader's sweep (every 5 heartbeats) takes it out of the stream
    wait_until(lambda: view(a)["stream_depths"] == {"sleep": 1}, 10, "the sweep")
    assert sum(int(view(bus)["stream_expired_removed"]) for bus in (a, b)) == 1
    with a.client() as client:
        client.cancel(busy)

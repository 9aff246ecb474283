"""Watchers through the real daemon: every event, in order; losses announced; a gone watcher forgotten."""

from __future__ import annotations

import collections
import json
import signal
import time
from functools import partial
from typing import Any

import pytest

from eventbus import messages as m
from tests.e2e.conftest import Bus, Proc, command, wait_until

pytestmark = pytest.mark.e2e

#: the states every task of the demo's echo goes through, in order
LIFE = ["queued", "dispatched", "running", "succeeded"]


def _stat(bus: Bus, key: str) -> Any:
    with bus.client() as c:
        return c.stats()[key]


def _watch(bus: Bus, *patterns: str) -> Proc:
    before = _stat(bus, "subscribers")
    proc = bus.spawn([command("eventbusctl"), "--json", "watch", *patterns], "watch")
    wait_until(lambda: _stat(bus, "subscribers") > before, 15, "the watcher to subscribe")
    return proc


def _stream(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def _has(proc: Proc, n: int) -> bool:
    return len(_stream(proc)) >= n


def _submit(bus: Bus, n: int) -> list[str]:
    with bus.client() as c:
        return [c.submit("echo", {"i": i}) for i in range(n)]


def test_two_watchers_see_every_event_of_1000_tasks_in_order(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon()
    bus.start_collector("ev-1", "demo", "--concurrency", "8")
    watchers = [_watch(bus, "events.task.#"), _watch(bus, "events.task.#")]
    ids = _submit(bus, 1000)
    wait_until(lambda: _stat(bus, "tasks_succeeded") == 1000, 60, "1000 tasks to succeed")
    with bus.client() as c:
        stats = c.stats()
    for w in watchers:
        wait_until(partial(_has, w, 4000), 30, "every event to reach the watcher")
    for w in watchers:
        events = _stream(w)
        assert len(events) == 4000
        by_task: dict[str, list[str]] = collections.defaultdict(list)
        for e in events:
            assert e["topic"] == f"events.task.{e['body']['state']}.echo"
            by_task[e["body"]["task_id"]].append(e["body"]["state"])
        assert sorted(by_task) == sorted(ids)
        assert all(states == LIFE for states in by_task.values())
        counts = collections.Counter(e["body"]["state"] for e in events)
        assert counts["queued"] == stats["tasks_submitted"] == 1000
        assert counts["dispatched"] == stats["tasks_distributed"]
        assert counts["succeeded"] == stats["tasks_succeeded"]
    assert stats["events_dropped"] == 0
    assert stats["subscribers"] == 2


def test_a_watcher_that_exits_is_forgotten_within_a_heartbeat_interval(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--heartbeat-interval-s", "1", "--heartbeat-timeout-s", "3")
    watchers = [_watch(bus), _watch(bus)]
    assert _stat(bus, "subscribers") == 2
    for w in watchers:
        w.popen.kill()
        w.wait(5)
    gone_at = time.monotonic()
    # no event is published meanwhile: only the daemon's pings can find them gone
    wait_until(lambda: _stat(bus, "subscribers") == 0, 1.0 + 2.0, "the gone watchers to be forgotten")
    print(f"forgotten {time.monotonic() - gone_at:.2f}s after the watchers exited (heartbeat interval 1s)")


def test_a_watcher_that_falls_behind_is_told_how_many_events_it_lost(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--peer-queue-limit", "20")
    bus.start_collector("ev-1", "demo", "--concurrency", "8")
    slow = _watch(bus, "events.task.#")
    steady = _watch(bus, "events.task.#")
    slow.signal(signal.SIGSTOP)  # reads nothing: the kernel's and ZeroMQ's buffers, then its queue, fill up
    submitted = 0
    try:
        while _stat(bus, "events_dropped") == 0:
            assert submitted < 20_000, "the stopped watcher never lost an event"
            submitted += len(_submit(bus, 500))
        wait_until(lambda: _stat(bus, "tasks_succeeded") == submitted, 60, "the tasks to succeed")
    finally:
        slow.signal(signal.SIGCONT)
    wait_until(lambda: len(_stream(steady)) >= 4 * submitted, 30, "every event to reach the steady watcher")

    def accounted() -> bool:
        stream = _stream(slow)
        lost = sum(e["body"]["dropped"] for e in stream if e["topic"] == m.SUBSCRIPTION_DROPPED)
        return bool(lost > 0 and len(stream) - _notices(stream) + lost == 4 * submitted)

    wait_until(accounted, 30, "the slow watcher's events and losses to add up")
    stream = _stream(slow)
    lost = sum(e["body"]["dropped"] for e in stream if e["topic"] == m.SUBSCRIPTION_DROPPED)
    assert lost == _stat(bus, "events_dropped")
    print(f"{submitted} tasks: the stopped watcher lost {lost} of {4 * submitted} events, each gap announced")
    assert "eventbusctl: dropped" in slow.output()  # said on stderr as well
    assert len(_stream(steady)) == 4 * submitted  # the other watcher lost nothing
    # whatever it received came in order: per task, a subsequence of the task's life
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for e in stream:
        if e["topic"] != m.SUBSCRIPTION_DROPPED:
            seen[e["body"]["task_id"]].append(e["body"]["state"])
    assert all(states == [s for s in LIFE if s in states] for states in seen.values())


def _notices(stream: list[dict[str, Any]]) -> int:
    return sum(1 for e in stream if e["topic"] == m.SUBSCRIPTION_DROPPED)

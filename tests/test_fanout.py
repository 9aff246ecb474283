"""Events to subscribers: losses are announced where they happened, gone subscribers are forgotten."""

from __future__ import annotations

from typing import Any

import pytest

from eventbus import messages as m
from eventbus.fanout import Fanout
from eventbus.wire import decode

A, B = b"\x00a", b"\x00b"


class Net:
    """A transport whose peers can be made full (sends refused) or gone (sends fail, peer reported)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.full: set[bytes] = set()
        self.gone: set[bytes] = set()
        self.got: dict[bytes, list[tuple[str, dict[str, Any]]]] = {A: [], B: []}
        self.sends = 0
        self.fanout = Fanout(self.send, lambda: self.now, 1 << 20)

    def send(self, peer: bytes, data: bytes) -> bool:
        self.sends += 1
        if peer in self.gone:
            self.fanout.remove(peer)  # what the daemon does when the transport reports it unreachable
            return False
        if peer in self.full:
            return False
        env = decode(data)
        self.got[peer].append((env.topic, env.body))
        return True

    def topics(self, peer: bytes) -> list[str]:
        return [t for t, _ in self.got[peer]]


@pytest.fixture
def net() -> Net:
    return Net()


def test_an_event_reaches_only_matching_subscribers(net: Net) -> None:
    net.fanout.add(A, ["events.task.#"])
    net.fanout.add(B, ["events.collector.#"])
    net.fanout.publish("events.task.queued.echo", {"task_id": "t1"})
    assert net.got[A] == [("events.task.queued.echo", {"task_id": "t1"})]
    assert net.got[B] == []


def test_a_full_subscriber_is_told_how_many_events_it_lost_before_the_next_one(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.fanout.add(B, ["events.#"])
    net.fanout.publish("events.task.queued.echo", {"n": 0})
    net.full.add(A)
    for n in range(1, 4):
        net.fanout.publish("events.task.queued.echo", {"n": n})
    net.full.clear()
    net.fanout.publish("events.task.queued.echo", {"n": 4})
    assert net.got[A] == [
        ("events.task.queued.echo", {"n": 0}),
        (m.SUBSCRIPTION_DROPPED, {"dropped": 3}),
        ("events.task.queued.echo", {"n": 4}),
    ]
    assert [b["n"] for _, b in net.got[B]] == [0, 1, 2, 3, 4]  # the other subscriber lost nothing
    assert net.fanout.dropped == 3
    assert net.fanout.notices == 1


def test_a_notice_that_does_not_fit_either_counts_the_event_too(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.full.add(A)
    net.fanout.publish("events.task.queued.echo", {"n": 1})
    net.fanout.publish("events.task.queued.echo", {"n": 2})
    net.full.clear()
    net.fanout.publish("events.task.queued.echo", {"n": 3})
    assert net.got[A] == [(m.SUBSCRIPTION_DROPPED, {"dropped": 2}), ("events.task.queued.echo", {"n": 3})]


def test_a_pending_notice_goes_out_without_waiting_for_another_event(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.full.add(A)
    net.fanout.publish("events.task.queued.echo", {})
    net.fanout.upkeep(1.0)  # still full: nothing, and nothing lost twice
    assert net.got[A] == []
    net.full.clear()
    net.now += 1.0
    net.fanout.upkeep(1.0)
    assert net.got[A] == [(m.SUBSCRIPTION_DROPPED, {"dropped": 1})]


def test_an_idle_subscriber_is_pinged_and_a_busy_one_is_not(net: Net) -> None:
    net.fanout.add(A, ["events.task.#"])
    net.fanout.add(B, ["events.collector.#"])
    net.now += 1.0
    net.fanout.publish("events.task.queued.echo", {})
    net.fanout.upkeep(1.0)
    assert net.topics(A) == ["events.task.queued.echo"]
    assert net.topics(B) == [m.SUBSCRIPTION_PING]
    sends = net.sends
    net.now += 0.5
    net.fanout.upkeep(1.0)  # upkeep runs at most once per interval
    assert net.sends == sends


def test_a_gone_subscriber_is_forgotten_at_the_next_upkeep(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.fanout.add(B, ["events.#"])
    net.gone.add(A)
    net.now += 1.0
    net.fanout.upkeep(1.0)
    assert len(net.fanout) == 1
    assert net.topics(B) == [m.SUBSCRIPTION_PING]
    assert net.fanout.dropped == 0  # nobody was there to lose anything


def test_a_subscriber_found_gone_while_publishing_loses_nothing_and_the_rest_get_the_event(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.fanout.add(B, ["events.#"])
    net.gone.add(A)
    net.fanout.publish("events.task.queued.echo", {})
    assert len(net.fanout) == 1
    assert net.topics(B) == ["events.task.queued.echo"]
    assert net.fanout.dropped == 0


def test_unsubscribing_from_every_pattern_forgets_the_subscriber(net: Net) -> None:
    net.fanout.add(A, ["events.task.#", "events.collector.#"])
    net.fanout.remove(A, ["events.task.#"])
    assert len(net.fanout) == 1
    net.fanout.remove(A, ["events.collector.#"])
    assert len(net.fanout) == 0
    net.now += 5
    net.fanout.upkeep(1.0)
    assert net.got[A] == []


def test_messages_the_transport_lost_later_are_announced_to_a_subscriber(net: Net) -> None:
    net.fanout.add(A, ["events.#"])
    net.fanout.lost(A, 3)  # a batch frame of 3 could not be delivered
    net.fanout.lost(B, 2)  # not a subscriber: nothing to announce
    net.fanout.publish("events.task.queued.echo", {})
    assert net.got[A] == [(m.SUBSCRIPTION_DROPPED, {"dropped": 3}), ("events.task.queued.echo", {})]
    assert net.fanout.dropped == 3

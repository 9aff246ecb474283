"""Events to subscribers: each encoded once, none lost without a notice, a gone subscriber forgotten.

A subscriber whose connection is full loses events rather than slowing the
daemon. It is never left to guess: the first thing it receives once its
connection has room again is a ``control.subscription.dropped`` notice saying
how many events it lost there, before the next event. A subscriber the
daemon sent nothing for half a heartbeat interval gets a
``control.subscription.ping``: ZeroMQ only tells a ROUTER that a peer is gone
when something is sent to it, so without the ping a watcher that exited
would stay subscribed (and counted) until the next matching event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventbus import messages as m
from eventbus.errors import EventBusError
from eventbus.topics import Subscriptions
from eventbus.wire import Envelope, Kind, encode

log = logging.getLogger(__name__)

DROPPED = m.SUBSCRIPTION_DROPPED
PING = m.SUBSCRIPTION_PING

Send = Callable[[bytes, bytes], bool]


@dataclass(slots=True)
class _Subscriber:
    #: events lost since the last notice that reached the connection
    dropped: int = 0
    #: when something was last handed to the connection (clock of the fan-out)
    last_sent: float = 0.0


class Fanout:
    """Who subscribed to what, and the delivery of events to them."""

    def __init__(self, send: Send, clock: Callable[[], float], max_message_size: int) -> None:
        self._send = send
        self._clock = clock
        self._max = max_message_size
        self._subscriptions = Subscriptions()
        self._subscribers: dict[bytes, _Subscriber] = {}
        self._ping = encode(Envelope(Kind.PUBLISH, "", PING, {}))
        self._next_upkeep = 0.0
        #: events that did not reach a subscriber (its connection was full), over the daemon's life
        self.dropped = 0
        #: ``dropped`` notices delivered
        self.notices = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(self, peer: bytes, patterns: list[str]) -> None:
        """Subscribe ``peer`` to ``patterns`` as well (all or none: a bad pattern raises)."""
        self._subscriptions.add(peer, patterns)
        self._subscribers.setdefault(peer, _Subscriber(last_sent=self._clock()))

    def remove(self, peer: bytes, patterns: list[str] | None = None) -> None:
        """Unsubscribe ``peer`` from ``patterns`` (None: from everything, the peer is gone)."""
        self._subscriptions.remove(peer, patterns)
        if peer not in self._subscriptions:
            self._subscribers.pop(peer, None)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        """Send one event to every subscriber with a matching pattern, encoded once."""
        peers = self._subscriptions.subscribers(topic)
        if not peers:
            return
        try:
            data = encode(Envelope(Kind.PUBLISH, "", topic, body), self._max)
        except EventBusError as exc:
            log.error("cannot publish on %s: %s", topic, exc)
            return
        now = self._clock()
        for peer in peers:
            sub = self._subscribers.get(peer)
            if sub is None:  # found gone while sending to an earlier one
                continue
            if (sub.dropped == 0 or self._notify(peer, sub, now)) and self._send(peer, data):
                sub.last_sent = now
            else:
                self._lost(peer, sub)

    def upkeep(self, probe_every_s: float) -> None:
        """Deliver pending notices and ping idle subscribers; does work at most every ``probe_every_s``."""
        now = self._clock()
        if now < self._next_upkeep:
            return
        self._next_upkeep = now + probe_every_s
        for peer, sub in list(self._subscribers.items()):
            if peer not in self._subscribers:  # forgotten while pinging another
                continue
            if sub.dropped:
                self._notify(peer, sub, now)
            elif now - sub.last_sent >= probe_every_s and self._send(peer, self._ping):
                sub.last_sent = now

    def lost(self, peer: bytes, count: int) -> None:
        """The transport lost ``count`` messages it had taken for ``peer`` (a batch frame it could not
        deliver): if ``peer`` subscribes, they count as lost events, announced like the others."""
        sub = self._subscribers.get(peer)
        if sub is not None:
            self._lost(peer, sub, count)

    def _notify(self, peer: bytes, sub: _Subscriber, now: float) -> bool:
        """Tell ``peer`` how many events it lost; True once the notice is on its way."""
        notice = encode(Envelope(Kind.PUBLISH, "", DROPPED, {"dropped": sub.dropped}))
        if not self._send(peer, notice):
            return False
        log.info("subscriber %r was told it lost %d events (its connection was full)", peer, sub.dropped)
        sub.dropped = 0
        sub.last_sent = now
        self.notices += 1
        return True

    def _lost(self, peer: bytes, sub: _Subscriber, count: int = 1) -> None:
        if peer not in self._subscribers:  # the send found it gone: nobody to tell
            return
        if sub.dropped == 0:
            log.warning("subscriber %r is not keeping up: its connection is full, events to it are dropped", peer)
        sub.dropped += count
        self.dropped += count

"""A Service without sockets, for tests that drive the daemon's request handling directly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from eventbus.peers import AccessPolicy, Peer
from eventbus.service import Service
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope, Kind, decode, encode

#: the credentials of a connection from this test process
ME = Peer(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), conn=1, served=True)


def _ignore(identity: bytes) -> None:
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A Service without sockets: frames it sends are kept, decoded."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        settings: DaemonSettings | None = None,
        batch_peer: Callable[[bytes], None] | None = None,
    ) -> None:
        """``settings`` default to the daemon's defaults; ``batch_peer`` hears of peers that read batch frames."""
        self.loop = loop
        self.clock = FakeClock()
        self.sent: list[tuple[bytes, Envelope]] = []
        self.service = Service(
            settings or DaemonSettings(),
            self._send,
            loop=loop,
            policy=AccessPolicy.build(os.getuid(), (), (), ()),
            transport_counters=lambda: {"connections": 3, "connections_refused": 1, "messages_dropped": 0},
            transport_pending=lambda: (4096, 2),
            clock=self.clock,
            batch_peer=batch_peer or _ignore,
        )

    def _send(self, identity: bytes, data: bytes) -> bool:
        self.sent.append((identity, decode(data, 64 << 20)))
        return True

    def request(self, topic: str, body: dict[str, Any], identity: bytes = b"client", corr: str = "r1") -> Envelope:
        """Send a request; the last frame sent (its answer, unless the answer is held)."""
        self.service.on_message(identity, [encode(Envelope(Kind.REQUEST, corr, topic, body))], ME)
        return self.sent[-1][1]

    def to(self, identity: bytes) -> list[Envelope]:
        """Every frame sent to ``identity`` so far."""
        return [env for peer, env in self.sent if peer == identity]

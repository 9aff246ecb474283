"""An in-memory twin of the ZeroMQ transport, for tests of the clients and the collector runtime.

:class:`MemoryDaemon` is a :class:`~eventbus._transport.Connector`: pass it as
``transport=`` to :class:`~eventbus.client.Client` or
:class:`~collectors.runtime.CollectorRuntime`. Frames go, in both directions,
between the client and the daemon's :class:`~eventbus.service.Service` (held
by a :class:`~tests.service_harness.Harness`), one loop turn later as through a
socket. The daemon side does what :class:`~eventbus.broker.Broker` does with
what the service sends: a peer that spoke protocol version 2 gets what it is
sent in one loop turn in as few batch frames as the size limit allows; a
version-1 peer gets one envelope per frame.

It can also play what a socket does to a client: the daemon going away
(:meth:`MemoryDaemon.stop`: every connection hears ``down``) and coming back
(:meth:`MemoryDaemon.start`, by default as a new daemon that knows no task),
refusing the connection (:meth:`MemoryDaemon.refuse`), the socket failing
(:meth:`MemoryDaemon.fail`), a daemon that stops reading (``stalled``: sends
return False), one that is stopped and answers nothing (``paused``) and
``send`` raising a foreign exception (``send_raises``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

from eventbus._transport import LinkEvents
from eventbus.errors import DaemonUnreachable, Forbidden
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope, batches, decode, decode_batch, encode, is_batch
from tests.service_harness import ME, Harness

#: the path the twin pretends to serve (nothing is created there)
PATH = Path("/nonexistent/eventbus-memory.sock")


class MemoryTransport:
    """One client connection to a :class:`MemoryDaemon` (implements :class:`~eventbus._transport.Transport`)."""

    def __init__(self, daemon: MemoryDaemon, identity: bytes, conn: int, events: LinkEvents) -> None:
        self.daemon = daemon
        self.identity = identity
        self.peer = dataclasses.replace(ME, conn=conn)
        self.events = events
        self.closed = False
        #: the socket failed: nothing is read or written any more
        self.failed = False
        #: frames this connection sent, as the daemon got them
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> bool:
        daemon = self.daemon
        if daemon.send_raises is not None:
            raise daemon.send_raises
        if self.closed or self.failed or daemon.stalled:
            return False
        self.sent.append(frame)
        harness = daemon.harness
        if daemon.running and not daemon.refusing and not daemon.paused:
            daemon.loop.call_soon(self._arrive, harness, frame)
        return True  # a socket takes frames while its peer is away, and loses them

    def _arrive(self, harness: Harness, frame: bytes) -> None:
        if self.daemon.harness is harness and self.daemon.running and self.live:
            harness.service.on_message(self.identity, [frame], self.peer)

    @property
    def live(self) -> bool:
        return not (self.closed or self.failed) and self.daemon.connections.get(self.identity) is self

    def report(self, event: str, *args: object) -> None:
        """Tell the client of ``event`` one loop turn later, as a socket monitor would."""
        self.daemon.loop.call_soon(self._report, event, args)

    def _report(self, event: str, args: tuple[object, ...]) -> None:
        if self.closed or self.failed:
            return
        if event == "failed":
            self.failed = True
        getattr(self.events, event)(*args)

    def close(self) -> None:
        self.closed = True
        if self.daemon.connections.get(self.identity) is self:
            del self.daemon.connections[self.identity]


class _Served(Harness):
    """The harness of one daemon's life: what its Service sends is kept (see :class:`Harness`) and routed."""

    def __init__(self, daemon: MemoryDaemon) -> None:
        self._daemon = daemon
        super().__init__(daemon.loop, settings=daemon.settings, batch_peer=daemon.batching.add)

    def _send(self, identity: bytes, data: bytes) -> bool:
        daemon = self._daemon
        if daemon.harness is not self or not daemon.running:
            return False  # a daemon that was stopped sends nothing more
        super()._send(identity, data)
        return daemon.route(identity, data)


class MemoryDaemon:
    """A daemon in memory for clients to connect to; ``harness`` holds its :class:`Service`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: DaemonSettings | None = None) -> None:
        self.loop = loop
        self.settings = settings or DaemonSettings()
        self.connections: dict[bytes, MemoryTransport] = {}
        self.running = False
        self.refusing = False
        #: the daemon does not read: every send returns False
        self.stalled = False
        #: the daemon is stopped (SIGSTOP): frames are taken and never answered, the connection stays up
        self.paused = False
        #: raised by every send (a foreign exception, as a broken socket raises)
        self.send_raises: BaseException | None = None
        self.opened: list[MemoryTransport] = []
        #: frames the current daemon delivered, by peer
        self.received: dict[bytes, list[bytes]] = {}
        #: peers that spoke protocol version 2: they get batch frames
        self.batching: set[bytes] = set()
        self._conns = itertools.count(1)
        self._outbox: dict[bytes, list[bytes]] = {}
        self.harness: Harness = _Served(self)
        self.start(forget=False)

    # ---- the Connector -------------------------------------------------

    def probe(self, path: Path) -> None:
        if not self.running:
            raise DaemonUnreachable(f"eventbusd is not running: no socket at {path}")

    def connect(self, path: Path, identity: str | None, max_message_size: int, events: LinkEvents) -> MemoryTransport:
        self.probe(path)
        conn = next(self._conns)
        routing_id = identity.encode() if identity is not None else b"\x00" + conn.to_bytes(4, "big")
        transport = MemoryTransport(self, routing_id, conn, events)
        self.connections[routing_id] = transport  # the newest connection takes a routing id over
        self.opened.append(transport)
        if self.refusing:
            transport.report("refused", _refusal())
        return transport

    # ---- what the daemon sends -----------------------------------------

    def route(self, identity: bytes, data: bytes) -> bool:
        """As the Broker: False (and the peer forgotten) when the peer is gone; batching for version-2 peers."""
        transport = self.connections.get(identity)
        if transport is None or not transport.live:
            self.batching.discard(identity)
            self.harness.service.peer_gone(identity)
            return False
        if identity not in self.batching:
            self.loop.call_soon(self._deliver, transport, data)
            return True
        if not self._outbox:
            self.loop.call_soon(self._flush)
        self._outbox.setdefault(identity, []).append(data)
        return True

    def _flush(self) -> None:
        boxes, self._outbox = self._outbox, {}
        for identity, parts in boxes.items():
            transport = self.connections.get(identity)
            if transport is not None:
                for frame, _ in batches(parts, self.settings.max_message_size):
                    self._deliver(transport, frame)

    def _deliver(self, transport: MemoryTransport, frame: bytes) -> None:
        if self.running and transport.live:
            self.received.setdefault(transport.identity, []).append(frame)
            transport.events.frame(frame)

    # ---- what a socket does to a client --------------------------------

    def stop(self) -> None:
        """The daemon goes away (killed): unsent frames are lost and every connection hears ``down``."""
        self.running = False
        self._outbox.clear()
        for transport in list(self.connections.values()):
            transport.report("down")

    def start(self, *, forget: bool = True) -> None:
        """A daemon listens (again): a new one knowing nothing unless ``forget`` is False; connections hear ``up``."""
        if forget and self.running:
            raise RuntimeError("stop() the daemon first")
        if forget:
            self.batching.clear()
            self.received = {}
            self.harness = _Served(self)
        self.running = True
        for transport in list(self.connections.values()):
            transport.report("up")

    def refuse(self) -> None:
        """The daemon refuses this uid: every connection hears ``refused``; what it sends is not read."""
        self.refusing = True
        for transport in list(self.connections.values()):
            transport.report("refused", _refusal())

    def fail(self, exc: BaseException) -> None:
        """Every connection's socket fails with ``exc`` (a foreign exception, as libzmq raises)."""
        for transport in list(self.connections.values()):
            transport.report("failed", exc)

    def push(self, identity: bytes, env: Envelope) -> bool:
        """Send ``env`` to a peer as the daemon would (a command the Service itself would not send now)."""
        return self.route(identity, encode(env, self.settings.max_message_size))

    # ---- looking at the traffic ----------------------------------------

    def frames_from(self, identity: bytes | None = None) -> list[bytes]:
        """Frames clients sent (only ``identity``'s when given), in order."""
        return [f for t in self.opened if identity in (None, t.identity) for f in t.sent]

    def envelopes_to(self, identity: bytes) -> list[Envelope]:
        """Every envelope the current daemon delivered to ``identity``, batch frames unpacked."""
        return [env for frame in self.received.get(identity, []) for env in unpack(frame)]


def unpack(frame: bytes) -> list[Envelope]:
    """The envelopes of a frame, plain or batch."""
    if not is_batch(frame):
        return [decode(frame)]
    return [item for item in decode_batch(frame) if isinstance(item, Envelope)]


def _refusal() -> Forbidden:
    return Forbidden("eventbusd refused the connection: uid is not allowed")

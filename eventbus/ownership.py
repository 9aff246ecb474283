"""Which connection may act for a collector id.

A collector id belongs to one live process at a time. Its routing id on the
daemon's ROUTER is the collector id, so two processes using one id would
share a routing id, and the ROUTER hands it to whichever connected last
(``ROUTER_HANDOVER``). The routing id alone therefore cannot tell them apart:
the connection's credentials (:class:`~eventbus.peers.Peer`, from ZAP) can.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from eventbus.errors import Forbidden
from eventbus.peers import Peer, process_alive

log = logging.getLogger(__name__)

#: a holder silent for this many heartbeat intervals may be taken over
SILENT_INTERVALS = 2


def same_process(a: Peer, b: Peer) -> bool:
    return a.pid == b.pid and a.uid == b.uid


@dataclass(frozen=True, slots=True)
class Holder:
    """A live process holding a collector id."""

    peer: Peer
    silent_s: float


class Ownership:
    """Collector id -> the routing id and credentials of the process that registered it.

    ``silence(collector_id)`` says how long the collector has not
    heartbeated (None if the distributor does not know it).
    """

    def __init__(self, heartbeat_interval_s: float, silence: Callable[[str], float | None]) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self._silence = silence
        self._owners: dict[str, Peer] = {}
        self._routes: dict[str, bytes] = {}
        #: entries past which ids the distributor has forgotten are swept (amortised O(1))
        self._sweep_at = 64

    def route(self, collector_id: str) -> bytes | None:
        """The routing id to send to a collector on (None: not registered here)."""
        return self._routes.get(collector_id)

    def holder(self, collector_id: str) -> Holder | None:
        """The live holder of an id, or None when it is free.

        Held while the process that registered it exists and has heartbeated
        within ``SILENT_INTERVALS`` heartbeat intervals.
        """
        owner = self._owners.get(collector_id)
        if owner is None:
            return None
        silent_s = self._silence(collector_id)
        if silent_s is None:  # the distributor forgot it: nothing is held any more
            self.forget(collector_id)
            return None
        if not process_alive(owner.pid) or silent_s > SILENT_INTERVALS * self.heartbeat_interval_s:
            return None
        return Holder(owner, silent_s)

    def register(self, collector_id: str, routing_id: bytes, peer: Peer) -> Peer | None:
        """Bind an id to the registering connection; returns the previous process's credentials on a takeover.

        Raises :class:`Forbidden` if the routing id is not the collector id,
        or if another live process holds the id.
        """
        if routing_id != collector_id.encode():
            raise Forbidden(f"a collector's routing id must be its collector_id {collector_id!r}; got {routing_id!r}")
        owner = self._owners.get(collector_id)
        previous = None
        if owner is not None and not same_process(owner, peer):
            holder = self.holder(collector_id)
            if holder is not None:
                log.warning(
                    "collector_id=%s: register from %s refused: the id is held by %s (last heartbeat %.1fs ago)",
                    collector_id,
                    peer.describe(),
                    owner.describe(),
                    holder.silent_s,
                )
                raise Forbidden(
                    f"collector id {collector_id!r} is held by a live connection (pid {owner.pid}, uid {owner.uid}); "
                    "stop it first or use another --id"
                )
            log.warning(
                "collector_id=%s: %s takes over from %s (%s); its attempts are requeued",
                collector_id,
                peer.describe(),
                owner.describe(),
                "process gone" if not process_alive(owner.pid) else "silent too long",
            )
            previous = owner
        self._owners[collector_id] = peer
        self._routes[collector_id] = routing_id
        if len(self._owners) > self._sweep_at:
            self._sweep()
        return previous

    def _sweep(self) -> None:
        """Forget ids the distributor no longer knows (collectors that died and were forgotten)."""
        for collector_id in [cid for cid in self._owners if self._silence(cid) is None]:
            self.forget(collector_id)
        self._sweep_at = 2 * len(self._owners) + 64

    def __len__(self) -> int:
        return len(self._owners)

    def check(self, collector_id: str, routing_id: bytes, peer: Peer) -> None:
        """Raise :class:`Forbidden` unless ``peer`` may act for the collector.

        The process that registered it may, on any of its connections (it
        reconnects with the same routing id).
        """
        owner = self._owners.get(collector_id)
        route = self._routes.get(collector_id, routing_id)
        if route != routing_id or (owner is not None and not same_process(owner, peer)):
            holder = f" ({owner.describe()})" if owner is not None else ""
            raise Forbidden(f"collector {collector_id!r} is registered by another connection{holder}")
        if owner is not None:
            self._owners[collector_id] = peer  # the same process, maybe on a new connection

    def forget(self, collector_id: str) -> None:
        self._owners.pop(collector_id, None)
        self._routes.pop(collector_id, None)

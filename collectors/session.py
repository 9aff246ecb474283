"""A collector's standing with the daemon: claim its id, connect, register, heartbeat, reconnect, leave.

:class:`Session` keeps the connection of one :class:`~collectors.runtime.CollectorRuntime`
alive; the runtime holds it and runs the work it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from distributor.models import CollectorCapability
from eventbus import messages as m
from eventbus._transport import Connector, ZmqConnector
from eventbus.client import Client
from eventbus.errors import (
    DaemonUnreachable,
    EventBusError,
    Forbidden,
    RequestTimeout,
    ShuttingDown,
    UnknownCollector,
    UnknownVerb,
)

# one logger for everything a collector's runtime reports, whichever module writes the line
log = logging.getLogger("collectors.runtime")

#: heartbeats in a row without an answer before the connection is rebuilt
MISSED_HEARTBEATS = 2
#: reconnect backoff: first delay and cap, in seconds (full jitter)
RECONNECT_BASE_S = 0.1
RECONNECT_MAX_S = 30.0


class Session:
    """The connection of collector ``collector_id`` through ``client``, kept up until ``stop`` is set.

    The runtime says what the session cannot know: its ``capability()``,
    whether it is still ``accepting()`` work, how many tasks run
    (``current_tasks()``), and what to do once the daemon took it back
    (``resend()``, results waiting for an acknowledgement). ``transport``
    opens the connections (the one ``client`` uses too; default ZeroMQ).
    """

    def __init__(
        self,
        client: Client,
        stop: asyncio.Event,
        *,
        collector_id: str,
        socket: str | None,
        timeout: float,
        capability: Callable[[], CollectorCapability],
        accepting: Callable[[], bool],
        current_tasks: Callable[[], int],
        resend: Callable[[], None],
        transport: Connector | None = None,
    ) -> None:
        self.client = client
        self._connector: Connector = ZmqConnector() if transport is None else transport
        self.collector_id = collector_id
        self._stop = stop
        self._socket = socket
        self._timeout = timeout
        self._capability = capability
        self._accepting = accepting
        self._current_tasks = current_tasks
        self._resend = resend
        self.heartbeat_interval = 5.0
        #: set when another process took our collector id over: run() raises it after stopping
        self.superseded: Forbidden | None = None

    async def connect_until_done(self) -> bool:
        """Connect, waiting with backoff for a daemon that is not up yet; False if stopped first."""
        delay = RECONNECT_BASE_S
        while not self._stop.is_set():
            try:
                retry_after = await self._id_is_free()
                if retry_after is None:
                    await self.client.connect()
                    return True
                # the holder may go at any time: ask again each heartbeat interval
                pause = random.uniform(retry_after / 2, retry_after)
            except (DaemonUnreachable, RequestTimeout) as exc:
                log.warning("collector_id=%s: %s; retrying", self.collector_id, exc)
                pause = random.uniform(0, delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)
        return False

    async def _id_is_free(self) -> float | None:
        """None if our collector id is free; else how long to wait before asking again.

        Asked on a connection without our routing id, because connecting with
        it would take a live holder's connection over (the daemon's ROUTER
        hands a routing id to its newest connection), leaving the holder deaf
        until it reconnects.
        """
        async with Client(self._socket, timeout=self._timeout, transport=self._connector) as probe:
            try:
                reply = await probe.request(m.CLAIM, {"collector_id": self.collector_id})
            except UnknownVerb:  # a daemon older than the claim verb: register and let it decide
                return None
        if reply.get("free", True):
            return None
        log.warning(
            "collector_id=%s is held by a live process (pid %s, uid %s); waiting for it to stop",
            self.collector_id,
            reply.get("pid"),
            reply.get("uid"),
        )
        return float(reply.get("retry_after_s", self.heartbeat_interval))

    # ---- registration and liveness -----------------------------------

    async def _register(self) -> None:
        capability = self._capability()
        reply = await self.client.request(m.REGISTER, capability.model_dump())
        self.heartbeat_interval = float(reply.get("heartbeat_interval_s", self.heartbeat_interval))
        self.client.max_message_size = int(reply.get("max_message_size", self.client.max_message_size))
        log.info("collector_id=%s registered (%s)", self.collector_id, ", ".join(capability.supported_operations))
        if not self._accepting():  # registered again while draining (daemon restarted): say so again
            await self.leave_request(m.DRAIN)

    async def register_until_done(self) -> bool:
        """Register, retrying while the daemon does not answer; once registered, always leave properly."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                await self._register()
                return True
            # a reset connection is taken back when it returns; a stopping daemon is followed by the next
            except (RequestTimeout, DaemonUnreachable, ShuttingDown) as exc:
                log.warning("collector_id=%s: registration not answered: %s; retrying", self.collector_id, exc)
            except Forbidden as exc:
                # another process won the id between our check and our register: let go of
                # the routing id at once (we displaced its connection), then wait our turn
                log.warning("collector_id=%s: registration refused: %s", self.collector_id, exc)
                await self.client.close()
                if not await self.connect_until_done():
                    return False
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 30.0)
        return False

    async def heartbeat_loop(self) -> None:
        missed = 0
        while True:
            # every heartbeat_interval, and at once when the connection comes back: a restarted daemon
            # learns about us (and gets the results kept for it) without waiting for the next beat
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.client.relinked.wait(), self.heartbeat_interval)
            self.client.relinked.clear()
            try:
                await self.client.request(
                    f"{m.HEARTBEAT_PREFIX}.{self.collector_id}", {"current_tasks": self._current_tasks()}
                )
                if missed:  # the daemon is back before a reconnect: what waits for it goes now
                    self._resend()
                missed = 0
            except UnknownCollector:
                log.info("collector_id=%s: daemon does not know us (restarted?); registering again", self.collector_id)
                with contextlib.suppress(EventBusError):
                    await self._register()
                    self._resend()
            except Forbidden as exc:
                self._lost_id(exc)
                return
            except (RequestTimeout, DaemonUnreachable):
                missed += 1
                log.warning("collector_id=%s: heartbeat not answered (%d in a row)", self.collector_id, missed)
                if missed >= MISSED_HEARTBEATS:
                    await self._reconnect()
                    if self.superseded is not None:
                        return
                    missed = 0
            except EventBusError as exc:
                log.error("collector_id=%s: heartbeat refused: %s", self.collector_id, exc)

    async def _reconnect(self) -> None:
        """Rebuild the connection with exponential backoff and jitter until the daemon takes us back.

        Running attempts go on meanwhile; their results wait in the outbox.
        """
        delay = RECONNECT_BASE_S
        while True:
            try:
                await self.client.reconnect()
                await self._register()
                break
            except Forbidden as exc:
                await self.client.close()  # let go of the routing id: its holder needs it
                self._lost_id(exc)
                return
            except EventBusError as exc:
                log.warning("collector_id=%s: reconnect failed: %s; retrying", self.collector_id, exc)
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, RECONNECT_MAX_S)
        log.info("collector_id=%s: reconnected", self.collector_id)
        self._resend()

    def _lost_id(self, exc: Forbidden) -> None:
        """Another process took our collector id over (we were silent too long): stop serving it."""
        log.error("collector_id=%s: the daemon gave our id to another process (%s); stopping", self.collector_id, exc)
        self.superseded = Forbidden(f"collector id {self.collector_id!r} was taken over by another process: {exc}")
        self._stop.set()

    def daemon_gone(self) -> str | None:
        """Why no daemon listens (its socket removed, connection refused), or None if one does."""
        try:
            self._connector.probe(self.client.path)
        except DaemonUnreachable as exc:
            return exc.message
        return None

    async def leave_request(self, topic: str) -> bool:
        """Best effort while shutting down: a daemon that is gone (socket removed) is not waited for."""
        what = _LEAVING.get(topic, topic)
        gone = self.daemon_gone()
        if gone is not None:
            log.info("collector_id=%s: eventbusd is gone (%s); stopping without %s", self.collector_id, gone, what)
            return False
        try:
            await self.client.request(topic, {"collector_id": self.collector_id}, timeout=min(self._timeout, 2.0))
        except EventBusError as exc:
            log.warning("collector_id=%s: %s failed: %s", self.collector_id, what, exc)
            return False
        return True


#: what each request a leaving collector makes means to the person reading its log
_LEAVING = {
    m.DRAIN: "telling eventbusd to stop sending it tasks",
    m.DEREGISTER: "deregistering",
}

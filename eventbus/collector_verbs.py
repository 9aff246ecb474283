"""The daemon's verbs about collectors: what collectors send (register, claim, heartbeat, attempt
events, drain, deregister) and what admins ask of them (drain, undrain, stop).

Which process owns a collector id is decided here (:class:`~eventbus.ownership.Ownership`):
only the process that registered a collector acts for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from distributor import Action, CollectorCapability, TaskDistributor
from eventbus import messages as m
from eventbus.errors import Forbidden, InvalidRequest
from eventbus.ownership import Ownership, same_process
from eventbus.peers import Peer
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope

log = logging.getLogger(__name__)

#: a verb: (routing id, request, the topic's last segment for per-collector topics) -> reply body or None
Handler = Callable[[bytes, Envelope, str], "dict[str, Any] | None"]


class CollectorVerbs:
    """Handlers of the collector verbs, over the service's distributor and outbound path."""

    def __init__(
        self,
        distributor: TaskDistributor,
        *,
        settings: Callable[[], DaemonSettings],
        clock: Callable[[], float],
        sender: Callable[[], Peer],
        perform: Callable[[Iterable[Action]], None],
        to_collector: Callable[[str, str, dict[str, Any]], bool],
    ) -> None:
        self._d = distributor
        self._settings = settings
        self._clock = clock
        self._sender = sender
        self._perform = perform
        self._to_collector = to_collector
        self.owners = Ownership(settings().heartbeat_interval_s, self._silence)

    def exact(self) -> dict[str, Handler]:
        """Handlers by their full topic."""
        return {
            m.ADMIN_DRAIN: self._drain,
            m.ADMIN_UNDRAIN: self._undrain,
            m.ADMIN_STOP: self._stop,
            m.REGISTER: self._register,
            m.DEREGISTER: self._deregister,
            m.DRAIN: self._drain_self,
            m.CLAIM: self._claim,
        }

    def per_collector(self) -> dict[str, Handler]:
        """Handlers of topics ending in the sender's collector id, by the topic before it."""
        return {m.HEARTBEAT_PREFIX: self._heartbeat, m.RESULT_PREFIX: self._attempt_event}

    # ---- what collectors send --------------------------------------------

    def _register(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        capability = m.parse(CollectorCapability, env.body)
        cid = capability.collector_id
        if self.owners.register(cid, identity, self._sender()) and self._d.registry.find(cid) is not None:
            # another process held the id and is gone: its attempts go back to the queue
            self._perform(self._d.deregister(cid, self._clock()))
        self._perform(self._d.register(capability, self._clock()))
        log.info(
            "collector_id=%s registered: type=%s operations=%s max_concurrent_tasks=%d",
            capability.collector_id,
            capability.collector_type,
            ",".join(capability.supported_operations),
            capability.max_concurrent_tasks,
        )
        settings = self._settings()
        return {
            "heartbeat_interval_s": settings.heartbeat_interval_s,
            "heartbeat_timeout_s": settings.heartbeat_timeout_s,
            "max_message_size": settings.max_message_size,
        }

    def _silence(self, collector_id: str) -> float | None:
        state = self._d.registry.find(collector_id)
        return None if state is None else self._clock() - state.last_heartbeat

    def _claim(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        """Whether a collector id is free to register, asked before connecting with it as routing id."""
        cid = m.parse(m.CollectorIdBody, env.body).collector_id
        holder = self.owners.holder(cid)
        if holder is None or same_process(holder.peer, self._sender()):
            return {"collector_id": cid, "free": True}
        return {
            "collector_id": cid,
            "free": False,
            "pid": holder.peer.pid,
            "uid": holder.peer.uid,
            "silent_s": holder.silent_s,
            "retry_after_s": self._settings().heartbeat_interval_s,
        }

    def _owned(self, identity: bytes, collector_id: str) -> None:
        """Only the process that registered a collector acts for it."""
        self.owners.check(collector_id, identity, self._sender())

    def _deregister(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.CollectorIdBody, env.body)
        self._owned(identity, body.collector_id)
        self._perform(self._d.deregister(body.collector_id, self._clock()))
        self.owners.forget(body.collector_id)
        log.info("collector_id=%s deregistered", body.collector_id)
        return {"collector_id": body.collector_id}

    def _drain_self(self, identity: bytes, env: Envelope, arg: str) -> dict[str, Any]:
        """A collector draining itself (SIGTERM): only for the collector the connection registered."""
        self._owned(identity, m.parse(m.CollectorIdBody, env.body).collector_id)
        return self._drain(identity, env, arg)

    def _heartbeat(self, identity: bytes, env: Envelope, collector_id: str) -> dict[str, Any]:
        m.parse(m.HeartbeatBody, env.body)
        self._owned(identity, collector_id)
        self._perform(self._d.heartbeat(collector_id, self._clock()))
        return {"at": self._clock()}

    def _attempt_event(self, identity: bytes, env: Envelope, collector_id: str) -> dict[str, Any]:
        event = m.parse(m.AttemptEvent, env.body)
        self._owned(identity, collector_id)
        now = self._clock()
        d = self._d
        if event.event == "accepted":
            actions = d.accepted(collector_id, event.task_id, event.attempt, now)
        elif event.event == "rejected":
            actions = d.reject(collector_id, event.task_id, event.attempt, now)
        elif event.event == "progress":
            actions = d.progress(collector_id, event.task_id, event.attempt, event.fraction or 0.0, event.message, now)
        else:
            result = event.result
            if result is None or result.task_id != event.task_id or result.attempt != event.attempt:
                raise InvalidRequest("a 'result' event needs a result for the same task_id and attempt")
            if result.collector_id != collector_id:
                raise Forbidden(f"result names collector {result.collector_id!r}, sent as {collector_id!r}")
            # the frame size stands for the result's size: the history is bounded by it
            actions = d.complete(result, now, size=env.weight)
        self._perform(actions)
        return {"task_id": event.task_id}

    # ---- what admins ask -------------------------------------------------

    def _drain(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.CollectorIdBody, env.body)
        self._perform(self._d.drain(body.collector_id, self._clock()))
        return self._info(body.collector_id)

    def _undrain(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.CollectorIdBody, env.body)
        self._perform(self._d.undrain(body.collector_id, self._clock()))
        return self._info(body.collector_id)

    def _stop(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        """Ask one collector (or all) to drain and exit: ``control.shutdown[.<id>]``."""
        body = m.parse(m.StopBody, env.body)
        if body.collector_id is not None:
            self._d.registry.get(body.collector_id)  # UnknownCollector if not registered
            targets = [body.collector_id]
        else:
            targets = [c.collector_id for c in self._d.registry]
        for cid in targets:
            topic = m.SHUTDOWN if body.collector_id is None else f"{m.SHUTDOWN}.{cid}"
            self._to_collector(cid, topic, {})
        log.info("asked %d collectors to stop: %s", len(targets), ",".join(targets))
        return {"collectors": targets}

    def _info(self, collector_id: str) -> dict[str, Any]:
        return self._d.registry.get(collector_id).info(self._clock()).model_dump()

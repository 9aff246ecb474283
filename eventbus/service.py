"""The daemon's request handling: frames in, distributor events, actions out.

This is the thin shell around :class:`distributor.TaskDistributor`: it
decodes and validates what peers send, feeds the distributor with the time,
and carries out the actions it returns (dispatch, cancel, publish, answer
waiters). It owns no socket itself; it sends through a ``send(identity,
bytes)`` callable, so tests can drive it without ZeroMQ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from distributor import (
    Action,
    Cancel,
    Dispatch,
    DistributorConfig,
    Finished,
    Publish,
    TaskDistributor,
    TaskRequest,
    TaskState,
    make_strategy,
)
from distributor.actions import Spill
from distributor.models import TaskInfo
from distributor.spill import REMOTE
from distributor.strategies import STRATEGIES
from distributor.tasks import idempotency_scope
from eventbus import messages as m
from eventbus import report
from eventbus._version import __version__
from eventbus.collector_verbs import CollectorVerbs, Handler
from eventbus.errors import (
    EventBusError,
    Forbidden,
    InvalidRequest,
    ProtocolError,
    ShuttingDown,
    StorageUnavailable,
    TooLarge,
    UnknownTask,
    UnknownVerb,
)
from eventbus.fanout import Fanout
from eventbus.limit_verbs import LimitVerbs
from eventbus.metrics_http import load_exporter
from eventbus.peers import UNKNOWN, AccessPolicy, Peer
from eventbus.replies import encode_reply, item_frames, task_page
from eventbus.schedule_verbs import ScheduleVerbs, host_zone
from eventbus.settings import DaemonSettings
from eventbus.store import Definition, NullStore, Recovered, Store, rows
from eventbus.waiters import BatchWait, Waiter, Waiters
from eventbus.wire import Envelope, Kind, decode, decode_batch, encode, error_body, is_batch, peek_id, weigh

if TYPE_CHECKING:
    from eventbus.cluster import Cluster
    from eventbus.metrics import Exporter

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], bool]

#: what a dispatch adds to a submitted task: defaults filled in, attempt, topic
DISPATCH_OVERHEAD = 1024


class Service:
    """Everything the daemon does with a message, independent of the socket that carried it."""

    def __init__(
        self,
        settings: DaemonSettings,
        send: Send,
        *,
        loop: asyncio.AbstractEventLoop,
        policy: AccessPolicy,
        transport_counters: Callable[[], dict[str, int]] = dict,
        transport_pending: Callable[[], tuple[int, int]] = lambda: (0, 0),
        batch_peer: Callable[[bytes], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self._loop = loop
        self.store: Store = store if store is not None else NullStore()
        self._send = send
        self._clock = clock
        self.started_at = clock()
        self.distributor = TaskDistributor(_distributor_config(settings), strategy=make_strategy(settings.strategy))
        self.fanout = Fanout(send, clock, settings.max_message_size)
        self.distributor.events = False  # built only while somebody subscribes
        #: this daemon's part in a cluster (set by the daemon when clustering is on)
        self.cluster: Cluster | None = None
        if settings.cluster_nats_url:  # in a cluster only the leader runs schedules; none is known yet
            self.distributor.set_schedules_active(False, clock())
        #: with a durable store, what a loop iteration changed is committed before anything it caused is sent
        self._journal = self.distributor.journal = self.store.durable
        #: frames caused by changes not committed yet: sent once the commit holding those changes is done
        self._held: list[tuple[bytes, bytes]] = []
        #: definitions (runtime limits) changed and not handed to the store yet
        self._definitions: list[Definition] = []
        self._flush_due = False
        self.bad_frames = 0
        self.forbidden = 0
        self.undelivered = 0
        self._policy = policy
        self._transport_counters = transport_counters
        self._transport_pending = transport_pending
        #: tells the transport that a peer reads batch frames (it spoke protocol version 2)
        self._batch_peer = batch_peer
        #: error replies sent, by error code
        self.rejected: Counter[str] = Counter()
        self._exporter: Exporter | None = None
        #: credentials of the connection whose message is being handled
        self._sender = UNKNOWN
        collectors = CollectorVerbs(
            self.distributor,
            settings=lambda: self.settings,
            clock=clock,
            sender=lambda: self._sender,
            perform=self.perform,
            to_collector=self._to_collector,
        )
        self.owners = collectors.owners
        self.limits = LimitVerbs(self.distributor, clock=clock, perform=self.perform, define=self._define)
        self.limits.configure(settings)
        self.schedules = ScheduleVerbs(
            self.distributor,
            clock=clock,
            perform=self.perform,
            max_message_size=settings.max_message_size,
            timezone=settings.timezone or host_zone(),
            stored_state=self._stored_state,
        )
        self._waiters = Waiters(loop, self._answer, self._report_batch)
        #: set by :meth:`close`: the daemon is stopping and takes no new work
        self.closing = False
        self._max = settings.max_message_size
        self._exact: dict[str, Handler] = {
            m.SUBMIT: self._submit,
            m.BATCH: self._batch,
            m.GET: self._get,
            m.CANCEL: self._cancel,
            m.LIST: self._list,
            m.STRATEGY: self._strategy,
            m.STATUS: self._status,
            m.CLUSTER: self._cluster,
            m.COLLECTORS: self._collectors,
            m.STATS: self._stats,
            m.REPORT: report.handler(self.distributor, self.started_at, self._clock),
            m.METRICS: self._metrics,
            m.SUBSCRIBE: self._subscribe,
            m.UNSUBSCRIBE: self._unsubscribe,
            **collectors.exact(),
            **self.limits.exact(),
            **self.schedules.exact(),
        }
        # topics ending in the sender's collector id
        self._per_collector: dict[str, Handler] = collectors.per_collector()

    # ---- inbound -------------------------------------------------------

    def on_message(self, identity: bytes, frames: list[bytes], peer: Peer) -> None:
        """Handle one inbound message (identity split off) from a connection with ``peer``'s credentials."""
        self._sender = peer
        if len(frames) != 1:
            self._bad_frame(
                identity,
                ProtocolError(
                    f"expected 1 frame after the identity, got {len(frames)}", correlation_id=peek_id(frames[0])
                ),
            )
            return
        data = frames[0]
        try:
            if is_batch(data):
                items = decode_batch(data, self._max)
            else:
                env = decode(data, self._max)
                if env.version >= 2:
                    self._batch_peer(identity)
                self._handle(identity, env)
                return
        except ProtocolError as exc:
            self._bad_frame(identity, exc)
            return
        if any(isinstance(item, Envelope) and item.version >= 2 for item in items):
            self._batch_peer(identity)  # a batch of garbage (or of version-1 envelopes) declares nothing
        for item in items:  # each envelope of a batch counts alone
            if isinstance(item, ProtocolError):
                self._bad_frame(identity, item)
            else:
                self._handle(identity, item)

    def _handle(self, identity: bytes, env: Envelope) -> None:
        peer = self._sender
        if env.kind is not Kind.REQUEST:
            self._reply_error(identity, env, InvalidRequest(f"the daemon only takes requests, not {env.kind.value}"))
            return
        try:
            self._authorize(peer, env)
            if self.closing and env.topic in _CLOSED_VERBS:
                raise ShuttingDown(f"the daemon is shutting down and takes no new work ({env.topic})")
            handler, arg = self._route(env.topic)
            body = handler(identity, env, arg)
        except EventBusError as exc:
            self._reply_error(identity, env, exc)
            return
        if body is not None and env.id:  # a request without an id wants no reply (errors are still sent)
            self._reply(identity, env.id, env.topic, body)

    def _authorize(self, peer: Peer, env: Envelope) -> None:
        """Refuse (``forbidden``) peers the policy does not serve, and admin verbs to non-admins."""
        if not peer.served:  # logged once per connection by the ZAP handler, then counted only
            self.forbidden += 1
            raise Forbidden(f"uid {peer.uid} is not allowed to use this daemon ({env.topic})")
        admin = env.topic in _ADMIN_VERBS or (env.topic == m.STRATEGY and env.body.get("name") is not None)
        if admin and not self._policy.is_admin(peer):
            self._refuse(peer, env.topic, "may not use admin verbs")

    def _refuse(self, peer: Peer, topic: str, why: str) -> NoReturn:
        self.forbidden += 1
        log.warning("refused %s from %s: uid %d %s", topic, peer.describe(), peer.uid, why)
        raise Forbidden(f"uid {peer.uid} {why} ({topic})")

    def _route(self, topic: str) -> tuple[Handler, str]:
        handler = self._exact.get(topic)
        if handler is not None:
            return handler, ""
        prefix, _, last = topic.rpartition(".")
        handler = self._per_collector.get(prefix)
        if handler is None:
            raise UnknownVerb(f"no handler for topic {topic!r}")
        return handler, last

    def _bad_frame(self, identity: bytes, exc: ProtocolError) -> None:
        self.bad_frames += 1
        log.warning("bad frame from peer %r: %s (%s)", identity, exc.message, exc.code)
        self._reply_error(identity, Envelope(Kind.ERROR, exc.correlation_id, "control.error"), exc)

    # ---- outbound ------------------------------------------------------

    def _reply(self, identity: bytes, corr: str, topic: str, body: dict[str, Any]) -> None:
        try:
            data = encode_reply(corr, topic, body, self._max)
        except EventBusError as exc:
            self._reply_error(identity, Envelope(Kind.REQUEST, corr, topic), exc)
            return
        self._deliver(identity, data)

    def _deliver(self, identity: bytes, data: bytes) -> bool:
        """Hand a frame to the transport; one it drops (peer gone, or its queue over budget) is counted.

        A frame caused by a change the store has not committed yet (a reply with a new task id, a
        dispatch with a new attempt number, the answer to a finished task) waits for that commit.
        """
        if self._journal and self._uncommitted():
            self._held.append((identity, data))
            return True
        if self._send(identity, data):
            return True
        self.undelivered += 1
        return False

    def _uncommitted(self) -> bool:
        return self.distributor.has_changes or bool(self._definitions)

    def _define(self, kind: str, name: str, body: bytes | None) -> None:
        """Keep (None: forget) what an operator defined at runtime, with the next commit (with a store)."""
        if self._journal:
            self._definitions.append((kind, name, body))
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_due and self._uncommitted():
            self._flush_due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand what changed to the store; the frames it caused go out once it is committed (group commit).

        Runs once per loop iteration that changed something, after the callbacks that changed it, so one
        commit covers every submission, dispatch and result of the iteration.
        """
        self._flush_due = False
        held, self._held = self._held, []
        batch = rows.batch(self.distributor.take_changes())
        batch.definitions += self._definitions
        self._definitions = []
        self.store.commit(batch, lambda: self._send_held(held))

    def _send_held(self, held: list[tuple[bytes, bytes]]) -> None:
        for identity, data in held:
            if not self._send(identity, data):
                self.undelivered_later(identity, 1)

    def restore(self, recovered: Recovered) -> None:
        """Take back what the store kept (at startup, before any peer is served)."""
        actions = self.distributor.restore(
            recovered.tasks,
            self._clock(),
            parents=recovered.parents,
            last_serial=recovered.last_serial,
            collectors=recovered.collectors,
        )
        self.perform(actions)
        self.limits.restore(recovered.definitions)
        self.schedules.restore(recovered.definitions.get(rows.SCHEDULE, {}), self.settings)

    def _stored_state(self, task_id: str) -> str | None:
        """The state of a finished task kept in the store only (None: not there either)."""
        info = self.store.task(task_id)
        return None if info is None else info.state.value

    def _reply_error(self, identity: bytes, env: Envelope, exc: EventBusError) -> None:
        self.rejected[exc.code] += 1
        self._deliver(identity, encode(Envelope(Kind.ERROR, env.id, env.topic, error_body(exc.code, exc.message))))

    def _publish(self, identity: bytes, topic: str, body: dict[str, Any]) -> bool:
        try:
            data = encode(Envelope(Kind.PUBLISH, "", topic, body), self._max)
        except EventBusError as exc:
            log.error("cannot publish on %s: %s", topic, exc)
            return False
        return self._deliver(identity, data)

    def perform(self, actions: Iterable[Action]) -> None:
        """Carry out the distributor's actions in order (and those that carrying them out causes)."""
        work = deque(actions)
        while work:
            action = work.popleft()
            if isinstance(action, Publish):
                self.fanout.publish(action.topic, action.body)
            elif isinstance(action, Dispatch) and not self._dispatch(action):
                # undeliverable: treat the collector as dead until it heartbeats again,
                # so its attempts are redelivered now instead of after a timeout
                work.extend(self.distributor.suspect(action.collector_id, self._clock()))
            elif isinstance(action, Cancel):
                if action.collector_id != REMOTE:
                    self._to_collector(
                        action.collector_id,
                        f"{m.CANCEL_PREFIX}.{action.collector_id}",
                        {"task_id": action.task_id, "attempt": action.attempt, "reason": action.reason},
                    )
                elif self.cluster is not None:  # (a spilled attempt: whichever host runs it stops it)
                    self.cluster.cancel(action)
            elif isinstance(action, Finished):
                self._waiters.finished(action.task_id)
                if self.cluster is not None:
                    self.cluster.finished(action.task_id)
            elif isinstance(action, Spill):
                if self.cluster is not None:
                    self.cluster.spill(action)
                else:  # (spilling is on only in a cluster)
                    work.extend(
                        self.distributor.remote_unsent(action.task.task_id or "", action.attempt, self._clock())
                    )
        if self._journal:
            self._schedule_flush()

    def _dispatch(self, action: Dispatch) -> bool:
        topic = f"{m.TASK_PREFIX}.{action.collector_type}.{action.collector_id}"
        body = {"task": action.task.model_dump(), "attempt": action.attempt, "deadline": action.deadline}
        if self._to_collector(action.collector_id, topic, body):
            return True
        log.warning(
            "dispatch of task_id=%s attempt=%d to collector_id=%s was not delivered; the collector is "
            "suspended until it heartbeats again and its attempts are redelivered",
            action.task.task_id,
            action.attempt,
            action.collector_id,
        )
        return False

    def _to_collector(self, collector_id: str, topic: str, body: dict[str, Any]) -> bool:
        identity = self.owners.route(collector_id)
        return identity is not None and self._publish(identity, topic, body)

    def tick(self) -> None:
        """Fire due timers (timeouts, deadlines, retries, heartbeat checks) and look after subscribers."""
        self.perform(self.distributor.tick(self._clock()))
        self.fanout.upkeep(self.settings.heartbeat_interval_s / 2)

    def close(self) -> None:
        """Stop taking submissions and registrations, and dispatching: every collector is drained.

        Running attempts go on and report their results. Each collector is told
        (``control.shutdown.<id>`` with ``daemon_stopping``) that the daemon, not
        the collector, is going: it finishes and reports what runs, then
        reconnects to the next daemon instead of leaving (under systemd the
        collector units stop with the daemon's anyway).
        """
        self.closing = True
        for cid in [c.collector_id for c in self.distributor.registry]:
            self.perform(self.distributor.drain(cid, self._clock()))
            self._to_collector(cid, f"{m.SHUTDOWN}.{cid}", {"daemon_stopping": True})

    def refuse_waiters(self) -> int:
        """Answer every request still waiting on a task with ``shutting_down``; returns how many there were."""
        taken = self._waiters.take_all()
        for task_id, w in taken:
            what = "the tasks of this batch" if isinstance(w, BatchWait) else f"task {task_id}"
            exc = ShuttingDown(f"the daemon stopped before {what} finished: its fate is unknown")
            self._reply_error(w.identity, Envelope(Kind.REQUEST, w.correlation_id, w.topic), exc)
        return len(taken)

    def undelivered_later(self, identity: bytes, count: int) -> None:
        """The transport could not deliver ``count`` messages it had taken for ``identity``.

        To a collector, those may be dispatches: it is treated as dead until it heartbeats
        again, so its attempts are redelivered now instead of after a timeout.
        """
        self.undelivered += count
        self.fanout.lost(identity, count)
        cid = identity.decode(errors="replace")
        if self.owners.route(cid) == identity:
            log.warning("messages to collector_id=%s were not delivered; it is suspended until it heartbeats", cid)
            self.perform(self.distributor.suspect(cid, self._clock()))

    def peer_gone(self, identity: bytes) -> None:
        """The transport reports a peer as unreachable: forget its subscriptions."""
        self.fanout.remove(identity)
        self.distributor.events = len(self.fanout) > 0

    # ---- client verbs --------------------------------------------------

    def _submit(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any] | None:
        body, wait = env.body, None
        if "wait" in body or "wait_s" in body:
            body = dict(body)
            wait = m.parse(m.SubmitWait, {k: body.pop(k) for k in m.SUBMIT_WAIT_KEYS if k in body})
        task_id, request, first = self._take(body, env.size, env.weight)
        if wait is None or not wait.wait:
            return {"task_id": task_id} if first is None else {"task_id": task_id, **first}
        return self._hold(identity, env, task_id, wait.wait_s, request.operation)

    def _take(self, body: dict[str, Any], size: int, weight: int) -> tuple[str, TaskRequest, dict[str, Any] | None]:
        """Validate and submit one task (``size`` bytes on the wire, ``weight`` in memory).

        Returns its id, the request, and for a resubmission of an idempotency key
        ``{"duplicate": True, "state": ...}`` of the first task (nothing is submitted then).
        """
        if size + DISPATCH_OVERHEAD > self._max:
            raise TooLarge(
                f"a task of {size} bytes leaves no room for the dispatch envelope "
                f"(limit {self._max} bytes, overhead up to {DISPATCH_OVERHEAD})"
            )
        request = m.parse(TaskRequest, body)
        now, owner = self._clock(), self._sender.uid
        if request.idempotency_key is not None:
            first = self._first(request.idempotency_key, owner, now)
            if first is not None:
                return first.task_id, request, {"duplicate": True, "state": first.state.value}
        if not self.store.available:
            raise StorageUnavailable(
                f"the state database cannot be written ({self.store.status().get('last_error')}); "
                "submissions are refused until it can"
            )
        task_id, actions = self.distributor.submit(request, now, owner=owner, size=weight)
        self.perform(actions)
        return task_id, request, None

    def _first(self, key: str, owner: int | None, now: float) -> TaskInfo | None:
        """The task ``owner`` submitted with idempotency ``key`` within idempotency_ttl_s, held or kept."""
        task_id = self.distributor.find_idempotent(key, owner, now)
        if task_id is not None:
            return self.distributor.get(task_id, now)
        return self.store.keyed(idempotency_scope(owner, key), now - self.settings.idempotency_ttl_s)

    def _view(self, task_id: str) -> TaskInfo:
        """A task's view, from memory or else from the store; :class:`UnknownTask` if neither has it."""
        try:
            return self.distributor.get(task_id, self._clock())
        except UnknownTask:
            stored = self.store.task(task_id)
            if stored is None:
                raise
            return stored

    def _state(self, task_id: str) -> TaskState:
        try:
            return self.distributor.state(task_id)
        except UnknownTask:
            return self._view(task_id).state

    def _batch(self, identity: bytes, env: Envelope, _: str) -> None:
        """Submit each spec on its own: one that fails is answered with its error and index, the rest are taken."""
        batch = m.parse(m.BatchBody, env.body)
        items: list[dict[str, Any]] = []
        taken: dict[str, int] = {}
        for index, spec in enumerate(batch.tasks):
            try:
                if not isinstance(spec, dict):
                    raise InvalidRequest(f"a task spec must be a map, got {type(spec).__name__}")
                task_id, request, first = self._take(spec, *weigh(spec))
            except EventBusError as exc:
                self.rejected[exc.code] += 1
                items.append({"index": index, "error": error_body(exc.code, f"tasks[{index}]: {exc.message}")})
                continue
            item: dict[str, Any] = {"index": index, "task_id": task_id, **(first or {})}
            if batch.wait and not self.distributor.registry.offered(request.operation):
                item["offered"] = False
            items.append(item)
            taken[task_id] = index
        if env.id:  # the items in as many replies as the frame limit needs, each with what is still to come
            self._send_items(identity, env.id, env.topic, items, len(taken) if batch.wait else 0)
        if batch.wait and taken and env.id:
            self._wait_batch(BatchWait(identity, env.id, env.topic, taken), batch.wait_s)

    def _wait_batch(self, batch: BatchWait, wait_s: float) -> None:
        """Report the batch's tasks as they become final (those final already at once), or all now past the limit."""
        for task_id, index in list(batch.pending.items()):
            if self._state(task_id).terminal:
                batch.ready.append((index, task_id))
                del batch.pending[task_id]
        if not self._waiters.add_batch(batch, wait_s):
            batch.ready.extend((index, task_id) for task_id, index in batch.pending.items())
            batch.pending.clear()
        self._waiters.schedule(batch)

    def _report_batch(self, batch: BatchWait, ready: list[tuple[int, str]]) -> None:
        """Send ``ready`` tasks' TaskInfo (in as few replies as fit the frame limit), each tagged with its index."""
        items: list[dict[str, Any]] = []
        for index, task_id in ready:
            try:
                items.append({"index": index, "task": self._view(task_id).model_dump()})
            except EventBusError as exc:  # dropped from the history since
                items.append({"index": index, "task_id": task_id, "error": error_body(exc.code, exc.message)})
        self._send_items(batch.identity, batch.correlation_id, batch.topic, items, len(batch.pending))

    def _send_items(self, identity: bytes, corr: str, topic: str, items: list[dict[str, Any]], remaining: int) -> None:
        for data in item_frames(corr, topic, items, remaining, self._max):
            self._deliver(identity, data)

    def _hold(
        self, identity: bytes, env: Envelope, task_id: str, wait_s: float, operation: str | None = None
    ) -> dict[str, Any] | None:
        """A TaskInfo to answer at once, or None once the request waits for the task to be final.

        With ``operation``, a task no available collector offers is answered at once with
        ``offered: false``, so the caller can say so rather than wait in silence.
        """
        if self._state(task_id).terminal:
            return self._view(task_id).model_dump()
        if operation is not None and not self.distributor.registry.offered(operation):
            return {**self.distributor.get(task_id, self._clock()).model_dump(), "offered": False}
        if not self._waiters.add(task_id, Waiter(identity, env.id, env.topic), wait_s):
            return self.distributor.get(task_id, self._clock()).model_dump()  # too many wait already: the state now
        return None  # answered when the task finishes or the wait expires

    def _get(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any] | None:
        body = m.parse(m.GetBody, env.body)
        if not body.wait_s:
            try:
                return self._view(body.task_id).model_dump()
            except UnknownTask as exc:  # in a cluster another daemon may have had it: answered once looked up
                answer = partial(self._found, identity, env, exc)
                if self.cluster is None or not self.cluster.lookup(body.task_id, answer):
                    raise
                return None
        return self._hold(identity, env, body.task_id, body.wait_s)

    def _found(self, identity: bytes, env: Envelope, missing: UnknownTask, info: TaskInfo | None) -> None:
        """Answer a task looked up in the cluster's results: its view, or the ``not_found`` it was here."""
        if info is None:
            self._reply_error(identity, env, UnknownTask(f"{missing.message}; nor has the cluster's results bucket it"))
        elif env.id:
            self._reply(identity, env.id, env.topic, info.model_dump())

    def _answer(self, waiter: Waiter, task_id: str) -> None:
        try:
            body = self._view(task_id).model_dump()
        except EventBusError as exc:
            self._reply_error(waiter.identity, Envelope(Kind.REQUEST, waiter.correlation_id, waiter.topic), exc)
            return
        self._reply(waiter.identity, waiter.correlation_id, waiter.topic, body)

    def _cancel(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.TaskIdBody, env.body)
        owner, sender = self.distributor.owner(body.task_id), self._sender
        if owner != sender.uid and not self._policy.is_admin(sender):
            by = "the daemon (a schedule's run)" if owner is None else f"uid {owner}"
            self._refuse(sender, env.topic, f"may not cancel a task submitted by {by}")
        self.perform(self.distributor.cancel(body.task_id, self._clock()))
        return self.distributor.get(body.task_id, self._clock()).model_dump()

    def _list(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.ListBody, env.body)
        after = None if body.after is None else int(body.after)
        found = self.distributor.tasks_before(after, body.state, body.operation, self._clock())
        if self.store.durable and (body.state is None or body.state.terminal):
            kept = self._kept_before(after, body.state, body.operation, body.limit + 1)
            found = heapq.merge(found, kept, key=lambda item: -item[0])
        return task_page(found, body.limit, env.id, env.topic, self._max)

    def _kept_before(
        self, cursor: int | None, state: TaskState | None, operation: str | None, step: int
    ) -> Iterator[tuple[int, TaskInfo]]:
        """Finished tasks only the store still has (older than ``cursor``), newest first, read a page at a time."""
        while True:
            page = self.store.older_than(cursor, state, operation, step)
            for serial, info in page:
                if not self.distributor.holds(info.task_id):
                    yield serial, info
            if len(page) < step:
                return
            cursor = page[-1][0]

    def _strategy(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.StrategyBody, env.body)
        if body.name is not None and body.name != self.distributor.strategy.name:
            self.distributor.set_strategy(make_strategy(body.name))
            log.info("routing strategy is now %s", body.name)
        return {"strategy": self.distributor.strategy.name, "strategies": sorted(STRATEGIES)}

    def _status(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        snap = self.distributor.snapshot(self._clock())
        return {
            "version": __version__,
            "uptime_s": self._clock() - self.started_at,
            "strategy": self.distributor.strategy.name,
            "collectors": snap["collectors"],
            "active_collectors": snap["active_collectors"],
            "tasks_queued": snap["tasks_queued"],
            "tasks_in_flight": snap["tasks_in_flight"],
            "durable": self.store.durable,
            "durability": self.store.durability,
            "storage_available": self.store.available,
            "socket": str(self.settings.socket),
            "cluster": self._cluster_state(),
        }

    def _cluster_state(self) -> dict[str, Any]:
        if self.cluster is None:
            return {"enabled": False}
        view = self.cluster.view()
        return {key: view[key] for key in ("enabled", "name", "node", "mode", "connected", "leader", "last_error")}

    def _cluster(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return {"enabled": False} if self.cluster is None else self.cluster.view()

    def metrics(self) -> Exporter:
        """The daemon's Prometheus exporter, made on first use; :class:`MetricsUnavailable` without the extra."""
        if self._exporter is None:
            self._exporter = load_exporter(self, self._transport_pending)
        return self._exporter

    def _metrics(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return {"text": self.metrics().exposition().decode()}

    def _collectors(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return {"collectors": [c.model_dump() for c in self.distributor.collectors(self._clock())]}

    def _stats(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """What ``control.admin.stats`` answers (also what the metrics are read from)."""
        snap = self.distributor.snapshot(self._clock())
        snap["bad_frames"] = self.bad_frames
        snap["forbidden"] = self.forbidden
        snap.update(self._transport_counters())
        snap["messages_undelivered"] = self.undelivered
        snap["subscribers"] = len(self.fanout)
        snap["events_dropped"] = self.fanout.dropped
        snap["waiting_requests"] = len(self._waiters)
        snap.update({f"store_{key}": value for key, value in self.store.status().items()})
        snap["limits"] = self.limits.views()
        return snap

    def _subscribe(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.SubscribeBody, env.body)
        self.fanout.add(identity, body.patterns)
        self.distributor.events = True
        return {"patterns": body.patterns}

    def _unsubscribe(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.SubscribeBody, env.body)
        self.fanout.remove(identity, body.patterns)
        self.distributor.events = len(self.fanout) > 0
        return {"patterns": body.patterns}


#: verbs refused with ``shutting_down`` once the daemon is stopping: they would start new work
_CLOSED_VERBS = frozenset({m.SUBMIT, m.BATCH, m.REGISTER, m.ADMIN_UNDRAIN})

#: verbs only the daemon's uid, root and admin_uids may use (and strategy with a name)
_ADMIN_VERBS = frozenset(
    {
        m.ADMIN_DRAIN,
        m.ADMIN_UNDRAIN,
        m.ADMIN_STOP,
        m.LIMIT_SET,
        m.LIMIT_RM,
        m.SCHEDULE_ADD,
        m.SCHEDULE_PAUSE,
        m.SCHEDULE_RESUME,
        m.SCHEDULE_RM,
    }
)


def _distributor_config(settings: DaemonSettings) -> DistributorConfig:
    """The distributor's limits are daemon settings of the same names (defined once, in the settings)."""
    return DistributorConfig(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(DistributorConfig)})

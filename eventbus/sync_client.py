"""The blocking client of eventbusd, :class:`SyncClient`.

It speaks request/reply over a DEALER socket with correlation ids and
timeouts, and receives published events for the patterns it subscribed to.
ZeroMQ's exceptions become ours (:func:`eventbus._transport.zmq_errors`) on
the way out of every method that touches the socket.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import zmq

from distributor.models import CollectorInfo, TaskInfo
from eventbus import _requests as rq
from eventbus import messages as m
from eventbus._batch import Batch, Part
from eventbus._link import UNKNOWN_OUTCOME, SyncLink, TaskWait, not_back, reset_error
from eventbus._transport import RECONNECT_GRACE_S, Ids, dealer, probe, zmq_errors
from eventbus.errors import DaemonRestarted, DaemonUnreachable, EventBusError, RequestTimeout
from eventbus.paths import resolve_socket_path
from eventbus.wire import DEFAULT_MAX_MESSAGE_SIZE, DEPTH_HEADROOM, MAX_DEPTH, Envelope, Kind, decode, encode

T = TypeVar("T")


class SyncClient:
    """Blocking client. Not thread-safe: use one per thread.

    When the daemon goes away (stops or crashes), a request waiting for its
    answer fails at once with :class:`ConnectionReset`; a request made while
    the connection is down waits up to ``reconnect_grace`` seconds for a
    daemon to take it back, then fails with :class:`DaemonUnreachable`.

    >>> with SyncClient() as c:
    ...     info = c.wait(c.submit("echo", {"hello": 1}))
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        reconnect_grace: float = RECONNECT_GRACE_S,
    ) -> None:
        self.path = resolve_socket_path(socket)
        self.timeout = timeout
        self.reconnect_grace = min(reconnect_grace, timeout)
        self._max = max_message_size
        probe(self.path)
        self._ctx: zmq.Context[Any] = zmq.Context()
        try:
            with zmq_errors(self.path):
                self._sock = dealer(self._ctx, self.path, None, max_message_size)
                self._link = SyncLink(self._sock)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise
        self._closed = False
        self._ids = Ids()
        self._events: deque[tuple[str, dict[str, Any]]] = deque()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later requests fail at once with :class:`DaemonUnreachable`."""
        if self._closed:
            return
        self._closed = True
        try:
            with zmq_errors(self.path):
                self._link.close()
        except EventBusError:  # the socket is going either way
            pass
        finally:
            self._sock.close(linger=0)
            self._ctx.term()

    def _check_open(self) -> None:
        if self._closed:
            raise DaemonUnreachable(f"the connection to eventbusd at {self.path} is closed")

    def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the reply body; the daemon's errors are raised typed."""
        self._check_open()
        with zmq_errors(self.path):
            return self._request(topic, body, self.timeout if timeout is None else timeout)

    def _request(self, topic: str, body: dict[str, Any], limit: float) -> dict[str, Any]:
        self._ensure_link(min(self.reconnect_grace, limit))
        corr = self._ids.next()
        self._sock.send(encode(Envelope(Kind.REQUEST, corr, topic, body), self._max))
        deadline = time.monotonic() + limit
        while True:
            env = self._recv(deadline, f"the answer to {topic}", UNKNOWN_OUTCOME)
            if env is None:
                probe(self.path)
                raise RequestTimeout(f"no answer from eventbusd at {self.path} within {limit:g}s ({topic})")
            if env.kind is Kind.PUBLISH:
                if env.topic != m.SUBSCRIPTION_PING:
                    self._events.append((env.topic, env.body))
            elif env.id == corr:
                return rq.reply_body(env)
            # else: a late reply to an earlier request that timed out

    def _batch(self, batch: Batch, timeout: float) -> Iterator[int]:
        """Send every part of ``batch``, read their replies as they come, and yield each spec's index,
        in input order, once it is settled."""
        self._check_open()
        corr_part: dict[str, Part] = {}
        try:
            with zmq_errors(self.path):
                self._ensure_link(min(self.reconnect_grace, timeout))
                for part in batch.parts:
                    corr = self._ids.next()
                    corr_part[corr] = part
                    self._sock.send(encode(Envelope(Kind.REQUEST, corr, m.BATCH, part.body), self._max))
        except EventBusError as exc:
            for part in batch.parts:
                batch.fail(part, exc)
        for index in range(len(batch)):
            while not batch.settled(index):
                self._read_batch(batch, corr_part, timeout)
            yield index

    def _read_batch(self, batch: Batch, corr_part: dict[str, Part], timeout: float) -> None:
        """Read the next reply to one of ``batch``'s requests; a stream cut short marks its part failed."""
        open_parts = [p for p in corr_part.values() if not p.done]
        try:
            with zmq_errors(self.path):
                env = self._recv(time.monotonic() + timeout, f"the answers to {m.BATCH}", UNKNOWN_OUTCOME)
                if env is None:
                    probe(self.path)
                    raise RequestTimeout(f"no answer from eventbusd at {self.path} within {timeout:g}s ({m.BATCH})")
        except EventBusError as exc:
            for part in open_parts:
                batch.fail(part, exc)
            return
        if env.kind is Kind.PUBLISH:
            if env.topic != m.SUBSCRIPTION_PING:
                self._events.append((env.topic, env.body))
            return
        answered = corr_part.get(env.id)
        if answered is None or answered.done:
            return  # a late reply to an earlier request
        try:
            batch.take(answered, rq.reply_body(env))
        except EventBusError as exc:
            batch.fail(answered, exc)

    def submit_many(self, specs: Iterable[Mapping[str, Any]]) -> list[str | EventBusError]:
        """Submit many tasks in as few requests as fit; one result per spec, in order.

        As :meth:`Client.submit_many`.
        """
        batch = Batch(specs, wait=False, max_size=self._max)
        return [batch.submitted(index) for index in self._batch(batch, self.timeout)]

    def run_many(
        self, specs: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Iterator[TaskInfo | EventBusError]:
        """Submit many tasks and yield each one's final TaskInfo in input order (as :meth:`Client.run_many`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_s = rq.wait_chunk(deadline, time.monotonic())
        batch = Batch(specs, wait=True, wait_s=wait_s, max_size=self._max)
        for index in self._batch(batch, wait_s + self.timeout):
            outcome = batch.outcome(index)
            yield self._settle(batch, index, deadline) if outcome is None else outcome

    def _settle(self, batch: Batch, index: int, deadline: float | None) -> TaskInfo | EventBusError:
        """A task of a batch its replies left open: wait for it by id (its current state past ``deadline``)."""
        task_id = batch.slots[index].task_id
        left = None if deadline is None else deadline - time.monotonic()
        w = TaskWait(self.path, task_id, left, time.monotonic(), self.reconnect_grace)
        reset = batch.after_reset(index)
        if reset is not None:
            w.failed(reset)
        try:
            return self._wait(w)
        except RequestTimeout:
            return self.get(task_id)
        except (DaemonRestarted, DaemonUnreachable) as exc:
            return exc

    def map(
        self, operation: str, payloads: Iterable[Any], *, timeout: float | None = None, **fields: Any
    ) -> Iterator[TaskInfo]:
        """Run ``operation`` on each payload and yield the tasks in order (as :meth:`Client.map`)."""
        specs = ({**fields, "operation": operation, "payload": payload} for payload in payloads)
        for outcome in self.run_many(specs, timeout=timeout):
            if isinstance(outcome, EventBusError):
                raise outcome
            yield outcome

    def _call(self, call: rq.Call[T]) -> T:
        """Send one verb and return its result."""
        return call.parse(self.request(call.topic, call.body, call.timeout))

    def _ensure_link(self, within: float) -> None:
        """Return once the connection is up; :class:`DaemonUnreachable` with the cause if not within ``within`` s."""
        if not self._link.wait_up(within):
            probe(self.path)  # names the cause: no socket, connection refused
            raise not_back(self.path, within)
        self._link.dropped = False  # a drop before this request does not concern it

    def _recv(self, deadline: float, what: str, consequence: str) -> Envelope | None:
        """The next message, None at ``deadline``; :class:`ConnectionReset` once the connection dropped."""
        while True:
            # messages that arrived before the drop are still good: they are read first
            if self._link.dropped and not self._sock.poll(0, zmq.POLLIN):
                raise reset_error(self.path, what, consequence)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._sock in dict(self._link.poller.poll(int(remaining * 1000) + 1)):
                return decode(self._sock.recv(), 2 * self._max, MAX_DEPTH + DEPTH_HEADROOM)
            self._link.update()

    # ---- tasks ---------------------------------------------------------

    def submit(self, operation: str, payload: Any = None, **fields: Any) -> str:
        """Submit a task (fields as in TaskRequest) and return its id once it is queued."""
        return self._call(rq.submit(operation, payload, **fields))

    def get(self, task_id: str, wait_s: float | None = None) -> TaskInfo:
        """A task's state; with ``wait_s`` the daemon answers when it is final or after ``wait_s``."""
        return self._call(rq.get(task_id, wait_s, self.timeout))

    def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Block until the task is final; :class:`RequestTimeout` after ``timeout`` seconds.

        If the daemon goes away meanwhile, the wait asks again once a daemon takes the connection
        back and goes on if that daemon knows the task. Otherwise the task's fate is unknown:
        :class:`DaemonRestarted` if the new daemon does not know it, :class:`DaemonUnreachable` if
        none came back within ``reconnect_grace`` (and never later than ``timeout``).
        """
        return self._wait(TaskWait(self.path, task_id, timeout, time.monotonic(), self.reconnect_grace))

    def _wait(self, w: TaskWait) -> TaskInfo:
        task_id = w.task_id
        while True:
            try:
                within = w.relink_within(time.monotonic())
                if within is not None:
                    self._ensure_link(within)
                info = self.get(task_id, wait_s=w.chunk(time.monotonic()))
            except EventBusError as exc:
                w.failed(exc)
                continue
            final = w.got(info, time.monotonic())
            if final is not None:
                return final

    def run(
        self,
        operation: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_unoffered: Callable[[str], None] | None = None,
        **fields: Any,
    ) -> TaskInfo:
        """Submit a task and block until it is final: one request when it finishes within a minute.

        ``timeout`` as in :meth:`wait`, and so is a daemon restart meanwhile (the task id is chosen
        here when not given, so the wait can ask for it again). ``on_unoffered(task_id)`` is called
        when no live collector offers the operation (the task stays queued and the wait goes on).
        """
        w, call = TaskWait.run(
            self.path,
            operation,
            payload,
            fields,
            timeout=timeout,
            now=time.monotonic(),
            grace=self.reconnect_grace,
            request_timeout=self.timeout,
        )
        try:
            final = w.submitted(self._call(call), on_unoffered)
        except EventBusError as exc:
            w.failed(exc)  # a reset: submitted or not, ask the daemon that takes the connection back
            final = None
        return final if final is not None else self._wait(w)

    def cancel(self, task_id: str) -> TaskInfo:
        return self._call(rq.cancel(task_id))

    def tasks(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> list[TaskInfo]:
        """Known tasks, newest first, optionally filtered by state and operation (see :meth:`task_page`)."""
        return self.task_page(state, operation, limit, after=after).tasks

    def task_page(
        self, state: str | None = None, operation: str | None = None, limit: int = 100, *, after: str | None = None
    ) -> m.TaskPage:
        """Up to ``limit`` tasks older than the cursor ``after``, newest first, in as many requests as the
        frame limit takes; the page's ``next`` continues the listing (None: no task left)."""
        page, more = m.TaskPage(tasks=[], next=after), True
        while more:
            reply = self._call(rq.list_page(state, operation, limit - len(page.tasks), page.next))
            page, more = rq.next_page(page, reply, limit)
        return page

    # ---- admin ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._call(rq.status())

    def stats(self) -> dict[str, Any]:
        return self._call(rq.stats())

    def report(self) -> dict[str, Any]:
        """Completion-time percentiles per operation, collectors' utilization and success, errors by type."""
        return self._call(rq.report())

    def metrics(self) -> str:
        """The daemon's metrics in the Prometheus text format (:class:`MetricsUnavailable` without the extra)."""
        return self._call(rq.metrics())

    def collectors(self) -> list[CollectorInfo]:
        return self._call(rq.collectors())

    def offers(self, operation: str) -> bool:
        """Whether a live collector offers ``operation`` now (else its tasks wait in the queue)."""
        return rq.offers(self.collectors(), operation)

    def limits(self) -> list[dict[str, Any]]:
        """The rate limits in force: rate, max_in_flight, attempts under each, tokens, what it held, source."""
        return self._call(rq.limits())

    def set_limit(
        self, name: str, *, rate: str | None = None, max_in_flight: int | None = None, kind: str = "operation"
    ) -> dict[str, Any]:
        """Limit an operation (or, ``kind="collector_type"``, a collector type) at runtime: ``rate`` is
        ``N/PERIOD`` (``10/s``, ``100/60s``, ``5/m``); kept across restarts until :meth:`remove_limit`."""
        return self._call(rq.set_limit(kind, name, rate, max_in_flight))

    def remove_limit(self, name: str, *, kind: str = "operation") -> list[dict[str, Any]]:
        """Remove a runtime limit; the limits left in force."""
        return self._call(rq.remove_limit(kind, name))

    def cluster(self) -> dict[str, Any]:
        """The daemon's view of its cluster: node, leader, NATS connection, and each host's record."""
        return self._call(rq.cluster())

    def schedules(self) -> list[dict[str, Any]]:
        """Every periodic schedule: its definition, next due time and last runs."""
        return self._call(rq.schedules())

    def add_schedule(self, name: str, operation: str, *, replace: bool = False, **fields: Any) -> dict[str, Any]:
        """Add a periodic schedule: ``every="30s"`` or ``cron="*/5 * * * *"``, and optionally ``payload``,
        ``priority``, ``timeout_ms``, ``constraints``, ``jitter_s``, ``overlap`` ("skip" or "queue"),
        ``timezone``. Kept across restarts until :meth:`remove_schedule`."""
        return self._call(rq.add_schedule(name, operation, replace, **fields))

    def schedule(self, name: str) -> dict[str, Any]:
        """One schedule with its last runs (newest first) and their tasks' states."""
        return self._call(rq.schedule_verb(m.SCHEDULE_SHOW, name))

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return self._call(rq.schedule_verb(m.SCHEDULE_PAUSE, name))

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Resume a paused schedule: next due after now (the paused time is not caught up)."""
        return self._call(rq.schedule_verb(m.SCHEDULE_RESUME, name))

    def remove_schedule(self, name: str) -> None:
        self._call(rq.schedule_verb(m.SCHEDULE_RM, name))

    def strategy(self, name: str | None = None) -> str:
        """The routing strategy in use; with ``name``, switch to it first."""
        return self._call(rq.strategy(name))

    def drain(self, collector_id: str) -> CollectorInfo:
        """Stop routing new work to a collector (running attempts finish)."""
        return self._call(rq.drain(collector_id))

    def undrain(self, collector_id: str) -> CollectorInfo:
        return self._call(rq.undrain(collector_id))

    def stop_collectors(self, collector_id: str | None = None) -> list[str]:
        """Ask a collector (None: every collector) to drain and exit; returns whom it asked."""
        return self._call(rq.stop_collectors(collector_id))

    # ---- events --------------------------------------------------------

    def subscribe(self, *patterns: str) -> None:
        """Receive events on topics matching ``patterns`` (``+`` one segment, ``#`` the rest)."""
        self._call(rq.subscribe(patterns))

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (topic, body) of published events; stops after ``timeout`` seconds without one.

        Where events were lost because this connection fell behind, the next
        item is ``(control.subscription.dropped, {"dropped": N})`` (see
        :data:`eventbus.messages.SUBSCRIPTION_DROPPED`), then the events go on.
        Raises :class:`ConnectionReset` when the daemon goes away: its subscriptions went with it.
        """
        while True:
            while self._events:
                yield self._events.popleft()
            deadline = time.monotonic() + (3600.0 if timeout is None else timeout)
            while True:
                self._check_open()
                with zmq_errors(self.path):
                    env = self._recv(deadline, "events", "its subscriptions are gone")
                if env is None:
                    if timeout is not None:
                        return
                    deadline = time.monotonic() + 3600.0
                elif env.kind is Kind.PUBLISH and env.topic != m.SUBSCRIPTION_PING:
                    yield env.topic, env.body
                    break

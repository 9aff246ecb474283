"""The blocking client of eventbusd, :class:`SyncClient`.

It speaks request/reply over a DEALER socket with correlation ids and
timeouts, and receives published events for the patterns it subscribed to.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import zmq

from distributor.models import CollectorInfo, TaskInfo
from eventbus import _requests as rq
from eventbus import messages as m
from eventbus._link import UNKNOWN_OUTCOME, SyncLink, TaskWait, not_back, reset_error
from eventbus._transport import RECONNECT_GRACE_S, Ids, dealer, probe
from eventbus.errors import ConnectionReset, EventBusError, RequestTimeout
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
        self._sock = dealer(self._ctx, self.path, None, max_message_size)
        self._link = SyncLink(self._sock)
        self._ids = Ids()
        self._events: deque[tuple[str, dict[str, Any]]] = deque()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._link.close()
        self._sock.close(linger=0)
        self._ctx.term()

    def request(self, topic: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the reply body; the daemon's errors are raised typed."""
        limit = self.timeout if timeout is None else timeout
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
        task_id = fields.pop("task_id", None) or rq.new_task_id()
        w = TaskWait(self.path, task_id, timeout, time.monotonic(), self.reconnect_grace)
        call = rq.submit_wait(operation, payload, w.chunk(time.monotonic()), self.timeout, task_id=task_id, **fields)
        try:
            first = self._call(call)
        except ConnectionReset as exc:
            w.failed(exc)  # submitted or not: ask the daemon that takes the connection back
            return self._wait(w)
        if first.info.state.terminal:
            return first.info
        if not first.offered and on_unoffered is not None:
            on_unoffered(task_id)
        return self._wait(w)

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
                env = self._recv(deadline, "events", "its subscriptions are gone")
                if env is None:
                    if timeout is not None:
                        return
                    deadline = time.monotonic() + 3600.0
                elif env.kind is Kind.PUBLISH and env.topic != m.SUBSCRIPTION_PING:
                    yield env.topic, env.body
                    break

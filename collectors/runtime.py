"""Runs a :class:`~collectors.sdk.Collector` against the daemon: register, heartbeat, execute, drain.

The connection (id claim, registration, heartbeats, reconnects) is kept by
the :class:`~collectors.session.Session` the runtime holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from collectors.sdk import Collector, OperationSpec, TaskContext, models_of
from collectors.session import MISSED_HEARTBEATS, RECONNECT_BASE_S, RECONNECT_MAX_S, Session
from distributor.models import (
    ALL_PRIORITIES,
    INVALID_RESULT,
    CollectorCapability,
    ErrorInfo,
    TaskRequest,
    TaskResult,
)
from eventbus import messages as m
from eventbus._transport import Connector
from eventbus.client import Client
from eventbus.errors import DaemonUnreachable, EventBusError, ProtocolError, RequestTimeout
from eventbus.wire import MAX_DEPTH, check_value

__all__ = ["MISSED_HEARTBEATS", "RECONNECT_BASE_S", "RECONNECT_MAX_S", "SYNC_CANCEL_WAIT_S", "CollectorRuntime"]

log = logging.getLogger(__name__)
#: how long a cancelled sync operation is waited for before its slot is given up
SYNC_CANCEL_WAIT_S = 30.0


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    ctx: TaskContext


class CollectorRuntime:
    """Connects one collector instance to eventbusd and serves until ``stop`` is set.

    ``transport`` opens its connections (default: ZeroMQ on the daemon's socket).
    """

    def __init__(
        self,
        collector: Collector,
        *,
        collector_id: str,
        socket: str | None = None,
        concurrency: int | None = None,
        request_timeout_s: float = 5.0,
        shutdown_grace_s: float = 30.0,
        transport: Connector | None = None,
    ) -> None:
        self.collector = collector
        self._connector = transport
        self.collector_id = collector_id
        self.concurrency = concurrency or type(collector).max_concurrent_tasks
        self._socket = socket
        self._timeout = request_timeout_s
        self._grace = shutdown_grace_s
        self._ops = type(collector).operations()
        self._models = {op: models_of(getattr(collector, attr)) for op, (attr, _) in self._ops.items()}
        self._running: dict[tuple[str, int], _Running] = {}
        self._accepting = True
        self._abandoning = False  # grace period over: cut attempts are not reported (they are requeued)
        self._client: Client | None = None
        self._session: Session | None = None
        self._stop: asyncio.Event | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="op")
        self._background: set[asyncio.Task[Any]] = set()
        #: results not yet acknowledged by the daemon, re-sent after a reconnect
        self._outbox: dict[tuple[str, int], dict[str, Any]] = {}

    def capability(self) -> CollectorCapability:
        levels = sorted({p for _, spec in self._ops.values() for p in spec.priority_levels} or ALL_PRIORITIES)
        return CollectorCapability(
            collector_id=self.collector_id,
            collector_type=type(self.collector).collector_type,
            supported_operations=sorted(self._ops),
            max_concurrent_tasks=self.concurrency,
            priority_levels=levels,
            attributes=dict(self.collector.attributes),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or the daemon sends control.shutdown), then drain and leave."""
        self._stop = stop
        self._client = Client(
            self._socket,
            identity=self.collector_id,
            on_publish=self._on_publish,
            timeout=self._timeout,
            transport=self._connector,
        )
        self._session = session = Session(
            self._client,
            stop,
            collector_id=self.collector_id,
            socket=self._socket,
            timeout=self._timeout,
            capability=self.capability,
            accepting=lambda: self._accepting,
            current_tasks=lambda: len(self._running),
            resend=self._resend_outbox,
            transport=self._connector,
        )
        heartbeat: asyncio.Task[None] | None = None
        try:
            if not await session.connect_until_done() or not await session.register_until_done():
                return
            # heartbeats go on while draining, or a long drain would look like death
            heartbeat = asyncio.get_running_loop().create_task(session.heartbeat_loop())
            await stop.wait()
            if session.superseded is not None:
                await self._abandon_running()
                raise session.superseded
            await self._drain_and_leave()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            await self._client.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _resend_outbox(self) -> None:
        for key in list(self._outbox):
            self._spawn(self._deliver(key))

    async def _abandon_running(self) -> None:
        """Cut running attempts without reporting them: the daemon requeued them when it gave our id away."""
        self._accepting = False
        self._abandoning = True
        running = [r.task for r in self._running.values()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=5)

    async def _drain_and_leave(self) -> None:
        assert self._client is not None and self._session is not None
        self._accepting = False
        await self._session.leave_request(m.DRAIN)
        running = [r.task for r in self._running.values()]
        if running:
            log.info(
                "collector_id=%s: waiting up to %gs for %d running tasks", self.collector_id, self._grace, len(running)
            )
            _, late = await asyncio.wait(running, timeout=self._grace)
            if late:
                log.warning(
                    "collector_id=%s: %d tasks still running after %gs; they are cut and redelivered",
                    self.collector_id,
                    len(late),
                    self._grace,
                )
                self._abandoning = True
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5)
        if self._outbox and self._session.daemon_gone() is None:
            await asyncio.wait([asyncio.ensure_future(self._deliver(k)) for k in list(self._outbox)])
        if self._background:
            await asyncio.wait(self._background, timeout=self._timeout)
        if await self._session.leave_request(m.DEREGISTER):
            log.info("collector_id=%s deregistered", self.collector_id)

    # ---- commands from the daemon -------------------------------------

    def _on_publish(self, topic: str, body: dict[str, Any]) -> None:
        if topic.startswith(m.TASK_PREFIX + "."):
            self._start(body)
        elif topic.startswith(m.CANCEL_PREFIX + "."):
            self._cancel(body)
        elif topic in (m.SHUTDOWN, f"{m.SHUTDOWN}.{self.collector_id}") and self._stop is not None:
            if body.get("daemon_stopping") is True:
                log.info(
                    "collector_id=%s: eventbusd is stopping; %d running tasks finish and report, then this "
                    "collector waits for eventbusd to be back and registers again",
                    self.collector_id,
                    len(self._running),
                )
                return
            log.info("collector_id=%s: shutdown requested by the daemon", self.collector_id)
            self._stop.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start(self, body: dict[str, Any]) -> None:
        try:
            dispatch = m.DispatchBody.model_validate(body)
            request = dispatch.task
        except Exception as exc:  # a malformed dispatch: nothing to run, nothing to answer to
            log.error("collector_id=%s: malformed dispatch ignored: %s", self.collector_id, exc)
            return
        task_id = request.task_id or ""
        if not self._accepting:  # crossed our drain request: hand it back without using a retry
            assert self._client is not None
            rejected = {"event": "rejected", "task_id": task_id, "attempt": dispatch.attempt}
            self._client.notify(f"{m.RESULT_PREFIX}.{self.collector_id}", rejected)
            return
        ctx = TaskContext(task_id, dispatch.attempt, dispatch.deadline, self.collector_id)
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def progress(fraction: float, message: str) -> None:
            if threading.get_ident() == loop_thread:
                self._progress(ctx, fraction, message)
            else:  # a sync operation in the thread pool
                loop.call_soon_threadsafe(self._progress, ctx, fraction, message)

        ctx._progress = progress
        key = (task_id, dispatch.attempt)
        task = loop.create_task(self._execute(request, ctx))
        self._running[key] = _Running(task, ctx)
        # a done-callback, not a finally: a task cancelled before it starts never runs its body
        task.add_done_callback(lambda _: self._running.pop(key, None))

    def _cancel(self, body: dict[str, Any]) -> None:
        try:
            cancel = m.CancelBody.model_validate(body)
        except ValueError as exc:
            log.error("collector_id=%s: malformed cancel ignored: %s", self.collector_id, exc)
            return
        running = self._running.get((cancel.task_id, cancel.attempt))
        if running is not None:
            log.info("task_id=%s attempt=%s cancelled: %s", cancel.task_id, cancel.attempt, cancel.reason)
            running.ctx.cancelled.set()
            running.task.cancel()

    def _progress(self, ctx: TaskContext, fraction: float, message: str) -> None:
        assert self._client is not None
        body = {
            "event": "progress",
            "task_id": ctx.task_id,
            "attempt": ctx.attempt,
            "fraction": fraction,
            "message": message,
        }
        with contextlib.suppress(EventBusError):  # progress is best effort; never fails the operation
            self._client.notify(f"{m.RESULT_PREFIX}.{self.collector_id}", body)

    # ---- running an attempt ------------------------------------------

    async def _execute(self, request: TaskRequest, ctx: TaskContext) -> None:
        assert self._client is not None
        started = time.time()
        # ``accepted`` goes out at the end of this loop turn, unless the result is ready by then
        # (an operation that finishes without waiting): the result alone says the attempt ran
        accepted = asyncio.get_running_loop().call_soon(self._accepted, ctx)
        try:
            value = await self._call(request, ctx)
            result = self._result(ctx, started, True, value=value)
        except asyncio.CancelledError:
            if self._abandoning:
                accepted.cancel()
                return  # deregistering requeues it without using a retry
            result = self._result(ctx, started, False, error=ErrorInfo(type="Cancelled", message="attempt cancelled"))
        except Exception as exc:
            result = self._result(ctx, started, False, error=ErrorInfo(type=type(exc).__name__, message=str(exc)))
        accepted.cancel()
        # a cancel that crosses the delivery must not cut it: the result stays in the outbox
        await asyncio.shield(self._report(result))

    def _accepted(self, ctx: TaskContext) -> None:
        assert self._client is not None
        body = {"event": "accepted", "task_id": ctx.task_id, "attempt": ctx.attempt}
        self._client.notify(f"{m.RESULT_PREFIX}.{self.collector_id}", body)

    async def _call(self, request: TaskRequest, ctx: TaskContext) -> Any:
        found = self._ops.get(request.operation)
        if found is None:
            raise LookupError(f"operation {request.operation!r} is not supported by {self.collector_id}")
        attr, spec = found
        method = getattr(self.collector, attr)
        models = self._models[request.operation]
        args = _arguments(spec, models.load(request.payload), ctx)
        if spec.is_async:
            return models.dump(await method(*args))
        done = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(method, *args))
        try:
            return models.dump(await asyncio.shield(done))
        except asyncio.CancelledError:
            # a thread cannot be interrupted: the slot stays taken until the
            # operation notices ctx.cancelled and returns
            ctx.cancelled.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(done), SYNC_CANCEL_WAIT_S)
            if not done.done():
                log.warning("task_id=%s: sync operation ignores cancellation; still running", ctx.task_id)
            raise

    def _result(self, ctx: TaskContext, started: float, success: bool, **fields: Any) -> TaskResult:
        finished = time.time()
        return TaskResult(
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            collector_id=self.collector_id,
            success=success,
            execution_time_s=max(0.0, finished - started),
            started_at=started,
            finished_at=finished,
            **fields,
        )

    async def _report(self, result: TaskResult) -> None:
        """Send an attempt's result; one the daemon cannot take fails the attempt with ``InvalidResult``.

        Checked here first (map keys, nesting); the encoder then checks that
        it is msgpack and fits the daemon's ``max_message_size``; whatever
        the daemon still refuses as a frame comes back correlated.
        """
        key = (result.task_id, result.attempt)
        body = _result_body(result)
        problem = _unsendable(body)
        if problem is None:
            self._outbox[key] = body
            problem = await self._deliver(key)
        if problem is not None:
            log.warning("task_id=%s attempt=%d: result not sendable: %s", key[0], key[1], problem)
            error = ErrorInfo(type=INVALID_RESULT, message=f"the operation's result cannot be sent: {problem}")
            failed = result.model_copy(update={"success": False, "value": None, "error": error})
            self._outbox[key] = _result_body(failed)
            await self._deliver(key)

    async def _deliver(self, key: tuple[str, int]) -> str | None:
        """Send one result; it stays in the outbox until the daemon acknowledges or refuses it.

        Returns why it cannot be encoded, when it cannot (it is then left to the caller).
        """
        assert self._client is not None
        body = self._outbox.get(key)
        if body is None:
            return None
        try:
            await self._client.request(f"{m.RESULT_PREFIX}.{self.collector_id}", body)
        except (RequestTimeout, DaemonUnreachable):
            log.warning("task_id=%s: result not acknowledged yet; kept for after reconnecting", key[0])
            return None
        except ProtocolError as exc:
            return exc.message
        except EventBusError as exc:
            log.warning("task_id=%s: daemon refused the result: %s", key[0], exc)
        self._outbox.pop(key, None)
        return None


def _unsendable(body: dict[str, Any]) -> str | None:
    """Why the daemon would refuse a result message with ``body`` as a frame (None: it would not)."""
    try:
        check_value(body, MAX_DEPTH, above=1)  # inside the envelope
    except ProtocolError as exc:
        return exc.message
    return None


def _result_body(result: TaskResult) -> dict[str, Any]:
    return {"event": "result", "task_id": result.task_id, "attempt": result.attempt, "result": result.model_dump()}


def _arguments(spec: OperationSpec, payload: Any, ctx: TaskContext) -> tuple[Any, ...]:
    return (payload, ctx) if spec.wants_context else (payload,)

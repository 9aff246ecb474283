"""Tasks across hosts: spilled tasks out, other hosts' tasks in, results back.

- Out: the distributor spills a task that no local collector took within
  ``cluster_spill_after_ms`` to the cluster (:class:`~distributor.actions.Spill`):
  it is published to the work-queue stream ``<name>_tasks`` on
  ``<name>.task.<operation>.<priority>``, with ``Nats-Msg-Id`` =
  ``<task id>:<attempt>`` (a repeated publish is dropped), and counts as
  handed over once JetStream acknowledged it. A publish that fails puts the
  task back in the local queue.
- In: for each operation its collectors offer, a daemon takes as many tasks as
  its collectors have free slots, highest priority first
  (:mod:`eventbus.cluster_pull`). Each runs here as a local task (never spilled
  again). While it runs the daemon tells JetStream it is in progress every third
  of ``cluster_ack_wait_s``; if the daemon dies, another one gets the message
  once that time has passed.
  A message delivered more than the origin's ``max_retries`` + 1 times (the
  daemons that took it died) is not run again: its task fails at its origin.
- Back: when such a task is final, its result is published to the stream
  ``<name>_returns`` on ``<name>.result.<origin node>``, and only once JetStream
  acknowledged it is the task's message acknowledged. The origin reads its
  results through its own durable consumer ``<name>_returns_<node>``, so a
  result sent while it was away (restarting, or cut off from NATS) waits for
  it. It takes a result only for the attempt it spilled, so a task run twice
  after a host died still ends once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from pydantic import ValidationError

from distributor.actions import Cancel, Spill
from distributor.models import CollectorStatus, ErrorInfo, TaskRequest, TaskResult, TaskState
from eventbus.cluster_pull import Puller, waiting
from eventbus.errors import DuplicateTask, EventBusError

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from eventbus.service import Service

log = logging.getLogger(__name__)

#: tries to publish a result before the task's message is left to be delivered again
RESULT_TRIES = 8
#: attempts cancelled by their origin that no daemon had taken yet, remembered at most (the oldest go first)
MAX_CANCELLED = 10_000
#: messages, and bytes, a deadline sweep reads at most (the next one goes on from there)
SWEEP_BUDGET = 1_000
SWEEP_BYTES = 16 << 20
#: the header of a stream message that holds its task's deadline (epoch seconds), read by the sweep
DEADLINE_HEADER = "Eventbus-Deadline"


@dataclass(slots=True)
class Foreign:
    """A task another daemon spilled, running here as ``local_id``."""

    msg: Msg
    origin: str
    task_id: str
    attempt: int


class TaskExchange:
    """This daemon's side of the cluster's work queue."""

    def __init__(
        self,
        nc: Nats,
        js: JetStreamContext,
        service: Service,
        *,
        name: str,
        node: str,
        ack_wait_s: float,
        replicas: int,
        keep_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._nc, self._js, self._service = nc, js, service
        self.name, self.node = name, node
        self._ack_wait = ack_wait_s
        self._replicas, self._keep_s = replicas, keep_s
        self._clock = clock
        self.stream = f"{name}_tasks"
        self.returns = f"{name}_returns"
        self._puller = Puller(
            nc, js, name=name, stream=self.stream, ack_wait_s=ack_wait_s, free=self._free_slots, take=self._take
        )
        self._foreign: dict[str, Foreign] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._sweep_from = 0
        #: messages of tasks whose deadline passed that sweeps removed from the stream
        self.swept = 0
        self._busy: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Make sure the streams exist, and read the results of the tasks spilled from here."""
        from nats.js.api import AckPolicy, ConsumerConfig

        await self._stream(self.stream, f"{self.name}.task.>", None)
        await self._stream(self.returns, f"{self.name}.result.*", self._keep_s)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=1024)
        await self._js.subscribe(
            f"{self.name}.result.{self.node}",
            durable=f"{self.returns}_{self.node}",
            stream=self.returns,
            cb=self._on_result,
            manual_ack=True,
            config=config,
        )
        await self._nc.subscribe(f"{self.name}.cancel", cb=self._on_cancel)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_in_progress())
        await self._puller.start()

    async def _stream(self, name: str, subjects: str, max_age: float | None) -> None:
        """A work-queue stream on file, made here unless it exists (another daemon may make it at once, alike)."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        try:
            await self._js.stream_info(name)
        except Exception:  # (not found)
            config = StreamConfig(
                name=name,
                subjects=[subjects],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=self._replicas,
                max_age=max_age,
            )
            await self._js.add_stream(config)

    async def depths(self) -> dict[str, int]:
        """Tasks in the stream by operation (handed to the cluster and not done yet), as JetStream counts them."""
        found: dict[str, int] = {}
        for (operation, _), count in (await waiting(self._js, self.stream, self.name)).items():
            found[operation] = found.get(operation, 0) + count
        return found

    async def sweep(self, now: float) -> int:
        """Remove from the stream the tasks whose deadline has passed (the leader's duty); how many it removed.

        Their origins expire them on their own (on restart too); this keeps a
        stream whose operation nobody takes any more from holding them
        forever. Reads at most :data:`SWEEP_BUDGET` messages and
        :data:`SWEEP_BYTES` bytes, the next sweep going on from there; a
        message's deadline is in its :data:`DEADLINE_HEADER`, its payload left
        unread.
        """
        from nats.js.errors import NotFoundError

        info = await self._js.stream_info(self.stream)
        seq = max(self._sweep_from, info.state.first_seq)
        removed = read = 0
        for _ in range(SWEEP_BUDGET):
            if read > SWEEP_BYTES:
                break
            if seq > info.state.last_seq:
                seq = 0  # (the whole stream seen: the next sweep starts over)
                break
            try:
                msg = await self._js.get_msg(self.stream, seq, subject=f"{self.name}.task.>", next=True)
            except NotFoundError:
                seq = 0
                break
            if msg.seq is None:
                break
            read += len(msg.data or b"")
            if _deadline(msg.headers) <= now:
                with contextlib.suppress(NotFoundError):  # (taken and acknowledged meanwhile)
                    await self._js.delete_msg(self.stream, msg.seq)
                    removed += 1
                    self.swept += 1
            seq = self._sweep_from = msg.seq + 1
        self._sweep_from = seq
        return removed

    def stop(self) -> None:
        self._puller.stop()
        for task in [*self._busy, *([self._keeper] if self._keeper else [])]:
            task.cancel()

    # ---- out -----------------------------------------------------------

    def spill(self, action: Spill) -> None:
        """Publish a spilled attempt (in the background; a failure puts the task back in the local queue)."""
        self._background(self._publish(action))

    async def _publish(self, action: Spill) -> None:
        request = action.task
        task_id = request.task_id or ""
        deliveries = self._service.distributor.config.max_retries + 1
        body = {"task": request.model_dump(), "attempt": action.attempt, "origin": self.node, "deliveries": deliveries}
        subject = f"{self.name}.task.{request.operation}.{request.priority}"
        headers = {"Nats-Msg-Id": f"{task_id}:{action.attempt}"}
        if request.deadline is not None:
            headers[DEADLINE_HEADER] = repr(request.deadline)
        try:
            await self._js.publish(subject, msgpack.packb(body), timeout=5, headers=headers)
            await self._nc.publish(f"{self.name}.nudge.{request.operation}", b"")  # (daemons waiting: look now)
        except Exception as exc:  # NATS away, or the stream refused it
            log.warning("cluster %s: task %s could not be handed over (%s); it stays here", self.name, task_id, exc)
            service = self._service
            service.perform(service.distributor.remote_unsent(task_id, action.attempt, self._clock()))

    def cancel(self, action: Cancel) -> None:
        """Tell every daemon that a spilled attempt is over here: the one running it stops it."""
        body = {"task_id": action.task_id, "attempt": action.attempt, "origin": self.node, "reason": action.reason}
        self._background(self._nc.publish(f"{self.name}.cancel", msgpack.packb(body)))

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            body = msgpack.unpackb(msg.data)
            local_id = _local_id(str(body["task_id"]), str(body["origin"]), int(body["attempt"]))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            log.warning("cluster %s: a cancel that does not read: %s", self.name, exc)
            return
        if local_id not in self._foreign:  # not taken (yet): whoever takes its message drops it
            self._cancelled[local_id] = None
            while len(self._cancelled) > MAX_CANCELLED:
                self._cancelled.popitem(last=False)
            return
        distributor = self._service.distributor
        with contextlib.suppress(EventBusError):  # (final meanwhile, its result on its way: stale there)
            self._service.perform(distributor.cancel(local_id, self._clock()))

    async def _on_result(self, msg: Msg) -> None:
        try:
            body = msgpack.unpackb(msg.data)
            result = TaskResult.model_validate(body["result"])
            node = str(body["node"])
        except (ValueError, TypeError, KeyError, ValidationError, msgpack.UnpackException) as exc:
            log.warning("cluster %s: a result that does not read is dropped: %s", self.name, exc)
            await msg.term()
            return
        service = self._service
        service.perform(service.distributor.remote_result(result, node, self._clock(), size=len(msg.data)))
        await msg.ack()

    # ---- in ------------------------------------------------------------

    def sync(self, offered: set[str]) -> None:
        """Take the tasks of the operations local collectors offer, and only those."""
        self._puller.offer(frozenset(offered))

    def _free_slots(self, operation: str) -> int:
        """Slots of available collectors offering ``operation`` not taken, less what is queued here for it."""
        distributor = self._service.distributor
        registry = distributor.registry
        if not registry.has_room(operation):  # (the common answer when busy, without a walk)
            return 0
        free = sum(
            c.capability.max_concurrent_tasks - c.current_tasks
            for c in registry.supporters(operation)
            if c.status is CollectorStatus.AVAILABLE
        )
        return free - distributor.queue.depth(operation)

    def _take(self, msg: Msg) -> None:
        """Run a task another daemon spilled as a local one."""
        service = self._service
        try:
            body = msgpack.unpackb(msg.data)
            origin, attempt = str(body["origin"]), int(body["attempt"])
            fields = dict(body["task"])
            task_id = str(fields["task_id"])
            deliveries = int(body.get("deliveries") or 0)  # (0: no limit)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            log.warning("cluster %s: a task message that does not read is dropped: %s", self.name, exc)
            self._background(msg.term())
            return
        local_id = _local_id(task_id, origin, attempt)
        if local_id in self._cancelled:  # its origin gave this attempt up before anyone took it
            del self._cancelled[local_id]
            self._background(msg.ack())
            return
        if local_id in self._foreign:  # delivered again while it runs here: keep the newer message
            self._foreign[local_id].msg = msg
            return
        foreign = Foreign(msg, origin, task_id, attempt)
        if 0 < deliveries < msg.metadata.num_delivered:  # the daemons that took it died running it, every time
            self._send_back(local_id, foreign, _undelivered(task_id, attempt, deliveries))
            return
        fields.update(task_id=local_id, depends_on=[], idempotency_key=None, not_before=None, created_at=None)
        fields["metadata"] = {**(fields.get("metadata") or {}), "origin": origin, "origin_task_id": task_id}
        try:
            request = TaskRequest.model_validate(fields)
            _, actions = service.distributor.submit(request, self._clock(), size=len(msg.data), local=True)
        except DuplicateTask:  # this daemon took it before it restarted: it kept the task, which sends its result
            self._foreign[local_id] = foreign
            if service.distributor.state(local_id).terminal:
                self.finished(local_id)
            return
        except (ValidationError, EventBusError) as exc:
            if getattr(exc, "code", "") == "queue_full":
                self._background(msg.nak(delay=1.0))
            else:
                self._send_back(local_id, foreign, _refused(task_id, attempt, exc))
            return
        self._foreign[local_id] = foreign
        service.perform(actions)

    def finished(self, local_id: str) -> bool:
        """A task is final here: if another daemon spilled it, its result goes back there (and True)."""
        self._puller.room()
        if local_id not in self._foreign:
            return False
        info = self._service.distributor.get(local_id)
        foreign = self._foreign[local_id]
        result = info.result
        if result is not None and info.state is TaskState.SUCCEEDED:
            fields = result.model_dump()
        else:
            error = info.error or ErrorInfo(type="Error", message=f"task {info.state.value}")
            fields = {
                "collector_id": (result.collector_id if result is not None else "none"),
                "success": False,
                "error": error.model_dump(),
                "execution_time_s": result.execution_time_s if result is not None else 0.0,
            }
        fields.update(task_id=foreign.task_id, attempt=foreign.attempt)
        self._send_back(local_id, foreign, fields)
        return True

    def _send_back(self, local_id: str, foreign: Foreign, result: dict[str, Any]) -> None:
        """Send ``result`` to the task's origin (in the background), then let its message go."""
        self._foreign[local_id] = foreign
        self._background(self._send_result(local_id, result))

    async def _send_result(self, local_id: str, result: dict[str, Any]) -> None:
        """Publish a result to its origin's stream, then acknowledge the task's message (it was run)."""
        foreign = self._foreign.get(local_id)
        if foreign is None:
            return
        data = msgpack.packb({"result": result, "node": self.node})
        msg_id = f"{foreign.task_id}:{foreign.attempt}:{self.node}"
        for tries in range(1, RESULT_TRIES + 1):
            try:
                await self._js.publish(
                    f"{self.name}.result.{foreign.origin}", data, timeout=5, headers={"Nats-Msg-Id": msg_id}
                )
                await foreign.msg.ack()
                break
            except Exception as exc:  # NATS away: try again (the task's message is kept in progress meanwhile)
                log.warning("cluster %s: the result of %s could not be sent (%s)", self.name, foreign.task_id, exc)
                await asyncio.sleep(min(2.0**tries / 4, 5.0))
        else:  # (not acknowledged: once ack wait passes, another daemon runs the task again)
            log.warning("cluster %s: gave up sending the result of %s", self.name, foreign.task_id)
        del self._foreign[local_id]

    async def _keep_in_progress(self) -> None:
        """Tell JetStream the tasks running here are still running, so nobody else gets them meanwhile."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            for foreign in list(self._foreign.values()):
                try:
                    await foreign.msg.in_progress()
                except Exception as exc:  # NATS away: the message may go to another daemon after ack_wait
                    log.debug("in_progress of %s: %s", foreign.task_id, exc)

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._busy.add(task)
        task.add_done_callback(self._busy.discard)


def _deadline(headers: dict[str, str] | None) -> float:
    """The deadline a stream message's header gives its task (infinite: none, or one that does not read)."""
    try:
        return float((headers or {}).get(DEADLINE_HEADER, "inf"))
    except ValueError:
        return math.inf


def _local_id(task_id: str, origin: str, attempt: int) -> str:
    """The id a spilled task runs under here: its id, its origin and its attempt (hashed when too long)."""
    local = f"{task_id}:{origin}:{attempt}"
    return local if len(local) <= 128 else "x" + hashlib.sha256(local.encode()).hexdigest()


def _refused(task_id: str, attempt: int, exc: Exception) -> dict[str, Any]:
    message = exc.message if isinstance(exc, EventBusError) else str(exc).splitlines()[0]
    return _failure(task_id, attempt, "Refused", message)


def _undelivered(task_id: str, attempt: int, deliveries: int) -> dict[str, Any]:
    why = f"delivered {deliveries} times (max_retries + 1) to daemons that stopped before it finished"
    return _failure(task_id, attempt, "DeliveryLimit", why)


def _failure(task_id: str, attempt: int, kind: str, message: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "attempt": attempt,
        "collector_id": "none",
        "success": False,
        "error": {"type": kind, "message": message},
    }

"""Taking other hosts' tasks from the cluster's stream, highest priority first.

A spilled task is published on ``<name>.task.<operation>.<priority>``. Each
such subject has its own durable consumer ``<name>_<operation>_p<priority>``
(shared by every daemon; a work-queue stream needs consumers whose filters do
not overlap), made the first time a daemon sees a task on it. A round:

1. reads how many messages each subject holds (one ``stream_info`` call,
   those in progress elsewhere included);
2. for each operation local collectors offer, from the highest priority down,
   asks that subject's consumer for as many tasks as there are free slots, with
   ``no_wait`` (what is there now, at once, never a long wait).

So a task of priority 9 published behind 8,000 of priority 1 is the next one
taken. After a round that took nothing the daemon waits for a nudge: a tiny
message on ``<name>.nudge.<operation>`` that the spilling daemon sends after
each publish, or a task ending here (a slot is free), or ``FETCH_WAIT_S``
(a message given back after its ack wait comes with no nudge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

#: tasks asked for at most per request
MAX_FETCH = 16
#: the longest wait between two rounds with nothing to take
FETCH_WAIT_S = 0.5
#: how long the answers to one request may take
REPLY_TIMEOUT_S = 2.0


async def waiting(js: JetStreamContext, stream: str, name: str) -> dict[tuple[str, int], int]:
    """Messages in the task stream by (operation, priority), those in progress included (one request)."""
    info = await js.stream_info(stream, subjects_filter=f"{name}.task.>")
    found = {}
    for subject, count in (info.state.subjects or {}).items():
        _, _, operation, priority = subject.split(".")  # (<name>.task.<operation>.<priority>: none has a dot)
        found[operation, int(priority)] = count
    return found


class Puller:
    """This daemon's rounds over the stream's subjects (see the module)."""

    def __init__(
        self,
        nc: Nats,
        js: JetStreamContext,
        *,
        name: str,
        stream: str,
        ack_wait_s: float,
        free: Callable[[str], int],
        take: Callable[[Msg], None],
    ) -> None:
        self._nc, self._js = nc, js
        self._name, self._stream, self._ack_wait = name, stream, ack_wait_s
        self._free, self._take = free, take
        self._offered: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._made: set[str] = set()
        self._inbox = nc.new_inbox()
        self._replies: Subscription | None = None
        self._nudges: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._replies = await self._nc.subscribe(self._inbox)
        self._nudges = await self._nc.subscribe(f"{self._name}.nudge.*", cb=self._nudged)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def offer(self, operations: frozenset[str]) -> None:
        """Take tasks of these operations (those local collectors offer) from now on."""
        if operations != self._offered:
            self._offered = operations
            self._wake.set()

    def room(self) -> None:
        """A slot may be free here: look again now."""
        self._wake.set()

    async def _nudged(self, msg: Msg) -> None:
        if msg.subject.rpartition(".")[2] in self._offered:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                took = await self._round() if self._offered else 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, or the stream gone: try again later
                log.warning("cluster %s: taking tasks from the stream failed: %s", self._name, exc)
                took = 0
                await asyncio.sleep(1.0)
            if not took:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FETCH_WAIT_S)

    async def _round(self) -> int:
        """Take what local collectors have room for, highest priority first; the number of tasks taken."""
        counts = await waiting(self._js, self._stream, self._name)
        offered = [(-priority, op, n) for (op, priority), n in counts.items() if op in self._offered and n > 0]
        took = 0
        for rank, operation, count in sorted(offered):
            free = self._free(operation)
            if free > 0:
                for msg in await self._next(operation, -rank, min(free, count, MAX_FETCH)):
                    self._take(msg)
                    took += 1
        return took

    async def _next(self, operation: str, priority: int, batch: int) -> list[Msg]:
        """Up to ``batch`` tasks of that subject that nobody else holds, without waiting for more."""
        durable = await self._consumer(operation, priority)
        request = json.dumps({"batch": batch, "no_wait": True}).encode()
        await self._nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{durable}", request, reply=self._inbox)
        assert self._replies is not None
        found: list[Msg] = []
        while len(found) < batch:
            try:
                msg = await self._replies.next_msg(timeout=REPLY_TIMEOUT_S)
            except TimeoutError:
                break
            if msg.headers and msg.headers.get("Status"):  # 404 no messages, 408, 409: this request is over
                break
            found.append(msg)
        return found

    async def _consumer(self, operation: str, priority: int) -> str:
        """The durable consumer of one operation's priority, made if it does not exist yet."""
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import NotFoundError

        durable = f"{self._name}_{operation}_p{priority}"
        if durable in self._made:
            return durable
        try:
            await self._js.consumer_info(self._stream, durable)
        except NotFoundError:
            config = ConsumerConfig(
                durable_name=durable,
                filter_subject=f"{self._name}.task.{operation}.{priority}",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_deliver=-1,
            )
            await self._js.add_consumer(self._stream, config)
        self._made.add(durable)
        return durable

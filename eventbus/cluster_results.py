"""Final results readable on any host: the key-value bucket ``<name>_results``.

When a task submitted here is final, its view (:class:`TaskInfo`, as
``eventbusctl task ID`` shows it) is put in the bucket under its id, kept for
``result_ttl_s``. A daemon asked about a task it does not know looks there
before it answers ``not_found``. Puts are sent without waiting for JetStream's
acknowledgement, from a queue bounded in bytes: they must not slow the daemon
down, and the daemon that ran the task keeps its own record anyway. A put
the queue has no room for, or that NATS loses, leaves the task readable on its
own host only; ``cluster`` counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import deque
from typing import TYPE_CHECKING

import msgpack
from pydantic import ValidationError

from distributor.models import TaskInfo

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

#: bytes of results waiting to be sent, at most (more are not shared)
MAX_QUEUED_BYTES = 8 << 20
#: how long a lookup waits for NATS
LOOKUP_TIMEOUT_S = 2.0
#: room a put needs besides its value (subject, headers)
_OVERHEAD = 1024

_PLAIN = re.compile(r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$")


def result_key(task_id: str) -> str:
    """The bucket key of a task id: the id with ``:`` as ``=`` (keys take no ``:``), hashed if it is no key."""
    key = task_id.replace(":", "=")
    return key if _PLAIN.match(key) else "h" + hashlib.sha256(task_id.encode()).hexdigest()


class ResultShelf:
    """This daemon's puts into, and lookups in, ``<name>_results``."""

    def __init__(self, nc: Nats, kv: KeyValue, bucket: str) -> None:
        self._nc, self._kv, self._bucket = nc, kv, bucket
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._sender = asyncio.get_running_loop().create_task(self._send())
        #: results put in the bucket, and results left out (no room in the queue, or NATS refused them)
        self.shared = 0
        self.unshared = 0

    def put(self, info: TaskInfo) -> None:
        """Queue a final task's view for the bucket (its result value left out if the whole is too large)."""
        room = self._nc.max_payload - _OVERHEAD
        data = msgpack.packb(info.model_dump())
        if len(data) > room and info.result is not None:
            trimmed = info.model_copy(update={"result": info.result.model_copy(update={"value": None})})
            data = msgpack.packb({**trimmed.model_dump(), "truncated": True})
        if len(data) > room or self._queued_bytes + len(data) > MAX_QUEUED_BYTES:
            self.unshared += 1
            return
        self._queue.append((result_key(info.task_id), data))
        self._queued_bytes += len(data)
        self._ready.set()

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                key, data = self._queue.popleft()
                self._queued_bytes -= len(data)
                try:
                    await self._nc.publish(f"$KV.{self._bucket}.{key}", data)
                    self.shared += 1
                except Exception as exc:  # NATS away: this one stays readable on this host only
                    self.unshared += 1
                    log.debug("sharing the result under %s: %s", key, exc)

    async def lookup(self, task_id: str) -> TaskInfo | None:
        """The view of a task some daemon of the cluster put in the bucket, None if there is none."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await asyncio.wait_for(self._kv.get(result_key(task_id)), LOOKUP_TIMEOUT_S)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return TaskInfo.model_validate(msgpack.unpackb(entry.value))
        except (ValueError, TypeError, ValidationError, msgpack.UnpackException) as exc:
            log.warning("the shared result of %s does not read: %s", task_id, exc)
            return None

    def stop(self) -> None:
        self._sender.cancel()

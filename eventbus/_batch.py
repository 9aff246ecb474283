"""What submitting a batch of tasks decides, for both clients (they only send and receive).

A batch is split into ``control.task.batch`` requests that fit the frame
limit and :data:`~eventbus.messages.MAX_BATCH_TASKS`; each request's
replies (a stream of ``{items, remaining}``, docs/PROTOCOL.md "Batches of
tasks") are read into one slot per spec, by input index. Specs that name no
task id get one here, so a task whose answer went with a reset connection
can still be asked for by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from distributor.models import TaskInfo
from eventbus import messages as m
from eventbus._requests import MIN_WAIT_S, new_task_id
from eventbus.errors import (
    ConnectionReset,
    EventBusError,
    InvalidRequest,
    error_from_code,
)

#: what a request's envelope and body take besides its specs (ids, topic, wait fields, array header)
_REQUEST_OVERHEAD = 512


@dataclass(slots=True)
class Slot:
    """One spec of a batch and what became of it."""

    task_id: str
    #: which :class:`Part` carries it
    part: int
    #: the spec was taken (its id came back)
    taken: bool = False
    #: False when no available collector offered its operation when it was taken
    offered: bool = True
    info: TaskInfo | None = None
    error: EventBusError | None = None

    @property
    def final(self) -> bool:
        """Nothing more will be learnt from the batch's replies: refused, or final."""
        return self.error is not None or (self.info is not None and self.info.state.terminal)


@dataclass(slots=True)
class Part:
    """One ``control.task.batch`` request: the specs ``start`` to ``start + len(specs) - 1``."""

    start: int
    body: dict[str, Any]
    #: its reply stream ended (``remaining`` 0, an error reply, or given up)
    done: bool = False
    #: why it ended early (an error reply to the whole request, a reset, a timeout)
    error: EventBusError | None = None


class Batch:
    """Specs in input order, the requests that carry them, and what the replies said of each."""

    def __init__(
        self, specs: Iterable[Mapping[str, Any]], *, wait: bool, wait_s: float = m.SUBMIT_WAIT_DEFAULT_S, max_size: int
    ) -> None:
        self.wait = wait
        self.slots: list[Slot] = []
        self.parts: list[Part] = []
        tasks: list[dict[str, Any]] = []
        used = 0
        room = max_size - _REQUEST_OVERHEAD
        for index, raw in enumerate(specs):
            spec = _spec(raw, index)
            size = len(msgpack.packb(spec, use_bin_type=True))
            if tasks and (len(tasks) == m.MAX_BATCH_TASKS or used + size > room):
                self._part(tasks, wait, wait_s)
                tasks, used = [], 0
            tasks.append(spec)
            used += size
            self.slots.append(Slot(spec["task_id"], len(self.parts)))
        if tasks:
            self._part(tasks, wait, wait_s)

    def _part(self, tasks: list[dict[str, Any]], wait: bool, wait_s: float) -> None:
        body: dict[str, Any] = {"tasks": tasks}
        if wait:
            body.update(wait=True, wait_s=max(wait_s, MIN_WAIT_S))
        self.parts.append(Part(len(self.slots) - len(tasks), body))

    def __len__(self) -> int:
        return len(self.slots)

    def take(self, part: Part, body: Mapping[str, Any]) -> None:
        """Read one reply of ``part``'s stream (items tagged with their index within the request)."""
        for item in body.get("items", []):
            slot = self.slots[part.start + int(item["index"])]
            if "error" in item:
                error, message = item["error"], str(item["error"].get("message"))
                own = f"tasks[{item['index']}]: "
                if part.start and message.startswith(own):  # name the spec by its index in the whole batch
                    message = f"tasks[{part.start + int(item['index'])}]: {message[len(own) :]}"
                slot.error = error_from_code(str(error.get("code")), message)
            elif "task" in item:
                slot.info = TaskInfo.model_validate(item["task"])
            else:
                slot.taken = True
                slot.offered = item.get("offered") is not False
                # the daemon's id: for a spec repeating an idempotency key, that of the first task
                slot.task_id = str(item.get("task_id") or slot.task_id)
        if int(body.get("remaining", 0)) == 0:
            part.done = True

    def fail(self, part: Part, exc: EventBusError) -> None:
        """``part``'s stream ended without all its answers (an error reply, a reset, a timeout)."""
        part.done, part.error = True, exc

    def settled(self, index: int) -> bool:
        """Whether the spec's outcome is known: refused, final, or its stream is over."""
        slot = self.slots[index]
        return slot.final or self.parts[slot.part].done

    def submitted(self, index: int) -> str | EventBusError:
        """A spec's outcome without ``wait``, once its stream ended: its task id, or why it was not taken.

        A spec whose answer went with a reset connection gets that :class:`ConnectionReset`
        (whether it was taken is unknown).
        """
        slot = self.slots[index]
        if slot.error is not None:
            return slot.error
        if slot.taken:
            return slot.task_id
        return self.parts[slot.part].error or InvalidRequest(f"tasks[{index}]: the daemon did not answer for it")

    def outcome(self, index: int) -> TaskInfo | EventBusError | None:
        """A spec's outcome with ``wait``, once its stream ended: its final task or why it was not
        taken; None when the task must be waited for by id (it is not final yet, or its answer went
        with a reset: see :meth:`after_reset`)."""
        slot = self.slots[index]
        if slot.error is not None:
            return slot.error
        if slot.info is not None and slot.info.state.terminal:
            return slot.info
        error = self.parts[slot.part].error
        if slot.taken or isinstance(error, ConnectionReset):
            return None
        return error or InvalidRequest(f"tasks[{index}]: the daemon did not answer for it")

    def after_reset(self, index: int) -> ConnectionReset | None:
        """The reset that cut the spec's stream, if one did: its task is to be asked of the daemon that
        takes the connection back (one that does not know it means its fate is unknown)."""
        error = self.parts[self.slots[index].part].error
        return error if isinstance(error, ConnectionReset) else None


def _spec(raw: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A spec with its task id (chosen here when it names none)."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"tasks[{index}]: a task spec must be a mapping, got {type(raw).__name__}")
    spec = dict(raw)
    if spec.get("task_id") is None:
        spec["task_id"] = new_task_id()
    return spec

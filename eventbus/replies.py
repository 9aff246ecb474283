"""Replies that fit the frame limit: task list pages, and bodies cut to fit.

The daemon never answers "too large" to a read: a task list is paged by the
bytes it takes, and any other reply that would exceed ``max_message_size``
is cut and says so with ``truncated: true`` (docs/PROTOCOL.md, "Replies
and the frame limit").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from distributor.models import TaskInfo
from eventbus.errors import TooLarge
from eventbus.wire import Envelope, Kind, encode, error_body

#: the longest cursor the daemon hands out (a decimal position)
_CURSOR_ROOM = 20
#: an array header grows from 1 byte (up to 15 items) to at most 5 bytes
_HEADER_GROWTH = 4


def packed_size(value: Any) -> int:
    """Bytes ``value`` takes inside an encoded frame (msgpack nests by concatenation)."""
    return len(msgpack.packb(value, use_bin_type=True))


def encode_reply(corr: str, topic: str, body: dict[str, Any], max_size: int) -> bytes:
    """The reply frame for ``body``; a body that would exceed ``max_size`` is cut to fit.

    Raises :class:`TooLarge` only when even the cut body does not fit.
    """
    try:
        return encode(Envelope(Kind.REPLY, corr, topic, body), max_size)
    except TooLarge:
        room = max_size - _frame_size(corr, topic, {}) - _HEADER_GROWTH
        return encode(Envelope(Kind.REPLY, corr, topic, cut_body(body, room)), max_size)


def cut_body(body: dict[str, Any], room: int) -> dict[str, Any]:
    """``body`` made to fit ``room`` bytes of fields, with ``truncated: true``.

    A task record loses its result value; otherwise the largest list or map
    keeps only the items that fit, in order.
    """
    if isinstance(body.get("result"), dict) and "truncated" in body:  # a TaskInfo
        return cut_task(body)
    sizes = {key: packed_size(value) for key, value in body.items() if isinstance(value, list | dict)}
    if not sizes:
        return {**body, "truncated": True}
    largest = max(sizes, key=sizes.__getitem__)
    others = sum(packed_size(key) + packed_size(value) for key, value in body.items() if key != largest)
    # the container's header takes at most 5 bytes; ``truncated: true`` is added
    room -= others + packed_size(largest) + 5 + packed_size("truncated") + 1
    items = body[largest]
    if isinstance(items, dict):
        pairs = _fitting((((k, v), packed_size(k) + packed_size(v)) for k, v in items.items()), room)
        return {**body, largest: dict(pairs), "truncated": True}
    return {**body, largest: _fitting(((v, packed_size(v)) for v in items), room), "truncated": True}


def _fitting(sized: Iterable[tuple[Any, int]], room: int) -> list[Any]:
    """The leading items whose sizes add up to at most ``room`` bytes."""
    kept, used = [], 0
    for item, size in sized:
        if used + size > room:
            break
        kept.append(item)
        used += size
    return kept


def cut_task(info: dict[str, Any]) -> dict[str, Any]:
    """A TaskInfo body without its result value (the rest is bounded and always fits)."""
    result = info.get("result")
    if isinstance(result, dict):
        result = {**result, "value": None}
    return {**info, "result": result, "truncated": True}


def task_page(
    found: Iterable[tuple[int, TaskInfo]], limit: int, corr: str, topic: str, max_size: int
) -> dict[str, Any]:
    """A ``control.task.list`` reply body from ``(cursor, task)`` pairs, newest first.

    It holds at most ``limit`` tasks and its frame never exceeds ``max_size``:
    the page ends early (``truncated``) when the next task does not fit. A
    task too large for any page alone is sent cut (see :func:`cut_task`).
    ``next`` is the cursor to continue from, or None when no task is left.
    """
    skeleton: dict[str, Any] = {"tasks": [], "next": "9" * _CURSOR_ROOM, "truncated": False}
    room = max_size - _frame_size(corr, topic, skeleton) - _HEADER_GROWTH
    tasks: list[dict[str, Any]] = []
    used, last, truncated = 0, 0, False
    for cursor, info in found:
        if len(tasks) == limit:
            return {"tasks": tasks, "next": str(last), "truncated": truncated}
        item = info.model_dump()
        size = packed_size(item)
        if used + size > room and tasks:
            return {"tasks": tasks, "next": str(last), "truncated": True}
        if size > room:
            item = cut_task(item)
            size, truncated = packed_size(item), True
            if size > room:
                raise TooLarge(f"task {info.task_id} does not fit a reply of {max_size} bytes even without its result")
        tasks.append(item)
        used, last = used + size, cursor
    return {"tasks": tasks, "next": None, "truncated": truncated}


def item_frames(corr: str, topic: str, items: list[dict[str, Any]], remaining: int, max_size: int) -> list[bytes]:
    """Reply frames ``{items, remaining}`` carrying ``items`` in order, in as few frames as fit ``max_size``.

    Each frame's ``remaining`` counts what is still to come after it (those in
    later frames plus ``remaining``). A task record too large for a frame
    alone is sent cut (see :func:`cut_task`); an item that does not fit even
    so becomes a ``too_large`` error item.
    """
    try:
        return [encode(Envelope(Kind.REPLY, corr, topic, {"items": items, "remaining": remaining}), max_size)]
    except TooLarge:
        pass
    room = max_size - _frame_size(corr, topic, {"items": [], "remaining": remaining + len(items)}) - _HEADER_GROWTH
    chunks: list[list[dict[str, Any]]] = [[]]
    used = 0
    for item in items:
        size = packed_size(item)
        if size > room and isinstance(item.get("task"), dict):
            item = {**item, "task": cut_task(item["task"])}
            size = packed_size(item)
        if size > room:
            why = f"this item does not fit a reply of {max_size} bytes"
            item = {"index": item.get("index"), "error": error_body(TooLarge.code, why)}
            size = packed_size(item)
        if used + size > room and chunks[-1]:
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += size
    frames, after = [], remaining + len(items)
    for chunk in chunks:
        after -= len(chunk)
        frames.append(encode(Envelope(Kind.REPLY, corr, topic, {"items": chunk, "remaining": after}), max_size))
    return frames


def _frame_size(corr: str, topic: str, body: dict[str, Any]) -> int:
    return len(encode(Envelope(Kind.REPLY, corr, topic, body), 1 << 62))

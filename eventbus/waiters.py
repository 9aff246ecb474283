"""Requests waiting for tasks to become final: long-poll gets, submits with ``wait``, and waiting batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

#: tasks waited on at once; past it a request is answered at once with the current state
MAX_WAITERS = 100_000


@dataclass(slots=True)
class Waiter:
    """One request to answer later: who asked, with which correlation id and topic."""

    identity: bytes
    correlation_id: str
    topic: str
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, eq=False)
class BatchWait:
    """A ``control.task.batch`` with ``wait``: its tasks are reported as they become final.

    Tasks that become final within one turn of the event loop are reported
    together (:data:`Flush`), so a batch of fast tasks costs few frames.
    """

    identity: bytes
    correlation_id: str
    topic: str
    #: task id -> index of its spec in the batch, for the tasks not reported yet
    pending: dict[str, int]
    #: ``(index, task id)`` of the tasks final since the last report
    ready: list[tuple[int, str]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    flush_scheduled: bool = False
    closed: bool = False


Answer = Callable[[Waiter, str], None]
#: report ``ready`` ``(index, task id)`` of a batch; its ``pending`` holds what is still to come
Flush = Callable[[BatchWait, list[tuple[int, str]]], None]


class Waiters:
    """Requests waiting per task id; each is answered once: when the task finishes or its wait ends."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        answer: Answer,
        flush: Flush = lambda batch, ready: None,
        limit: int = MAX_WAITERS,
    ) -> None:
        self._loop = loop
        self._answer = answer
        self._flush = flush
        self._limit = limit
        self._by_task: dict[str, list[Waiter | BatchWait]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, task_id: str, waiter: Waiter, wait_s: float) -> bool:
        """Hold ``waiter`` for up to ``wait_s``; False (not held) when the limit is reached."""
        if self._count >= self._limit:
            return False
        waiter.timer = self._loop.call_later(wait_s, self._expired, task_id, waiter)
        self._by_task.setdefault(task_id, []).append(waiter)
        self._count += 1
        return True

    def add_batch(self, batch: BatchWait, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for the tasks in ``batch.pending``; False (not held) past the limit."""
        if self._count + len(batch.pending) > self._limit:
            return False
        for task_id in batch.pending:
            self._by_task.setdefault(task_id, []).append(batch)
        self._count += len(batch.pending)
        batch.timer = self._loop.call_later(wait_s, self._batch_expired, batch)
        return True

    def finished(self, task_id: str) -> None:
        """Answer everyone waiting on ``task_id``."""
        waiting = self._by_task.pop(task_id, [])
        self._count -= len(waiting)
        for waiter in waiting:
            if isinstance(waiter, BatchWait):
                waiter.ready.append((waiter.pending.pop(task_id), task_id))
                self.schedule(waiter)
                continue
            if waiter.timer is not None:
                waiter.timer.cancel()
            self._answer(waiter, task_id)

    def take_all(self) -> list[tuple[str, Waiter | BatchWait]]:
        """Stop holding every waiting request and return them as ``(task_id, waiter)`` (the daemon is stopping).

        A batch comes once, with the first of its tasks still waited on.
        """
        taken: list[tuple[str, Waiter | BatchWait]] = []
        for task_id, waiting in self._by_task.items():
            for w in waiting:
                if isinstance(w, BatchWait):
                    if w.closed:
                        continue
                    w.closed = True
                taken.append((task_id, w))
        self._by_task.clear()
        self._count = 0
        for _, waiter in taken:
            if waiter.timer is not None:
                waiter.timer.cancel()
        return taken

    def schedule(self, batch: BatchWait) -> None:
        """Report ``batch.ready`` at the end of this turn of the event loop (with what else becomes final)."""
        if not batch.flush_scheduled:
            batch.flush_scheduled = True
            self._loop.call_soon(self._report, batch)

    def _report(self, batch: BatchWait) -> None:
        batch.flush_scheduled = False
        if batch.closed or not batch.ready:
            return
        ready, batch.ready = batch.ready, []
        if not batch.pending:
            batch.closed = True
            if batch.timer is not None:
                batch.timer.cancel()
        self._flush(batch, ready)

    def _batch_expired(self, batch: BatchWait) -> None:
        """Its wait is over: the tasks not final yet are reported as they are."""
        if batch.closed:
            return
        for task_id, index in batch.pending.items():
            self._unhold(task_id, batch)
            batch.ready.append((index, task_id))
        batch.pending.clear()
        self._report(batch)

    def _expired(self, task_id: str, waiter: Waiter) -> None:
        if self._unhold(task_id, waiter):
            self._answer(waiter, task_id)

    def _unhold(self, task_id: str, waiter: Waiter | BatchWait) -> bool:
        """Stop holding ``waiter`` for ``task_id``; False if it was not held (already answered)."""
        waiting = self._by_task.get(task_id, [])
        if waiter not in waiting:
            return False
        waiting.remove(waiter)
        self._count -= 1
        if not waiting:
            del self._by_task[task_id]
        return True

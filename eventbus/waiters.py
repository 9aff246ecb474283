"""Long-poll ``control.task.get`` requests waiting for a task to become final."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

#: waiting requests held at once; past it a get is answered at once with the current state
MAX_WAITERS = 100_000


@dataclass(slots=True)
class Waiter:
    """One request to answer later: who asked, with which correlation id and topic."""

    identity: bytes
    correlation_id: str
    topic: str
    timer: asyncio.TimerHandle | None = None


Answer = Callable[[Waiter, str], None]


class Waiters:
    """Requests waiting per task id; each is answered once: when the task finishes or its wait ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answer: Answer, limit: int = MAX_WAITERS) -> None:
        self._loop = loop
        self._answer = answer
        self._limit = limit
        self._by_task: dict[str, list[Waiter]] = {}
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

    def finished(self, task_id: str) -> None:
        """Answer everyone waiting on ``task_id``."""
        waiting = self._by_task.pop(task_id, [])
        self._count -= len(waiting)
        for waiter in waiting:
            if waiter.timer is not None:
                waiter.timer.cancel()
            self._answer(waiter, task_id)

    def take_all(self) -> list[tuple[str, Waiter]]:
        """Stop holding every waiting request and return them as ``(task_id, waiter)`` (the daemon is stopping)."""
        taken = [(task_id, w) for task_id, waiting in self._by_task.items() for w in waiting]
        self._by_task.clear()
        self._count = 0
        for _, waiter in taken:
            if waiter.timer is not None:
                waiter.timer.cancel()
        return taken

    def _expired(self, task_id: str, waiter: Waiter) -> None:
        waiting = self._by_task.get(task_id, [])
        if waiter in waiting:
            waiting.remove(waiter)
            self._count -= 1
            if not waiting:
                del self._by_task[task_id]
            self._answer(waiter, task_id)

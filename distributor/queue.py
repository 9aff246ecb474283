"""Per-operation priority queues: higher priority first, FIFO within a priority."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from distributor.errors import QueueFull
from distributor.models import PRIORITY_MAX, PRIORITY_MIN


class _OperationQueue:
    __slots__ = ("levels", "size")

    def __init__(self) -> None:
        # index 0 unused so a priority is its own index
        self.levels: list[deque[tuple[str, int]]] = [deque() for _ in range(PRIORITY_MAX + 1)]
        self.size = 0


class TaskQueue:
    """Queued task ids, one priority queue per operation.

    One operation's backlog never delays another's: callers pop per
    operation. Removal (cancel, expiry) is O(1): the id is forgotten and its
    slot skipped lazily when it reaches the head.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._queues: dict[str, _OperationQueue] = {}
        # task_id -> (operation, priority, entry seq); the seq tells a live
        # entry from a stale one left behind by remove()
        self._where: dict[str, tuple[str, int, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._where

    def push(self, task_id: str, operation: str, priority: int, *, front: bool = False, admit: bool = True) -> None:
        """Queue a task; ``front`` puts it ahead of its priority (redelivery keeps its place).

        With ``admit`` (a new submission) raises :class:`QueueFull` past
        ``max_size``; a task coming back (retry, redelivery) is always taken,
        so nothing acknowledged is dropped.
        """
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(f"priority {priority} out of range")
        if task_id in self._where:
            raise ValueError(f"task {task_id} is already queued")
        if admit and len(self._where) >= self.max_size:
            raise QueueFull(f"queue is full ({self.max_size} tasks)")
        q = self._queues.get(operation)
        if q is None:
            q = self._queues[operation] = _OperationQueue()
        self._seq += 1
        entry = (task_id, self._seq)
        if front:
            q.levels[priority].appendleft(entry)
        else:
            q.levels[priority].append(entry)
        q.size += 1
        self._where[task_id] = (operation, priority, self._seq)

    def remove(self, task_id: str) -> bool:
        """Forget a queued task; returns False when it was not queued."""
        where = self._where.pop(task_id, None)
        if where is None:
            return False
        self._queues[where[0]].size -= 1
        return True

    def depth(self, operation: str) -> int:
        q = self._queues.get(operation)
        return q.size if q else 0

    def depths(self) -> dict[str, int]:
        return {op: q.size for op, q in self._queues.items() if q.size}

    def operations(self) -> list[str]:
        """Operations that have at least one queued task."""
        return [op for op, q in self._queues.items() if q.size]

    def candidates(self, operation: str, per_level: int) -> Iterator[tuple[int, str]]:
        """(priority, task_id) of up to ``per_level`` live tasks of each priority, highest first, FIFO.

        The caller may :meth:`pop` the task it was handed, but must then stop iterating.
        """
        q = self._queues.get(operation)
        if q is None or not q.size:
            return
        where = self._where
        for priority in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1):
            level = q.levels[priority]
            while level and where.get(level[0][0]) != (operation, priority, level[0][1]):
                level.popleft()  # stale entry of a removed task
            taken = 0
            for task_id, seq in level:
                if where.get(task_id) == (operation, priority, seq):
                    yield priority, task_id
                    taken += 1
                    if taken >= per_level:
                        break

    def pop(self, task_id: str) -> None:
        """Take a task returned by :meth:`candidates` off the queue."""
        operation, priority, seq = self._where.pop(task_id)
        q = self._queues[operation]
        level = q.levels[priority]
        if level and level[0] == (task_id, seq):
            level.popleft()
        q.size -= 1

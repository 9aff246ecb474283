"""Per-operation priority queues: higher priority first, FIFO within a priority.

Within a priority, tasks are kept in one FIFO per *shape* (their
constraints): tasks of one shape are interchangeable for routing, so only
each shape's oldest task needs to be considered, and a shape that no
collector can take right now never hides an older or newer task of another
shape behind it.

With :class:`Aging` on, a task's *effective* priority rises by one level for
each ``interval_s`` it has waited, up to ``max_boost`` levels (and never past
the highest priority). Tasks are taken highest effective priority first, and
in queue order (FIFO) within an effective priority. Within one FIFO the
oldest task has waited longest, so it has the highest effective priority of
its FIFO as well as its first place: comparing the FIFOs' heads is still
enough, and aging costs no timer and no move between levels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from distributor.errors import QueueFull
from distributor.models import PRIORITY_MAX, PRIORITY_MIN

Shape = Hashable
_Entry = tuple[str, int, float]  # (task_id, seq, since: when it started to wait, for aging)


@dataclass(frozen=True, slots=True)
class Aging:
    """A queued task gains one priority level per ``interval_s`` waited, at most ``max_boost`` levels."""

    interval_s: float
    max_boost: int

    def boost(self, waited_s: float) -> int:
        return min(self.max_boost, int(waited_s // self.interval_s)) if waited_s > 0 else 0


class _OperationQueue:
    __slots__ = ("levels", "shaped", "size")

    def __init__(self) -> None:
        # index 0 unused so a priority is its own index; shape -> FIFO
        self.levels: list[dict[Shape, deque[_Entry]]] = [{} for _ in range(PRIORITY_MAX + 1)]
        self.size = 0
        self.shaped = 0  # FIFOs in ``levels`` of a shape other than () (constrained tasks)


class TaskQueue:
    """Queued task ids, one priority queue per operation, FIFO per priority and shape.

    Removal (cancel, expiry) is O(1): the id is forgotten and its entry
    skipped when it reaches the head of its FIFO.
    """

    def __init__(self, max_size: int, aging: Aging | None = None) -> None:
        self.max_size = max_size
        #: None: strict priority order (a task's effective priority is its own)
        self.aging = aging
        self._queues: dict[str, _OperationQueue] = {}
        # task_id -> (operation, priority, shape, seq, since); the seq (unique to each push)
        # tells a live entry from a stale one left behind by remove()
        self._where: dict[str, tuple[str, int, Shape, int, float]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._where

    def push(
        self,
        task_id: str,
        operation: str,
        priority: int,
        *,
        shape: Shape = (),
        front: bool = False,
        admit: bool = True,
        now: float = 0.0,
    ) -> None:
        """Queue a task at ``now``; ``front`` puts it ahead of its priority (redelivery keeps its place).

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
        fifo = q.levels[priority].get(shape)
        if fifo is None:
            fifo = q.levels[priority][shape] = deque()
            if shape != ():
                q.shaped += 1
        # redelivered tasks go ahead of everything queued since: a negative seq
        self._seq += 1
        seq = -self._seq if front else self._seq
        since = now
        if front:
            # it ages as the head it goes before: a FIFO stays oldest first, for aging as for order
            if fifo:
                since = min(now, fifo[0][2])
            fifo.appendleft((task_id, seq, since))
        else:
            fifo.append((task_id, seq, since))
        q.size += 1
        self._where[task_id] = (operation, priority, shape, seq, since)

    def remove(self, task_id: str) -> bool:
        """Forget a queued task; returns False when it was not queued."""
        where = self._where.pop(task_id, None)
        if where is None:
            return False
        self._shrunk(where[0])
        return True

    def _shrunk(self, operation: str) -> None:
        q = self._queues[operation]
        q.size -= 1
        if not q.size:  # drop the operation with every stale entry it still holds
            del self._queues[operation]

    def queued(self) -> Iterator[tuple[str, str]]:
        """``(task_id, operation)`` of every queued task, in no order (a walk of the whole queue)."""
        for task_id, where in self._where.items():
            yield task_id, where[0]

    def depth(self, operation: str) -> int:
        q = self._queues.get(operation)
        return q.size if q else 0

    def depths(self) -> dict[str, int]:
        return {op: q.size for op, q in self._queues.items() if q.size}

    def candidates(self, operation: str, now: float = 0.0) -> Iterator[tuple[int, str]]:
        """(priority, task_id) of the oldest task of each shape, highest (effective) priority first, oldest first.

        ``priority`` is the task's own. The caller may :meth:`pop` the task it was handed,
        but must then stop iterating.
        """
        q = self._queues.get(operation)
        if q is None or not q.size:
            return
        if self.aging is not None:
            for _, _, priority, task_id in sorted(self._aged(operation, q, now, self.aging)):
                yield priority, task_id
            return
        for priority in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1):
            if not q.levels[priority]:
                continue
            heads = self._heads(operation, q, priority)
            heads.sort(key=lambda entry: entry[1])
            for task_id, _, _ in heads:
                yield priority, task_id

    def _aged(self, operation: str, q: _OperationQueue, now: float, aging: Aging) -> list[tuple[int, int, int, str]]:
        """Every level's heads as ``(-effective priority, seq, priority, task_id)``: smaller is more urgent."""
        return [
            (-min(PRIORITY_MAX, priority + aging.boost(now - since)), seq, priority, task_id)
            for priority in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
            if q.levels[priority]
            for task_id, seq, since in self._heads(operation, q, priority)
        ]

    def effective(self, task_id: str, now: float) -> int | None:
        """The priority a queued task is taken at now (its own, or above with aging); None if it is not queued."""
        where = self._where.get(task_id)
        if where is None:
            return None
        priority, since = where[1], where[4]
        if self.aging is None:
            return priority
        return min(PRIORITY_MAX, priority + self.aging.boost(now - since))

    def plain(self, operation: str) -> bool:
        """Whether every queued task of ``operation`` has the empty shape ``()`` (no constraints).

        May answer False for an operation whose only other shapes are left over
        from removed tasks.
        """
        q = self._queues.get(operation)
        return q is not None and not q.shaped

    def rank(self, operation: str, now: float = 0.0) -> tuple[int, int]:
        """(-priority, seq) of the operation's most urgent queued task: smaller is more urgent.

        The first of :meth:`candidates`, found without walking past its priority level (with
        aging, past every level: its priority is the effective one): the distributor ranks every
        operation with queued work that a freed slot could take.
        """
        q = self._queues.get(operation)
        if q is None or not q.size:
            return (1, 0)
        if self.aging is not None:
            aged = self._aged(operation, q, now, self.aging)
            if not aged:
                return (1, 0)
            best = min(aged)
            return best[0], best[1]
        for priority in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1):
            if not q.levels[priority]:
                continue
            heads = self._heads(operation, q, priority)
            if heads:
                return (-priority, min(entry[1] for entry in heads))
        return (1, 0)

    def _heads(self, operation: str, q: _OperationQueue, priority: int) -> list[_Entry]:
        """The oldest live entry of each shape queued at ``priority``; shapes found empty are dropped."""
        level = q.levels[priority]
        heads = []
        for shape in list(level):
            head = self._head(level[shape])
            if head is None:
                del level[shape]
                if shape != ():
                    q.shaped -= 1
            else:
                heads.append(head)
        return heads

    def _head(self, fifo: deque[_Entry]) -> _Entry | None:
        where = self._where
        while fifo:
            task_id, seq, _ = fifo[0]
            live = where.get(task_id)
            if live is not None and live[3] == seq:
                return fifo[0]
            fifo.popleft()  # stale entry of a removed task
        return None

    def pop(self, task_id: str) -> None:
        """Take a task handed out by :meth:`candidates` (the head of its FIFO) off the queue."""
        operation, priority, shape, seq, _ = self._where.pop(task_id)
        fifo = self._queues[operation].levels[priority][shape]
        if fifo and fifo[0][0] == task_id and fifo[0][1] == seq:
            fifo.popleft()
        self._shrunk(operation)

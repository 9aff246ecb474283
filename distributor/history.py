"""The history of finished tasks, bounded by count and by an estimate of the memory it holds."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

#: estimated memory of a finished task's record besides its result (the record, its
#: request without payload, timings, sets and dict slots); counted against the byte budget
RECORD_OVERHEAD = 4096


class FinishedHistory:
    """Finished task ids in the order they finished, with the bytes each is charged.

    The distributor keeps a finished task so clients can still read its
    outcome; this decides which to forget first once ``max_tasks`` or
    ``max_bytes`` is exceeded. It holds ids only, never the tasks.
    """

    def __init__(self, max_tasks: int, max_bytes: int) -> None:
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        self._entries: deque[tuple[str, int, int]] = deque()  # (task_id, call number, bytes)
        self.bytes = 0
        #: tasks forgotten since the start
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, task_id: str, call: int, size: int) -> None:
        """A task finished during call number ``call``; it is charged ``size`` bytes plus the record overhead."""
        charged = RECORD_OVERHEAD + max(0, size)
        self._entries.append((task_id, call, charged))
        self.bytes += charged

    def overflow(self, before_call: int) -> Iterator[str]:
        """Ids to forget, oldest first, until both limits hold.

        Tasks finished during call ``before_call`` or later are kept even past
        the limits: the host has yet to answer whoever waits on them.
        """
        entries = self._entries
        while (
            entries and entries[0][1] < before_call and (len(entries) > self.max_tasks or self.bytes > self.max_bytes)
        ):
            task_id, _, charged = entries.popleft()
            self.bytes -= charged
            self.evicted += 1
            yield task_id

    def unknown(self, task_id: str) -> str:
        """Why ``task_id`` is not known, as precisely as the history can tell."""
        if not self.evicted:
            return f"no task with id {task_id!r} (no finished task has been evicted from the history yet)"
        return (
            f"no task with id {task_id!r}: never submitted, or finished and evicted from the history "
            f"({self.evicted} evicted so far; it keeps at most max_finished_tasks={self.max_tasks} tasks "
            f"and max_finished_bytes={self.max_bytes} bytes)"
        )

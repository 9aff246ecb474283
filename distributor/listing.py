"""Known tasks newest first, from any point: what a paged task list walks."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from distributor.tasks import TaskRecord

#: stale entries tolerated beyond the live tasks before the index is rebuilt
_SLACK = 1024


class TaskListing:
    """Position index over the distributor's task table, for pages that start at a cursor.

    The table is a dict whose insertion order is serial order (a record gets
    the next serial as it is added), so new records are always at its end
    and are picked up lazily; records the distributor forgets stay here as
    stale entries, skipped when read and dropped once they pile up. A page
    costs the tasks it reads, not the tasks before its cursor.
    """

    def __init__(self, tasks: dict[str, TaskRecord]) -> None:
        self._tasks = tasks
        self._serials: list[int] = []
        self._ids: list[str] = []

    def older_than(self, cursor: int | None) -> Iterator[TaskRecord]:
        """Live records with a serial below ``cursor`` (None: all), newest first."""
        self._sync()
        serials, ids, tasks = self._serials, self._ids, self._tasks
        i = len(serials) if cursor is None else bisect_left(serials, cursor)
        while i > 0:
            i -= 1
            task = tasks.get(ids[i])
            if task is not None and task.serial == serials[i]:  # (an id may be reused by a newer record)
                yield task

    def _sync(self) -> None:
        if len(self._ids) > 2 * len(self._tasks) + _SLACK:
            self._serials = [t.serial for t in self._tasks.values()]
            self._ids = [t.task_id for t in self._tasks.values()]
            return
        last = self._serials[-1] if self._serials else 0
        added: list[TaskRecord] = []
        for task in reversed(self._tasks.values()):
            if task.serial <= last:
                break
            added.append(task)
        for task in reversed(added):
            self._serials.append(task.serial)
            self._ids.append(task.task_id)

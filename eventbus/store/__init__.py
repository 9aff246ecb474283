"""Where the daemon keeps what it promised: unfinished tasks, results, idempotency keys, collector records.

:class:`Store` is the interface the daemon uses; :class:`~eventbus.store.sqlite.SqliteStore`
is the embedded default, :class:`NullStore` the memory-only mode (``durability =
"none"``). A backend on a server (PostgreSQL) implements the same interface with
the same rows (:mod:`eventbus.store.rows`); the distributor never sees it.

The contract a backend keeps:

- :meth:`Store.recover` runs once, before the daemon serves anyone: it takes the
  store for this daemon alone (a second daemon on the same state is refused),
  checks it (corrupt: :class:`~eventbus.errors.StateCorrupt`, never an empty
  start), and returns what the distributor restores.
- :meth:`Store.commit` takes a :class:`Batch` of rows and calls ``done`` on the
  event loop once they are durable, in the order the batches were given. Batches
  given while one is being written go into the next transaction together (group
  commit). A write that fails is retried (the same rows, then the later ones)
  until it succeeds; meanwhile :attr:`Store.available` is False and ``done`` is
  not called, so nothing that depends on those rows is acknowledged.
- Reads (:meth:`Store.task`, :meth:`Store.older_than`, :meth:`Store.keyed`) see
  committed rows only and are served even while writes fail.
- Finished tasks are kept for ``result_ttl_s``, at most ``max_results`` of them
  and ``max_result_bytes``; they are dropped in small steps between commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from distributor.models import TaskInfo, TaskState
from distributor.recovery import CollectorRecord
from distributor.tasks import TaskRecord

if TYPE_CHECKING:
    import asyncio

    from eventbus.settings import DaemonSettings

Row = tuple[Any, ...]


@dataclass(slots=True)
class Batch:
    """Rows to write in one transaction (see :mod:`eventbus.store.rows`)."""

    #: whole rows: new tasks, and tasks that became final (replacing what was written before)
    rows: list[Row] = field(default_factory=list)
    #: state updates of tasks already written
    updates: list[Row] = field(default_factory=list)
    #: (collector_id, (tasks_completed, tasks_failed, total_execution_s))
    collectors: list[tuple[str, CollectorRecord]] = field(default_factory=list)
    #: what operators defined at runtime, in order: (kind, name, msgpack body), or a None body to delete it
    definitions: list[Definition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows or self.updates or self.collectors or self.definitions)


#: a definition kept by the store (a runtime rate limit, later a schedule): (kind, name, body or None)
Definition = tuple[str, str, bytes | None]


@dataclass(slots=True)
class Recovered:
    """What a store gives back at startup."""

    #: unfinished tasks, as they were last written
    tasks: list[TaskRecord] = field(default_factory=list)
    #: final states of the finished parents of pending tasks
    parents: dict[str, TaskState] = field(default_factory=dict)
    #: highest serial ever written: new serials continue after it
    last_serial: int = 0
    collectors: dict[str, CollectorRecord] = field(default_factory=dict)
    #: finished tasks kept
    finished: int = 0
    #: definitions kept, by kind: name -> msgpack body
    definitions: dict[str, dict[str, bytes]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many finished tasks a store keeps."""

    result_ttl_s: float = 86_400.0
    max_results: int = 1_000_000
    max_result_bytes: int = 1 << 30


class Store(Protocol):
    """The daemon's persistence (see the module's documentation for the contract)."""

    #: the setting it was opened with: "fsync", "process" or "none"
    durability: str

    @property
    def durable(self) -> bool:
        """Whether :meth:`commit` must be awaited before acknowledging anything."""

    @property
    def available(self) -> bool:
        """False while writes fail: submissions are refused ``storage_unavailable``."""

    def recover(self) -> Recovered: ...

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin writing (after :meth:`recover`); ``done`` callbacks run on ``loop``."""

    def commit(self, batch: Batch, done: Callable[[], None]) -> None: ...

    def task(self, task_id: str) -> TaskInfo | None:
        """A finished task kept in the store."""

    def older_than(
        self, cursor: int | None, state: TaskState | None, operation: str | None, limit: int
    ) -> list[tuple[int, TaskInfo]]:
        """Up to ``limit`` finished tasks with serials below ``cursor``, newest first, as ``(serial, view)``."""

    def keyed(self, scope: str, since: float) -> TaskInfo | None:
        """The kept task with idempotency ``scope`` created at ``since`` or later."""

    def status(self) -> dict[str, Any]:
        """What ``status`` and ``stats`` show about the store."""

    async def flush(self) -> None:
        """Return once everything committed so far is durable (or the store gave up at close)."""

    def close(self) -> None: ...


class NullStore:
    """``durability = "none"``: nothing is written, nothing survives the process."""

    durability = "none"
    durable = False
    available = True

    def recover(self) -> Recovered:
        return Recovered()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def commit(self, batch: Batch, done: Callable[[], None]) -> None:
        done()

    def task(self, task_id: str) -> TaskInfo | None:
        return None

    def older_than(
        self, cursor: int | None, state: TaskState | None, operation: str | None, limit: int
    ) -> list[tuple[int, TaskInfo]]:
        return []

    def keyed(self, scope: str, since: float) -> TaskInfo | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"durability": "none", "available": True}

    async def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_store(settings: DaemonSettings) -> Store:
    """The store the settings ask for (not recovered yet)."""
    if settings.durability == "none":
        return NullStore()
    from eventbus.paths import default_state_dir
    from eventbus.store.sqlite import SqliteStore

    directory = Path(settings.state_dir) if settings.state_dir is not None else default_state_dir()
    retention = Retention(settings.result_ttl_s, settings.max_results, settings.max_result_bytes)
    return SqliteStore(directory, settings.durability, retention)


__all__ = ["Batch", "Definition", "NullStore", "Recovered", "Retention", "Row", "Store", "open_store"]

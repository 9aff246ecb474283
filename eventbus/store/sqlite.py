"""The embedded store: one SQLite database in WAL mode, written by one thread in group commits.

The event loop never waits on the disk: it hands each loop iteration's rows to
the writer thread (:meth:`SqliteStore.commit`), which writes every batch
waiting into one transaction and calls the batches' ``done`` back on the loop
once it committed. ``durability = "fsync"`` commits with ``synchronous=FULL``
(the commit survives a power loss), ``"process"`` with ``synchronous=NORMAL``
(it survives the daemon's death, not the machine's). Reads use a connection of
their own on the loop's thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from distributor.models import TaskInfo, TaskState
from eventbus.errors import ConfigError, StateCorrupt
from eventbus.store import Batch, Recovered, Retention
from eventbus.store import rows as r

log = logging.getLogger(__name__)

DB_NAME = "eventbus.db"
#: the layout this code writes; a database with another one is refused
SCHEMA_VERSION = 1
#: seconds between attempts to write again after a write failed
RETRY_S = 1.0
#: finished tasks dropped per compaction step (one short transaction between commits)
COMPACT_STEP = 500
#: seconds between compaction steps while there is nothing to drop
COMPACT_EVERY_S = 5.0

_FINAL = tuple(s.value for s in TaskState if s.terminal)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    serial INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    owner INTEGER,
    size INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    collector_id TEXT,
    created_at REAL NOT NULL,
    queued_at REAL,
    dispatched_at REAL,
    finished_at REAL,
    retry_at REAL,
    failed_on BLOB,
    request BLOB NOT NULL,
    payload BLOB,
    result BLOB,
    error BLOB,
    idem TEXT,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(serial) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_idem ON tasks(idem) WHERE idem IS NOT NULL;
CREATE TABLE IF NOT EXISTS collectors (
    collector_id TEXT PRIMARY KEY,
    tasks_completed INTEGER NOT NULL,
    tasks_failed INTEGER NOT NULL,
    total_execution_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS definitions (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, name)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT = f"INSERT OR REPLACE INTO tasks ({', '.join(r.COLUMNS)}) VALUES ({', '.join('?' * len(r.COLUMNS))})"
_UPDATE = f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in r.STATE_COLUMNS)} WHERE serial = ?"
_COLLECTOR = "INSERT OR REPLACE INTO collectors VALUES (?, ?, ?, ?)"
_SELECT = f"SELECT {', '.join(r.COLUMNS)} FROM tasks"


class SqliteStore:
    """State in ``<directory>/eventbus.db`` (see the module's documentation)."""

    def __init__(
        self,
        directory: Path,
        durability: str,
        retention: Retention | None = None,
        *,
        compact_every_s: float = COMPACT_EVERY_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.directory = directory
        self.compact_every_s = compact_every_s
        self.retry_s = retry_s
        self.path = directory / DB_NAME
        self.durability = durability
        self.retention = retention or Retention()
        self._lock_fd: int | None = None
        self._reader: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[tuple[Batch, Callable[[], None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: read and written on the loop's thread only (the writer reports through the loop)
        self._available = True
        self.last_error: str | None = None
        # the writer's figures (written by its thread, read for status: single ints, no lock needed)
        self.commits = 0
        self.rows_written = 0
        self.commit_s = 0.0
        self.failed_writes = 0
        self.finished = 0
        self.finished_bytes = 0
        self.dropped = 0

    @property
    def durable(self) -> bool:
        return True

    @property
    def available(self) -> bool:
        return self._available

    # ---- startup -------------------------------------------------------

    def recover(self) -> Recovered:
        """Take the state directory, check the database and read back what the daemon restores."""
        self._take_directory()
        try:
            with closing(self._connect()) as conn:
                self._prepare(conn)
                recovered = self._read(conn)
            self._reader = self._connect(query_only=True)
        except sqlite3.Error as exc:
            self._release_directory()
            raise StateCorrupt(f"state database {self.path} cannot be used: {exc}") from exc
        except BaseException:
            self._release_directory()
            raise
        self.finished = recovered.finished
        return recovered

    def _take_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / (DB_NAME + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use state directory {self.directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                f"state directory {self.directory} is in use by another eventbusd (two daemons cannot share it)"
            ) from exc
        self._lock_fd = fd
        try:  # it holds every user's payloads and results: readable by the daemon's uid only
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            self._release_directory()
            raise ConfigError(f"cannot open state database {self.path}: {exc.strerror}") from exc

    def _release_directory(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self, *, query_only: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'fsync' else 'NORMAL'}")
        if query_only:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StateCorrupt(
                f"state database {self.path} has layout version {version}; this eventbusd reads {SCHEMA_VERSION}"
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StateCorrupt(f"state database {self.path} is damaged: {'; '.join(problems[:3])}")
        conn.executescript(_SCHEMA)

    def _read(self, conn: sqlite3.Connection) -> Recovered:
        recovered = Recovered()
        try:
            for row in conn.execute(f"{_SELECT} WHERE finished_at IS NULL ORDER BY serial"):
                recovered.tasks.append(r.record(row))
        except StateCorrupt as exc:
            raise StateCorrupt(f"state database {self.path}: {exc}") from exc
        parents = {p for t in recovered.tasks if t.state is TaskState.PENDING for p in t.request.depends_on}
        open_ids = {t.task_id for t in recovered.tasks}
        for parent_id in parents - open_ids:
            found = conn.execute("SELECT state FROM tasks WHERE task_id = ?", (parent_id,)).fetchone()
            if found is not None:
                recovered.parents[parent_id] = TaskState(found[0])
        recovered.last_serial = conn.execute("SELECT ifnull(max(serial), 0) FROM tasks").fetchone()[0]
        recovered.collectors = {
            cid: (done, failed, seconds) for cid, done, failed, seconds in conn.execute("SELECT * FROM collectors")
        }
        for kind, name, body in conn.execute("SELECT kind, name, body FROM definitions ORDER BY kind, name"):
            recovered.definitions.setdefault(kind, {})[name] = bytes(body)
        count, held = conn.execute(
            "SELECT count(*), ifnull(sum(bytes), 0) FROM tasks WHERE finished_at IS NOT NULL"
        ).fetchone()
        recovered.finished, self.finished_bytes = count, held
        return recovered

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._write_loop, name="eventbus-store", daemon=True)
        self._thread.start()

    # ---- writes --------------------------------------------------------

    def commit(self, batch: Batch, done: Callable[[], None]) -> None:
        self._queue.put((batch, done))

    async def flush(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not written.done():
                written.set_result(None)

        self.commit(Batch(), done)
        await written

    def _write_loop(self) -> None:
        """The writer thread: write what is queued, all of it in one transaction, until closed."""
        try:
            conn: sqlite3.Connection | None = self._connect()
        except sqlite3.Error:
            conn = None  # the first write tries again, and reports what fails
        waiting: list[tuple[Batch, Callable[[], None]]] = []
        closing, failed_since_closing = False, 0
        next_compact = time.monotonic() + self.compact_every_s
        while True:
            if not waiting and not closing:
                closing = self._wait_for_work(waiting, next_compact - time.monotonic())
            closing = self._take_waiting(waiting) or closing
            if not waiting:
                if closing:
                    break
                if time.monotonic() >= next_compact:
                    dropped = self._compact(conn) if conn is not None else 0
                    next_compact = time.monotonic() + (0.0 if dropped == COMPACT_STEP else self.compact_every_s)
                continue
            conn, error = self._write_waiting(conn, waiting)
            if error is None:
                waiting = []
                continue
            failed_since_closing += closing
            if failed_since_closing > 3:
                log.error("stopping with %d batches not written to %s: %s", len(waiting), self.path, error)
                break
            time.sleep(self.retry_s)
        if conn is not None:
            conn.close()

    def _wait_for_work(self, waiting: list[tuple[Batch, Callable[[], None]]], timeout: float) -> bool:
        """Block up to ``timeout`` for the next batch (added to ``waiting``); True if the store is being closed."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if item is None:
            return True
        waiting.append(item)
        return False

    def _write_waiting(
        self, conn: sqlite3.Connection | None, waiting: list[tuple[Batch, Callable[[], None]]]
    ) -> tuple[sqlite3.Connection | None, str | None]:
        """Write every waiting batch in one transaction: the connection to go on with, and the error if it failed.

        A connection whose write failed is closed, so the next attempt opens the file afresh (a file
        system mounted again is then the one written to).
        """
        try:
            if conn is None:
                conn = self._connect()
            self._write(conn, [batch for batch, _ in waiting])
        except sqlite3.Error as exc:
            self.failed_writes += 1
            error = f"{type(exc).__name__}: {exc}"
            self._report(False, error)
            if conn is not None:
                conn.close()
            return None, error
        self._report(True, None, [done for _, done in waiting])
        return conn, None

    def _take_waiting(self, waiting: list[tuple[Batch, Callable[[], None]]]) -> bool:
        """Add every batch queued now to ``waiting``; True if the store is being closed."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            waiting.append(item)

    def _write(self, conn: sqlite3.Connection, batches: list[Batch]) -> None:
        started = time.perf_counter()
        rows = [row for b in batches for row in b.rows]
        updates = [row for b in batches for row in b.updates]
        collectors = [(cid, *record) for b in batches for cid, record in b.collectors]
        definitions = [d for b in batches for d in b.definitions]
        if not (rows or updates or collectors or definitions):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                conn.executemany(_INSERT, rows)
            if updates:
                conn.executemany(_UPDATE, updates)
            if collectors:
                conn.executemany(_COLLECTOR, collectors)
            for kind, name, body in definitions:  # (rare, and in order: a set then a removal is a removal)
                if body is None:
                    conn.execute("DELETE FROM definitions WHERE kind = ? AND name = ?", (kind, name))
                else:
                    conn.execute("INSERT OR REPLACE INTO definitions VALUES (?, ?, ?)", (kind, name, body))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for row in rows:
            if row[12] is not None:  # finished_at: a final row
                self.finished += 1
                self.finished_bytes += row[-1]
        self.commits += 1
        self.rows_written += len(rows) + len(updates)
        self.commit_s += time.perf_counter() - started

    def _report(self, ok: bool, error: str | None, dones: list[Callable[[], None]] | None = None) -> None:
        """Tell the loop how the last write went, and run the ``done`` callbacks of what it committed."""
        if self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is left to tell
            self._loop.call_soon_threadsafe(self._on_loop, ok, error, dones or [])

    def _on_loop(self, ok: bool, error: str | None, dones: list[Callable[[], None]]) -> None:
        if ok and not self._available:
            log.warning("state database %s is writable again: taking submissions", self.path)
            self._reopen_reader()  # the file may be another one now (a file system mounted again)
        elif not ok and (self._available or error != self.last_error):
            log.error("cannot write state database %s (refusing submissions, retrying): %s", self.path, error)
        self._available, self.last_error = ok, error
        for done in dones:
            done()

    def _compact(self, conn: sqlite3.Connection) -> int:
        """Drop one step of finished tasks past their TTL, or past max_results / max_result_bytes."""
        keep = self.retention
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute(
                "SELECT serial, bytes FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? "
                "ORDER BY finished_at LIMIT ?",
                (time.time() - keep.result_ttl_s, COMPACT_STEP),
            ).fetchall()
            over = self.finished - keep.max_results
            if not found and (over > 0 or self.finished_bytes > keep.max_result_bytes):
                found = conn.execute(
                    "SELECT serial, bytes FROM tasks WHERE finished_at IS NOT NULL ORDER BY finished_at LIMIT ?",
                    (COMPACT_STEP if over <= 0 else min(COMPACT_STEP, over),),
                ).fetchall()
            conn.executemany("DELETE FROM tasks WHERE serial = ?", [(serial,) for serial, _ in found])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("compaction of %s failed (will try again): %s", self.path, exc)
            return 0
        self.finished -= len(found)
        self.finished_bytes -= sum(size for _, size in found)
        self.dropped += len(found)
        return len(found)

    # ---- reads ---------------------------------------------------------

    def _reopen_reader(self) -> None:
        try:
            reader = self._connect(query_only=True)
        except sqlite3.Error as exc:
            log.warning("cannot reopen the reading connection to %s (keeping the old one): %s", self.path, exc)
            return
        if self._reader is not None:
            self._reader.close()
        self._reader = reader

    @property
    def _reading(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the store was not recovered")
        return self._reader

    def task(self, task_id: str) -> TaskInfo | None:
        row = self._reading.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else r.info(row)

    def older_than(
        self, cursor: int | None, state: TaskState | None, operation: str | None, limit: int
    ) -> list[tuple[int, TaskInfo]]:
        where, args = ["finished_at IS NOT NULL"], list[Any]()
        if cursor is not None:
            where.append("serial < ?")
            args.append(cursor)
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if operation is not None:
            where.append("operation = ?")
            args.append(operation)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY serial DESC LIMIT ?"
        return [(row[0], r.info(row)) for row in self._reading.execute(sql, (*args, limit))]

    def keyed(self, scope: str, since: float) -> TaskInfo | None:
        sql = f"{_SELECT} WHERE idem = ? AND created_at >= ? ORDER BY serial DESC LIMIT 1"
        row = self._reading.execute(sql, (scope, since)).fetchone()
        return None if row is None else r.info(row)

    def status(self) -> dict[str, Any]:
        return {
            "durability": self.durability,
            "path": str(self.path),
            "available": self._available,
            "last_error": self.last_error,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "mean_commit_ms": round(1000 * self.commit_s / self.commits, 3) if self.commits else None,
            "failed_writes": self.failed_writes,
            "finished_kept": self.finished,
            "finished_bytes": self.finished_bytes,
            "finished_dropped": self.dropped,
        }

    def close(self) -> None:
        """Write what is queued, stop the writer, and give the state directory up."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._release_directory()


def check(directory: Path) -> tuple[bool, str]:
    """``eventbusd --check-state``: whether the database in ``directory`` is sound, and a one-line report."""
    path = directory / DB_NAME
    if not path.exists():
        return True, f"{path}: no state database yet (a new one is made at start)"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                return False, f"{path}: damaged: {'; '.join(problems[:5])}"
            if version not in (0, SCHEMA_VERSION):
                return False, f"{path}: layout version {version}; this eventbusd reads {SCHEMA_VERSION}"
            counts = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
            for row in conn.execute(_SELECT):
                if row[3] in _FINAL:
                    r.info(row)
                else:
                    r.record(row, validate=True)
    except sqlite3.Error as exc:
        return False, f"{path}: cannot be read: {exc}"
    except StateCorrupt as exc:
        return False, f"{path}: {exc}"
    shown = ", ".join(f"{counts[s]} {s}" for s in sorted(counts)) or "no tasks"
    return True, f"{path}: ok, layout {SCHEMA_VERSION}, {shown}"

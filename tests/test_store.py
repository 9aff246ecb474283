"""The SQLite store on its own: group commit, recovery, reads of finished tasks, retention, bad files, bad disks."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distributor import DistributorConfig, ErrorInfo, TaskDistributor, TaskRequest, TaskResult, TaskState
from eventbus.errors import ConfigError, StateCorrupt
from eventbus.store import Batch, Retention, rows
from eventbus.store.sqlite import DB_NAME, SqliteStore, check
from tests import mounts
from tests.test_distributor import cap, dispatches, ok


def journaled() -> TaskDistributor:
    dist = TaskDistributor(DistributorConfig())
    dist.journal = True
    return dist


def submit(dist: TaskDistributor, now: float, **fields: object) -> str:
    task_id, _ = dist.submit(TaskRequest(operation="echo", **fields), now, owner=1000)
    return task_id


async def commit(store: SqliteStore, dist: TaskDistributor) -> None:
    done = asyncio.get_running_loop().create_future()
    store.commit(rows.batch(dist.take_changes()), lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def opened(directory: Path, durability: str = "fsync", **kw: object) -> SqliteStore:
    store = SqliteStore(directory, durability, **kw)  # type: ignore[arg-type]
    store.recover()
    store.start(asyncio.get_running_loop())
    return store


def test_tasks_and_results_survive_a_store_closed_without_warning(state: Path) -> None:
    async def main() -> None:
        dist = journaled()
        store = opened(state)
        queued = [submit(dist, 1.0, priority=p, payload={"n": i}) for i, p in enumerate([5, 9, 5])]
        done_id = submit(dist, 1.0, idempotency_key="once")
        failed_id = submit(dist, 1.0)
        await commit(store, dist)
        actions = dist.register(cap("c1", slots=5), 2.0)
        by_id = {d.task.task_id: d for d in dispatches(actions)}
        dist.complete(ok(by_id[done_id], {"answer": 42}), 3.0)
        bad = TaskResult(
            task_id=failed_id,
            attempt=by_id[failed_id].attempt,
            collector_id="c1",
            success=False,
            error=ErrorInfo(type="InvalidResult", message="nope"),
        )
        dist.complete(bad, 3.0)
        await commit(store, dist)
        # no close(): the writer thread dies with the process, as after kill -9
        store._thread = None
        store._release_directory()

        again = SqliteStore(state, "fsync")
        recovered = again.recover()
        try:
            assert sorted(t.task_id for t in recovered.tasks) == sorted(queued)
            assert {t.state for t in recovered.tasks} == {TaskState.DISPATCHED}
            assert recovered.collectors == {"c1": (1, 1, 0.0)}
            assert recovered.finished == 2 and recovered.last_serial == 5
            back = journaled()
            back.restore(recovered.tasks, 4.0, last_serial=recovered.last_serial)
            order = [d.task for d in dispatches(back.register(cap("c1", slots=5), 4.0))]
            assert [t.task_id for t in order] == [queued[1], queued[0], queued[2]]
            assert [t.payload for t in order] == [{"n": 1}, {"n": 0}, {"n": 2}]
            assert all(t.task_id in queued for t in order)
            info = again.task(done_id)
            assert info is not None and info.state is TaskState.SUCCEEDED
            assert info.result is not None and info.result.value == {"answer": 42}
            failed = again.task(failed_id)
            assert failed is not None and failed.error is not None and failed.error.type == "InvalidResult"
            assert again.task("nope") is None
            listed = again.older_than(None, None, None, 10)
            assert [i.task_id for _, i in listed] == [failed_id, done_id]
            assert [i.task_id for _, i in again.older_than(listed[0][0], TaskState.SUCCEEDED, "echo", 10)] == [done_id]
            keyed = again.keyed("1000:once", 0.0)
            assert keyed is not None and keyed.task_id == done_id
            assert again.keyed("1000:once", 2.0) is None  # created before the window
            assert again.keyed("1001:once", 0.0) is None
        finally:
            again.close()

    asyncio.run(main())


def test_batches_queued_during_a_commit_share_the_next_one_and_complete_in_order(state: Path) -> None:
    async def main() -> None:
        dist = journaled()
        store = opened(state)
        order: list[int] = []
        for i in range(200):
            submit(dist, 1.0)
            store.commit(rows.batch(dist.take_changes()), functools.partial(order.append, i))
        await asyncio.wait_for(store.flush(), 10)
        for name in (DB_NAME, DB_NAME + "-wal"):  # payloads of every user: readable by ours only
            assert (state / name).stat().st_mode & 0o777 == 0o600, name
        store.close()
        assert order == list(range(200))
        assert 1 <= store.commits < 200, store.commits  # one fsync covered many submissions

    asyncio.run(main())


def test_a_second_store_on_the_same_directory_is_refused(state: Path) -> None:
    first = SqliteStore(state, "fsync")
    first.recover()
    try:
        with pytest.raises(ConfigError, match="in use by another eventbusd"):
            SqliteStore(state, "fsync").recover()
    finally:
        first.close()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"this is not a database at all" * 100), id="garbage"),
        pytest.param(lambda p: _flip_page(p, 2), id="damaged-page"),
    ],
)
def test_a_damaged_database_is_refused_with_its_path_and_reason(state: Path, damage: Callable[[Path], None]) -> None:
    async def fill() -> None:
        dist = journaled()
        store = opened(state)
        for i in range(300):
            submit(dist, 1.0, payload="x" * 200, task_id=f"t{i}")
        await commit(store, dist)
        store.close()

    asyncio.run(fill())
    path = state / DB_NAME
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    damage(path)
    with pytest.raises(StateCorrupt) as caught:
        SqliteStore(state, "fsync").recover()
    assert str(path) in caught.value.message
    sound, line = check(state)
    assert not sound and str(path) in line
    SqliteStore(state, "fsync")._release_directory()  # the refused store let the directory go
    assert path.read_bytes()  # the damaged file was left as it was, never replaced by an empty one


def _flip_page(path: Path, page: int) -> None:
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[16:18], "big") or 65536
    start = (page - 1) * size
    data[start : start + size] = bytes(b ^ 0x5A for b in data[start : start + size])
    path.write_bytes(bytes(data))


def test_check_reports_a_sound_database_and_what_it_holds(state: Path) -> None:
    assert check(state)[0] and "no state database yet" in check(state)[1]

    async def fill() -> None:
        dist = journaled()
        store = opened(state)
        submit(dist, 1.0)
        await commit(store, dist)
        store.close()

    asyncio.run(fill())
    sound, line = check(state)
    assert sound and "ok" in line and "1 queued" in line


def test_finished_tasks_past_the_limits_are_dropped_oldest_first(state: Path) -> None:
    async def main() -> None:
        dist = journaled()
        store = opened(state, retention=Retention(max_results=5), compact_every_s=0.05)
        now = time.time()  # within result_ttl_s: only max_results drops them
        ids = [submit(dist, now) for _ in range(12)]
        for d in dispatches(dist.register(cap("c1", slots=12), now)):
            dist.complete(ok(d), time.time())
            await commit(store, dist)  # one by one: finished_at orders them
        deadline = time.monotonic() + 10
        while store.status()["finished_kept"] > 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        kept = [i.task_id for _, i in store.older_than(None, None, None, 100)]
        store.close()
        assert store.dropped == 7 and len(kept) == 5
        assert set(kept) == set(ids[-5:])

    asyncio.run(main())


def test_finished_tasks_past_their_ttl_are_dropped(state: Path) -> None:
    async def main() -> None:
        dist = journaled()
        store = opened(state, retention=Retention(result_ttl_s=0.2), compact_every_s=0.05)
        submit(dist, 1.0)
        (d,) = dispatches(dist.register(cap("c1"), 2.0))
        dist.complete(ok(d), time.time())
        await commit(store, dist)
        task_id = d.task.task_id or ""
        assert store.task(task_id) is not None
        deadline = time.monotonic() + 10
        while store.task(task_id) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        store.close()
        assert store.dropped == 1

    asyncio.run(main())


# ---- a disk that fills up ---------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounts.tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


def test_a_full_disk_holds_commits_back_and_they_complete_once_there_is_room(small_disk: Path) -> None:
    async def main() -> None:
        dist = journaled()
        store = opened(small_disk / "state", retry_s=0.05)
        submit(dist, 1.0)
        await commit(store, dist)
        filler = mounts.fill(small_disk)
        done: list[int] = []
        for i in range(3):
            for _ in range(50):
                submit(dist, 1.0, payload="y" * 1000)
            store.commit(rows.batch(dist.take_changes()), functools.partial(done.append, i))
        deadline = time.monotonic() + 10
        while store.available and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not store.available and not done
        assert "full" in (store.last_error or "")
        assert store.task("missing") is None  # reads are still served
        filler.unlink()
        await asyncio.wait_for(store.flush(), 10)
        assert store.available and done == [0, 1, 2]
        store.close()
        recovered = SqliteStore(small_disk / "state", "fsync")
        assert len(recovered.recover().tasks) == 151
        recovered.close()

    asyncio.run(main())


def test_a_batch_is_the_rows_of_new_final_and_changed_tasks() -> None:
    dist = journaled()
    first = submit(dist, 1.0)
    out = rows.batch(dist.take_changes())
    assert len(out.rows) == 1 and not out.updates
    (d,) = dispatches(dist.register(cap("c1"), 2.0))
    out = rows.batch(dist.take_changes())
    assert not out.rows and len(out.updates) == 1
    dist.accepted("c1", first, d.attempt, 2.5)
    assert not dist.has_changes  # running: the attempt is written already as dispatched
    dist.complete(ok(d), 3.0)
    out = rows.batch(dist.take_changes())
    assert len(out.rows) == 1 and out.rows[0][rows.COLUMNS.index("payload")] is None
    assert isinstance(out, Batch)


def test_an_idle_writer_sleeps(state: Path) -> None:
    """With nothing to write and nothing to drop, the writer thread waits: it never spins."""

    async def main() -> None:
        store = opened(state, compact_every_s=0.05)
        thread = store._thread
        assert thread is not None and thread.native_id is not None
        stat = Path(f"/proc/self/task/{thread.native_id}/stat")
        before = _cpu_ticks(stat)
        await asyncio.sleep(1.0)
        used = _cpu_ticks(stat) - before
        store.close()
        assert used < 20, f"the idle writer used {used} clock ticks of CPU in one second"

    asyncio.run(main())


def _cpu_ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_definitions_are_kept_replaced_and_deleted_in_order(state: Path) -> None:
    async def main() -> None:
        store = opened(state)
        done = asyncio.get_running_loop().create_future()
        batch = Batch(
            definitions=[
                ("limit.operation", "echo", b"\x01"),
                ("limit.operation", "echo", b"\x02"),  # replaced in the same commit
                ("limit.collector_type", "demo", b"\x03"),
                ("limit.operation", "gone", b"\x04"),
                ("limit.operation", "gone", None),  # set then removed: removed
            ]
        )
        assert batch
        store.commit(batch, lambda: done.set_result(None))
        await asyncio.wait_for(done, 10)
        store.close()
        again = SqliteStore(state, "fsync")
        recovered = again.recover()
        again.close()
        assert recovered.definitions == {
            "limit.operation": {"echo": b"\x02"},
            "limit.collector_type": {"demo": b"\x03"},
        }

    asyncio.run(main())

"""What survives kill -9 of a real daemon, and what a damaged file or a failing disk does to it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from eventbus.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_TASK_FAILED, EXIT_TIMEOUT
from eventbus.store.sqlite import DB_NAME
from tests import mounts
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e


def kill_9(bus: Bus) -> None:
    assert bus.daemon is not None
    bus.daemon.signal(signal.SIGKILL)
    bus.daemon.wait(10)


def stats(bus: Bus) -> dict[str, Any]:
    with bus.client() as c:
        return c.stats()


def test_an_attempt_running_at_a_kill_9_runs_again_once_and_its_late_result_is_stale(bus: Bus) -> None:
    bus.start_collector("c1", "demo", "--concurrency", "4")
    with bus.client() as c:
        task_id = c.submit("sleep", {"seconds": 2})
        wait_until(lambda: c.get(task_id).state == "running", 10, "the task to run")
    kill_9(bus)
    bus.start_daemon()
    with bus.client() as c:
        info = c.wait(task_id, timeout=30)
        assert info.state == "succeeded" and info.attempt == 2, info
        assert info.result is not None and info.result.attempt == 2
        # the collector finishes attempt 1 as well, and reports it to the new daemon: counted stale, never kept
        wait_until(lambda: int(stats(bus)["stale_messages"]) >= 1, 15, "the old attempt's result")
        again = c.get(task_id)
        assert again.result is not None and again.result.attempt == 2 and again.finished_at == info.finished_at
        assert int(c.stats()["tasks_succeeded"]) == 1


def test_finished_tasks_and_idempotency_keys_outlive_the_daemon(bus: Bus) -> None:
    assert re.search(r"durable +on \(durability fsync\)", bus.ctl("status").stdout)
    bus.start_collector("c1")
    first = bus.ctl("submit", "echo", "--payload", '{"n": 1}', "--idempotency-key", "order-17", "--wait")
    assert first.returncode == EXIT_OK, first.stderr
    with bus.client() as c:
        (done,) = c.tasks(state="succeeded")
    kill_9(bus)
    bus.start_daemon()
    shown = bus.ctl("--json", "task", done.task_id)
    assert shown.returncode == EXIT_OK and json.loads(shown.stdout)["result"]["value"] == {"n": 1}
    listed = bus.ctl("--json", "tasks", "--state", "succeeded")
    assert listed.returncode == EXIT_OK and done.task_id in listed.stdout
    again = bus.ctl("submit", "echo", "--payload", '{"n": 2}', "--idempotency-key", "order-17")
    assert again.returncode == EXIT_OK and again.stdout.strip() == done.task_id
    with bus.client() as c:
        assert int(c.stats()["tasks_submitted"]) == 0  # the new daemon made no task for it
    kill_9(bus)
    bus.start_daemon("--no-durable")
    assert re.search(r"durable +off \(durability none\)", bus.ctl("status").stdout)
    assert bus.ctl("task", done.task_id).returncode == EXIT_REJECTED  # a memory-only daemon knows nothing


def test_a_hundred_thousand_queued_tasks_come_back_in_order(bare_bus: Bus) -> None:
    bus, total = bare_bus, 100_000
    limits = ("--max-queue-size", str(total), "--max-queued-per-operation", str(total))
    bus.start_daemon(*limits)
    with bus.client(timeout=60) as c:
        for start in range(0, total, 2_000):
            specs = [{"operation": "echo", "payload": i, "priority": 7 if i % 1000 == 0 else 5} for i in
                     range(start, start + 2_000)]  # fmt: skip
            ids = c.submit_many(specs)
            assert all(isinstance(i, str) for i in ids), [i for i in ids if not isinstance(i, str)][:3]
        assert c.status()["tasks_queued"] == total
    kill_9(bus)
    started = time.monotonic()
    bus.start_daemon(*limits)
    took = time.monotonic() - started
    assert bus.daemon is not None
    recovered = re.search(r"(\d+) unfinished tasks taken back .* in ([\d.]+) s", bus.daemon.output())
    assert recovered is not None and int(recovered.group(1)) == total, bus.daemon.output()[-2000:]
    rss = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{bus.daemon.pid}/status").read_text())
    assert rss is not None
    print(
        f"\n100,000 queued: recovered in {recovered.group(2)} s (daemon answering after {took:.2f} s), "
        f"RSS {int(rss.group(1)) / 1024:.1f} MB"
    )
    with bus.client(timeout=60) as c:
        assert c.status()["tasks_queued"] == total
    # one collector taking one task at a time runs them in queue order: priority 7 first, each in submission order
    bus.start_collector("c1", "demo", "--concurrency", "1")
    with bus.client() as c:
        wait_until(lambda: int(c.stats()["tasks_succeeded"]) >= 120, 60, "120 tasks to run")
        bus.procs[-1].signal(signal.SIGKILL)
        ran = sorted(c.tasks(state="succeeded", limit=1000), key=lambda t: t.finished_at or 0)
    values = [t.result.value for t in ran if t.result is not None][:120]
    assert values[:100] == list(range(0, total, 1000)), values[:12]
    assert values[100:120] == list(range(1, 21)), values[100:]


def test_a_damaged_state_file_is_refused_and_check_state_says_why(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon()
    bus.ctl("submit", "echo")
    bus.close()
    path = bus.state / DB_NAME
    data = bytearray(path.read_bytes())
    data[:100] = b"\xff" * 100  # the header: not a database any more
    path.write_bytes(bytes(data))
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    daemon = subprocess.run([command("eventbusd")], env=bus.env, capture_output=True, text=True, timeout=30)
    assert daemon.returncode == 1, daemon.stderr
    assert str(path) in daemon.stderr and "Traceback" not in daemon.stderr, daemon.stderr
    assert not bus.socket.exists()
    checked = subprocess.run([command("eventbusd"), "--check-state"], env=bus.env, capture_output=True, text=True)
    assert checked.returncode == EXIT_TASK_FAILED and str(path) in checked.stderr, checked
    path.unlink()
    fresh = subprocess.run([command("eventbusd"), "--check-state"], env=bus.env, capture_output=True, text=True)
    assert fresh.returncode == EXIT_OK and "no state database yet" in fresh.stdout, fresh


def _available(bus: Bus) -> bool:
    with bus.client() as c:
        return bool(c.status()["storage_available"])


def _refused_while_failing(bus: Bus, done_id: str) -> None:
    """Submissions are refused storage_unavailable (exit 4, one line) while reads are served."""
    # more than the free room left in the database's files: this commit must grow them, and cannot
    big = bus.root / "big.json"
    big.write_text(json.dumps({"fill": "x" * 600_000}))
    held = bus.ctl("--timeout", "2", "submit", "echo", "--payload", f"@{big}", "--idempotency-key", "during")
    assert held.returncode in (EXIT_TIMEOUT, EXIT_REJECTED), held  # taken but never acknowledged, or refused
    wait_until(lambda: not _available(bus), 10, "the store to fail")
    refused = bus.ctl("submit", "echo")
    assert refused.returncode == EXIT_REJECTED, refused
    assert refused.stderr.count("\n") == 1 and "state database" in refused.stderr, refused.stderr
    as_json = bus.ctl("--json", "submit", "echo")
    assert json.loads(as_json.stdout)["error"]["code"] == "storage_unavailable"
    read = bus.ctl("--json", "task", done_id)
    assert read.returncode == EXIT_OK and json.loads(read.stdout)["state"] == "succeeded"
    status = bus.ctl("--json", "status")
    assert status.returncode == EXIT_OK and json.loads(status.stdout)["storage_available"] is False
    assert "UNAVAILABLE" in bus.ctl("status").stdout


def _one_task_for_the_key_held_back(bus: Bus) -> None:
    """Submissions are taken again, and the key whose submission was never acknowledged names one task."""
    wait_until(lambda: bus.ctl("submit", "echo").returncode == EXIT_OK, 20, "submissions to be taken again")
    first = bus.ctl("submit", "echo", "--idempotency-key", "during")
    second = bus.ctl("submit", "echo", "--idempotency-key", "during")
    assert first.returncode == EXIT_OK and first.stdout == second.stdout


def test_a_full_disk_refuses_submissions_serves_reads_and_recovers(bare_bus: Bus) -> None:
    bus = bare_bus
    with mounts.tmpfs(bus.state, "4m") as disk:
        bus.start_daemon()
        bus.start_collector("c1")
        done = bus.ctl("--json", "submit", "echo", "--wait")
        assert done.returncode == EXIT_OK, done.stderr
        filler = mounts.fill(disk)
        _refused_while_failing(bus, json.loads(done.stdout)["task_id"])
        filler.unlink()  # the disk recovers: the same daemon writes again
        _one_task_for_the_key_held_back(bus)
        bus.close()


def test_a_state_dir_turned_read_only_refuses_submissions_and_nothing_acknowledged_is_lost(bare_bus: Bus) -> None:
    """The kernel turns the file system read-only under the daemon (ext4 errors=remount-ro).

    Such a file system cannot be repaired while files are open on it: the daemon is stopped, the
    file system checked and mounted again, and the next daemon has every task acknowledged before.
    """
    bus = bare_bus
    with mounts.ext4(bus.state, bus.root / "state.img") as fs:
        bus.start_daemon()
        bus.start_collector("c1")
        done = bus.ctl("--json", "submit", "echo", "--wait")
        assert done.returncode == EXIT_OK, done.stderr
        with bus.client() as c:
            queued = [c.submit("nobody-serves-this", i) for i in range(50)]
        fs.break_it()
        _refused_while_failing(bus, json.loads(done.stdout)["task_id"])
        assert bus.daemon is not None
        bus.daemon.signal(signal.SIGTERM)
        assert bus.daemon.wait(60) == 0, bus.daemon.output()[-2000:]
        assert "could not be written" in bus.daemon.output()
        fs.repair()
        bus.start_daemon()
        with bus.client() as c:
            assert [t.task_id for t in c.tasks(state="queued", limit=100)] == queued[::-1]
            assert c.get(json.loads(done.stdout)["task_id"]).state == "succeeded"
        _one_task_for_the_key_held_back(bus)
        bus.close()

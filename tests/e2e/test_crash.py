"""The seeded crash test of the durable store: kill -9 the daemon under load, again and again.

A load generator (:mod:`tests.e2e.crash_load`) submits about 1,000 keyed tasks a
second and submits a spec again, with the same idempotency key, whenever its
submission fails because the daemon went away. Meanwhile the daemon is killed
with SIGKILL at moments drawn from the seed and started again on the same state
directory; two demo collectors run throughout and reconnect on their own. Then:
every acknowledged task must finish, once, with its own result, and no key may
have made a second task.

The seed is printed; ``EVENTBUS_CRASH_SEED=N`` replays one. ``EVENTBUS_CRASH_SOAK=N``
kills the daemon N times instead of 20 (a soak; CI runs the short one). Counts
are printed on one line (see them with ``-s``) and repeated in assertion messages.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter, defaultdict
from functools import partial

import pytest

from distributor.models import TaskInfo, TaskState
from eventbus.client import SyncClient
from tests.e2e.conftest import Bus, wait_until
from tests.e2e.crash_load import Load

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("EVENTBUS_CRASH_SEED") or random.SystemRandom().randrange(2**32))
SOAK = int(os.environ.get("EVENTBUS_CRASH_SOAK") or 0)
KILLS = SOAK or 20
#: the short run takes well under 2 minutes; a soak about 3 s a kill
TIMEOUT_S = 240 if not SOAK else 240 + 5 * SOAK
UNFINISHED = [TaskState.PENDING, TaskState.QUEUED, TaskState.DISPATCHED, TaskState.RUNNING, TaskState.RETRYING]


def _every_task(c: SyncClient) -> list[TaskInfo]:
    """Every task the daemon knows, held or kept, paging through the listing."""
    tasks: list[TaskInfo] = []
    after: str | None = None
    while True:
        page = c.task_page(limit=10_000, after=after)
        tasks.extend(page.tasks)
        if page.next is None or not page.tasks:
            return tasks
        after = page.next


def _unfinished(c: SyncClient) -> int:
    return sum(len(c.tasks(state=s.value, limit=10_000)) for s in UNFINISHED)


def _log_oddities(bus: Bus) -> dict[str, int]:
    """Lines worth a look in the daemons' logs (one log per start): tracebacks, errors, warnings."""
    found: Counter[str] = Counter()
    for proc in bus.procs:
        if proc.log.name.startswith("eventbusd"):
            for line in proc.output().splitlines():
                found.update(w for w in ("Traceback", "CRITICAL", "ERROR", "WARNING") if re.search(rf"\b{w}\b", line))
    return dict(found)


def _crash(bus: Bus, load: Load, rng: random.Random) -> list[float]:
    """Kill -9 the daemon KILLS times at moments drawn from ``rng``, starting it again each time;
    returns how long each start took."""

    def acked_since(base: int, need: int) -> bool:
        if load.crashed is not None:
            raise AssertionError(f"the load generator stopped: {load.crashed!r}")
        return load.acked >= base + need

    def running(count: int) -> bool:
        with bus.client() as c:
            return int(c.status()["tasks_in_flight"]) >= count

    restarts: list[float] = []
    for kill in range(1, KILLS + 1):
        # at once (while collectors and retries come back), once the daemon took some submissions, or
        # once attempts run on it too (collectors re-register with a new daemon at their next heartbeat)
        kind = rng.random()
        need = 0 if kind < 0.15 else rng.randint(100, 1000)
        if kind >= 0.6:
            wait_until(partial(running, rng.randint(1, 32)), 30, f"attempts running before kill {kill}")
        wait_until(partial(acked_since, load.acked, need), 30, f"{need} acknowledgements before kill {kill}")
        time.sleep(rng.uniform(0, 0.05))  # not a wait: a random phase against the generator's batches
        daemon = bus.daemon
        assert daemon is not None
        daemon.signal(signal.SIGKILL)
        assert daemon.wait(10) == -signal.SIGKILL
        restarted = time.monotonic()
        bus.start_daemon()
        restarts.append(time.monotonic() - restarted)
    # the last daemon takes load too before the end
    wait_until(partial(acked_since, load.acked, 500), 30, "acknowledgements by the last daemon")
    return restarts


def _key_problems(load: Load, tasks: list[TaskInfo]) -> list[str]:
    """Checks (1) and (3): one task per key, the one every acknowledgement of the key named, none not ours."""
    problems: list[str] = []
    # (1) a key's acknowledgements all name one task: a resubmission never made a second one ...
    split = {k: ids for k, ids in load.acks.items() if len(set(ids)) > 1}
    if split:
        problems.append(f"{len(split)} keys acknowledged with different task ids, e.g. {list(split.items())[:3]}")
    # ... and that task is one an attempt of this key proposed (not another key's)
    foreign = {k: ids[0] for k, ids in load.acks.items() if ids and ids[0] not in load.proposed[k]}
    if foreign:
        problems.append(
            f"{len(foreign)} keys acknowledged with an id no attempt of theirs proposed: {list(foreign.items())[:3]}"
        )
    # (3) the daemon knows exactly one task per key, the acknowledged one, and none that is not ours
    per_key: defaultdict[str | None, list[str]] = defaultdict(list)
    for t in tasks:
        per_key[t.idempotency_key].append(t.task_id)
    strangers = {k: ids[:3] for k, ids in per_key.items() if k not in load.specs}
    if strangers:
        problems.append(f"tasks with a key not ours (or none): {list(strangers.items())[:3]}")
    twice = {k: ids for k, ids in per_key.items() if len(ids) > 1}
    if twice:
        problems.append(f"{len(twice)} keys with more than one task, e.g. {list(twice.items())[:3]}")
    missing = [k for k in load.specs if k not in per_key]
    if missing:
        problems.append(f"{len(missing)} keys without a task, e.g. {missing[:3]}")
    other = {k: (ids, per_key[k]) for k, ids in load.acks.items() if k in per_key and set(ids) != {per_key[k][0]}}
    if other:
        problems.append(
            f"{len(other)} keys acknowledged (first) with another task id than the listing's (second), "
            f"e.g. {list(other.items())[:3]}"
        )
    return problems


def _result_problems(load: Load, by_id: dict[str, TaskInfo], got: dict[str, TaskInfo]) -> list[str]:
    """Check (2): every acknowledged task succeeded, with the result of its last attempt and its own value."""
    wrong: list[str] = []
    for key, ids in load.acks.items():
        spec = load.specs[key]
        expected = spec.payload if spec.operation == "echo" else {"slept": spec.payload["seconds"]}
        for task_id in dict.fromkeys(ids):
            info = by_id.get(task_id)
            result = None if info is None else info.result
            if info is None:
                wrong.append(f"{key}: acknowledged task {task_id} is not listed")
            elif info.state is not TaskState.SUCCEEDED or result is None or not result.success:
                wrong.append(f"{key}: {info.state} result={result}")
            elif result.task_id != info.task_id or result.attempt != info.attempt:
                wrong.append(
                    f"{key}: task {info.task_id} attempt {info.attempt} has the result of "
                    f"{result.task_id} attempt {result.attempt}"
                )
            elif info.truncated or result.value != expected or info.operation != spec.operation:
                wrong.append(f"{key}: {info.operation} value {result.value!r}, expected {spec.operation} {expected!r}")
    problems = [f"{len(wrong)} acknowledged tasks without their own final result, e.g. {wrong[:5]}"] if wrong else []
    # what get says (from memory or from the store) is what the listing says
    differ = {
        tid: ((by_id[tid].state, by_id[tid].attempt), (info.state, info.attempt))
        for tid, info in got.items()
        if (info.state, info.attempt, info.result) != (by_id[tid].state, by_id[tid].attempt, by_id[tid].result)
    }
    if differ:
        problems.append(f"get and the listing disagree on {len(differ)} tasks: {list(differ.items())[:3]}")
    return problems


@pytest.mark.timeout(TIMEOUT_S)
def test_kill_9_under_load_loses_no_acknowledged_task_and_makes_no_second_one(bus: Bus) -> None:
    print(f"\ncrash test: seed={SEED} kills={KILLS} (replay with EVENTBUS_CRASH_SEED={SEED})")
    rng = random.Random(SEED)
    began = time.monotonic()
    collectors = [bus.start_collector(cid, "demo", "--concurrency", "16") for cid in ("crash1", "crash2")]
    load = Load(bus.socket, SEED)
    load.start()
    restarts: list[float] = []
    try:
        restarts = _crash(bus, load, rng)
    finally:
        drained = load.stop(60)
    submit_s = load.stopped_new - load.started
    assert load.crashed is None, f"the load generator stopped: {load.crashed!r}"
    assert drained, f"{len(load.pending)} specs still not acknowledged 60 s after the end"

    with bus.client(timeout=30) as c:
        wait_until(lambda: _unfinished(c) == 0, 60, "every task to be final")
        tasks = _every_task(c)
        stats = c.stats()
        by_id = {t.task_id: t for t in tasks}
        redelivered = [t for t in tasks if t.attempt > 1]
        got = {t.task_id: c.get(t.task_id) for t in redelivered + rng.sample(tasks, min(300, len(tasks)))}

    n, logged = load.counts, _log_oddities(bus)
    line = (
        f"seed={SEED} kills={len(restarts)} keys={n.keys} attempts={n.attempts} acks={n.acks} "
        f"resubmitted_after_error={n.resubmitted_after_error} resubmitted_on_purpose={n.resubmitted_on_purpose} "
        f"resubmitted_after_queue_full={n.resubmitted_after_queue_full} duplicates={n.duplicates} "
        f"errors={dict(n.errors)} tasks_listed={len(tasks)} final={sum(t.state.terminal for t in tasks)} "
        f"attempt_gt_1={len(redelivered)} stale_messages={stats['stale_messages']} "
        f"recovered={stats.get('tasks_recovered')} redelivered={stats.get('tasks_redelivered')} "
        f"elapsed_s={time.monotonic() - began:.1f} submit_rate={n.keys / submit_s:.0f}/s "
        f"restart_s_mean={sum(restarts) / max(1, len(restarts)):.2f} restart_s_max={max(restarts, default=0):.2f} "
        f"daemon_log={logged}"
    )
    print(f"crash test: {line}")

    problems = [
        *([f"{len(restarts)} kills, not {KILLS}"] if len(restarts) != KILLS else []),
        *([f"{len(load.unexpected)} unexpected errors, e.g. {load.unexpected[:5]}"] if load.unexpected else []),
        *([f"{len(load.unacked())} keys never acknowledged: {load.unacked()[:3]}"] if load.unacked() else []),
        *(["a collector exited"] if any(p.popen.poll() is not None for p in collectors) else []),
        *([f"the daemons logged {logged}"] if {"Traceback", "CRITICAL", "ERROR"} & logged.keys() else []),
        *_key_problems(load, tasks),
        *_result_problems(load, by_id, got),
    ]
    assert not problems, "\n".join([*problems, line])

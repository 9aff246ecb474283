"""Drive the distributor with thousands of simulated collectors in one process, no I/O.

Measures routing decisions per second (dispatches, with the submit and result
events around them) at several collector counts, so the cost of a decision
can be compared from 10 to 10,000 collectors. Each collector offers 5 of the
operations and has 4 slots; tasks name operations some collector offers, with
random priorities; 20 attempts run at a time. Every figure is from this run.
Times are CPU seconds of this process, so other work on the machine does not
count against the distributor.

Usage: python benchmarks/simulate.py [--collectors 10,1000,10000] [--operations 500]
                                     [--tasks 100000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections import deque
from dataclasses import dataclass

from distributor import (
    CollectorCapability,
    Dispatch,
    DistributorConfig,
    TaskDistributor,
    TaskRequest,
    TaskResult,
    TaskState,
    make_strategy,
)
from distributor.history import RECORD_OVERHEAD

OPS_PER_COLLECTOR = 5
SLOTS = 4
#: attempts kept running at once, the same at every collector count, so each
#: run makes the same decisions and only the number of collectors differs
WINDOW = 20


@dataclass
class Run:
    collectors: int
    operations: int
    tasks: int
    strategy: str
    seconds: float
    dispatches: int
    succeeded: int

    @property
    def decisions_per_s(self) -> float:
        return self.dispatches / self.seconds


def simulate(collectors: int, operations: int, tasks: int, strategy: str = "least_loaded", seed: int = 1) -> Run:
    """Register ``collectors`` over ``operations``, push ``tasks`` through, complete every attempt."""
    rng = random.Random(seed)
    ops = [f"op{i}" for i in range(operations)]
    config = DistributorConfig(
        max_queue_size=tasks + 1,
        max_queued_per_operation=tasks + 1,
        heartbeat_timeout_s=1e9,
        max_finished_tasks=tasks,
        max_finished_bytes=tasks * RECORD_OVERHEAD,
    )
    dist = TaskDistributor(config, strategy=make_strategy(strategy, rng), rng=rng)
    covered: set[str] = set()
    for i in range(collectors):
        mine = rng.sample(ops, OPS_PER_COLLECTOR)
        covered.update(mine)
        cap = CollectorCapability(
            collector_id=f"c{i}",
            collector_type="sim",
            supported_operations=mine,
            max_concurrent_tasks=SLOTS,
            attributes={"skill": rng.randint(1, 10)},
        )
        dist.register(cap, 0.0)
    usable = sorted(covered)  # with few collectors not every operation has one
    requests = [
        TaskRequest(task_id=f"t{n}", operation=rng.choice(usable), priority=rng.randint(1, 10)) for n in range(tasks)
    ]
    results: dict[tuple[str, int], TaskResult] = {}
    running: deque[Dispatch] = deque()
    now = 0.0

    def finish_one() -> None:
        d = running.popleft()
        key = (d.task.task_id or "", d.attempt)
        result = results.get(key) or TaskResult(
            task_id=key[0], attempt=d.attempt, collector_id=d.collector_id, success=True, value=None
        )
        running.extend(a for a in dist.complete(result, now) if isinstance(a, Dispatch))

    # the garbage of the set-up is collected now, not charged to the first decisions
    gc.collect()
    started = time.process_time()
    for request in requests:
        now += 1e-5
        _, actions = dist.submit(request, now)
        running.extend(a for a in actions if isinstance(a, Dispatch))
        while len(running) > WINDOW:
            finish_one()
    while running:
        finish_one()
    seconds = time.process_time() - started
    snap = dist.snapshot(now)
    assert snap["tasks_queued"] == 0 and snap["tasks_in_flight"] == 0, snap
    succeeded = sum(1 for _ in dist.tasks(TaskState.SUCCEEDED))
    return Run(collectors, operations, tasks, strategy, seconds, snap["tasks_distributed"], succeeded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collectors", default="10,1000,10000")
    parser.add_argument("--operations", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--strategy", default="least_loaded")
    parser.add_argument("--repeat", type=int, default=3, help="runs per collector count; the median is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for n in (int(n) for n in args.collectors.split(",") if n.strip()):
        repeats = sorted(
            (simulate(n, args.operations, args.tasks, args.strategy, seed=1) for _ in range(args.repeat)),
            key=lambda r: r.decisions_per_s,
        )
        runs.append(repeats[len(repeats) // 2])
    base = runs[0].decisions_per_s
    rows = [
        {
            "collectors": r.collectors,
            "operations": r.operations,
            "tasks": r.tasks,
            "strategy": r.strategy,
            "seconds": round(r.seconds, 3),
            "decisions_per_s": round(r.decisions_per_s),
            "ratio_to_first": round(r.decisions_per_s / base, 3),
            "succeeded": r.succeeded,
        }
        for r in runs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(
            f"{row['collectors']:>6} collectors  {row['tasks']} tasks  {row['seconds']:7.2f} s  "
            f"{row['decisions_per_s']:>8} decisions/s  x{row['ratio_to_first']:.2f} of the first  "
            f"({row['succeeded']} succeeded, {row['strategy']})"
        )


if __name__ == "__main__":
    main()

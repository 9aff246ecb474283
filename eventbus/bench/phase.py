"""One measured phase of the bench: N client processes through warm-up, a common start, and their results."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eventbus.bench.client import TASK_WAIT_S, Spec
from eventbus.bench.procs import Child, wait_readable
from eventbus.bench.stats import cpu_seconds, rss_bytes
from eventbus.errors import BenchFailed

#: how long the client processes may take to start and warm up
READY_WITHIN_S = 120.0
#: a phase in which no task finished for this long is given up (each task has TASK_WAIT_S itself)
STALL_S = TASK_WAIT_S + 30.0


class Progress(Protocol):
    """Where the bench says what it is doing (the command line draws it on stderr)."""

    def phase(self, text: str) -> None: ...

    def update(self, done: int, total: int | None, elapsed: float) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class PhaseResult:
    """The merged tally of every client of one phase, and the broker's CPU time during it."""

    ok: int = 0
    failed: int = 0
    wrong: int = 0
    lost: int = 0
    warmup_unsuccessful: int = 0
    start: float | None = None
    end: float | None = None
    latencies_us: list[int] = field(default_factory=list)
    cpu_s: float | None = None
    #: the broker's resident memory when the phase ended
    rss_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return self.ok + self.failed + self.wrong + self.lost

    @property
    def wall_s(self) -> float:
        return 0.0 if self.start is None or self.end is None else self.end - self.start

    def merge(self, result: dict[str, Any]) -> None:
        for key in ("ok", "failed", "wrong", "lost", "warmup_unsuccessful"):
            setattr(self, key, getattr(self, key) + int(result.get(key, 0)))
        if result.get("start") is not None:
            self.start = result["start"] if self.start is None else min(self.start, result["start"])
        if result.get("end") is not None:
            self.end = result["end"] if self.end is None else max(self.end, result["end"])
        self.latencies_us += result.get("latencies_us", [])
        self.errors += [e for e in result.get("errors", []) if e not in self.errors][: 5 - len(self.errors)]


def client_specs(base: Spec, clients: int, tasks: int | None) -> list[Spec]:
    """``clients`` specs like ``base`` that share ``tasks`` between them (None: each runs until the duration)."""
    specs = []
    for i in range(clients):
        share = None if tasks is None else tasks // clients + (1 if i < tasks % clients else 0)
        specs.append(Spec(**{**asdict(base), "index": i, "tasks": share}))
    return specs


def run_phase(
    label: str, specs: list[Spec], root: Path, children: list[Child], cpu_pid: int | None, progress: Progress
) -> PhaseResult:
    """Start the clients, wait until all warmed up, start them at once, and collect what they report."""
    clients = [
        Child(
            f"{label} client {spec.index}",
            [sys.executable, "-m", "eventbus.bench.client", json.dumps(asdict(spec))],
            root / f"{label}-client-{spec.index}.log",
            speaks=True,
        )
        for spec in specs
    ]
    children.extend(clients)
    progress.phase(f"{label}: {len(clients)} client(s) warming up")
    _await_ready(clients)
    total = sum(spec.tasks for spec in specs if spec.tasks is not None) if specs[0].tasks is not None else None
    progress.phase(f"{label}: measuring {f'{total} tasks' if total is not None else f'{specs[0].duration:g}s'}")
    result = PhaseResult()
    cpu_before = cpu_seconds(cpu_pid) if cpu_pid else None
    for client in clients:
        client.tell(b"go\n")
    started = last_change = time.monotonic()
    done = [0] * len(clients)  # as last reported by each client still running
    pending, seen = set(range(len(clients))), 0
    while pending:
        wait_readable([clients[i] for i in pending], 0.25)
        for i in sorted(pending):
            for event in clients[i].events():
                kind = event.get("event")
                if kind == "progress":
                    done[i] = int(event["done"])
                elif kind in ("result", "error"):
                    done[i] = 0
                    result.merge(event if kind == "result" else _gave_up(clients[i], specs[i], event))
                    pending.discard(i)
            if i in pending and not clients[i].alive() and not clients[i].events():
                result.merge(_gave_up(clients[i], specs[i], {"message": f"died: {clients[i].last_words()}"}))
                pending.discard(i)
        now = time.monotonic()
        finished = sum(done) + result.tasks
        if finished != seen:
            seen, last_change = finished, now
        progress.update(finished, total, now - started)
        if now - last_change > STALL_S:
            raise BenchFailed(f"{label}: no task finished for {STALL_S:g}s")
    cpu_after = cpu_seconds(cpu_pid) if cpu_pid else None
    if cpu_before is not None and cpu_after is not None:
        result.cpu_s = cpu_after - cpu_before
    result.rss_bytes = rss_bytes(cpu_pid) if cpu_pid else None
    return result


def _gave_up(client: Child, spec: Spec, event: dict[str, Any]) -> dict[str, Any]:
    """What a client that stopped without a result counts for: its tasks lost."""
    return {"lost": spec.tasks or 0, "errors": [f"{client.name}: {event.get('message')}"]}


def _await_ready(clients: list[Child]) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    waiting = set(range(len(clients)))
    while waiting:
        wait_readable([clients[i] for i in waiting], 0.25)
        for i in sorted(waiting):
            for event in clients[i].events():
                if event.get("event") == "ready":
                    waiting.discard(i)
                elif event.get("event") == "error":
                    raise BenchFailed(f"{clients[i].name}: {event.get('message')}")
            if i in waiting and not clients[i].alive():
                raise BenchFailed(f"{clients[i].name} exited during warm-up: {clients[i].last_words()}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"the clients did not finish their warm-up within {READY_WITHIN_S:g}s")

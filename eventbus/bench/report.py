"""What the bench prints: the JSON document, the table, and the live progress line on stderr."""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Any, TextIO

import zmq

from eventbus._version import __version__
from eventbus.bench.stats import latency_ms

if TYPE_CHECKING:
    from eventbus.bench.phase import PhaseResult
    from eventbus.bench.run import BenchOptions

#: the durability mode measured: eventbusd keeps tasks in memory only (no durable mode exists yet)
DURABILITY = "none"


def figures(result: PhaseResult) -> dict[str, Any]:
    """The figures of one phase: throughput, latency, the broker's CPU per task, and what went wrong."""
    answered = result.ok + result.failed + result.wrong
    wall = result.wall_s
    cpu = None if result.cpu_s is None or not result.tasks else round(result.cpu_s * 1e6 / result.tasks, 1)
    return {
        "tasks": result.tasks,
        "succeeded": result.ok,
        "failed": result.failed,
        "wrong": result.wrong,
        "lost": result.lost,
        "warmup_unsuccessful": result.warmup_unsuccessful,
        "duration_s": round(wall, 3),
        "tasks_per_s": round(answered / wall, 1) if wall > 0 else 0.0,
        "latency_ms": latency_ms(result.latencies_us),
        "daemon_cpu_us_per_task": cpu,
        "daemon_rss_mb": None if result.rss_bytes is None else round(result.rss_bytes / (1 << 20), 1),
        "errors": result.errors,
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else round(ours / theirs, 3)


def environment() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "eventbus": __version__,
        "durability": DURABILITY,
        "platform": platform.platform(),
    }


def document(opts: BenchOptions, ours: PhaseResult, base: PhaseResult | None) -> dict[str, Any]:
    """Every figure of a run, ours at the top level and the raw pyzmq baseline under ``baseline``."""
    doc = figures(ours)
    theirs = figures(base) if base is not None else None
    doc.update(
        collectors=opts.collectors,
        idle_collectors=opts.idle_collectors,
        clients=opts.clients,
        in_flight=opts.in_flight,
        payload_bytes=opts.payload_bytes,
        operation=opts.operation,
        daemon=str(opts.socket) if opts.socket is not None else "private",
        baseline=theirs,
        throughput_ratio=_ratio(doc["tasks_per_s"], theirs["tasks_per_s"]) if theirs else None,
        p99_ratio=_ratio(doc["latency_ms"]["p99"], theirs["latency_ms"]["p99"]) if theirs else None,
        env=environment(),
    )
    return doc


def unsuccessful(doc: dict[str, Any]) -> str | None:
    """One line saying how many tasks did not succeed with the right value, or None when all did."""
    parts = []
    for name, figs in (("eventbus", doc), ("baseline", doc.get("baseline"))):
        if not figs:
            continue
        bad = figs["failed"] + figs["wrong"] + figs["lost"] + figs["warmup_unsuccessful"]
        if bad:
            why = f"; first error: {figs['errors'][0]}" if figs["errors"] else ""
            parts.append(
                f"{name}: {bad} of {figs['tasks']} tasks did not succeed ({figs['failed']} failed, "
                f"{figs['wrong']} wrong value, {figs['lost']} lost, {figs['warmup_unsuccessful']} in warm-up){why}"
            )
    return "; ".join(parts) or None


def _cell(value: Any, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def table(doc: dict[str, Any]) -> str:
    """The human summary: ours and the baseline side by side, then the setup."""
    base = doc.get("baseline") or {}
    rows = [("", "eventbus", "raw pyzmq", "ours/raw")]
    rows.append(
        ("tasks/s", _cell(doc["tasks_per_s"]), _cell(base.get("tasks_per_s")), _cell(doc["throughput_ratio"], ".3f"))
    )
    for key, label in (("p50", "p50 ms"), ("p90", "p90 ms"), ("p99", "p99 ms"), ("p99_9", "p99.9 ms")):
        ratio = _cell(doc["p99_ratio"], ".2f") if key == "p99" else ""
        rows.append(
            (label, _cell(doc["latency_ms"][key], ".3f"), _cell(base.get("latency_ms", {}).get(key), ".3f"), ratio)
        )
    rows.append(
        ("broker CPU µs/task", _cell(doc["daemon_cpu_us_per_task"]), _cell(base.get("daemon_cpu_us_per_task")), "")
    )
    rows.append(("broker RSS MB, at the end", _cell(doc["daemon_rss_mb"]), _cell(base.get("daemon_rss_mb")), ""))
    for key in ("tasks", "failed", "wrong", "lost"):
        rows.append((key, str(doc[key]), str(base[key]) if base else "-", ""))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[0]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(row))
        for row in rows
    ]
    env = doc["env"]
    lines += [
        "",
        f"{doc['clients']} client(s) x {doc['in_flight']} in flight, {doc['collectors']} collector(s), "
        f"{doc['idle_collectors']} idle collector(s), {doc['payload_bytes']} B payload, operation "
        f"{doc['operation']}, daemon {doc['daemon']}",
        f"{env['cores']} cores, Python {env['python']}, pyzmq {env['pyzmq']} (libzmq {env['libzmq']}), "
        f"eventbus {env['eventbus']}, durability {env['durability']}",
    ]
    return "\n".join(line.rstrip() for line in lines)


class ProgressLine:
    """The bench's progress on ``stream``: a line redrawn about four times a second on a terminal,
    else one line per phase."""

    def __init__(self, stream: TextIO, prog: str = "eventbusctl bench") -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._prog = prog
        self._label = ""
        self._drawn = 0.0
        self._width = 0

    def _draw(self, text: str) -> None:
        self._stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self._stream.flush()

    def phase(self, text: str) -> None:
        self._label = text.partition(":")[0]
        if self._tty:
            self._draw(f"{self._prog}: {text}")
        else:
            self._stream.write(f"{self._prog}: {text}\n")
            self._stream.flush()

    def update(self, done: int, total: int | None, elapsed: float) -> None:
        now = time.monotonic()
        if not self._tty or now - self._drawn < 0.25:
            return
        self._drawn = now
        of = f"/{total:,}" if total is not None else ""
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else "-"
        self._draw(f"{self._prog}: {self._label}: {done:,}{of} tasks  {rate}  {elapsed:.1f}s")

    def close(self) -> None:
        """Clear the live line (a terminal only)."""
        if self._tty and self._width:
            self._draw("")
            self._stream.write("\r")
            self._stream.flush()

"""What the bench prints: the JSON document, the table, and the live progress line on stderr."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import zmq

from eventbus._version import __version__
from eventbus.bench.stats import latency_ms

if TYPE_CHECKING:
    from eventbus.bench.phase import PhaseResult
    from eventbus.bench.run import BenchOptions


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


def environment(durability: str | None = None) -> dict[str, Any]:
    """The machine and versions, and ``durability``: the daemon's mode behind the top-level figures
    (left out where no eventbusd was measured)."""
    env = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "eventbus": __version__,
        "durability": durability,
        "platform": platform.platform(),
    }
    if durability is None:
        del env["durability"]
    return env


def durability_ratios(per_mode: Mapping[str, dict[str, Any]]) -> dict[str, float | None] | None:
    """Each mode's tasks/s over that of durability ``none`` (itself 1.0); None when ``none`` was not measured."""
    if "none" not in per_mode:
        return None
    memory = per_mode["none"]["tasks_per_s"]
    return {mode: _ratio(figs["tasks_per_s"], memory) for mode, figs in per_mode.items()}


def document(opts: BenchOptions, ours: Mapping[str, PhaseResult], base: PhaseResult | None) -> dict[str, Any]:
    """Every figure of a run: the eventbus phase of each durability mode (``ours``, in the order run) under
    ``durability``, the first of them also at the top level, and the raw pyzmq baseline under ``baseline``."""
    if not ours:
        raise ValueError("no eventbus phase to report")
    per_mode = {mode: figures(result) for mode, result in ours.items()}
    first = next(iter(per_mode))
    doc = figures(ours[first])
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
        durability=per_mode,
        durability_ratio_to_none=durability_ratios(per_mode),
        env=environment(first),
    )
    return doc


def _phases(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, figures) of every phase in ``doc``: each durability mode (or the top level), then the baseline."""
    modes = doc.get("durability") or {}
    if modes:
        ours = [(f"eventbus ({mode})" if len(modes) > 1 else "eventbus", figs) for mode, figs in modes.items()]
    else:
        ours = [("eventbus", doc)]
    return ours + ([("baseline", doc["baseline"])] if doc.get("baseline") else [])


def unsuccessful(doc: dict[str, Any]) -> str | None:
    """One line saying how many tasks did not succeed with the right value, or None when all did."""
    parts = []
    for name, figs in _phases(doc):
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


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """``rows`` as lines: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(widths[0]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(row))
        for row in rows
    ]


def table(doc: dict[str, Any]) -> str:
    """The human summary: ours and the baseline side by side, one line per durability mode, then the setup."""
    base = doc.get("baseline") or {}
    env = doc["env"]
    rows = [("", f"eventbus ({env['durability']})", "raw pyzmq", "ours/raw")]
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
    lines = _aligned(rows)
    modes: dict[str, dict[str, Any]] = doc.get("durability") or {}
    if modes:
        to_none = doc.get("durability_ratio_to_none") or {}
        by_mode: list[tuple[str, ...]] = [
            ("durability", "tasks/s", "p50 ms", "p99 ms", "CPU µs/task", "RSS MB", "succeeded", "lost", "/none")
        ]
        for mode, figs in modes.items():
            by_mode.append(
                (
                    mode,
                    _cell(figs["tasks_per_s"]),
                    _cell(figs["latency_ms"]["p50"], ".3f"),
                    _cell(figs["latency_ms"]["p99"], ".3f"),
                    _cell(figs["daemon_cpu_us_per_task"]),
                    _cell(figs["daemon_rss_mb"]),
                    str(figs["succeeded"]),
                    str(figs["lost"]),
                    _cell(to_none.get(mode), ".3f"),
                )
            )
        lines += ["", *_aligned(by_mode)]
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

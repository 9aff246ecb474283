"""Figures of a bench run: latency percentiles, a process's CPU time, the payload of a task."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

#: the latency percentiles every bench phase reports, as (key, percent)
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def percentile(ordered: Sequence[float], percent: float) -> float | None:
    """The nearest-rank ``percent`` percentile of ``ordered`` (sorted ascending); None when it is empty.

    Nearest rank: the smallest sample at or below which ``percent`` % of the samples lie, so
    the result is always one of the samples (p100 is the maximum, p0 the minimum).
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be between 0 and 100, got {percent}")
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(samples_us: Sequence[int]) -> dict[str, float | None]:
    """p50, p90, p99 and p99.9 in milliseconds of latencies given in microseconds."""
    ordered = sorted(samples_us)
    out: dict[str, float | None] = {}
    for key, percent in PERCENTILES:
        value = percentile(ordered, percent)
        out[key] = None if value is None else round(value / 1000, 3)
    return out


def rss_bytes(pid: int) -> int | None:
    """Resident set size of process ``pid``, from /proc; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (all its threads), from /proc; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
    fields = stat.rpartition(")")[2].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of the record
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def payload(client: int, seq: int, size: int) -> dict[str, Any]:
    """A task payload of about ``size`` bytes as JSON, marked with its client and sequence number."""
    value: dict[str, Any] = {"m": f"{client}:{seq}", "pad": ""}
    value["pad"] = "x" * max(0, size - len(json.dumps(value, separators=(",", ":"))))
    return value

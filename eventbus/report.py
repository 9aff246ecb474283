"""The operator's report (``control.admin.report``): built in the daemon, formatted for people.

:func:`build` gathers it from the daemon's distributor;
:func:`log_lines` gives it as a few log lines (the daemon's report on
shutdown) and :func:`table` as the table ``eventbusctl report`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributor import TaskDistributor
    from eventbus.wire import Envelope


def build(distributor: TaskDistributor, started_at: float, now: float) -> dict[str, Any]:
    """The report body: ``uptime_s``, ``operations``, ``collectors`` and ``errors`` (docs/PROTOCOL.md).

    The daemon logs it on shutdown with ``log_lines(build(service.distributor, service.started_at, now))``.
    """
    return {"uptime_s": now - started_at, **distributor.outcomes(now)}


def handler(
    distributor: TaskDistributor, started_at: float, clock: Callable[[], float]
) -> Callable[[bytes, Envelope, str], dict[str, Any]]:
    """The ``control.admin.report`` handler (its request body is empty)."""

    def report(identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return build(distributor, started_at, clock())

    return report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def log_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few log lines: uptime and totals, one line per operation, collectors, errors."""
    ops = report["operations"]
    done = sum(o["succeeded"] + o["failed"] + o["expired"] + o["cancelled"] for o in ops.values())
    lines = [f"report: uptime {report['uptime_s']:.1f}s, {done} tasks finished, {len(ops)} operations"]
    for name, o in ops.items():
        p = o["completion_s"]
        lines.append(
            f"report: operation={name} succeeded={o['succeeded']} failed={o['failed']} expired={o['expired']} "
            f"cancelled={o['cancelled']} p50={_seconds(p['p50'])} p95={_seconds(p['p95'])} p99={_seconds(p['p99'])}"
        )
    if report["collectors"]:
        lines.append(
            "report: collectors "
            + " ".join(
                f"{c['collector_id']}(util={_rate(c['utilization'])},success={_rate(c['success_rate'])})"
                for c in report["collectors"]
            )
        )
    if report["errors"]:
        lines.append("report: errors " + " ".join(f"{t}={n}" for t, n in report["errors"].items()))
    return lines


def _rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]


def table(report: dict[str, Any]) -> str:
    """The report as aligned tables, for a terminal."""
    out = [f"uptime {report['uptime_s']:.1f}s", ""]
    ops = [
        (
            name,
            str(o["succeeded"]),
            str(o["failed"]),
            str(o["expired"]),
            str(o["cancelled"]),
            *(_seconds(o["completion_s"][q]) for q in ("p50", "p95", "p99")),
        )
        for name, o in report["operations"].items()
    ]
    header = ("OPERATION", "SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED", "P50", "P95", "P99")
    out += _rows(header, ops) if ops else ["no finished tasks yet"]
    out.append("")
    collectors = [
        (
            c["collector_id"],
            c["status"],
            _rate(c["utilization"]),
            _rate(c["success_rate"]),
            str(c["tasks_completed"]),
            str(c["tasks_failed"]),
        )
        for c in report["collectors"]
    ]
    columns = ("COLLECTOR", "STATUS", "UTILIZATION", "SUCCESS", "COMPLETED", "FAILED")
    out += _rows(columns, collectors) if collectors else ["no collectors registered"]
    out.append("")
    errors = [(t, str(n)) for t, n in report["errors"].items()]
    out += _rows(("ERROR TYPE", "TASKS"), errors) if errors else ["no errors"]
    return "\n".join(out)

"""How eventbusctl shows records to a person (the ``--json`` output is the records themselves)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from distributor.models import TaskInfo, TaskState


def iso(at: float | None) -> str:
    """Epoch seconds as local ISO 8601 time with milliseconds ("-" when unset)."""
    return "-" if at is None else datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def duration(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else f"{max(0.0, end - start):.3f}s"


def attempts(info: TaskInfo) -> str:
    """How many attempts ran, e.g. ``after 3 retries`` or ``after 1 attempt``."""
    if info.attempt == 0:
        return "no attempt ran"
    if info.retries:
        return f"after {info.retries} {'retry' if info.retries == 1 else 'retries'}"
    return f"after {info.attempt} {'attempt' if info.attempt == 1 else 'attempts'}"


def outcome(info: TaskInfo) -> dict[str, Any]:
    """A task's outcome in brief: id, state, and its value (succeeded) or error (otherwise)."""
    out: dict[str, Any] = {"task_id": info.task_id, "state": info.state.value}
    if info.state is TaskState.SUCCEEDED:
        out["value"] = info.result.value if info.result else None
    elif info.error is not None:
        out["error"] = {"type": info.error.type, "message": info.error.message}
    return out


def priority(info: TaskInfo) -> str:
    """A task's own priority, and the effective one beside it once aging raised it: ``2 (aged to 5)``."""
    aged = info.effective_priority
    return str(info.priority) if aged is None or aged == info.priority else f"{info.priority} (aged to {aged})"


def task_text(info: TaskInfo) -> str:
    """A task as aligned fields: state, attempts, times and durations, then its error or result."""
    retries = f" ({info.retries} {'retry' if info.retries == 1 else 'retries'})" if info.retries else ""
    rows = [
        ("task", info.task_id),
        ("operation", info.operation),
        ("state", info.state.value),
        ("priority", priority(info)),
        ("attempts", f"{info.attempt}{retries}"),
        ("collector", info.collector_id or "-"),
        ("created", iso(info.created_at)),
        ("queued", iso(info.queued_at)),
        ("dispatched", iso(info.dispatched_at)),
        ("finished", iso(info.finished_at)),
        ("queue wait", duration(info.queued_at, info.dispatched_at)),
        ("run time", duration(info.dispatched_at, info.finished_at)),
        ("total", duration(info.created_at, info.finished_at)),
    ]
    if info.not_before is not None:
        rows.insert(7, ("not before", iso(info.not_before)))
    if info.constraints:
        rows.append(("requires", ", ".join(info.constraints)))
    if info.depends_on:
        rows.append(("after", ", ".join(info.depends_on)))
    if info.error is not None:
        rows.append(("error", f"{info.error.type}: {info.error.message}"))
    lines = [f"{key:11} {value}" for key, value in rows]
    if info.result is not None and info.result.success:
        value = "(left out: too large for one reply)" if info.truncated else _pretty(info.result.value)
        lines.append("result")
        lines.extend(f"  {line}" for line in value.splitlines())
    return "\n".join(lines)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=repr)


def _percentiles(value: dict[str, Any]) -> str:
    return "  ".join(f"{q}={'-' if value[q] is None else format(value[q], '.3f') + 's'}" for q in ("p50", "p95", "p99"))


def stats_text(data: dict[str, Any]) -> str:
    """``stats`` as a table: counters and gauges first, then each per-name table and the latencies."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    width = max((len(k) for k in data), default=0)
    lines = [f"{key:{width}}  {value}" for key, value in sorted(scalars.items())]
    for key, value in sorted(data.items()):
        if not isinstance(value, dict):
            continue
        if set(value) == {"p50", "p95", "p99"}:
            lines.append(f"{key:{width}}  {_percentiles(value)}")
            continue
        lines.append(f"{key}:" if value else f"{key:{width}}  -")
        inner = max((len(str(k)) for k in value), default=0)
        lines.extend(f"  {name:{inner}}  {count}" for name, count in sorted(value.items()))
    if data.get("limits"):
        lines.append("limits:")
        lines.extend(f"  {line}" for line in limit_table(data["limits"]).splitlines())
    return "\n".join(lines)


def limit_table(views: list[dict[str, Any]]) -> str:
    """The limits in force as a table."""
    if not views:
        return "no limits (set one with: eventbusctl limit set OPERATION --rate 10/s --max-in-flight 4)"
    head = ("KIND", "NAME", "RATE", "MAX", "IN FLIGHT", "TOKENS", "HELD", "WAITED", "SOURCE")
    rows = [head]
    for v in views:
        held = ("yes" if v.get("held") else "no") if v["kind"] == "operation" else "-"
        waited = f"{v['tasks_waited']} tasks, {v['waited_s']:.1f}s" if v["kind"] == "operation" else "-"
        rows.append(
            (
                "type" if v["kind"] == "collector_type" else "op",
                v["name"],
                v["rate"] or "-",
                "-" if v["max_in_flight"] is None else str(v["max_in_flight"]),
                str(v["in_flight"]),
                "-" if v["tokens"] is None else f"{v['tokens']:.2f}",
                held,
                waited,
                v.get("source", "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _when(view: dict[str, Any]) -> str:
    if view["every"] is not None:
        return f"every {view['every']}"
    return f"cron '{view['cron']}' {view['timezone']}"


def _last(view: dict[str, Any]) -> str:
    if not view["runs"]:
        return "-"
    run = view["runs"][0]
    state = run["state"] or ("unknown" if run["task_id"] else run["note"].split(":")[0])
    return f"{iso(run['due'])} {state}"


def schedule_table(views: list[dict[str, Any]]) -> str:
    """The schedules as a table."""
    if not views:
        return "no schedules (add one with: eventbusctl schedule add NAME OPERATION --every 30s)"
    head = ("NAME", "OPERATION", "WHEN", "NEXT", "LAST RUN", "SOURCE")
    rows = [head]
    for v in views:
        nxt = "paused" if v["paused"] else iso(v["next_due"])
        rows.append((v["name"], v["operation"], _when(v), nxt, _last(v), v["source"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def schedule_text(view: dict[str, Any]) -> str:
    """One schedule as aligned fields, then its last runs, newest first."""
    rows = [
        ("schedule", view["name"]),
        ("operation", view["operation"]),
        ("when", _when(view)),
        ("next due", "paused" if view["paused"] else iso(view["next_due"])),
        ("priority", str(view["priority"])),
        ("overlap", view["overlap"]),
        ("jitter", f"{view['jitter_s']:g}s"),
        ("source", view["source"]),
    ]
    if view["constraints"]:
        rows.append(("requires", ", ".join(view["constraints"])))
    lines = [f"{key:10} {value}" for key, value in rows]
    if view["runs"]:
        lines.append("runs")
        for run in view["runs"]:
            outcome = run["state"] or "unknown" if run["task_id"] else run["note"]
            lines.append(f"  {iso(run['due'])}  {run['task_id'] or '-'}  {outcome}")
    return "\n".join(lines)


def cluster_line(view: dict[str, Any]) -> str:
    """Whether clustering is on, and this daemon's state in it, on one line."""
    if not view.get("enabled"):
        return "off"
    link = "connected" if view["connected"] else f"NOT connected ({view.get('last_error') or 'connecting'})"
    role = "leader" if view.get("leader") == view["node"] else f"leader {view.get('leader') or 'unknown'}"
    return f"{view['name']} ({view['mode']}), node {view['node']}, {link}, {role}"


def _cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cluster_text(view: dict[str, Any]) -> str:
    """``cluster``: this daemon's state in the cluster, then every host's record."""
    if not view.get("enabled"):
        return "clustering is off (set cluster_nats_url to join daemons through NATS)"
    lines = [cluster_line(view), f"servers {', '.join(view['servers'])}"]
    head = ("NODE", "LEADER", "COLLECTORS", "SLOTS", "IN FLIGHT", "QUEUED", "OPERATIONS", "COLLECTOR IDS")
    rows = [head]
    for h in view["hosts"]:
        ops = ",".join(h["operations"])
        rows.append(
            (
                h["node"],
                "yes" if h["node"] == view.get("leader") else "",
                str(h["collectors"]),
                str(h["slots"]),
                str(h["tasks_in_flight"]),
                str(h["tasks_queued"]),
                _cut(ops),
                _cut(",".join(h.get("collector_ids", []))),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    totals = view.get("totals") or {}
    lines.append(", ".join(f"{n} {key.replace('_', ' ')}" for key, n in totals.items()))
    depths = view.get("stream_depths") or {}
    waiting = ", ".join(f"{op} {n}" for op, n in sorted(depths.items())) or "empty"
    lines.append(f"stream {view.get('stream')}: {waiting} (tasks handed over and not done, by operation)")
    shared, unshared = view.get("results_shared", 0), view.get("results_unshared", 0)
    lines.append(f"results put in the cluster's bucket {shared}, left out {unshared}")
    return "\n".join(lines)

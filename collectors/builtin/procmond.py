"""The ``procmond`` collector: lists the host's processes with psutil."""

from __future__ import annotations

from typing import Any

import psutil

from collectors.sdk import Collector, TaskContext, operation

_FIELDS = ["pid", "ppid", "name", "exe", "cmdline", "username", "create_time", "cpu_percent", "memory_info"]


def _row(info: dict[str, Any]) -> dict[str, Any]:
    memory = info.get("memory_info")
    return {
        "pid": info["pid"],
        "ppid": info.get("ppid"),
        "name": info.get("name"),
        "exe": info.get("exe") or None,
        "cmdline": info.get("cmdline") or [],
        "username": info.get("username"),
        "start_time": info.get("create_time"),
        "cpu_percent": info.get("cpu_percent"),
        "memory_rss": memory.rss if memory is not None else None,
    }


class ProcmondCollector(Collector):
    """``enumerate_processes {name?, user?}``: pid, ppid, name, exe, cmdline, user, start, cpu, memory."""

    collector_type = "procmond"
    max_concurrent_tasks = 2

    @operation
    def enumerate_processes(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Every process (or those whose name / user equals the filter); inaccessible fields are null."""
        filters = payload or {}
        if not isinstance(filters, dict) or set(filters) - {"name", "user"}:
            raise ValueError('payload must be {} or {"name": str, "user": str}')
        rows = []
        for proc in psutil.process_iter(_FIELDS, ad_value=None):
            if ctx.cancelled.is_set():
                raise InterruptedError("cancelled")
            row = _row(proc.info)
            if "name" in filters and row["name"] != filters["name"]:
                continue
            if "user" in filters and row["username"] != filters["user"]:
                continue
            rows.append(row)
        return {"count": len(rows), "processes": rows}

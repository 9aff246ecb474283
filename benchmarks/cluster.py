"""Spilled tasks (host A -> NATS -> host B) beside local tasks (on B), measured in the same run.

Starts a private ``nats-server -js``, daemon B with one demo collector and
daemon A with none (``cluster_spill_after_ms`` 0: a task goes to the cluster
at A's next timer tick). Runs ``--tasks`` echo tasks with ``--in-flight`` at a
time, first submitted to B (local), then to A (spilled to B), and reports
tasks/s and latency (created -> finished, from each task's own times) of both.

Usage: python benchmarks/cluster.py [--tasks 500] [--in-flight 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.redelivery import until
from eventbus.client import SyncClient
from eventbus.errors import EventBusError

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(path: Path, tasks: int, in_flight: int) -> dict[str, Any]:
    specs = [{"operation": "echo", "payload": {"i": i}} for i in range(tasks)]
    started = time.perf_counter()
    done: list[Any] = []
    with SyncClient(path, timeout=30) as client:
        for chunk in range(0, tasks, in_flight):
            done.extend(client.run_many(specs[chunk : chunk + in_flight], timeout=60))
    seconds = time.perf_counter() - started
    infos = [i for i in done if not isinstance(i, EventBusError)]
    latencies = sorted((i.finished_at or 0) - i.created_at for i in infos)
    # created -> dispatched (for a spilled task: handed to the cluster), and dispatched -> finished
    waits = [(i.dispatched_at or i.created_at) - i.created_at for i in infos]
    runs = [(i.finished_at or 0) - (i.dispatched_at or i.created_at) for i in infos]
    return {
        "tasks": len(latencies),
        "tasks_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "dispatch_p50_ms": round(1000 * statistics.median(waits), 2),
        "after_dispatch_p50_ms": round(1000 * statistics.median(runs), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    nats_server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    root = Path(tempfile.mkdtemp(prefix="eb-cl-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        (root / "js").mkdir()
        procs.append(
            subprocess.Popen(
                [nats_server, "-js", "-sd", str(root / "js"), "-a", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"nats://127.0.0.1:{port}"
        paths = {}
        for name in ("a", "b"):
            env = {
                **os.environ,
                "EVENTBUS_SOCKET": str(root / f"{name}.sock"),
                "EVENTBUS_STATE_DIR": str(root / f"state-{name}"),
                "EVENTBUS_CLUSTER_NATS_URL": url,
                "EVENTBUS_CLUSTER_NODE": name,
                "EVENTBUS_CLUSTER_SPILL_AFTER_MS": "0",
                "EVENTBUS_CLUSTER_HEARTBEAT_S": "0.5",
                "EVENTBUS_CLUSTER_LEASE_TTL_S": "2",
            }
            procs.append(subprocess.Popen([str(BIN / "eventbusd")], env=env, stderr=subprocess.DEVNULL))
            paths[name] = root / f"{name}.sock"
        until(lambda: all(p.exists() for p in paths.values()))
        env_b = {**os.environ, "EVENTBUS_SOCKET": str(paths["b"])}
        collector = [str(BIN / "eventbus-collector"), "run", "demo", "--id", "cb", "--concurrency", "16"]
        procs.append(subprocess.Popen(collector, env=env_b, stderr=subprocess.DEVNULL))

        def formed() -> bool:
            with SyncClient(paths["a"], timeout=5) as client:
                hosts = client.cluster()["hosts"]
            return any(h["node"] == "b" and "echo" in h["operations"] for h in hosts)

        until(formed)
        time.sleep(1.0)
        local = _run(paths["b"], args.tasks, args.in_flight)
        spilled = _run(paths["a"], args.tasks, args.in_flight)
        doc = {
            "local": local,
            "spilled": spilled,
            "throughput_ratio": round(spilled["tasks_per_s"] / local["tasks_per_s"], 3),
            "env": {"cpus": os.cpu_count(), "tasks": args.tasks, "in_flight": args.in_flight},
        }
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            for name in ("local", "spilled"):
                r = doc[name]
                print(f"{name:8} {r['tasks_per_s']:8.1f} tasks/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms")
            print(f"spilled / local throughput: x{doc['throughput_ratio']}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

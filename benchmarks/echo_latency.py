"""Round-trip latency of one echo task through the real daemon, against a raw ZeroMQ baseline.

Both are measured in the same run on the same machine:

- eventbus: ``SyncClient.run("echo")`` (one request, what ``eventbusctl submit --wait`` does),
  and ``submit`` then ``wait`` (two requests), sequentially, one task at a time, through
  eventbusd and one demo collector;
- baseline: a bare pyzmq request -> ROUTER broker process -> DEALER worker process -> back,
  one message at a time (the floor any broker-based design on this machine starts from).

Usage: python benchmarks/echo_latency.py [--tasks 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from distributor.models import TaskInfo
from eventbus.client import SyncClient
from eventbus.errors import EventBusError

BIN = Path(sys.executable).parent


def _raw_broker(front: str, back: str) -> None:
    ctx = zmq.Context()
    fe, be = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    fe.bind(front)
    be.bind(back)
    zmq.proxy(fe, be)


def _raw_worker(back: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.connect(back)
    while True:
        sock.send(sock.recv())


def raw_baseline(root: Path, n: int) -> list[float]:
    front, back = f"ipc://{root}/raw-front", f"ipc://{root}/raw-back"
    procs = [mp.Process(target=_raw_broker, args=(front, back), daemon=True)]
    procs.append(mp.Process(target=_raw_worker, args=(back,), daemon=True))
    for p in procs:
        p.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(front)
    payload = b'{"hello": 1}'
    try:
        for _ in range(100):  # warm up
            sock.send(payload)
            sock.recv()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            sock.send(payload)
            sock.recv()
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        sock.close(linger=0)
        ctx.term()
        for p in procs:
            p.kill()
            p.join()


def eventbus_echo(root: Path, n: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    sock = root / "eb.sock"
    env = {**os.environ, "EVENTBUS_SOCKET": str(sock)}
    daemon = subprocess.Popen([BIN / "eventbusd", "--log-level", "warning"], env=env)
    procs = [daemon]
    try:
        _wait_ready(sock)
        procs.append(
            subprocess.Popen(
                [BIN / "eventbus-collector", "run", "demo", "--id", "bench", "--log-level", "warning"], env=env
            )
        )
        with SyncClient(sock) as client:
            _wait_collector(client)
            ways: dict[str, Callable[[], TaskInfo]] = {
                "run": lambda: client.run("echo", {"hello": 1}, timeout=10),
                "submit_wait": lambda: client.wait(client.submit("echo", {"hello": 1}), timeout=10),
            }
            for one in ways.values():
                for _ in range(100):  # warm up
                    one()
            samples: dict[str, list[float]] = {name: [] for name in ways}
            for name, one in ways.items():
                for _ in range(n):
                    t0 = time.perf_counter()
                    info = one()
                    samples[name].append(time.perf_counter() - t0)
                    assert info.result is not None and info.result.value == {"hello": 1}
            stats = client.stats()
        return samples, stats
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(15)


def _wait_ready(sock: Path) -> None:
    for _ in range(200):
        try:
            with SyncClient(sock, timeout=1) as c:
                c.status()
                return
        except EventBusError:
            time.sleep(0.05)
    raise SystemExit("eventbusd did not start")


def _wait_collector(client: SyncClient) -> None:
    for _ in range(200):
        if client.collectors():
            return
        time.sleep(0.05)
    raise SystemExit("the demo collector did not register")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
        "per_s": len(samples) / sum(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ebb-", dir="/tmp"))
    try:
        raw = summary(raw_baseline(root, args.tasks))
        samples, stats = eventbus_echo(root, args.tasks)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run, two = summary(samples["run"]), summary(samples["submit_wait"])
    report = {
        "raw_zmq_round_trip": raw,
        "eventbus_echo_run": run,
        "eventbus_echo_submit_wait": two,
        "ratio_p50_eventbus_to_raw": run["p50_us"] / raw["p50_us"],
        "ratio_p50_submit_wait_to_raw": two["p50_us"] / raw["p50_us"],
        "daemon_end_to_end_p50_s": stats["latency_end_to_end_s"]["p50"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("raw_zmq_round_trip", "eventbus_echo_run", "eventbus_echo_submit_wait"):
        r = report[name]
        print(f"{name:28} n={r['n']:<6} p50={r['p50_us']:8.0f} us  p99={r['p99_us']:8.0f} us  {r['per_s']:8.0f}/s")
    print(f"eventbus run p50 / raw ZeroMQ p50 = {report['ratio_p50_eventbus_to_raw']:.1f}x")
    print(f"eventbus submit + wait p50 / raw ZeroMQ p50 = {report['ratio_p50_submit_wait_to_raw']:.1f}x")


if __name__ == "__main__":
    main()

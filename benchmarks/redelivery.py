"""Time from kill -9 of a collector running a task to the redelivered attempt's start elsewhere.

Starts eventbusd with a short heartbeat timeout (the detection delay is
heartbeat_timeout_s plus up to one heartbeat check), one rescuer collector,
and for each round a victim collector that gets a 2 s sleep task and is then
killed. Reports the median of the rounds.

Usage: python benchmarks/redelivery.py [--rounds 10] [--heartbeat-timeout-s 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
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

from distributor.models import TaskState
from eventbus.client import SyncClient
from eventbus.errors import EventBusError

BIN = Path(sys.executable).parent


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except EventBusError:
            pass
        time.sleep(0.02)
    raise SystemExit("timed out")


def measure(rounds: int, heartbeat_timeout_s: float) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="ebr-", dir="/tmp"))
    sock = root / "eb.sock"
    env = {
        **os.environ,
        "EVENTBUS_SOCKET": str(sock),
        "EVENTBUS_HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s),
        "EVENTBUS_HEARTBEAT_INTERVAL_S": str(heartbeat_timeout_s / 5),
        "EVENTBUS_LOG_LEVEL": "warning",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env)
        procs.append(proc)
        return proc

    try:
        start("eventbusd")
        until(lambda: sock.exists())
        with SyncClient(sock) as c:
            start("eventbus-collector", "run", "demo", "--id", "rescuer")
            until(lambda: any(i.collector_id == "rescuer" for i in c.collectors()))
            c.drain("rescuer")
            delays = []
            for n in range(rounds):
                victim = start("eventbus-collector", "run", "demo", "--id", f"victim{n}")
                name = f"victim{n}"
                until(lambda name=name: any(i.collector_id == name for i in c.collectors()))  # type: ignore[misc]
                tid = c.submit("sleep", {"seconds": 2})
                until(lambda tid=tid: c.get(tid).state is TaskState.RUNNING)  # type: ignore[misc]
                c.undrain("rescuer")
                victim.send_signal(signal.SIGKILL)
                killed = time.time()
                info = c.wait(tid, timeout=60)
                assert info.collector_id == "rescuer" and info.result is not None and info.attempt == 2
                delays.append((info.result.started_at or 0.0) - killed)
                c.drain("rescuer")
            return delays
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--heartbeat-timeout-s", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    delays = measure(args.rounds, args.heartbeat_timeout_s)
    report = {
        "rounds": len(delays),
        "heartbeat_timeout_s": args.heartbeat_timeout_s,
        "median_s": statistics.median(delays),
        "min_s": min(delays),
        "max_s": max(delays),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"kill -9 -> redelivered start: median {report['median_s']:.3f} s "
            f"(min {report['min_s']:.3f}, max {report['max_s']:.3f}, {len(delays)} rounds, "
            f"heartbeat_timeout_s={args.heartbeat_timeout_s:g})"
        )


if __name__ == "__main__":
    main()

"""Every figure the project tracks, from one run, written to benchmarks/RESULTS.md.

In order: ``eventbusctl bench`` at 100 tasks in flight (with the raw pyzmq baseline it runs
itself), again at 1 in flight (for the p99 ratio), again at 100 in flight with 1,000 idle
collectors, then ``benchmarks/peers.py`` (Celery and Dramatiq) at 100 in flight. All of them:
echo, 64 B payload, 1 client process, 1 collector or worker. With ``--repeat R`` the four run R
times in turn and each figure is the median of its R values. Any task that fails, comes back
wrong or is lost stops the run (exit 1) and nothing is written.

Usage: python benchmarks/results.py [--tasks 5000] [--quick] [--repeat 1] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventbus.bench.procs import stopped_by_sigterm

HERE = Path(__file__).resolve().parent
EVENTBUSCTL = Path(sys.executable).parent / "eventbusctl"
IN_FLIGHT = 100
IDLE_COLLECTORS = 1000
PAYLOAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class Target:
    """A ratio the project tracks and the bound it should meet."""

    name: str
    at_least: bool  # True: value >= bound; False: value <= bound
    bound: float

    def met(self, value: float | None) -> bool:
        return value is not None and (value >= self.bound if self.at_least else value <= self.bound)


def _bench_argv(tasks: int, in_flight: int, idle: int = 0) -> list[str]:
    argv = [str(EVENTBUSCTL), "--json", "bench", "--tasks", str(tasks), "--in-flight", str(in_flight)]
    argv += ["--clients", "1", "--collectors", "1", "--payload-bytes", str(PAYLOAD_BYTES), "--operation", "echo"]
    return argv + (["--idle-collectors", str(idle), "--no-baseline"] if idle else [])


def configs(tasks: int, peer_tasks: int) -> dict[str, list[str]]:
    """Each configuration's command, in the order they run."""
    peers = [sys.executable, str(HERE / "peers.py"), "--json", "--tasks", str(peer_tasks)]
    return {
        "w100": _bench_argv(tasks, IN_FLIGHT),
        "w1": _bench_argv(tasks, 1),
        "idle": _bench_argv(tasks, IN_FLIGHT, IDLE_COLLECTORS),
        "peers": [*peers, "--in-flight", str(IN_FLIGHT), "--payload-bytes", str(PAYLOAD_BYTES)],
    }


def run_json(argv: list[str]) -> dict[str, Any]:
    """Run one benchmark (its progress goes to our stderr) and return its JSON; exit 1 if it failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    print(f"results: {' '.join(shlex.quote(a) for a in argv)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        out, _ = proc.communicate()
    except BaseException:  # Ctrl-C or SIGTERM: the benchmark stops what it started
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if proc.returncode != 0:
        raise SystemExit(
            f"results: {Path(argv[1] if argv[0] == sys.executable else argv[0]).name} failed "
            f"(exit {proc.returncode}); nothing written"
        )
    doc: dict[str, Any] = json.loads(out)
    return doc


def median_doc(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """A document like those given whose every number is the median of theirs (other values: the first's)."""
    first = docs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [doc.get(key) for doc in docs]
        if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            out[key] = median_doc([v for v in values if isinstance(v, dict)])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers = [v for v in values if isinstance(v, int | float)]
            out[key] = statistics.median(numbers) if len(numbers) == len(values) else value
        else:
            out[key] = value
    return out


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def ratios(r: dict[str, dict[str, Any]]) -> list[tuple[Target, float | None]]:
    """The tracked ratios, each with its target."""
    w100, w1, idle, peers = r["w100"], r["w1"], r["idle"], r["peers"]["peers"]
    return [
        (
            Target("eventbus / raw pyzmq throughput, W=100", True, 0.5),
            _ratio(w100["tasks_per_s"], w100["baseline"]["tasks_per_s"]),
        ),
        (
            Target("eventbus p99 / raw pyzmq p99, W=1", False, 3.0),
            _ratio(w1["latency_ms"]["p99"], w1["baseline"]["latency_ms"]["p99"]),
        ),
        (
            Target("eventbus / Celery throughput, W=100", True, 10.0),
            _ratio(w100["tasks_per_s"], peers["celery"]["tasks_per_s"]),
        ),
        (
            Target("eventbus / Dramatiq throughput, W=100", True, 10.0),
            _ratio(w100["tasks_per_s"], peers["dramatiq"]["tasks_per_s"]),
        ),
        (
            Target("1,000 idle collectors / 1 collector throughput, W=100", True, 0.8),
            _ratio(idle["tasks_per_s"], w100["tasks_per_s"]),
        ),
    ]


def machine() -> dict[str, str]:
    """Cores, CPU model and RAM of this machine, from /proc."""
    model, mem_kib = "unknown", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kib / (1 << 20):.1f} GiB" if mem_kib else "unknown",
        "platform": platform.platform(),
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def source() -> str:
    """The commit of this checkout, and whether the tree differs from it (what the eventbus figures measure)."""
    try:
        git = ["git", "-C", str(HERE.parent)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head.stdout.strip()}" + (", with uncommitted changes" if dirty.stdout.strip() else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"


def _row(system: str, config: str, figs: dict[str, Any]) -> str:
    lat = figs["latency_ms"]
    return f"| {system} | {config} | {figs['tasks_per_s']:,.0f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} |"


def rows(r: dict[str, dict[str, Any]]) -> list[str]:
    """The results table: tasks/s, p50 and p99 of every system and configuration."""
    one = "1 client, 1 collector"
    peers = r["peers"]["peers"]
    return [
        "| System | Configuration | tasks/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: |",
        _row("eventbus", f"W=100, {one}", r["w100"]),
        _row("raw pyzmq ROUTER", f"W=100, {one}", r["w100"]["baseline"]),
        _row("eventbus", f"W=1, {one}", r["w1"]),
        _row("raw pyzmq ROUTER", f"W=1, {one}", r["w1"]["baseline"]),
        _row("eventbus", f"W=100, {one}, 1,000 idle collectors", r["idle"]),
        _row(f"Celery {peers['celery']['version']}", "W=100, 1 client, 1 worker", peers["celery"]),
        _row(f"Dramatiq {peers['dramatiq']['version']}", "W=100, 1 client, 1 worker", peers["dramatiq"]),
    ]


def rss_lines(r: dict[str, dict[str, Any]]) -> list[str]:
    """eventbusd's resident memory at the end of each bench, when the bench reports it (else nothing)."""
    labels = {"w100": "W=100", "w1": "W=1", "idle": "W=100 with 1,000 idle collectors"}
    found = [f"{label}: {r[k]['daemon_rss_mb']} MB" for k, label in labels.items() if r[k].get("daemon_rss_mb")]
    return ["", f"eventbusd resident memory at the end of each bench: {'; '.join(found)}."] if found else []


def ratio_lines(r: dict[str, dict[str, Any]]) -> list[str]:
    """The tracked ratios, each marked met or not met."""
    lines = ["| Ratio | Value | Target | |", "| --- | ---: | --- | --- |"]
    for target, value in ratios(r):
        shown = "-" if value is None else f"{value:.3f}"
        bound = f"{'≥' if target.at_least else '≤'} {target.bound:g}"
        lines.append(f"| {target.name} | {shown} | {bound} | {'met' if target.met(value) else 'not met'} |")
    return lines


#: what each durability mode of eventbusd means for the figures (its ``--durability``)
_DURABILITY = {
    "fsync": "every submission is acknowledged after an fsync'd SQLite commit, group-committed per loop iteration",
    "process": "every submission is acknowledged after a SQLite commit in WAL mode, not fsync'd per commit",
    "none": "tasks are kept in memory only",
}


def setup_lines(r: dict[str, dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Machine, versions and workload."""
    env, peers, redis_doc, m = r["w100"]["env"], r["peers"]["peers"], r["peers"]["redis"], meta["machine"]
    redis_at = "a private redis-server, no persistence" if redis_doc["started"] else redis_doc["url"]
    peer_tasks = f" ({meta['peer_tasks']:,} for Celery and Dramatiq)" if meta["peer_tasks"] != meta["tasks"] else ""
    return [
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores",
        f"- RAM: {m['ram']}",
        f"- {m['platform']}; load average at the start: {m['load']}",
        "",
        "## Versions",
        "",
        "| Python | pyzmq | libzmq | eventbus | Celery | Dramatiq | redis-server |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {env['python']} | {env['pyzmq']} | {env['libzmq']} | {env['eventbus']} | {peers['celery']['version']} "
        f"| {peers['dramatiq']['version']} | {redis_doc['version']} |",
        "",
        f"eventbus source: {meta['source']}.",
        "",
        "## Workload",
        "",
        f"Echo tasks with a {PAYLOAD_BYTES} B payload from 1 client process that keeps W tasks in flight; "
        f"{meta['tasks']:,} tasks measured per configuration{peer_tasks} after a warm-up; tasks/s from the first "
        "submit to the last result, latency from submit to result. Every result is "
        f"checked against its input. eventbusd runs with durability {env.get('durability', 'none')} "
        f"({_DURABILITY.get(env.get('durability', 'none'), 'see its --durability')}); the raw baseline is a pyzmq "
        "ROUTER broker and one echo worker, measured by the same bench invocation.",
        "",
        f"- Celery: {peers['celery']['settings']}.",
        f"- Dramatiq: {peers['dramatiq']['settings']}.",
        f"- Redis {redis_doc['version']}: {redis_at}.",
    ]


def render(r: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """RESULTS.md."""
    median = f" (the median of {meta['repeat']} repetitions of each configuration)" if meta["repeat"] > 1 else ""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{meta['command']}` on {meta['date']}; the run took {meta['took_s']:.0f} s. "
        f"Every figure below comes from that one run{median}.",
        "",
        *setup_lines(r, meta),
        "",
        "## Results",
        "",
        *rows(r),
        *rss_lines(r),
        "",
        "## Tracked ratios",
        "",
        *ratio_lines(r),
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run every tracked benchmark once and write RESULTS.md.")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per configuration (default 5000; --quick 500)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, not figures to keep")
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration R times, report medians")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.tasks is not None and args.tasks < 1):
        parser.error("--tasks and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every configuration, write the report; 0 on success."""
    args = parse(sys.argv[1:] if argv is None else argv)
    tasks = args.tasks or (500 if args.quick else 5000)
    peer_tasks = min(tasks, 300) if args.quick else tasks
    meta: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/results.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
        ),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "source": source(),
        "tasks": tasks,
        "peer_tasks": peer_tasks,
        "repeat": args.repeat,
    }
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with stopped_by_sigterm():
            for _ in range(args.repeat):
                for key, command in configs(tasks, peer_tasks).items():
                    runs.setdefault(key, []).append(run_json(command))
    except KeyboardInterrupt:
        print("results: interrupted; nothing written", file=sys.stderr)
        return 130
    meta["took_s"] = time.monotonic() - started
    text = render({key: median_doc(docs) for key, docs in runs.items()}, meta)
    args.out.write_text(text)
    print(text)
    print(f"results: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``eventbusctl bench``: eventbusd under load, side by side with a raw pyzmq broker, in one invocation."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventbus._transport import probe
from eventbus.bench import report
from eventbus.bench.client import Spec
from eventbus.bench.phase import PhaseResult, Progress, client_specs, run_phase
from eventbus.bench.procs import Child, listener_pid, raise_fd_limit, stop_all, stopped_by_sigterm
from eventbus.errors import BenchFailed, DaemonUnreachable, EventBusError
from eventbus.paths import resolve_socket_path
from eventbus.sync_client import SyncClient

#: how long eventbusd, the collectors and the baseline broker may take to come up
START_WITHIN_S = 30.0
#: eventbusd's durability modes (its ``--durability``), strongest first
DURABILITY_MODES = ("fsync", "process", "none")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run; the defaults are those of ``eventbusctl bench``."""

    collectors: int = 1
    idle_collectors: int = 0
    clients: int = 1
    in_flight: int = 100
    tasks: int | None = 5000  # None: run for ``duration`` seconds
    duration: float | None = None
    payload_bytes: int = 64
    operation: str = "echo"
    baseline: bool = True
    #: a running daemon to measure; None: the bench starts a private one
    socket: Path | None = None
    #: the private daemon's durability modes, one eventbus phase each, in this order (the first is the
    #: document's top level); with ``socket``, unused: that daemon's own mode is measured
    durability: tuple[str, ...] = ("fsync",)

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.durability if mode not in DURABILITY_MODES]
        if unknown or not self.durability or len(set(self.durability)) != len(self.durability):
            raise ValueError(f"durability must be distinct modes of {DURABILITY_MODES}, got {self.durability}")

    def spec(self, mode: str, target: str) -> Spec:
        """The client spec of one phase (each client's share of the tasks is set by :func:`client_specs`)."""
        return Spec(
            mode=mode,
            target=target,
            index=0,
            tasks=None,
            duration=self.duration,
            in_flight=self.in_flight,
            payload_bytes=self.payload_bytes,
            operation=self.operation,
            warmup=max(300, 2 * self.in_flight),
        )


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_bench(opts: BenchOptions, progress: Progress) -> dict[str, Any]:
    """Run the bench and return its document (see :func:`eventbus.bench.report.document`).

    Without a socket, the eventbus phase runs once per durability mode, each on a fresh private daemon
    with a fresh state directory; the baseline runs once, after them. Everything it starts is stopped,
    its temp directory removed and ``progress`` closed, on every way out.
    """
    raise_fd_limit(3 * opts.idle_collectors + 1024)
    root = Path(tempfile.mkdtemp(prefix="eb-bench-", dir="/tmp"))
    children: list[Child] = []
    ours: dict[str, PhaseResult] = {}
    try:
        with stopped_by_sigterm():
            if opts.socket is None:
                for mode in opts.durability:
                    ours[mode] = _ours_private(opts, mode, root, children, progress)
                    # the next mode's daemon, and the baseline, do not compete with this one's processes
                    stop_all(children)
            else:
                mode, result = _ours_on(opts, opts.socket, root, children, progress)
                ours[mode] = result
                stop_all(children)
            base = _baseline(opts, root, children, progress) if opts.baseline else None
            stop_all(children)
    finally:
        stop_all(children)
        shutil.rmtree(root, ignore_errors=True)
        progress.close()
    return report.document(opts, ours, base)


def _ours_private(opts: BenchOptions, mode: str, root: Path, children: list[Child], progress: Progress) -> PhaseResult:
    """The eventbus phase on a private daemon in durability ``mode``; its socket, state and logs in ``root/mode``."""
    here = root / mode
    here.mkdir()
    label = "eventbus" if len(opts.durability) == 1 else f"eventbus {mode}"
    daemon = _start_daemon(opts, mode, here, children, progress, label)
    return _load(opts, here / "eb.sock", daemon.pid, here, children, progress, label)


def _ours_on(
    opts: BenchOptions, socket: Path, root: Path, children: list[Child], progress: Progress
) -> tuple[str, PhaseResult]:
    """The eventbus phase on the running daemon at ``socket``, and that daemon's durability mode."""
    path = resolve_socket_path(socket)
    probe(path)
    with SyncClient(path, timeout=5.0) as client:
        mode = str(client.status().get("durability", "none"))  # a daemon from before the store: memory only
    return mode, _load(opts, path, listener_pid(path), root, children, progress, "eventbus")


def _load(
    opts: BenchOptions,
    path: Path,
    daemon_pid: int | None,
    root: Path,
    children: list[Child],
    progress: Progress,
    label: str,
) -> PhaseResult:
    """Register the idle and demo collectors with the daemon at ``path``, then run the clients through it."""
    tag = f"bench-{os.getpid()}"
    if opts.idle_collectors:
        progress.phase(f"{label}: registering {opts.idle_collectors} idle collector(s)")
        idle = Child(
            "idle collectors",
            _python("-m", "eventbus.bench.idle", str(path), str(opts.idle_collectors), f"{tag}-idle"),
            root / "idle.log",
            speaks=True,
        )
        children.append(idle)
        _await_event(idle, "ready", 60.0 + opts.idle_collectors / 20)
    progress.phase(f"{label}: starting {opts.collectors} demo collector(s)")
    ids = [f"{tag}-{i}" for i in range(opts.collectors)]
    collectors = [_start_collector(opts, path, cid, root, children) for cid in ids]
    _await_registered(path, ids, collectors)
    return run_phase(
        label,
        client_specs(opts.spec("eventbus", str(path)), opts.clients, opts.tasks),
        root,
        children,
        daemon_pid,
        progress,
    )


def _start_daemon(
    opts: BenchOptions, mode: str, root: Path, children: list[Child], progress: Progress, label: str
) -> Child:
    """A private eventbusd on ``root/eb.sock`` in durability ``mode``, its state in ``root/state`` (never
    the user's state directory, whose lock a daemon of theirs may hold), answering."""
    progress.phase(f"{label}: starting a private eventbusd, durability {mode}")
    path = root / "eb.sock"
    config = root / "eventbusd.toml"
    config.write_text("")  # embedded defaults: not /etc/eventbus/eventbusd.toml
    window = opts.clients * opts.in_flight
    argv = _python("-c", "from eventbus.daemon import run; run()", "--config", str(config), "--socket", str(path))
    argv += ["--state-dir", str(root / "state"), "--durability", mode]
    argv += ["--log-level", "warning", "--max-queue-size", str(max(10_000, 4 * window))]
    daemon = Child("eventbusd", argv, root / "eventbusd.log")
    children.append(daemon)
    deadline = time.monotonic() + START_WITHIN_S
    while True:
        if not daemon.alive():
            raise DaemonUnreachable(f"the bench's eventbusd exited at start: {daemon.last_words()}")
        try:
            with SyncClient(path, timeout=1.0) as client:
                status = client.status()
            break
        except EventBusError:
            if time.monotonic() > deadline:
                raise DaemonUnreachable(f"the bench's eventbusd did not answer within {START_WITHIN_S:g}s") from None
            time.sleep(0.05)
    if status.get("durability") != mode:  # the document must say what was measured
        raise BenchFailed(f"the bench's eventbusd runs with durability {status.get('durability')}, not {mode}")
    return daemon


def _start_collector(opts: BenchOptions, path: Path, cid: str, root: Path, children: list[Child]) -> Child:
    # a collector never limits the run: it may hold every task the clients keep in flight
    concurrency = min(100_000, opts.clients * opts.in_flight)
    argv = _python("-c", "from collectors.runner import run_cli; run_cli()", "run", "demo", "--id", cid)
    argv += ["--concurrency", str(concurrency), "--socket", str(path), "--log-level", "warning"]
    child = Child(f"collector {cid}", argv, root / f"{cid}.log")
    children.append(child)
    return child


def _await_registered(path: Path, ids: list[str], collectors: list[Child]) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    with SyncClient(path, timeout=5.0) as client:
        while not set(ids) <= {info.collector_id for info in client.collectors()}:
            for child in collectors:
                if not child.alive():
                    raise BenchFailed(f"{child.name} exited: {child.last_words()}")
            if time.monotonic() > deadline:
                raise BenchFailed(f"the demo collectors did not register within {START_WITHIN_S:g}s")
            time.sleep(0.05)


def _await_event(child: Child, name: str, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        for event in child.events():
            if event.get("event") == name:
                return
            if event.get("event") == "error":
                raise BenchFailed(f"{child.name}: {event.get('message')}")
        if not child.alive():
            raise BenchFailed(f"{child.name} exited: {child.last_words()}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"{child.name} not {name} within {within:g}s")
        time.sleep(0.05)


def _baseline(opts: BenchOptions, root: Path, children: list[Child], progress: Progress) -> PhaseResult:
    progress.phase(f"baseline: starting a raw pyzmq broker and {opts.collectors} echo worker(s)")
    front, back = f"ipc://{root}/raw-front", f"ipc://{root}/raw-back"
    broker = Child(
        "baseline broker",
        _python("-m", "eventbus.bench.baseline", "broker", front, back, str(opts.collectors)),
        root / "raw-broker.log",
        speaks=True,
    )
    children.append(broker)
    for i in range(opts.collectors):
        children.append(
            Child(f"baseline worker {i}", _python("-m", "eventbus.bench.baseline", "worker", back), root / "raw.log")
        )
    _await_event(broker, "ready", START_WITHIN_S)
    specs = client_specs(opts.spec("raw", front), opts.clients, opts.tasks)
    return run_phase("baseline", specs, root, children, broker.pid, progress)

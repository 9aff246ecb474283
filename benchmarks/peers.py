"""Celery and Dramatiq on the workload of ``eventbusctl bench``: echo tasks, one client, W in flight.

The client is this process: it keeps ``--in-flight`` echo tasks of ``--payload-bytes`` outstanding
(after a warm-up), measures each from submit to result, and checks that every result equals its
input; a task that failed, came back wrong or never came back makes the run exit 1.

- Celery: Redis broker and Redis result backend; one worker process, ``--pool solo``
  (concurrency 1), no gossip, mingle, heartbeat or remote control; the client submits with
  ``apply_async`` and is called back by the backend's pub/sub consumer (``AsyncResult.then``).
- Dramatiq: Redis broker, the Results middleware with the Redis result backend; one worker
  process running ``dramatiq.Worker`` with ``--dramatiq-threads`` threads (4) and the default
  middleware; the client runs W threads, each ``send`` then a blocking ``get_result``.

Redis: ``--redis-url`` if given, else 127.0.0.1:6379 when it answers PING, else a private
``redis-server`` on a free port in a temp dir (no persistence), stopped at the end. Celery uses
database 13, Dramatiq 14, every key under a prefix of this run, and only those keys are deleted at
the end. Worker processes are stopped on every way out (and stop themselves if this process dies).

Usage: python benchmarks/peers.py [--tasks 5000 | --duration S] [--in-flight 100] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from eventbus.bench.client import Plan, Tally
from eventbus.bench.phase import PhaseResult
from eventbus.bench.procs import Child, stop_all, stopped_by_sigterm
from eventbus.bench.report import ProgressLine, environment, figures
from eventbus.bench.stats import cpu_seconds, payload
from eventbus.errors import BenchFailed, EventBusError

PEERS = ("celery", "dramatiq")
#: the Redis database of each peer (both broker and results)
DATABASES = {"celery": 13, "dramatiq": 14}
#: a task without a result for this long counts as lost (as in ``eventbusctl bench``)
TASK_WAIT_S = 60.0
#: how long a worker or a private redis-server may take to come up
START_WITHIN_S = 60.0
#: how often a waiting client looks whether the worker is still alive
POLL_S = 0.5
SHARED_REDIS = "redis://127.0.0.1:6379"


@dataclass(frozen=True, slots=True)
class Load:
    """The workload, the same for every peer."""

    tasks: int | None
    duration: float | None
    in_flight: int
    payload_bytes: int
    warmup: int


@dataclass(frozen=True, slots=True)
class Target:
    """Where one peer keeps its queues and results: a Redis URL with its database, and a key prefix."""

    url: str
    prefix: str


def echo(value: Any) -> Any:
    """The task: its argument, unchanged."""
    return value


# --- Redis -----------------------------------------------------------------------------------------


def _with_db(url: str, db: int) -> str:
    return urlsplit(url)._replace(path=f"/{db}").geturl()


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(url: str | None, root: Path) -> Iterator[tuple[str, bool]]:
    """The Redis to use, as (url, started here); a private server is stopped on the way out."""
    if url is not None:
        if not _answers(url):
            raise BenchFailed(f"no Redis answers at {url}")
        yield url, False
        return
    if _answers(SHARED_REDIS):
        yield SHARED_REDIS, False
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchFailed("nothing answers at 127.0.0.1:6379 and redis-server is not installed (apt install it)")
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--daemonize", "no"]
    server = Child("redis-server", [*argv, "--save", "", "--appendonly", "no"], root / "redis.log")
    try:
        private = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + START_WITHIN_S
        while not _answers(private):
            if not server.alive() or time.monotonic() > deadline:
                raise BenchFailed(f"the private redis-server did not start: {server.last_words()}")
            time.sleep(0.05)
        yield private, True
    finally:
        server.stop()


def forget(target: Target) -> int:
    """Delete every key under the target's prefix; returns how many there were."""
    deleted = 0
    with redis.Redis.from_url(target.url) as client:
        keys = [bytes(key) for key in client.scan_iter(match=f"{target.prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            deleted += int(client.delete(*keys[start : start + 1000]))
    return deleted


# --- the peers: each builds its app from a Target, serves in the worker, drives in the client -------------


class Round:
    """One round (warm-up or measured) of one peer: the plan, its tally, and how to tell the worker died."""

    def __init__(
        self, plan: Plan, total: int | None, payload_bytes: int, worker: Child, progress: ProgressLine
    ) -> None:
        self.plan, self.total, self.payload_bytes = plan, total, payload_bytes
        self.worker, self.progress = worker, progress
        self.tally = Tally()
        self.lock = threading.Lock()  # the Dramatiq client's threads share the plan and the tally

    def next_value(self) -> tuple[float, Any] | None:
        """The start time and payload of the next task, or None when the plan is done."""
        with self.lock:
            seq = self.plan.take()
            if seq is None:
                return None
            if self.tally.start is None:
                self.tally.start = time.monotonic()
        return time.perf_counter(), payload(0, seq, self.payload_bytes)

    def answered(self, started: float, sent: Any, ok: bool, value: Any) -> None:
        """Count one task that came back (``ok``: it succeeded) with ``value``."""
        with self.lock:
            self.tally.end = time.monotonic()
            if not ok:
                self.tally.failed += 1
                self.tally.note(f"task failed: {value!r}"[:300])
            elif value != sent:
                self.tally.wrong += 1
                self.tally.note("a result differs from the payload echoed")
            else:
                self.tally.succeeded(started)

    def lost(self, count: int, why: str) -> None:
        if count:
            with self.lock:
                self.tally.lost += count
                self.tally.note(why)

    def tick(self) -> None:
        """Fail if the worker is gone; redraw the progress line."""
        if not self.worker.alive():
            raise BenchFailed(f"the {self.worker.name} exited: {self.worker.last_words()}")
        now = time.monotonic()
        self.progress.update(self.tally.done(), self.total, now - (self.tally.start or now))


class CeleryPeer:
    """Celery with a Redis broker and result backend; the worker: ``--pool solo``, concurrency 1."""

    settings = "Redis broker + Redis result backend; 1 worker process, --pool solo, concurrency 1"

    def __init__(self, target: Target, threads: int) -> None:
        from celery import Celery

        self.app = Celery("eb_peers", broker=target.url, backend=target.url, set_as_current=False)
        self.app.conf.update(
            broker_connection_retry_on_startup=True,
            broker_transport_options={"global_keyprefix": target.prefix},
            result_backend_transport_options={"global_keyprefix": target.prefix},
            task_default_queue="echo",
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_expires=3600,  # on a shared Redis, what a killed run leaves behind goes away
            worker_enable_remote_control=False,  # no broadcast queues that another run could see
            worker_hijack_root_logger=False,
        )
        self.task = self.app.task(echo, name="eb_peers.echo")

    def serve(self) -> None:
        argv = ["worker", "--pool", "solo", "--concurrency", "1", "--queues", "echo", "--loglevel", "WARNING"]
        self.app.worker_main([*argv, "--without-gossip", "--without-mingle", "--without-heartbeat"])

    def drive(self, rnd: Round, in_flight: int) -> None:
        """Keep ``in_flight`` tasks outstanding; results come through the backend's pub/sub consumer."""
        consumer = self.app.backend.result_consumer
        pending: dict[str, tuple[float, Any, Any]] = {}  # holds the AsyncResult: its callback is weak
        ready: list[Any] = []

        def send_next() -> None:
            if (nxt := rnd.next_value()) is not None:
                result = self.task.apply_async(args=(nxt[1],))
                pending[str(result.id)] = (*nxt, result)
                result.then(ready.append)

        for _ in range(in_flight):
            send_next()
        last_answer = time.monotonic()
        while pending:
            consumer.drain_events(timeout=POLL_S)
            if not ready:
                rnd.tick()
                if time.monotonic() - last_answer > TASK_WAIT_S:
                    rnd.lost(len(pending) + rnd.plan.stop(), f"no result within {TASK_WAIT_S:g}s")
                    return
                continue
            last_answer = time.monotonic()
            for result in ready:
                started, sent, _ = pending.pop(str(result.id))
                rnd.answered(started, sent, result.state == "SUCCESS", result.result)
                send_next()
            ready.clear()
            rnd.tick()

    def close(self) -> None:
        self.app.close()


class DramatiqPeer:
    """Dramatiq with a Redis broker and the Results middleware (Redis backend); the worker: N threads."""

    def __init__(self, target: Target, threads: int) -> None:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.results import Results
        from dramatiq.results.backends.redis import RedisBackend

        self.threads = threads
        self.settings = f"Redis broker + Results middleware (Redis backend); 1 worker process, {threads} threads"
        self.broker = RedisBroker(url=target.url, namespace=f"{target.prefix}dramatiq")
        # prefixed keys (not hashed) so that the run can find and delete them
        self.backend = RedisBackend(url=target.url, namespace=f"{target.prefix}results", use_namespace_prefix_keys=True)
        self.broker.add_middleware(Results(backend=self.backend, result_ttl=3_600_000))
        self.actor = dramatiq.actor(
            echo, actor_name="eb_peers_echo", queue_name="echo", broker=self.broker, store_results=True, max_retries=0
        )

    def serve(self) -> None:
        from dramatiq import Worker

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        worker = Worker(self.broker, worker_threads=self.threads)
        worker.start()
        try:
            stop.wait()
        finally:
            worker.stop(timeout=5000)

    def drive(self, rnd: Round, in_flight: int) -> None:
        """Keep ``in_flight`` messages outstanding: one thread each, ``send`` then a blocking ``get_result``."""
        from dramatiq.results import ResultFailure, ResultTimeout

        gone = threading.Event()

        def one_at_a_time() -> None:
            while not gone.is_set() and (nxt := rnd.next_value()) is not None:
                message, since = self.actor.send(nxt[1]), time.monotonic()
                while True:
                    try:
                        rnd.answered(*nxt, True, message.get_result(backend=self.backend, block=True, timeout=1000))
                    except ResultFailure as exc:
                        rnd.answered(*nxt, False, exc)
                    except ResultTimeout:  # waits of 1 s, so that a dead worker is noticed
                        if not gone.is_set() and time.monotonic() - since < TASK_WAIT_S:
                            continue
                        rnd.lost(1, f"no result within {TASK_WAIT_S:g}s")
                    break

        threads = [threading.Thread(target=one_at_a_time, daemon=True) for _ in range(in_flight)]
        for thread in threads:
            thread.start()
        try:
            while alive := [thread for thread in threads if thread.is_alive()]:
                alive[0].join(POLL_S)
                rnd.tick()
        finally:
            gone.set()
            for thread in threads:
                thread.join(2.0)
            rnd.lost(rnd.plan.stop(), "the run stopped early")

    def close(self) -> None:
        self.broker.close()


Peer = CeleryPeer | DramatiqPeer
PEER_TYPES: dict[str, type[Peer]] = {"celery": CeleryPeer, "dramatiq": DramatiqPeer}


def _stop_with_parent(parent: int) -> None:
    """A thread that stops this worker when the process that started it is gone (even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- one peer, and the command line ------------------------------------------------------------------


def measure(peer: str, target: Target, load: Load, threads: int, root: Path, progress: ProgressLine) -> dict[str, Any]:
    """Start the peer's worker, warm up, measure, stop the worker, delete the peer's keys; the figures."""
    children: list[Child] = []
    client: Peer | None = None
    try:
        progress.phase(f"{peer}: starting a worker")
        argv = [sys.executable, os.path.abspath(__file__), "--worker", peer, "--redis-url", target.url]
        argv += ["--prefix", target.prefix, "--parent", str(os.getpid()), "--dramatiq-threads", str(threads)]
        worker = Child(f"{peer} worker", argv, root / f"{peer}-worker.log")
        children.append(worker)
        client = PEER_TYPES[peer](target, threads)
        progress.phase(f"{peer}: warming up ({load.warmup} tasks)")
        warm = Round(Plan(load.warmup, None), load.warmup, load.payload_bytes, worker, progress)
        client.drive(warm, load.in_flight)
        progress.phase(f"{peer}: measuring {load.tasks if load.tasks is not None else f'{load.duration:g}s'}")
        deadline = None if load.duration is None else time.monotonic() + load.duration
        rnd = Round(Plan(load.tasks, deadline), load.tasks, load.payload_bytes, worker, progress)
        cpu_before = cpu_seconds(worker.pid)
        client.drive(rnd, load.in_flight)
        cpu_after = cpu_seconds(worker.pid)
    finally:
        stop_all(children)
        if client is not None:
            client.close()
        forget(target)
    doc = _figures(rnd.tally, warm.tally, cpu_before, cpu_after)
    doc.update(version=importlib.metadata.version(peer), settings=client.settings)
    return doc


def _figures(tally: Tally, warm: Tally, before: float | None, after: float | None) -> dict[str, Any]:
    """The figures ``eventbusctl bench`` reports for a phase, with the worker's CPU time instead of the daemon's."""
    result = PhaseResult()
    result.merge(asdict(tally))
    result.warmup_unsuccessful = warm.done() - warm.ok
    result.errors += [e for e in warm.errors if e not in result.errors]
    doc = figures(result)
    cpu = None if before is None or after is None or not result.tasks else round((after - before) * 1e6 / result.tasks)
    for key in [key for key in doc if key.startswith("daemon_")]:
        del doc[key]  # figures of eventbusd; the broker here is Redis
    doc.update(checked=result.ok + result.wrong, worker_cpu_us_per_task=cpu)
    return doc


def run(peers: list[str], load: Load, redis_url: str | None, threads: int, progress: ProgressLine) -> dict[str, Any]:
    """Measure each peer in turn against one Redis; the whole document."""
    root = Path(tempfile.mkdtemp(prefix="eb-peers-", dir="/tmp"))
    run_id = f"ebpeers-{os.getpid()}-{secrets.token_hex(4)}:"
    doc: dict[str, Any] = {"in_flight": load.in_flight, "payload_bytes": load.payload_bytes, "tasks": load.tasks}
    doc.update(duration=load.duration, warmup=load.warmup, peers={})
    try:
        with stopped_by_sigterm(), redis_server(redis_url, root) as (url, started):
            with redis.Redis.from_url(url) as client:
                info = client.info("server")
            doc["redis"] = {"url": url, "started": started, "version": str(info.get("redis_version"))}
            for peer in peers:
                target = Target(_with_db(url, DATABASES[peer]), run_id)
                doc["peers"][peer] = measure(peer, target, load, threads, root, progress)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        progress.close()
    doc["env"] = environment()
    return doc


def unsuccessful(doc: dict[str, Any]) -> list[str]:
    """One line per peer that had a task fail, come back wrong or get lost."""
    out = []
    for peer, figs in doc["peers"].items():
        bad = figs["failed"] + figs["wrong"] + figs["lost"] + figs["warmup_unsuccessful"]
        if bad:
            why = f"; first error: {figs['errors'][0]}" if figs["errors"] else ""
            out.append(
                f"{peer}: {bad} task(s) did not succeed ({figs['failed']} failed, {figs['wrong']} wrong, "
                f"{figs['lost']} lost, {figs['warmup_unsuccessful']} in warm-up){why}"
            )
    return out


def table(doc: dict[str, Any]) -> str:
    """The human summary: one line per peer."""
    lines = [f"{'peer':<10}{'tasks/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'tasks':>8}  settings"]
    for peer, figs in doc["peers"].items():
        lat = figs["latency_ms"]
        cells = (lat["p50"], lat["p90"], lat["p99"])
        lines.append(
            f"{peer:<10}{figs['tasks_per_s']:>10,.1f}"
            + "".join(f"{'-' if c is None else format(c, '.3f'):>10}" for c in cells)
            + f"{figs['tasks']:>8}  {figs['settings']}"
        )
    redis_doc = doc["redis"]
    lines.append(
        f"\n1 client x {doc['in_flight']} in flight, {doc['payload_bytes']} B payload, echo; "
        f"Redis {redis_doc['version']} at {redis_doc['url']}{' (private)' if redis_doc['started'] else ''}"
    )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated: celery, dramatiq (default both)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks measured per peer (default 5000)")
    parser.add_argument("--duration", type=float, default=None, help="measure for S seconds per peer instead")
    parser.add_argument("--in-flight", type=int, default=100, help="tasks the client keeps outstanding")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=None, help="tasks before measuring (default max(300, 2W))")
    parser.add_argument("--dramatiq-threads", type=int, default=4, help="threads of the Dramatiq worker")
    parser.add_argument("--redis-url", default=None, help="use this Redis (its database number is not used)")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if any(p not in PEERS for p in peers) or not peers:
        parser.error(f"--peers: choose from {', '.join(PEERS)}")
    if args.tasks is not None and args.duration is not None:
        parser.error("give --tasks or --duration, not both")
    if min(args.in_flight, args.dramatiq_threads, args.tasks or 1) < 1 or (args.warmup or 0) < 0:
        parser.error("--in-flight, --tasks and --dramatiq-threads must be at least 1, --warmup at least 0")
    args.peers = peers
    return args


def main(argv: list[str] | None = None) -> int:
    """0 when every task of every peer came back equal to its input, 1 otherwise."""
    args = parse(argv)
    if args.worker is not None:
        _stop_with_parent(args.parent)
        PEER_TYPES[args.worker](Target(args.redis_url, args.prefix), args.dramatiq_threads).serve()
        return 0
    tasks = None if args.duration is not None else args.tasks or 5000
    warmup = max(300, 2 * args.in_flight) if args.warmup is None else args.warmup
    load = Load(tasks, args.duration, args.in_flight, args.payload_bytes, warmup)
    try:
        doc = run(args.peers, load, args.redis_url, args.dramatiq_threads, ProgressLine(sys.stderr, "peers"))
    except EventBusError as exc:
        print(f"peers: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("peers: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(json.dumps(doc) if args.json else table(doc))
    problems = unsuccessful(doc)
    for line in problems:
        print(f"peers: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

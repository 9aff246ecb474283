"""A load-generating client process of ``eventbusctl bench``: ``python -m eventbus.bench.client SPEC``.

SPEC is a JSON :class:`Spec`. The process keeps ``in_flight`` tasks outstanding, through
eventbusd (``mode`` ``eventbus``: :class:`eventbus.client.Client`, ``run``: submit and wait in one request) or through
the raw pyzmq baseline broker (``mode`` ``raw``: a DEALER sending ``[seq, payload]``). It talks
to the bench in JSON lines on stdout: ``{"event": "ready"}`` after its warm-up; once it reads
``go`` on stdin, ``{"event": "progress", "done": n}`` about four times a second and finally one
``{"event": "result", ...}`` holding its tally and every latency in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import uvloop
import zmq

from distributor.models import TaskState
from eventbus.bench.stats import payload
from eventbus.client import Client
from eventbus.errors import DaemonUnreachable, EventBusError, RequestTimeout

#: a task not final within this long counts as lost
TASK_WAIT_S = 60.0
#: how often progress is reported
PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True, slots=True)
class Spec:
    """What one client process runs."""

    mode: str  # "eventbus" or "raw"
    target: str  # the daemon's socket path, or the baseline broker's ipc:// endpoint
    index: int
    tasks: int | None  # None: until ``duration`` has passed
    duration: float | None
    in_flight: int
    payload_bytes: int
    operation: str
    warmup: int


@dataclass(slots=True)
class Tally:
    """What became of the tasks of one phase."""

    ok: int = 0
    failed: int = 0
    wrong: int = 0
    lost: int = 0
    latencies_us: list[int] = field(default_factory=list)
    start: float | None = None  # time.monotonic() of the first submit: one clock for every process
    end: float | None = None  # ... of the last result
    errors: list[str] = field(default_factory=list)

    def done(self) -> int:
        return self.ok + self.failed + self.wrong + self.lost

    def note(self, message: str) -> None:
        if len(self.errors) < 5 and message not in self.errors:
            self.errors.append(message)

    def succeeded(self, started: float) -> None:
        self.ok += 1
        self.latencies_us.append(round((time.perf_counter() - started) * 1e6))


class Plan:
    """Hands out sequence numbers until ``count`` were given or ``deadline`` (monotonic) passed."""

    def __init__(self, count: int | None, deadline: float | None) -> None:
        self._count, self._deadline = count, deadline
        self._next = 0
        self.stopped = False

    def take(self) -> int | None:
        over = self._count is not None and self._next >= self._count
        if self.stopped or over or (self._deadline is not None and time.monotonic() >= self._deadline):
            return None
        self._next += 1
        return self._next - 1

    def stop(self) -> int:
        """Hand out nothing more; returns how many planned tasks were never started."""
        self.stopped = True
        return 0 if self._count is None else max(0, self._count - self._next)


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _deadline(spec: Spec) -> float | None:
    return None if spec.duration is None else time.monotonic() + spec.duration


async def _drive(client: Client, spec: Spec, plan: Plan, tally: Tally) -> None:
    """Keep ``spec.in_flight`` tasks outstanding until the plan runs out."""

    async def one_at_a_time() -> None:
        while (seq := plan.take()) is not None:
            value = payload(spec.index, seq, spec.payload_bytes)
            started = time.perf_counter()
            if tally.start is None:
                tally.start = time.monotonic()
            try:
                info = await client.run(spec.operation, value, timeout=TASK_WAIT_S)
            except RequestTimeout as exc:
                tally.lost += 1
                tally.note(exc.message)
                continue
            except DaemonUnreachable as exc:  # nothing more will get through: stop here
                tally.lost += 1 + plan.stop()
                tally.note(exc.message)
                continue
            except EventBusError as exc:  # refused (queue full, invalid): the task did not run
                tally.failed += 1
                tally.note(f"{exc.code}: {exc.message}")
                continue
            tally.end = time.monotonic()
            if info.state is not TaskState.SUCCEEDED:
                tally.failed += 1
                tally.note(f"task {info.state.value}: {info.error.message if info.error else '-'}")
            elif info.result is None or info.result.value != value:
                tally.wrong += 1
                tally.note("a result differs from the payload echoed")
            else:
                tally.succeeded(started)

    await asyncio.gather(*(one_at_a_time() for _ in range(spec.in_flight)))


async def _progress(tally: Tally) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        emit(event="progress", done=tally.done())


async def _eventbus(spec: Spec) -> tuple[Tally, Tally]:
    async with Client(spec.target, timeout=30.0) as client:
        warm = Tally()
        await _drive(client, spec, Plan(spec.warmup, None), warm)
        emit(event="ready")
        if not await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):
            raise SystemExit(1)  # the bench went away
        tally = Tally()
        reporter = asyncio.create_task(_progress(tally))
        try:
            await _drive(client, spec, Plan(spec.tasks, _deadline(spec)), tally)
        finally:
            reporter.cancel()
    return warm, tally


def _raw_drive(sock: zmq.Socket[bytes], spec: Spec, plan: Plan, tally: Tally, report: bool) -> None:
    """The baseline's window: ``[seq, payload]`` out, the same two frames back from the echo worker."""
    pending: dict[bytes, tuple[float, bytes]] = {}

    def send_next() -> None:
        seq = plan.take()
        if seq is None:
            return
        key, data = seq.to_bytes(8, "little"), msgpack.packb(payload(spec.index, seq, spec.payload_bytes))
        if tally.start is None:
            tally.start = time.monotonic()
        pending[key] = (time.perf_counter(), data)
        sock.send_multipart([key, data])

    for _ in range(spec.in_flight):
        send_next()
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while pending:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)  # under load an answer is usually there: no poll
        except zmq.Again:
            if not sock.poll(round(TASK_WAIT_S * 1000)):
                tally.lost += len(pending) + plan.stop()
                tally.note(f"no answer from the baseline broker within {TASK_WAIT_S:g}s")
                return
            continue
        sent = pending.pop(frames[0], None) if len(frames) == 2 else None
        if sent is None:
            tally.note("an answer to no pending request")
            continue
        tally.end = time.monotonic()
        if frames[1] == sent[1]:
            tally.succeeded(sent[0])
        else:
            tally.wrong += 1
            tally.note("a result differs from the payload echoed")
        send_next()
        if report and tally.end >= next_report:
            emit(event="progress", done=tally.done())
            next_report = tally.end + PROGRESS_EVERY_S


def _raw(spec: Spec) -> tuple[Tally, Tally]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(spec.target)
    try:
        warm = Tally()
        _raw_drive(sock, spec, Plan(spec.warmup, None), warm, report=False)
        emit(event="ready")
        if not sys.stdin.readline():
            raise SystemExit(1)
        tally = Tally()
        _raw_drive(sock, spec, Plan(spec.tasks, _deadline(spec)), tally, report=True)
    finally:
        sock.close(linger=0)
        ctx.term()
    return warm, tally


def main(argv: list[str] | None = None) -> int:
    """Run the client SPEC (JSON, the first argument); 0 when it ran to its end, even with failed tasks."""
    spec = Spec(**json.loads((sys.argv[1:] if argv is None else argv)[0]))
    try:
        if spec.mode == "raw":
            warm, tally = _raw(spec)
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                warm, tally = runner.run(_eventbus(spec))
    except EventBusError as exc:
        emit(event="error", code=exc.code, message=exc.message)
        return 1
    result = asdict(tally)
    result["warmup_unsuccessful"] = warm.done() - warm.ok
    result["errors"] = tally.errors + [e for e in warm.errors if e not in tally.errors]
    emit(event="result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What validating and encoding the records of one echo task costs, per message and per task.

The messages of one task's life, taken from a run of the real distributor: a client's
``control.task.submit`` (with ``wait``, as ``eventbusctl bench`` sends it), the dispatch the daemon
sends a collector, the collector's ``accepted`` and ``result`` events, and the TaskInfo answer.
Each body is decoded and validated, and built and encoded, by:

- ``pydantic``: msgpack, then ``Model.model_validate`` (what the daemon and clients do today);
  built with ``Model(...)``, then ``model_dump`` and msgpack;
- ``adapter``: msgpack, then ``TypeAdapter(Model).validate_python``; ``dump_python`` and msgpack;
- ``construct``: trusted, no validation: ``model_construct``, ``model_copy``, ``model_dump``;
- ``msgspec``: Structs with the same fields and constraints, straight from and to msgpack bytes;
- ``to_builtins``: a Struct turned into builtins (``msgspec.to_builtins``), then msgpack.

``unpack`` is msgpack alone; ``current`` is what the code does today where no column says it.
Before measuring, every validating variant must reject the same bad bodies and decode the good
ones to equal values, and every encoder must carry the same record; otherwise exit 1.

Usage: python benchmarks/records.py [--iterations 5000] [--repeat 5] [--daemon-us 350] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgpack
import msgspec
from pydantic import BaseModel, TypeAdapter, ValidationError

from distributor import (
    CollectorCapability,
    Dispatch,
    DistributorConfig,
    TaskDistributor,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
    make_strategy,
)
from distributor import models as dm
from eventbus import _requests as rq
from eventbus import messages as m
from eventbus.bench.stats import payload
from eventbus.wire import decode

# ---- Structs mirroring the pydantic records ------------------------------------------------------


def _pattern(alias: Any) -> str:
    """The regex of an ``Annotated[str, Field(pattern=...)]``, anchored at the very end: Python's
    ``$`` (which msgspec uses) also matches before a final newline, pydantic's regex engine does not."""
    info = typing.get_args(alias)[1]
    found = next(meta.pattern for meta in info.metadata if getattr(meta, "pattern", None))
    return cast(str, found).removesuffix("$") + r"\Z"


_Meta = msgspec.Meta
_BIG = sys.float_info.max
#: ``allow_inf_nan=False``: NaN fails any comparison, so a finite range refuses it too
Finite = Annotated[float, _Meta(ge=-_BIG, le=_BIG)]
SegmentS = Annotated[str, _Meta(pattern=_pattern(dm.Segment), min_length=1, max_length=64)]
TaskIdS = Annotated[str, _Meta(pattern=_pattern(dm.TaskId), min_length=1, max_length=128)]
MetadataS = Annotated[
    dict[Annotated[str, _Meta(max_length=64)], Annotated[str, _Meta(max_length=1024)]], _Meta(max_length=64)
]


class _Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class TaskRequestS(_Record, frozen=True, kw_only=True):
    """:class:`distributor.models.TaskRequest`."""

    task_id: TaskIdS | None = None
    operation: SegmentS
    priority: Annotated[int, _Meta(ge=dm.PRIORITY_MIN, le=dm.PRIORITY_MAX)] = 5
    payload: Any = None
    timeout_ms: Annotated[int, _Meta(ge=1, le=7 * 86_400_000)] = 30_000
    deadline: Finite | None = None
    not_before: Finite | None = None
    constraints: Annotated[list[Annotated[str, _Meta(max_length=256)]], _Meta(max_length=32)] = []
    depends_on: Annotated[list[TaskIdS], _Meta(max_length=256)] = []
    idempotency_key: Annotated[str, _Meta(min_length=1, max_length=256)] | None = None
    metadata: MetadataS = {}
    correlation_id: Annotated[str, _Meta(max_length=256)] | None = None
    created_at: Finite | None = None


class SubmitS(TaskRequestS, frozen=True, kw_only=True):
    """A submit body: the TaskRequest and :class:`eventbus.messages.SubmitWait` in one record."""

    wait: bool = False
    wait_s: Annotated[float, _Meta(gt=0, le=3600)] = m.SUBMIT_WAIT_DEFAULT_S


class ErrorInfoS(_Record, frozen=True, kw_only=True):
    type: Annotated[str, _Meta(max_length=256)]
    message: Annotated[str, _Meta(max_length=65_536)]


class TaskResultS(_Record, frozen=True, kw_only=True):
    """:class:`distributor.models.TaskResult`."""

    task_id: TaskIdS
    attempt: Annotated[int, _Meta(ge=1)]
    collector_id: SegmentS
    success: bool
    value: Any = None
    error: ErrorInfoS | None = None
    execution_time_s: Annotated[float, _Meta(ge=0, le=1e9)] = 0.0
    started_at: Finite | None = None
    finished_at: Finite | None = None


class AttemptEventS(_Record, frozen=True, kw_only=True):
    """:class:`eventbus.messages.AttemptEvent`."""

    event: Literal["accepted", "rejected", "progress", "result"]
    task_id: TaskIdS
    attempt: Annotated[int, _Meta(ge=1)]
    fraction: Annotated[float, _Meta(ge=0, le=1)] | None = None
    message: Annotated[str, _Meta(max_length=4096)] = ""
    result: TaskResultS | None = None


class DispatchS(_Record, frozen=True, kw_only=True):
    """:class:`eventbus.messages.DispatchBody`, its task a record rather than a dict."""

    task: TaskRequestS
    attempt: int
    deadline: Finite | None = None


class TaskInfoS(msgspec.Struct, frozen=True, kw_only=True):
    """:class:`distributor.models.TaskInfo` (unknown fields skipped, as there)."""

    task_id: str
    operation: str
    priority: int
    state: TaskState
    attempt: int
    retries: int
    collector_id: str | None
    created_at: Finite
    queued_at: Finite | None
    dispatched_at: Finite | None
    finished_at: Finite | None
    result: TaskResultS | None
    error: ErrorInfoS | None
    constraints: list[str]
    depends_on: list[str]
    idempotency_key: str | None = None
    not_before: float | None = None
    effective_priority: int | None = None
    limit_wait_s: float = 0.0
    truncated: bool = False


# ---- one task's life, through the real distributor ------------------------------------------------

NOW = 1_700_000_000.0
COLLECTOR = "demo-1"
WAIT: dict[str, Any] = {"wait": True, "wait_s": 60.0}


def _pack(value: Any) -> bytes:
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code}")


def _unpack(data: bytes) -> Any:
    """As the daemon unpacks a frame (string keys only, no ext types)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext)


def _submitted(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in m.SUBMIT_WAIT_KEYS}


@dataclass(frozen=True)
class Life:
    """The records and bodies of one echo task, as the daemon, a client and a collector hold them."""

    submit: dict[str, Any]
    request: TaskRequest
    dispatch: Dispatch
    result: TaskResult
    info: TaskInfo
    distributor: TaskDistributor

    def bodies(self) -> dict[str, dict[str, Any]]:
        """Each message's body, by name, as it goes on the wire."""
        task_id, attempt = self.result.task_id, self.result.attempt
        return {
            "submit": self.submit,
            "dispatch": {"task": self.request.model_dump(), "attempt": attempt, "deadline": self.dispatch.deadline},
            "accepted": {"event": "accepted", "task_id": task_id, "attempt": attempt},
            "result": {"event": "result", "task_id": task_id, "attempt": attempt, "result": self.result.model_dump()},
            "taskinfo": self.info.model_dump(),
        }


def task_life(payload_bytes: int = 64) -> Life:
    """Submit, dispatch, accept and complete one echo task in a distributor; what each step held."""
    d = TaskDistributor(DistributorConfig(), strategy=make_strategy("least_loaded"))
    cap = CollectorCapability(
        collector_id=COLLECTOR, collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=100
    )
    d.register(cap, NOW)
    value = payload(0, 1, payload_bytes)
    submit = rq.submit_wait("echo", value, 60.0, 10.0, task_id=rq.new_task_id(), priority=7, timeout_ms=5000).body
    task_id, actions = d.submit(TaskRequest.model_validate(_submitted(submit)), NOW)
    dispatch = next(a for a in actions if isinstance(a, Dispatch))
    d.accepted(COLLECTOR, task_id, dispatch.attempt, NOW + 0.001)
    result = TaskResult(
        task_id=task_id,
        attempt=dispatch.attempt,
        collector_id=COLLECTOR,
        success=True,
        value=value,
        execution_time_s=0.0002,
        started_at=NOW + 0.0011,
        finished_at=NOW + 0.0013,
    )
    d.complete(result, NOW + 0.002)
    return Life(submit, dispatch.task, dispatch, result, d.get(task_id), d)


# ---- decoders: msgpack bytes of a body -> validated record(s) --------------------------------------

Decoder = Callable[[bytes], Any]
_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {
    model: TypeAdapter(model)
    for model in (TaskRequest, TaskResult, m.SubmitWait, m.DispatchBody, m.AttemptEvent, TaskInfo)
}


def _validate(adapter: bool) -> Callable[[type[BaseModel], Any], Any]:
    if adapter:
        return lambda model, value: _ADAPTERS[model].validate_python(value)
    return lambda model, value: model.model_validate(value)


def _pydantic_decoders(adapter: bool) -> dict[str, Decoder]:
    v = _validate(adapter)

    def submit(data: bytes) -> tuple[Any, Any]:  # as Service._submit: the wait keys are a record apart
        body = _unpack(data)
        wait = v(m.SubmitWait, {k: body.pop(k) for k in m.SUBMIT_WAIT_KEYS if k in body})
        return wait, v(TaskRequest, body)

    def dispatch(data: bytes) -> tuple[Any, Any]:  # as the collector runtime: the body, its task validated with it
        body = v(m.DispatchBody, _unpack(data))
        return body, body.task

    return {
        "submit": submit,
        "dispatch": dispatch,
        "accepted": lambda data: v(m.AttemptEvent, _unpack(data)),
        "result": lambda data: v(m.AttemptEvent, _unpack(data)),
        "taskinfo": lambda data: v(TaskInfo, _unpack(data)),
    }


_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "submit": SubmitS,
    "dispatch": DispatchS,
    "accepted": AttemptEventS,
    "result": AttemptEventS,
    "taskinfo": TaskInfoS,
}


def decoders() -> dict[str, dict[str, Decoder]]:
    """variant -> message -> a function validating that message's body from its msgpack bytes."""
    typed = {name: msgspec.msgpack.Decoder(struct) for name, struct in _STRUCTS.items()}
    return {
        "pydantic": _pydantic_decoders(adapter=False),
        "adapter": _pydantic_decoders(adapter=True),
        "msgspec": {name: dec.decode for name, dec in typed.items()},
    }


def plain(value: Any) -> Any:
    """What a decoder returned, as builtins (a body and its task: the task in the body)."""
    if isinstance(value, tuple):
        first, second = (plain(v) for v in value)
        return {**first, "task": second} if "task" in first else {**first, **second}
    if isinstance(value, BaseModel):
        return value.model_dump()
    return msgspec.to_builtins(value)


# ---- encoders: a record built (or held) -> msgpack bytes of its body --------------------------------

Encoder = Callable[[], bytes]


def _dump(adapter: bool) -> Callable[[BaseModel], Any]:
    if adapter:
        return lambda record: _ADAPTERS[type(record)].dump_python(record)
    return lambda record: record.model_dump()


def _model_encoders(life: Life, variant: str) -> dict[str, Encoder]:
    """Build each message's record with ``variant`` (validated, or constructed when trusted) and encode it."""
    trusted = variant == "construct"
    v = _validate(variant == "adapter")
    dump = _dump(variant == "adapter")

    def build(model: type[BaseModel], fields: dict[str, Any]) -> Any:
        return model.model_construct(**fields) if trusted else v(model, fields)

    req = _submitted(life.submit)
    res = dict(life.result)  # fields, nested records kept as records
    info = dict(life.info)
    task, deadline, t, a = life.request, life.dispatch.deadline, life.result.task_id, life.result.attempt
    return {
        "submit": lambda: _pack({**dump(build(TaskRequest, req)), **WAIT}),
        "dispatch": lambda: _pack(dump(build(m.DispatchBody, {"task": task, "attempt": a, "deadline": deadline}))),
        "accepted": lambda: _pack(dump(build(m.AttemptEvent, {"event": "accepted", "task_id": t, "attempt": a}))),
        "result": lambda: _pack(
            dump(
                build(m.AttemptEvent, {"event": "result", "task_id": t, "attempt": a, "result": build(TaskResult, res)})
            )
        ),
        "taskinfo": lambda: _pack(dump(build(TaskInfo, info))),
    }


def _struct_encoders(life: Life, builtins: bool) -> dict[str, Encoder]:
    """Build each message's Struct and encode it, with msgspec or (``builtins``) through msgpack."""
    enc = msgspec.msgpack.Encoder()

    def out(struct: msgspec.Struct) -> bytes:
        return _pack(msgspec.to_builtins(struct)) if builtins else enc.encode(struct)

    req = _submitted(life.submit)
    task = TaskRequestS(**life.request.model_dump())  # as the daemon would hold it
    res = life.result.model_dump()
    info = {**dict(life.info), "result": TaskResultS(**res)}
    deadline, t, a = life.dispatch.deadline, life.result.task_id, life.result.attempt
    return {
        "submit": lambda: out(SubmitS(**req, **WAIT)),
        "dispatch": lambda: out(DispatchS(task=task, attempt=a, deadline=deadline)),
        "accepted": lambda: out(AttemptEventS(event="accepted", task_id=t, attempt=a)),
        "result": lambda: out(AttemptEventS(event="result", task_id=t, attempt=a, result=TaskResultS(**res))),
        "taskinfo": lambda: out(TaskInfoS(**info)),
    }


def _current_encoders(life: Life) -> dict[str, Encoder]:
    """What the client, collector runtime and daemon do today to send each body."""
    task, deadline, t, a = life.request, life.dispatch.deadline, life.result.task_id, life.result.attempt
    res = dict(life.result)
    call = rq.submit_wait
    info = life.distributor.get
    return {
        "submit": lambda: _pack(
            call("echo", life.submit["payload"], 60.0, 10.0, task_id=t, priority=7, timeout_ms=5000).body
        ),
        "dispatch": lambda: _pack({"task": task.model_dump(), "attempt": a, "deadline": deadline}),
        "accepted": lambda: _pack({"event": "accepted", "task_id": t, "attempt": a}),
        "result": lambda: _pack(
            {"event": "result", "task_id": t, "attempt": a, "result": TaskResult(**res).model_dump()}
        ),
        "taskinfo": lambda: _pack(info(t).model_dump()),
    }


def encoders(life: Life) -> dict[str, dict[str, Encoder]]:
    """variant -> message -> a function building that message's record and returning its msgpack body."""
    return {
        "current": _current_encoders(life),
        "pydantic": _model_encoders(life, "pydantic"),
        "adapter": _model_encoders(life, "adapter"),
        "construct": _model_encoders(life, "construct"),
        "msgspec": _struct_encoders(life, builtins=False),
        "to_builtins": _struct_encoders(life, builtins=True),
    }


def trusted(life: Life) -> dict[str, dict[str, Callable[[], object]]]:
    """variant -> operation on records the daemon made itself: a request copied with its id and
    creation time (at submit and again at the end), a TaskInfo built, a TaskInfo turned into a dict."""
    request, struct = life.request, TaskRequestS(**life.request.model_dump())
    update = {"task_id": request.task_id, "created_at": request.created_at}
    info = dict(life.info)
    info_s = {**info, "result": TaskResultS(**life.result.model_dump())}
    built, built_s = TaskInfo.model_construct(**info), TaskInfoS(**info_s)
    return {
        "construct": {
            "copy": lambda: request.model_copy(update=update),
            "build": lambda: TaskInfo.model_construct(**info),
            "todict": built.model_dump,
        },
        "msgspec": {
            "copy": lambda: msgspec.structs.replace(struct, **update),
            "build": lambda: TaskInfoS(**info_s),
            "todict": lambda: msgspec.structs.asdict(built_s),
        },
        "to_builtins": {"todict": lambda: msgspec.to_builtins(built_s)},
    }


# ---- the checks made before measuring ---------------------------------------------------------------


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with the field at ``path`` (dotted) set to ``value``."""
    head, _, rest = path.partition(".")
    return {**body, head: _with(body[head], rest, value) if rest else value}


#: message -> (field, bad value): bodies every validating variant must refuse
BAD: dict[str, list[tuple[str, Any]]] = {
    "submit": [
        ("priority", dm.PRIORITY_MAX + 1),
        ("operation", "Echo!"),
        ("operation", "echo\n"),
        ("timeout_ms", 0),
        ("task_id", "has space"),
        ("deadline", float("nan")),
        ("metadata", {"k": "v" * 1025}),
        ("unknown", 1),
        ("wait", "yes"),
        ("wait_s", 0),
    ],
    "dispatch": [("task.operation", "Echo!"), ("task.priority", 0), ("task.unknown", 1), ("deadline", float("inf"))],
    "accepted": [("attempt", 0), ("event", "done"), ("task_id", "")],
    "result": [
        ("attempt", 0),
        ("result.collector_id", "demo 1"),
        ("result.execution_time_s", -1.0),
        ("result.started_at", float("nan")),
        ("result.success", "maybe"),
        ("result.unknown", 1),
    ],
    "taskinfo": [("state", "bogus"), ("created_at", float("inf")), ("result.attempt", 0), ("priority", "high")],
}

#: message -> (field, value) that pydantic's lax mode takes and msgspec refuses: shown, not required
LAX: dict[str, list[tuple[str, Any]]] = {
    "submit": [("priority", "7"), ("timeout_ms", 5000.0)],
    "result": [("result.success", 1), ("result.task_id", b"bytes")],
}

_INVALID = (ValidationError, msgspec.ValidationError)


def _refuses(decoder: Decoder, data: bytes) -> bool:
    try:
        decoder(data)
    except _INVALID:
        return True
    return False


def rejection_problems(
    variants: Mapping[str, Mapping[str, Decoder]], bodies: Mapping[str, dict[str, Any]]
) -> list[str]:
    """Every bad body of :data:`BAD` that a variant accepts (or refuses with a foreign exception)."""
    problems = []
    for name, cases in BAD.items():
        for path, value in cases:
            data = _pack(_with(bodies[name], path, value))
            for variant, decoders_ in variants.items():
                try:
                    refused = _refuses(decoders_[name], data)
                except Exception as exc:
                    problems.append(
                        f"{variant} {name}: {path}={value!r} raised {type(exc).__name__}, not a validation error"
                    )
                    continue
                if not refused:
                    problems.append(f"{variant} {name}: accepted {path}={value!r}")
    return problems


def equality_problems(life: Life) -> list[str]:
    """Decoders that read a real body differently from ``pydantic``, and encoders whose bodies do."""
    problems = []
    bodies, variants = life.bodies(), decoders()
    reference = variants["pydantic"]
    for name, body in bodies.items():
        data = _pack(body)
        want = plain(reference[name](data))
        problems += [
            f"{v} {name}: decoded to other values" for v, d in variants.items() if plain(d[name](data)) != want
        ]
        for variant, encoders_ in encoders(life).items():
            if plain(reference[name](encoders_[name]())) != want:
                problems.append(f"{variant} {name}: encoded another record")
    return problems


def lax_differences() -> list[str]:
    """Values of :data:`LAX` and which variants take them."""
    bodies, variants = task_life().bodies(), decoders()
    return [
        f"{name}: {path}={value!r} taken by "
        + (
            ", ".join(v for v, d in variants.items() if not _refuses(d[name], _pack(_with(bodies[name], path, value))))
            or "none"
        )
        for name, cases in LAX.items()
        for path, value in cases
    ]


def check() -> list[str]:
    """Every problem found: a bad body accepted, a good one decoded or encoded differently."""
    life = task_life()
    return rejection_problems(decoders(), life.bodies()) + equality_problems(life)


# ---- measuring ------------------------------------------------------------------------------------------

#: (message, direction, times per task): what the daemon does with records for one task submitted
#: with ``wait`` (as ``eventbusctl bench`` submits), read from eventbus/service.py and collector_verbs.py
PER_TASK = (
    ("submit", "decode", 1),  # SubmitWait and TaskRequest
    ("accepted", "decode", 1),
    ("result", "decode", 1),
    ("dispatch", "encode", 1),
    ("taskinfo", "encode", 1),  # the held answer: TaskInfo built, dumped, packed
    ("copy", "trusted", 2),  # TaskRequest.model_copy at submit and when final
    ("build", "trusted", 1),  # the TaskInfo looked at when the submit is held
)


def _time_us(fn: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    return (time.perf_counter_ns() - start) / iterations / 1000


Cell = tuple[str, str, str]  # message or operation, direction, variant


def cells(life: Life) -> dict[Cell, Callable[[], object]]:
    """Everything measured: decode from msgpack bytes, build and encode, trusted operations, envelope."""
    out: dict[Cell, Callable[[], object]] = {}
    data = {name: _pack(body) for name, body in life.bodies().items()}
    for name, raw in data.items():
        out[name, "decode", "unpack"] = lambda raw=raw: _unpack(raw)  # type: ignore[misc]
        for variant, decoders_ in decoders().items():
            out[name, "decode", variant] = lambda f=decoders_[name], raw=raw: f(raw)  # type: ignore[misc]
    for variant, encoders_ in encoders(life).items():
        for name, fn in encoders_.items():
            out[name, "encode", variant] = fn
    for variant, ops in trusted(life).items():
        for name, op in ops.items():
            out[name, "trusted", variant] = op
    frame = _pack({"v": 1, "kind": "request", "id": "c1", "topic": m.SUBMIT, "body": life.submit})
    envelope = msgspec.msgpack.Decoder(_EnvelopeS)
    out["envelope", "decode", "current"] = lambda: decode(frame)
    out["envelope", "decode", "unpack"] = lambda: _unpack(frame)
    out["envelope", "decode", "msgspec"] = lambda: envelope.decode(frame)
    return out


class _EnvelopeS(msgspec.Struct, forbid_unknown_fields=True):
    """The envelope with its body left encoded, to be decoded by the record its topic names."""

    v: int
    kind: str
    id: Annotated[str, _Meta(max_length=64)]
    topic: str
    body: msgspec.Raw = msgspec.Raw(b"\x80")


def measure(iterations: int, repeat: int) -> dict[Cell, float]:
    """µs per call of every cell: the median of ``repeat`` rounds of ``iterations`` calls, the
    rounds interleaved across cells so that a slow moment of the machine is shared out."""
    todo = cells(task_life())
    for fn in todo.values():
        _time_us(fn, max(1, iterations // 10))  # warm up
    rounds: dict[Cell, list[float]] = {cell: [] for cell in todo}
    for _ in range(repeat):
        for cell, fn in todo.items():
            rounds[cell].append(_time_us(fn, iterations))
    return {cell: statistics.median(times) for cell, times in rounds.items()}


def _current(direction: str) -> str:
    return {"decode": "pydantic", "encode": "current", "trusted": "construct"}[direction]


def per_task(results: Mapping[Cell, float], daemon_us: float | None) -> dict[str, Any]:
    """The daemon's record work per task today, with msgspec, and with TypeAdapters (decode only)."""
    now = alt = adapter = 0.0
    for name, direction, count in PER_TASK:
        today = results[name, direction, _current(direction)]
        now += count * today
        alt += count * results[name, direction, "msgspec"]
        adapter += count * (results[name, direction, "adapter"] if direction == "decode" else today)
    out: dict[str, Any] = {
        "records_us": round(now, 2),
        "msgspec_us": round(alt, 2),
        "saving_us": round(now - alt, 2),
        "adapter_us": round(adapter, 2),
        "adapter_saving_us": round(now - adapter, 2),
    }
    if daemon_us:
        out |= {
            "daemon_us": daemon_us,
            "records_share": round(now / daemon_us, 3),
            "saving_share": round((now - alt) / daemon_us, 3),
        }
    return out


# ---- output ---------------------------------------------------------------------------------------------

COLUMNS = ("unpack", "current", "pydantic", "adapter", "construct", "msgspec", "to_builtins")


def table(results: Mapping[Cell, float]) -> str:
    """µs per message, a row per message and direction, a column per variant."""
    rows = sorted({(name, direction) for name, direction, _ in results}, key=lambda r: (r[1], r[0]))
    lines = [f"{'µs per message':22}" + "".join(f"{c:>12}" for c in COLUMNS)]
    for name, direction in rows:
        values = (results.get((name, direction, c)) for c in COLUMNS)
        lines.append(
            f"{name + ' ' + direction:22}" + "".join(f"{'-' if v is None else f'{v:.2f}':>12}" for v in values)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=5000, help="calls per round [5000]")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median is reported [5]")
    parser.add_argument("--daemon-us", type=float, help="daemon CPU µs per task (eventbusctl --json bench)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    problems = check()
    if problems:
        print("records: the variants do not validate alike:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    results = measure(args.iterations, args.repeat)
    task = per_task(results, args.daemon_us)
    if args.json:
        cells_ = [{"message": n, "direction": d, "variant": v, "us": round(us, 3)} for (n, d, v), us in results.items()]
        doc = {"iterations": args.iterations, "repeat": args.repeat, "cells": cells_, "per_task": task}
        print(json.dumps({**doc, "lax": lax_differences(), "msgspec": msgspec.__version__}))
        return
    print(table(results))
    print("\nper task in the daemon (" + ", ".join(f"{n} {d} x{c}" for n, d, c in PER_TASK) + "):")
    print("  " + ", ".join(f"{k} {v}" for k, v in task.items()))
    print("\ntaken by pydantic's lax mode, refused by msgspec:\n  " + "\n  ".join(lax_differences()))


if __name__ == "__main__":
    main()

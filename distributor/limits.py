"""Rate limits of operations and collector types: a concurrency cap and a token bucket, time passed in.

A :class:`Limit` caps the attempts in flight (``max_in_flight``) and the
dispatches per window (``rate``, ``N`` per ``S`` seconds: a token bucket of
``N`` tokens refilled at ``N/S`` per second, so at most ``N`` go at once and
``N/S`` per second on average). A limit of an operation holds back its queued
tasks; a limit of a collector type keeps tasks off collectors of that type
(they go to collectors of other types that offer the operation, or wait). A
held task waits in its queue and blocks no other operation.

How long a task waited on a limit is measured per operation with a *hold
clock*: it runs while the operation is held back by a limit although a
collector has room for it. A task notes the clock when it is queued; at its
dispatch the difference is the time it waited on a limit (exact, at O(1)).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from distributor.errors import InvalidRequest

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h|d)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
#: a token counts as whole within rounding: a timer set for the moment one is whole finds it so
_WHOLE = 1.0 - 1e-9
#: the kinds of things a limit applies to
OPERATION, COLLECTOR_TYPE = "operation", "collector_type"


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` dispatches per ``per_s`` seconds."""

    count: int
    per_s: float

    def __str__(self) -> str:
        if self.per_s == 1.0:
            return f"{self.count}/s"
        for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
            if self.per_s == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.per_s:g}s"


def parse_rate(text: str) -> Rate:
    """``10/s``, ``100/60s``, ``5/m``, ``2/5m``, ``1000/h``, ``50/d``; :class:`InvalidRequest` if it is not one."""
    match = _RATE.match(text)
    if match is None or (match[2] is None and match[3] is None):
        raise InvalidRequest(f"rate {text!r} is not N/PERIOD (e.g. 10/s, 100/60s, 5/m, 1000/h)")
    count, span, unit = int(match[1]), float(match[2] or 1.0), match[3]
    per_s = span * _UNIT_S[unit]
    if not 1 <= count <= 1_000_000_000 or not 0.001 <= per_s <= 366 * 86400.0:
        raise InvalidRequest(f"rate {text!r}: N is 1 to 10^9 and the period 1 ms to a year")
    return Rate(count, per_s)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max_in_flight`` attempts at once and ``rate`` dispatches per window (None: no such cap)."""

    max_in_flight: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight is None and self.rate is None:
            raise InvalidRequest("a limit needs a rate, a max_in_flight, or both")
        if self.max_in_flight is not None and not 1 <= self.max_in_flight <= 1_000_000:
            raise InvalidRequest(f"max_in_flight {self.max_in_flight} is not 1 to 1,000,000")

    def describe(self) -> dict[str, Any]:
        return {"rate": None if self.rate is None else str(self.rate), "max_in_flight": self.max_in_flight}


@dataclass(slots=True)
class Gate:
    """One limit's live state: attempts in flight under it, its bucket, and what it held back."""

    limit: Limit
    in_flight: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0
    #: when a timer was last armed for this gate to open (avoids arming one per refusal)
    armed_for: float = -math.inf
    dispatched: int = 0
    #: operations held back by this collector type's limit: looked at again when it opens
    waiting: set[str] = field(default_factory=set)

    def refill(self, now: float) -> None:
        rate = self.limit.rate
        if rate is not None and now > self.refilled_at:
            self.tokens = min(float(rate.count), self.tokens + (now - self.refilled_at) * rate.count / rate.per_s)
            self.refilled_at = now

    def opens_at(self, now: float) -> float | None:
        """None if a dispatch may go now; else when it may (inf: once an attempt under it ends)."""
        cap = self.limit.max_in_flight
        if cap is not None and self.in_flight >= cap:
            return math.inf
        rate = self.limit.rate
        if rate is None:
            return None
        self.refill(now)
        if self.tokens >= _WHOLE:
            return None
        return now + (1.0 - self.tokens) * rate.per_s / rate.count

    def take(self, now: float) -> None:
        self.in_flight += 1
        self.dispatched += 1
        if self.limit.rate is not None:
            self.refill(now)
            self.tokens -= 1.0

    def view(self, kind: str, name: str, now: float) -> dict[str, Any]:
        self.refill(now)
        tokens = None if self.limit.rate is None else round(self.tokens, 3)
        return {
            "kind": kind,
            "name": name,
            **self.limit.describe(),
            "in_flight": self.in_flight,
            "tokens": tokens,
            "dispatched": self.dispatched,
        }


@dataclass(slots=True)
class HoldClock:
    """Seconds an operation has been held back by a limit (running while ``since`` is set)."""

    total: float = 0.0
    since: float | None = None
    #: dispatches that had waited on a limit, and their waits in all
    tasks: int = 0
    waited_s: float = 0.0

    def read(self, now: float) -> float:
        return self.total + (now - self.since if self.since is not None else 0.0)

    def hold(self, now: float) -> None:
        if self.since is None:
            self.since = now

    def release(self, now: float) -> None:
        if self.since is not None:
            self.total += now - self.since
            self.since = None


def new_gate(limit: Limit, now: float, in_flight: int) -> Gate:
    """A gate for ``limit`` with ``in_flight`` attempts already under it, its bucket full."""
    tokens = float(limit.rate.count) if limit.rate is not None else 0.0
    return Gate(limit, in_flight=in_flight, tokens=tokens, refilled_at=now)


def replaced_gate(gate: Gate, limit: Limit, now: float) -> Gate:
    """``gate`` under a new limit: attempts in flight stay counted; the bucket keeps what it holds, up to its size."""
    fresh = new_gate(limit, now, gate.in_flight)
    if limit.rate is not None and gate.limit.rate is not None:
        gate.refill(now)
        fresh.tokens = min(float(limit.rate.count), gate.tokens)
    fresh.dispatched, fresh.waiting = gate.dispatched, gate.waiting
    return fresh


class Limits:
    """Every limit in force, by operation and by collector type, and each operation's hold clock."""

    def __init__(self) -> None:
        self.operations: dict[str, Gate] = {}
        self.types: dict[str, Gate] = {}
        self.clocks: dict[str, HoldClock] = {}
        #: whether any limit is in force (read on every dispatch: an attribute, not a computation)
        self.active = False

    def __bool__(self) -> bool:
        return self.active

    def gates(self, kind: str) -> dict[str, Gate]:
        if kind == OPERATION:
            return self.operations
        if kind == COLLECTOR_TYPE:
            return self.types
        raise InvalidRequest(f"a limit applies to an {OPERATION} or a {COLLECTOR_TYPE}, not {kind!r}")

    def put(self, kind: str, name: str, limit: Limit, now: float, in_flight: int) -> None:
        """Put ``limit`` in force for ``name``; ``in_flight``: attempts already under it (when it is new)."""
        gates = self.gates(kind)
        old = gates.get(name)
        gates[name] = new_gate(limit, now, in_flight) if old is None else replaced_gate(old, limit, now)
        self.active = True

    def remove(self, kind: str, name: str) -> Gate | None:
        gate = self.gates(kind).pop(name, None)
        self.active = bool(self.operations or self.types)
        return gate

    def closed_types(self, now: float) -> dict[str, float]:
        """Collector types whose limit refuses a dispatch now, with when each opens (inf: at a release)."""
        closed = {}
        for name, gate in self.types.items():
            opens = gate.opens_at(now)
            if opens is not None:
                closed[name] = opens
        return closed

    def mark(self, operation: str, now: float) -> float:
        """The operation's hold clock now (a task notes it when it is queued)."""
        clock = self.clocks.get(operation)
        return 0.0 if clock is None else clock.read(now)

    def hold(self, operation: str, now: float) -> None:
        clock = self.clocks.get(operation)
        if clock is None:
            clock = self.clocks[operation] = HoldClock()
        clock.hold(now)

    def unhold(self, operation: str, now: float) -> None:
        clock = self.clocks.get(operation)
        if clock is not None:
            clock.release(now)

    def dispatched(self, operation: str, collector_type: str, now: float, mark: float) -> float:
        """An attempt goes out: it counts against its gates. Returns how long its task waited on a limit."""
        gate = self.operations.get(operation)
        if gate is not None:
            gate.take(now)
        gate = self.types.get(collector_type)
        if gate is not None:
            gate.take(now)
        clock = self.clocks.get(operation)
        if clock is None:
            return 0.0
        clock.release(now)
        waited = max(0.0, clock.read(now) - mark)
        if waited > 0.0:
            clock.tasks += 1
            clock.waited_s += waited
        return waited

    def released(self, operation: str, collector_type: str) -> set[str]:
        """An attempt counted by :meth:`dispatched` ended; the operations a collector type's limit held back."""
        gate = self.operations.get(operation)
        if gate is not None and gate.in_flight > 0:
            gate.in_flight -= 1
        gate = self.types.get(collector_type)
        if gate is None:
            return set()
        if gate.in_flight > 0:
            gate.in_flight -= 1
        waiting, gate.waiting = gate.waiting, set()
        return waiting

    def view(self, now: float) -> list[dict[str, Any]]:
        """Each limit in force with its state, and for an operation what it held back."""
        out = []
        for kind, gates in ((OPERATION, self.operations), (COLLECTOR_TYPE, self.types)):
            for name in sorted(gates):
                shown = gates[name].view(kind, name, now)
                if kind == OPERATION:
                    clock = self.clocks.get(name, HoldClock())
                    shown.update(
                        held=clock.since is not None,
                        held_s=round(clock.read(now), 3),
                        tasks_waited=clock.tasks,
                        waited_s=round(clock.waited_s, 3),
                    )
                out.append(shown)
        return out

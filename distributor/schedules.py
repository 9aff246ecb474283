"""Periodic schedules: a task template run at due times taken from the wall clock.

A schedule is due every ``every_s`` seconds (at the multiples of it since the
epoch, so its due times do not depend on when it was added or when the daemon
started) or at the times of a cron expression read in its time zone. At each
due time it submits one ordinary task (id ``sched.<name>.<due in ms>``,
``metadata.schedule`` naming it), delayed by up to ``jitter_s``.

Once per due time, whatever happens:

- *Missed runs* (the daemon was down, or the clock jumped forward) are caught up
  with one run, for the latest due time passed, not one per missed time.
- *The clock going back* never repeats a due time already handled: the
  schedule waits until the wall clock passes it again.
- *A restart* takes back the last due time handled with the schedule (the host
  writes it in the same commit as the run's task).
- *Daylight saving time*: a local time that occurs twice (autumn) is due at its
  first occurrence only; a local time skipped (spring) is due once, at the
  moment of the change.

While the previous run is not finished, ``overlap = "skip"`` (the default)
records the due time as skipped; ``"queue"`` submits the run anyway.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from distributor.constraints import parse_constraints
from distributor.errors import EventBusError, InvalidRequest
from distributor.models import PRIORITY_MAX, PRIORITY_MIN, TaskRequest
from distributor.timers import TimerKind

if TYPE_CHECKING:
    from distributor.machine import TaskMachine

#: runs remembered per schedule (``schedule show``)
RUNS_KEPT = 20
OVERLAP = ("skip", "queue")
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: due times walked at most when catching up or looking for the next one (a year of minutes is 525,600)
_MAX_STEPS = 1_000_000


def parse_every(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1d``, ``250ms``, ``90`` (seconds) as seconds; :class:`InvalidRequest` otherwise."""
    match = _EVERY.match(text)
    if match is None:
        raise InvalidRequest(f"every {text!r} is not a period (e.g. 30s, 5m, 1h, 1d)")
    seconds = float(match[1]) * _UNIT_S[match[2]]
    if not 0.1 <= seconds <= 366 * 86400.0:
        raise InvalidRequest(f"every {text!r}: a period is 0.1 s to a year")
    return seconds


def every_text(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What defines a schedule: when, and the task it submits (checked when built)."""

    name: str
    operation: str
    every_s: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    payload: Any = None
    priority: int = 5
    timeout_ms: int = 30_000
    constraints: tuple[str, ...] = ()
    jitter_s: float = 0.0
    overlap: str = "skip"
    #: where it was defined: "runtime" (eventbusctl schedule add) or "config" (the config file)
    source: str = "runtime"
    #: what a run's task costs in memory (the host's estimate of its frame), counted against max_queued_bytes
    size: int = 0

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.cron is None):
            raise InvalidRequest(f"schedule {self.name!r} needs one of every or cron")
        if self.every_s is not None and not 0.1 <= self.every_s <= 366 * 86400.0:
            raise InvalidRequest(f"schedule {self.name!r}: every is 0.1 s to a year, not {self.every_s}")
        if self.cron is not None and (len(self.cron.split()) != 5 or not croniter.is_valid(self.cron)):
            raise InvalidRequest(f"schedule {self.name!r}: cron {self.cron!r} is not 5 fields (e.g. '*/5 * * * *')")
        zone(self.timezone)
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise InvalidRequest(f"schedule {self.name!r}: priority {self.priority} is not 1 to 10")
        if not 0.0 <= self.jitter_s <= 86400.0:
            raise InvalidRequest(f"schedule {self.name!r}: jitter_s is 0 to 86400, not {self.jitter_s}")
        if self.overlap not in OVERLAP:
            raise InvalidRequest(f"schedule {self.name!r}: overlap is skip or queue, not {self.overlap!r}")
        if self.constraints:
            parse_constraints(list(self.constraints))

    def due_after(self, t: float) -> float:
        """The first due time strictly after ``t``."""
        if self.every_s is not None:
            due = (math.floor(t / self.every_s) + 1) * self.every_s
            return due if due > t else due + self.every_s  # (rounding)
        assert self.cron is not None
        tz = zone(self.timezone)
        local = datetime.fromtimestamp(t, tz).replace(tzinfo=None)
        times = croniter(self.cron, local)
        for _ in range(_MAX_STEPS):
            due = instant(times.get_next(datetime), tz)
            if due > t:
                return due
        raise InvalidRequest(f"schedule {self.name!r}: cron {self.cron!r} has no due time in reach")

    def latest_due(self, first: float, now: float) -> float:
        """The latest due time at or before ``now``, given ``first``, a due time at or before it."""
        if self.every_s is not None:
            return max(first, math.floor(now / self.every_s) * self.every_s)
        due = first
        for _ in range(_MAX_STEPS):
            after = self.due_after(due)
            if after > now:
                return due
            due = after
        return due

    def request(self, task_id: str, not_before: float | None) -> TaskRequest:
        return TaskRequest(
            task_id=task_id,
            operation=self.operation,
            priority=self.priority,
            payload=self.payload,
            timeout_ms=self.timeout_ms,
            constraints=list(self.constraints),
            not_before=not_before,
            metadata={"schedule": self.name},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operation": self.operation,
            "every": None if self.every_s is None else every_text(self.every_s),
            "cron": self.cron,
            "timezone": self.timezone,
            "payload": self.payload,
            "priority": self.priority,
            "timeout_ms": self.timeout_ms,
            "constraints": list(self.constraints),
            "jitter_s": self.jitter_s,
            "overlap": self.overlap,
            "source": self.source,
        }


def zone(name: str) -> ZoneInfo:
    """The time zone named ``name`` (IANA, e.g. Europe/Berlin); :class:`InvalidRequest` if it is not known."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest(f"time zone {name!r} is not known (e.g. UTC, Europe/Berlin)") from exc


def instant(local: datetime, tz: ZoneInfo) -> float:
    """The moment a naive local time of ``tz`` is due: its first occurrence, or (skipped) the change past it."""
    first = local.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.timestamp()
    # in a gap: the earliest moment whose local time is past ``local`` (the change itself)
    lo, hi = local.replace(tzinfo=tz, fold=1).timestamp(), first.timestamp()
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > 1.0:
        mid = math.floor((lo + hi) / 2)
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= local:
            hi = mid
        else:
            lo = mid
    return float(math.ceil(hi))


@dataclass(slots=True)
class Run:
    """One due time of a schedule and what came of it."""

    due: float
    task_id: str | None
    #: "fired", or why not: "skipped: ..." (overlap), "refused: ..." (the task was not taken)
    note: str


@dataclass(slots=True, eq=False)
class Schedule:
    spec: ScheduleSpec
    paused: bool = False
    #: the latest due time handled (run, skipped or refused): never handled again
    last_due: float | None = None
    next_due: float | None = None
    runs: deque[Run] = field(default_factory=lambda: deque(maxlen=RUNS_KEPT))
    #: names its one live timer (older ones are stale)
    token: int = 0

    def record(self) -> dict[str, Any]:
        """What a store keeps: plain values."""
        return {
            **self.spec.describe(),
            "every_s": self.spec.every_s,
            "size": self.spec.size,
            "paused": self.paused,
            "last_due": self.last_due,
            "runs": [[r.due, r.task_id, r.note] for r in self.runs],
        }

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> Schedule:
        spec = ScheduleSpec(
            name=fields["name"],
            operation=fields["operation"],
            every_s=fields["every_s"],
            cron=fields["cron"],
            timezone=fields["timezone"],
            payload=fields["payload"],
            priority=fields["priority"],
            timeout_ms=fields["timeout_ms"],
            constraints=tuple(fields["constraints"]),
            jitter_s=fields["jitter_s"],
            overlap=fields["overlap"],
            source=fields["source"],
            size=fields["size"],
        )
        schedule = cls(spec, paused=fields["paused"], last_due=fields["last_due"])
        schedule.runs.extend(Run(due, task_id, note) for due, task_id, note in fields["runs"])
        return schedule


class Scheduler:
    """The schedules of a distributor: fired from its timers, their runs submitted as its tasks."""

    def __init__(self, machine: TaskMachine) -> None:
        self._m = machine
        self.schedules: dict[str, Schedule] = {}
        #: with the machine's journal on: schedules changed (None: removed) since the host last took them
        self.changed: dict[str, Schedule | None] = {}
        self.fired = 0
        self.skipped = 0
        self.refused = 0
        #: whether this distributor runs its schedules (in a cluster only the leader does; the others
        #: keep their due times planned, and take over from the last due times the leader shared)
        self.active = True

    def __len__(self) -> int:
        return len(self.schedules)

    def get(self, name: str) -> Schedule | None:
        return self.schedules.get(name)

    def put(self, spec: ScheduleSpec, now: float) -> Schedule:
        """Add a schedule, or give one of that name a new definition (what it ran, and when, stays)."""
        schedule = self.schedules.get(spec.name)
        if schedule is None:
            schedule = self.schedules[spec.name] = Schedule(spec)
        elif schedule.spec == spec:
            return schedule
        else:
            schedule.spec = spec
        self._plan(schedule, now)
        return schedule

    def remove(self, name: str) -> Schedule | None:
        schedule = self.schedules.pop(name, None)
        if schedule is not None:
            schedule.token += 1
            self._changed(name, None)
        return schedule

    def pause(self, name: str, paused: bool, now: float) -> Schedule | None:
        """Pause or resume; a resumed schedule is next due after now (paused time is not caught up)."""
        schedule = self.schedules.get(name)
        if schedule is None or schedule.paused == paused:
            return schedule
        schedule.paused = paused
        if not paused and schedule.last_due is not None:
            schedule.last_due = max(schedule.last_due, schedule.spec.latest_due(schedule.last_due, now))
        self._plan(schedule, now)
        return schedule

    def restore(self, schedules: list[Schedule], now: float) -> None:
        """Take back schedules a store kept: one whose due time passed meanwhile runs once, now."""
        for schedule in schedules:
            self.schedules[schedule.spec.name] = schedule
            self._plan(schedule, now, write=False)

    def _plan(self, schedule: Schedule, now: float, *, write: bool = True) -> None:
        """Work out the next due time and arm its timer (none while paused)."""
        schedule.token += 1
        if schedule.paused:
            schedule.next_due = None
        else:
            # after the last due time handled (a missed one is then due at once), else after now
            since = schedule.last_due if schedule.last_due is not None and self.active else now
            schedule.next_due = schedule.spec.due_after(since)
            self._m._timers.add(schedule.next_due, TimerKind.SCHEDULE, schedule.spec.name, 0, schedule.token)
        if write:
            self._changed(schedule.spec.name, schedule)

    def set_active(self, active: bool, now: float) -> None:
        """Run schedules (a due time missed since the last one handled then runs once, now), or stop running them."""
        if active == self.active:
            return
        self.active = active
        for schedule in self.schedules.values():
            self._plan(schedule, now, write=False)

    def handled(self, name: str, due: float) -> None:
        """Another node ran ``name`` for ``due``: never run it for that time or an earlier one."""
        schedule = self.schedules.get(name)
        if schedule is not None and (schedule.last_due is None or due > schedule.last_due):
            schedule.last_due = due
            self._changed(name, schedule)

    def last_dues(self) -> dict[str, float]:
        """The last due time handled of each schedule that has one."""
        return {name: s.last_due for name, s in self.schedules.items() if s.last_due is not None}

    def fire(self, name: str, token: int, now: float) -> None:
        """A schedule's timer: run it once for the latest due time passed, then plan the next."""
        schedule = self.schedules.get(name)
        if schedule is None or schedule.token != token or schedule.paused or schedule.next_due is None:
            return
        if not self.active:  # not ours to run: look again at the next due time
            self._plan(schedule, now, write=False)
            return
        due = schedule.spec.latest_due(schedule.next_due, now)
        if schedule.last_due is None or due > schedule.last_due:
            self._run(schedule, due, now)
            schedule.last_due = due
        # (otherwise the wall clock went back below a due time already handled: wait until it passes it)
        self._plan(schedule, now)

    def _run(self, schedule: Schedule, due: float, now: float) -> None:
        spec, m = schedule.spec, self._m
        previous = next((r for r in reversed(schedule.runs) if r.task_id is not None), None)
        if spec.overlap == "skip" and previous is not None:
            task = m._tasks.get(previous.task_id or "")
            if task is not None and not task.state.terminal:
                schedule.runs.append(Run(due, None, f"skipped: run {previous.task_id} is still {task.state.value}"))
                self.skipped += 1
                return
        not_before = due + m._rng.uniform(0.0, spec.jitter_s) if spec.jitter_s else None
        task_id = f"sched.{spec.name}.{round(due * 1000)}"
        try:
            m.accept(spec.request(task_id, not_before if not_before and not_before > now else None), None, spec.size)
        except EventBusError as exc:
            schedule.runs.append(Run(due, None, f"refused: {exc.code}: {exc.message}"))
            self.refused += 1
            return
        except ValueError as exc:  # a request that does not validate (a definition read back from an old store)
            schedule.runs.append(Run(due, None, f"refused: invalid: {str(exc).splitlines()[0]}"))
            self.refused += 1
            return
        schedule.runs.append(Run(due, task_id, "fired"))
        self.fired += 1

    def _changed(self, name: str, schedule: Schedule | None) -> None:
        if self._m.journal:
            self.changed[name] = schedule

    def take_changes(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Each schedule changed since the last call: its record as it is now, or None if it was removed."""
        out = [(name, None if s is None else s.record()) for name, s in self.changed.items()]
        self.changed = {}
        return out

    def view(self, schedule: Schedule) -> dict[str, Any]:
        """A schedule as ``schedule show`` prints it; each run's task state if the distributor still holds it."""
        tasks = self._m._tasks
        runs = []
        for run in reversed(schedule.runs):
            task = tasks.get(run.task_id) if run.task_id is not None else None
            runs.append(
                {
                    "due": run.due,
                    "task_id": run.task_id,
                    "note": run.note,
                    "state": None if task is None else task.state.value,
                }
            )
        return {
            **schedule.spec.describe(),
            "paused": schedule.paused,
            "next_due": schedule.next_due,
            "last_due": schedule.last_due,
            "runs": runs,
        }

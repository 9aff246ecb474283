"""Where the machine meets its rate limits (:mod:`distributor.limits`): holding operations back, and the timers
that look at them again once a limit opens.

Functions of the :class:`~distributor.machine.TaskMachine`, kept apart from its routing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from distributor.limits import Gate
from distributor.timers import TimerKind

if TYPE_CHECKING:
    from distributor.machine import TaskMachine
    from distributor.pool import Pool
    from distributor.tasks import TaskRecord

#: the serial of a limit's timer: whose limit it is
_OPERATION_GATE, _TYPE_GATE = 0, 1


def held_by_limit(m: TaskMachine, operation: str) -> bool:
    """Whether the operation's own limit holds it back now (then its hold clock runs, and a timer is armed)."""
    limits, now = m.limits, m._now
    gate = limits.operations.get(operation)
    opens = None if gate is None else gate.opens_at(now)
    if gate is None or opens is None:
        limits.unhold(operation, now)  # (a collector type's limit may hold it again: see _pump_one)
        return False
    limits.hold(operation, now)
    arm(m, gate, opens, operation, _OPERATION_GATE)
    return True


def held_by_type(m: TaskMachine, operation: str, task: TaskRecord, pool: Pool, closed: Mapping[str, float]) -> bool:
    """Whether only collector types' limits keep ``task`` off the collectors of ``pool`` with room.

    Then the operation is looked at again when any closed type opens (its timer, or an attempt ending).
    """
    if m._choose(task, pool) is None:
        return False
    for name, opens in closed.items():
        gate = m.limits.types[name]
        gate.waiting.add(operation)
        arm(m, gate, opens, name, _TYPE_GATE)
    return True


def arm(m: TaskMachine, gate: Gate, opens: float, key: str, kind: int) -> None:
    """A timer for when ``gate`` opens, unless one still to fire does by then (inf: it opens at a release).

    (A timer due at or before now has fired: timers fire before the flush that arms them.)
    """
    if opens != math.inf and not m._now < gate.armed_for <= opens:
        gate.armed_for = opens
        m._timers.add(opens, TimerKind.LIMIT, key, kind)


def opened(m: TaskMachine, key: str, kind: int) -> None:
    """A limit's timer fired: look again at what it held back."""
    if kind == _OPERATION_GATE:
        m._dirty.add(key)
    else:
        gate = m.limits.types.get(key)
        if gate is not None:
            m._dirty.update(gate.waiting)
            gate.waiting = set()

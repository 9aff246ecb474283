"""eventbus-collector supervise: keep between --min and --max collector processes of one TARGET.

Each interval it asks the daemon (``collectors`` and ``stats``) how busy the
supervised collectors are: demand = their busy slots + tasks queued for their
operations; utilization = demand / their slots. Above the target it starts
enough collectors to bring utilization back to the target; below it, it
retires idle ones one at a time (drain, then SIGTERM, so running tasks
finish). A child that dies is restarted with exponential backoff.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from distributor.models import CollectorInfo
from eventbus.client import SyncClient
from eventbus.errors import EventBusError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies, so no collector is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


RESTART_BASE_S = 0.5
RESTART_MAX_S = 30.0
#: a child that ran this long before dying restarts without delay
STABLE_AFTER_S = 30.0


@dataclass(slots=True)
class Child:
    """One supervised collector process."""

    collector_id: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float = 0.0
    retiring: bool = False


@dataclass(slots=True)
class Demand:
    busy: int
    slots: int
    queued: int

    @property
    def utilization(self) -> float:
        if self.slots == 0:
            return math.inf if self.busy + self.queued else 0.0
        return (self.busy + self.queued) / self.slots


@dataclass
class Supervisor:
    """Scales collectors of ``target`` between ``minimum`` and ``maximum`` from the daemon's figures."""

    target: str
    operations: frozenset[str]
    slots_per_child: int
    minimum: int
    maximum: int
    target_utilization: float = 0.7
    interval_s: float = 2.0
    socket: str | None = None
    child_args: list[str] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    _next: int = 0
    _quiet_steps: int = 0  # consecutive looks that wanted fewer children

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set, then stop every child gracefully."""
        try:
            while not stop.is_set():
                self.step(time.monotonic())
                stop.wait(self.interval_s)
        finally:
            self.stop_all()

    def step(self, now: float) -> None:
        """One look at the daemon and the children: restart, scale up or down."""
        self._reap(now)
        while len(self.children) < self.minimum:
            self._spawn(now)
        try:
            with SyncClient(self.socket, timeout=5) as client:
                infos = [c for c in client.collectors() if c.collector_id in self.children]
                depths = client.stats().get("queue_depths", {})
        except EventBusError as exc:
            log.warning("supervisor: cannot read the daemon's figures: %s", exc)
            return
        demand = self.demand(infos, depths)
        wanted = self.wanted(demand)
        live = [c for c in self.children.values() if not c.retiring]
        if wanted > len(live):
            log.info(
                "supervisor: utilization %.2f > %.2f: starting %d",
                demand.utilization,
                self.target_utilization,
                wanted - len(live),
            )
            for _ in range(wanted - len(live)):
                self._spawn(now)
        elif wanted < len(live):
            self._quiet_steps += 1
            if self._quiet_steps >= 2:  # two looks in a row, so one lull does not flap
                self._retire_one(infos)
                self._quiet_steps = 0
            return
        self._quiet_steps = 0

    def demand(self, infos: list[CollectorInfo], depths: dict[str, int]) -> Demand:
        busy = sum(c.current_tasks for c in infos)
        slots = sum(c.max_concurrent_tasks for c in infos)
        queued = sum(n for op, n in depths.items() if op in self.operations)
        return Demand(busy, slots, queued)

    def wanted(self, demand: Demand) -> int:
        """How many children bring utilization to the target, within [minimum, maximum]."""
        need = math.ceil((demand.busy + demand.queued) / (self.target_utilization * self.slots_per_child))
        return max(self.minimum, min(self.maximum, need))

    def _spawn(self, now: float) -> None:
        self._next += 1
        child = Child(f"{self.target.replace(':', '-').replace('.', '-').lower()}-sup{os.getpid()}-{self._next}")
        child.collector_id = child.collector_id[-64:].lstrip("-")
        self.children[child.collector_id] = child
        self._start(child, now)

    def _start(self, child: Child, now: float) -> None:
        argv = [sys.executable, "-m", "collectors.runner", "run", self.target, "--id", child.collector_id]
        if self.socket:
            argv += ["--socket", self.socket]
        child.proc = subprocess.Popen([*argv, *self.child_args], preexec_fn=_die_with_parent)
        child.started_at = now
        log.info("supervisor: started collector_id=%s pid=%d", child.collector_id, child.proc.pid)

    def _reap(self, now: float) -> None:
        for cid, child in list(self.children.items()):
            if child.proc is None:
                if child.retiring:
                    del self.children[cid]
                elif now >= child.restart_at:
                    self._start(child, now)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            if child.retiring or code == 0:  # retired, or asked to stop (eventbusctl stop)
                log.info("supervisor: collector_id=%s left (exit %d)", cid, code)
                del self.children[cid]
                continue
            stable = now - child.started_at >= STABLE_AFTER_S
            child.restarts = 0 if stable else child.restarts + 1
            delay = 0.0 if stable else min(RESTART_MAX_S, RESTART_BASE_S * 2 ** (child.restarts - 1))
            log.warning("supervisor: collector_id=%s exited with %d; restarting in %.1fs", cid, code, delay)
            child.proc, child.restart_at = None, now + delay
            if delay == 0.0:
                self._start(child, now)

    def _retire_one(self, infos: list[CollectorInfo]) -> None:
        idle = [c.collector_id for c in infos if c.current_tasks == 0 and not self.children[c.collector_id].retiring]
        if not idle:
            return
        child = self.children[idle[-1]]  # the newest idle one
        log.info("supervisor: retiring idle collector_id=%s", child.collector_id)
        if child.proc is None:  # crashed and waiting to restart: just forget it
            del self.children[child.collector_id]
            return
        child.retiring = True
        child.proc.send_signal(signal.SIGTERM)  # it drains, deregisters and exits

    def stop_all(self, timeout: float = 60.0) -> None:
        """SIGTERM every child (each drains) and wait for them."""
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()

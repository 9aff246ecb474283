"""Several hosts, one bus: this daemon's membership in a cluster of daemons federated through NATS JetStream.

Clustering is on when ``cluster_nats_url`` is set. Each daemon keeps serving
its own socket and collectors; NATS holds what the daemons share, in
JetStream key-value buckets named after ``cluster_name`` (``<name>`` below):

- ``<name>_hosts``: one record per daemon (key: its ``cluster_node``) with what
  its collectors offer and its load, refreshed every ``cluster_heartbeat_s``.
  The bucket's TTL (3 heartbeats) drops the record of a daemon that stopped.
- ``<name>_leader``: the lease of the leader, key ``leader`` = its node. A
  daemon creates the key when it is absent, and the holder renews it with a
  revision-checked update every heartbeat; the bucket's TTL
  (``cluster_lease_ttl_s``) frees it when the holder stops renewing. A holder
  that could not renew for ``cluster_lease_ttl_s`` minus a heartbeat steps down
  on its own, before anyone else can take the lease.
- ``<name>_schedules``: the last due time run of each periodic schedule. Only
  the leader runs schedules; it writes each due time as it runs it, and a
  daemon that takes the lease over starts after those.
- ``<name>_results``: the final view of each task submitted to any daemon
  (:mod:`eventbus.cluster_results`), so any daemon answers about it.

NATS unreachable: the daemon serves locally as before (it runs no schedule
while it holds no lease), says so in ``status`` and ``cluster``, and
reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgpack

from distributor.actions import Cancel, Spill
from eventbus._version import __version__
from eventbus.cluster_results import ResultShelf
from eventbus.cluster_tasks import TaskExchange
from eventbus.errors import ConfigError

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from distributor.models import TaskInfo
    from eventbus.service import Service
    from eventbus.settings import DaemonSettings

log = logging.getLogger(__name__)

LEASE_KEY = "leader"
#: the longest wait between two tries to reach NATS
MAX_BACKOFF_S = 10.0
#: how often the leader looks for schedule runs to share (they are written as soon as seen)
SHARE_EVERY_S = 0.05
#: the leader sweeps the stream for tasks past their deadline every this many heartbeats
SWEEP_EVERY_BEATS = 5
#: collector ids a host record lists at most (its ``collectors`` counts them all)
MAX_LISTED = 100
#: the figures of the host records that ``totals`` sums
ROLLED_UP = ("collectors", "slots", "tasks_in_flight", "tasks_queued")


def node_name(settings: DaemonSettings) -> str:
    """``cluster_node``, or the host name made fit for a key."""
    if settings.cluster_node:
        return settings.cluster_node
    host = socket.gethostname().split(".")[0]
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:64] or "node"


class Cluster:
    """This daemon's part in the cluster: its record, the leader lease, the schedules' due times."""

    def __init__(self, settings: DaemonSettings, service: Service, clock: Callable[[], float] = time.time) -> None:
        if not settings.cluster_nats_url:
            raise ConfigError("clustering needs cluster_nats_url")
        try:
            import nats  # noqa: F401
        except ImportError as exc:
            raise ConfigError("clustering needs the cluster extra: pip install 'eventbus[cluster]'") from exc
        self._settings = settings
        self._service = service
        self._clock = clock
        self.node = node_name(settings)
        self.name = settings.cluster_name
        self.servers = [url.strip() for url in settings.cluster_nats_url.split(",") if url.strip()]
        self.is_leader = False
        #: the leader's node as last read (None: none known)
        self.leader: str | None = None
        #: the records of the daemons in the cluster, as last read
        self.hosts: list[dict[str, Any]] = []
        #: tasks in the cluster's stream by operation, as last read
        self.depths: dict[str, int] = {}
        self.last_error: str | None = None
        self._nc: Nats | None = None
        self._hosts: KeyValue | None = None
        self._lease: KeyValue | None = None
        self._dues: KeyValue | None = None
        self._lease_rev: int | None = None
        self._renewed_at = -math.inf  # (monotonic) when the lease was last renewed
        self._shared: dict[str, float] = {}
        self._started_at = clock()
        self._exchange: TaskExchange | None = None
        self._results: ResultShelf | None = None
        self._remote: frozenset[str] = frozenset()
        self._busy: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def view(self) -> dict[str, Any]:
        """What ``status`` and ``cluster`` show."""
        return {
            "enabled": True,
            "name": self.name,
            "node": self.node,
            "mode": self._settings.cluster_mode,
            "servers": self.servers,
            "connected": self.connected,
            "leader": self.leader,
            "is_leader": self.is_leader,
            "last_error": self.last_error,
            "stream_expired_removed": self._exchange.swept if self._exchange else 0,
            "results_shared": self._results.shared if self._results else 0,
            "results_unshared": self._results.unshared if self._results else 0,
            "hosts": self.hosts,
            "stream": f"{self.name}_tasks",
            "stream_depths": self.depths,
            "totals": self.totals(),
        }

    def totals(self) -> dict[str, int]:
        """The cluster's figures summed over every host's record, and the tasks in the stream."""
        sums = {key: sum(int(h.get(key, 0)) for h in self.hosts) for key in ROLLED_UP}
        return {"hosts": len(self.hosts), **sums, "stream_tasks": sum(self.depths.values())}

    # ---- the loop ------------------------------------------------------

    async def run(self) -> None:
        """Reach NATS (with backoff), then keep the record and the lease until cancelled."""
        backoff = 0.5
        while True:
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever nats-py raises: the daemon goes on serving locally
                self._trouble("cannot reach NATS", exc)
                await self._disconnect()
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = 0.5
            log.info("cluster %s: node %s connected to %s", self.name, self.node, ", ".join(self.servers))
            await self._serve()

    async def _connect(self) -> None:
        import nats

        async def quiet(exc: Exception) -> None:  # nats-py logs a traceback per error by default
            self._trouble("NATS", exc)

        self._nc = await asyncio.wait_for(
            nats.connect(
                servers=self.servers,
                name=f"eventbusd-{self.node}",
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            ),
            timeout=10,
        )
        js = self._nc.jetstream()
        beat, ttl = self._settings.cluster_heartbeat_s, self._settings.cluster_lease_ttl_s
        self._hosts = await self._bucket(js, "hosts", 3 * beat)
        self._lease = await self._bucket(js, "leader", ttl)
        self._dues = await self._bucket(js, "schedules", None)
        results = await self._bucket(js, "results", self._settings.result_ttl_s)
        self._results = ResultShelf(self._nc, results, f"{self.name}_results")
        exchange = TaskExchange(
            self._nc,
            js,
            self._service,
            name=self.name,
            node=self.node,
            ack_wait_s=self._settings.cluster_ack_wait_s,
            replicas=self._settings.cluster_replicas,
            keep_s=self._settings.result_ttl_s,
            clock=self._clock,
        )
        await exchange.start()
        self._exchange = exchange

    async def _bucket(self, js: JetStreamContext, suffix: str, ttl: float | None) -> KeyValue:
        from nats.js.api import KeyValueConfig

        bucket = f"{self.name}_{suffix}"
        try:
            return await js.key_value(bucket)
        except Exception:  # (not found: made here; another daemon may make it at the same time, alike)
            config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, replicas=self._settings.cluster_replicas)
            return await js.create_key_value(config)

    async def _serve(self) -> None:
        """Heartbeat and lease every ``cluster_heartbeat_s``; share schedule runs as soon as they happen."""
        beat = self._settings.cluster_heartbeat_s
        next_beat, beats = 0.0, 0
        while True:
            now = time.monotonic()
            try:
                # bounded: a leader cut off from NATS must get to the step-down check below in time
                if now >= next_beat:
                    next_beat = now + beat
                    await asyncio.wait_for(self._beat(), timeout=beat)
                    beats += 1
                    if self.is_leader and beats % SWEEP_EVERY_BEATS == 0:
                        self._sweep()
                if self.is_leader:
                    await asyncio.wait_for(self._share_dues(), timeout=beat)
                if self.last_error is not None and self.connected:
                    log.info("cluster %s: node %s is in touch with NATS again", self.name, self.node)
                    self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("NATS", exc)
            if self.is_leader and time.monotonic() - self._renewed_at > self._settings.cluster_lease_ttl_s - beat:
                self._step_down("it could not renew its lease in time")
            await asyncio.sleep(min(beat, SHARE_EVERY_S))

    async def _beat(self) -> None:
        assert self._hosts is not None
        await self._hold_lease()
        await self._hosts.put(self.node, msgpack.packb(self._record()))
        self.hosts = await self._read_hosts()
        distributor = self._service.distributor
        # (in shared mode this daemon's collectors, too, take its tasks from the cluster)
        shared = self._settings.cluster_mode == "shared"
        remote = frozenset(op for h in self.hosts if shared or h["node"] != self.node for op in h["operations"])
        if remote != self._remote:
            self._remote = remote
            self._service.perform(distributor.set_remote_offers(remote, self._clock()))
        if self._exchange is not None:
            self._exchange.sync(set(distributor.registry.operations()))
            self.depths = await self._exchange.depths()

    def _record(self) -> dict[str, Any]:
        """This daemon's record in ``<name>_hosts``."""
        registry = self._service.distributor.registry
        snap = self._service.distributor.snapshot(self._clock())
        offered = sorted(registry.operations())
        slots = sum(c.capability.max_concurrent_tasks for c in registry)
        ids = sorted(c.capability.collector_id for c in registry)[:MAX_LISTED]
        return {
            "node": self.node,
            "version": __version__,
            "started_at": self._started_at,
            "at": self._clock(),
            "leader": self.is_leader,
            "collectors": snap["collectors"],
            "collector_ids": ids,
            "operations": offered,
            "slots": slots,
            "tasks_in_flight": snap["tasks_in_flight"],
            "tasks_queued": snap["tasks_queued"],
        }

    async def _read_hosts(self) -> list[dict[str, Any]]:
        assert self._hosts is not None
        entries = await _entries(self._hosts)
        return [msgpack.unpackb(value) for _, value in sorted(entries.items())]

    # ---- the lease -----------------------------------------------------

    async def _hold_lease(self) -> None:
        """Renew the lease if this daemon holds it, else take it if it is free; note who holds it."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        assert self._lease is not None
        me = self.node.encode()
        if self._lease_rev is not None:
            try:
                self._lease_rev = await self._lease.update(LEASE_KEY, me, last=self._lease_rev)
                self._renewed_at = time.monotonic()
                if not self.is_leader:  # (taken, but the take-over did not finish last time)
                    await self._take_over()
                return
            except KeyWrongLastSequenceError:
                self._lease_rev = None
                self._step_down("its lease was taken")
        try:
            self._lease_rev = await self._lease.create(LEASE_KEY, me)
        except KeyWrongLastSequenceError:
            try:
                entry = await self._lease.get(LEASE_KEY)
                self.leader = entry.value.decode() if entry.value else None
            except KeyNotFoundError:
                self.leader = None
            return
        self._renewed_at = time.monotonic()
        await self._take_over()

    async def _take_over(self) -> None:
        """This daemon holds the lease now: run the schedules, after the due times the last leader ran."""
        distributor = self._service.distributor
        for name, due in (await self._read_dues()).items():
            distributor.schedule_handled(name, due)
        self._shared = distributor.schedule_last_dues()
        self.is_leader, self.leader = True, self.node
        self._service.perform(distributor.set_schedules_active(True, self._clock()))
        log.info("cluster %s: node %s is the leader (it runs the periodic schedules)", self.name, self.node)

    def _step_down(self, why: str) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        if self.leader == self.node:
            self.leader = None
        self._service.perform(self._service.distributor.set_schedules_active(False, self._clock()))
        log.warning("cluster %s: node %s is no longer the leader: %s", self.name, self.node, why)

    async def _read_dues(self) -> dict[str, float]:
        assert self._dues is not None
        return {name: float(value) for name, value in (await _entries(self._dues)).items()}

    async def _share_dues(self) -> None:
        """Write each schedule's due time run here since the last look (a new leader starts after it)."""
        assert self._dues is not None
        for name, due in self._service.distributor.schedule_last_dues().items():
            if self._shared.get(name, -math.inf) < due:
                await self._dues.put(name, repr(due).encode())
                self._shared[name] = due

    # ---- trouble and the end ---------------------------------------------

    def _trouble(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
        if message != self.last_error:  # once per distinct problem, not once per try
            log.warning("cluster %s: node %s: %s", self.name, self.node, message)
        self.last_error = message

    def spill(self, action: Spill) -> None:
        """Hand a spilled attempt to the cluster; without a connection it goes back to the local queue."""
        if self._exchange is not None and self.connected:
            self._exchange.spill(action)
            return
        distributor, now = self._service.distributor, self._clock()
        task_id = action.task.task_id or ""
        self._service.perform(distributor.remote_unsent(task_id, action.attempt, now))
        # nothing spills while NATS is away; the next heartbeat in touch with it offers the operations again
        self._remote = frozenset()
        self._service.perform(distributor.set_remote_offers(self._remote, now))

    def cancel(self, action: Cancel) -> None:
        """A spilled attempt is over here (cancel, timeout, deadline): whichever daemon runs it is to stop it."""
        if self._exchange is not None and self.connected:
            self._exchange.cancel(action)

    def finished(self, task_id: str) -> None:
        """A task is final here: its result goes back to the daemon that spilled it, or to the results bucket."""
        if self._exchange is not None and self._exchange.finished(task_id):
            return
        if self._settings.cluster_share_results and self._results is not None and self.connected:
            self._results.put(self._service.distributor.get(task_id))

    def lookup(self, task_id: str, answer: Callable[[TaskInfo | None], None]) -> bool:
        """Look a task up in the results bucket, then call ``answer``; False (and no call) when NATS is away."""
        shelf = self._results
        if shelf is None or not self.connected:
            return False

        async def find() -> None:
            try:
                info = await shelf.lookup(task_id)
            except Exception as exc:  # NATS went away meanwhile
                log.debug("looking %s up in the cluster: %s", task_id, exc)
                info = None
            answer(info)

        self._background(find())
        return True

    def _sweep(self) -> None:
        """The leader's sweep of the stream for tasks past their deadline, in the background (one at a time)."""
        exchange = self._exchange
        if exchange is None or any(t.get_name() == "sweep" for t in self._busy):
            return

        async def sweep() -> None:
            try:
                removed = await exchange.sweep(self._clock())
            except Exception as exc:  # NATS away: the next sweep goes on
                log.debug("cluster %s: the deadline sweep stopped: %s", self.name, exc)
                return
            if removed:
                log.info("cluster %s: removed %d tasks past their deadline from the stream", self.name, removed)

        self._background(sweep(), name="sweep")

    def _background(self, work: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._busy.add(task)
        task.add_done_callback(self._busy.discard)

    async def _disconnect(self) -> None:
        if self._exchange is not None:
            self._exchange.stop()
            self._exchange = None
        if self._results is not None:
            self._results.stop()
            self._results = None
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # closing a connection that never worked
                log.debug("closing the NATS connection: %s", exc)

    async def _leave(self) -> None:
        if self.is_leader and self._lease is not None:
            await self._share_dues()
            await self._lease.delete(LEASE_KEY)
        if self._hosts is not None:
            await self._hosts.delete(self.node)

    async def close(self) -> None:
        """Leave the cluster: give the lease up (another daemon takes it at once) and drop this record."""
        try:
            if self.connected:
                await asyncio.wait_for(self._leave(), timeout=2.0)
        except Exception as exc:
            log.warning("cluster %s: node %s could not leave cleanly: %s", self.name, self.node, exc)
        self.is_leader = False
        await self._disconnect()


async def _entries(kv: KeyValue) -> dict[str, bytes]:
    """Every key of a bucket with its value (keys deleted or gone since the listing are left out)."""
    from nats.js.errors import KeyNotFoundError, NoKeysError

    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    found = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if entry.value:
            found[key] = entry.value
    return found

"""The daemon's periodic schedules: those of the config file (reconciled at start and on SIGHUP), those added at
runtime, and the admin verbs that add, show, pause, resume and remove them.

The schedules themselves (their due times, their runs) live in the distributor,
which hands their records to the store with each commit; this module turns
requests and config tables into :class:`~distributor.schedules.ScheduleSpec`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgpack

from distributor import Action, TaskDistributor
from distributor.errors import InvalidRequest
from distributor.schedules import ScheduleSpec, parse_every, zone
from eventbus import messages as m
from eventbus.collector_verbs import Handler
from eventbus.errors import EventBusError, StateCorrupt, TooLarge
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope

log = logging.getLogger(__name__)

#: what a run's task takes in the frame that dispatches it besides its payload
RUN_OVERHEAD = 1024


def host_zone(environ: Mapping[str, str] = os.environ, localtime: Path = Path("/etc/localtime")) -> str:
    """The host's time zone name: ``TZ`` if it names one, else where /etc/localtime points, else UTC."""
    candidates = [environ.get("TZ", "").lstrip(":")]
    try:
        target = str(localtime.resolve())
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        candidates.append(target.split("/zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                zone(name)
            except InvalidRequest:
                continue
            return name
    return "UTC"


class ScheduleVerbs:
    """Handlers of ``control.admin.schedules`` and ``control.admin.schedule.*``."""

    def __init__(
        self,
        distributor: TaskDistributor,
        *,
        clock: Callable[[], float],
        perform: Callable[[Iterable[Action]], None],
        max_message_size: int,
        timezone: str,
        stored_state: Callable[[str], str | None] = lambda task_id: None,
    ) -> None:
        self._d = distributor
        self._stored_state = stored_state
        self._clock = clock
        self._perform = perform
        self._max = max_message_size
        self._zone = timezone

    def exact(self) -> dict[str, Handler]:
        return {
            m.SCHEDULES: self._list,
            m.SCHEDULE_ADD: self._add,
            m.SCHEDULE_SHOW: self._show,
            m.SCHEDULE_PAUSE: self._pause,
            m.SCHEDULE_RESUME: self._resume,
            m.SCHEDULE_RM: self._rm,
        }

    # ---- sources -------------------------------------------------------

    def restore(self, stored: Mapping[str, bytes], settings: DaemonSettings) -> None:
        """Take back the schedules the store kept, then reconcile them with the config file."""
        records = []
        for name, body in stored.items():
            try:
                records.append(msgpack.unpackb(body, raw=False, strict_map_key=False))
            except (ValueError, msgpack.UnpackException) as exc:
                raise StateCorrupt(f"the stored schedule {name!r} does not read back: {exc}") from exc
        try:
            self._perform(self._d.restore_schedules(records, self._clock()))
        except (KeyError, TypeError, EventBusError) as exc:
            raise StateCorrupt(f"a stored schedule does not read back: {exc}") from exc
        self.configure(settings)

    def configure(self, settings: DaemonSettings) -> None:
        """Make the config file's schedules the ones of source ``config``: added, redefined or removed."""
        now = self._clock()
        wanted = {name: self._spec(name, fields, "config") for name, fields in settings.schedules.items()}
        for view in self._d.schedules():
            name = view["name"]
            if view["source"] == "config" and name not in wanted:
                log.info("schedule %s is no longer in the config file: removed", name)
                self._perform(self._d.remove_schedule(name, now))
            elif view["source"] == "runtime" and name in wanted:
                log.warning("schedule %s of the config file replaces the one added at runtime", name)
        for spec in wanted.values():
            self._perform(self._d.put_schedule(spec, now))

    def _spec(self, name: str, fields: m.ScheduleFields, source: str, size: int = 0) -> ScheduleSpec:
        try:
            return ScheduleSpec(
                name=name,
                operation=fields.operation,
                every_s=None if fields.every is None else parse_every(fields.every),
                cron=fields.cron,
                timezone=fields.timezone or self._zone,
                payload=fields.payload,
                priority=fields.priority,
                timeout_ms=fields.timeout_ms,
                constraints=tuple(fields.constraints),
                jitter_s=fields.jitter_s,
                overlap=fields.overlap,
                source=source,
                size=size or RUN_OVERHEAD + len(msgpack.packb(fields.payload)),
            )
        except (ValueError, TypeError) as exc:  # a payload msgpack cannot pack
            raise InvalidRequest(f"schedule {name!r}: payload: {exc}") from exc

    # ---- verbs ---------------------------------------------------------

    def _list(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return {"schedules": [self._filled(v) for v in self._d.schedules()]}

    def _add(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.ScheduleBody, env.body)
        if env.size + RUN_OVERHEAD > self._max:
            raise TooLarge(f"a schedule of {env.size} bytes leaves no room for its runs' dispatch (limit {self._max})")
        existing = self._d.schedule_spec(body.name)
        if existing is not None:
            if existing.source == "config":
                raise InvalidRequest(
                    f"schedule {body.name!r} is defined in the config file: change it there and reload (SIGHUP)"
                )
            if not body.replace:
                raise InvalidRequest(f"schedule {body.name!r} already exists (remove it first, or replace it)")
        spec = self._spec(body.name, body, "runtime", RUN_OVERHEAD + env.weight)
        self._perform(self._d.put_schedule(spec, self._clock()))
        return self._filled(self._d.schedule(body.name))

    def _show(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return self._filled(self._d.schedule(m.parse(m.ScheduleName, env.body).name))

    def _pause(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return self._set_paused(env, True)

    def _resume(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return self._set_paused(env, False)

    def _set_paused(self, env: Envelope, paused: bool) -> dict[str, Any]:
        name = m.parse(m.ScheduleName, env.body).name
        self._perform(self._d.pause_schedule(name, paused, self._clock()))
        return self._filled(self._d.schedule(name))

    def _filled(self, view: dict[str, Any]) -> dict[str, Any]:
        """``view`` with the state of each run the distributor no longer holds, from the store."""
        for run in view["runs"]:
            if run["state"] is None and run["task_id"] is not None:
                run["state"] = self._stored_state(run["task_id"])
        return view

    def _rm(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        name = m.parse(m.ScheduleName, env.body).name
        spec = self._d.schedule_spec(name)
        if spec is not None and spec.source == "config":
            raise InvalidRequest(f"schedule {name!r} is defined in the config file: remove it there and reload")
        self._perform(self._d.remove_schedule(name, self._clock()))
        return {"removed": name}


__all__ = ["ScheduleVerbs", "host_zone"]

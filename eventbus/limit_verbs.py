"""The daemon's rate limits: those of the config file, those set at runtime (kept in the store), and the
admin verbs that list, set and remove them.

The limit in force for an operation or a collector type is the one set at
runtime if there is one, else the config file's. A reload (SIGHUP) replaces
the config file's limits; runtime ones stay until removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgpack

from distributor import Action, TaskDistributor
from distributor.limits import Limit, parse_rate
from eventbus import messages as m
from eventbus.collector_verbs import Handler
from eventbus.errors import EventBusError, InvalidRequest, StateCorrupt, UnknownName
from eventbus.settings import DaemonSettings
from eventbus.wire import Envelope

#: (limit kind, name)
Key = tuple[str, str]
#: the store's kind of a runtime limit of each limit kind
STORE_KIND = {"operation": "limit.operation", "collector_type": "limit.collector_type"}


class LimitVerbs:
    """Handlers of ``control.admin.limits``, ``control.admin.limit.set`` and ``control.admin.limit.rm``."""

    def __init__(
        self,
        distributor: TaskDistributor,
        *,
        clock: Callable[[], float],
        perform: Callable[[Iterable[Action]], None],
        define: Callable[[str, str, bytes | None], None],
    ) -> None:
        self._d = distributor
        self._clock = clock
        self._perform = perform
        self._define = define
        self._config: dict[Key, Limit] = {}
        self._runtime: dict[Key, Limit] = {}

    def exact(self) -> dict[str, Handler]:
        return {m.LIMITS: self._list, m.LIMIT_SET: self._set, m.LIMIT_RM: self._rm}

    # ---- sources -------------------------------------------------------

    def configure(self, settings: DaemonSettings) -> None:
        """Put the config file's limits in force (at start, and again at each reload)."""
        new = {("operation", name): spec.limit() for name, spec in settings.limits.items()}
        new.update({("collector_type", name): spec.limit() for name, spec in settings.type_limits.items()})
        old, self._config = self._config, new
        for key in old.keys() | new.keys():
            if old.get(key) != new.get(key):
                self._apply(key)

    def restore(self, definitions: Mapping[str, Mapping[str, bytes]]) -> None:
        """Take back the limits set at runtime before a restart (from the store)."""
        for kind, store_kind in STORE_KIND.items():
            for name, body in definitions.get(store_kind, {}).items():
                try:
                    fields = msgpack.unpackb(body)
                    self._runtime[(kind, name)] = _limit(fields["rate"], fields["max_in_flight"])
                except (ValueError, TypeError, KeyError, EventBusError, msgpack.UnpackException) as exc:
                    raise StateCorrupt(f"the stored limit of {kind} {name!r} does not read back: {exc}") from exc
                self._apply((kind, name))

    def _apply(self, key: Key) -> None:
        kind, name = key
        limit = self._runtime.get(key, self._config.get(key))
        self._perform(self._d.set_limit(kind, name, limit, self._clock()))

    # ---- verbs ---------------------------------------------------------

    def views(self) -> list[dict[str, Any]]:
        """The limits in force, each with its source (``runtime`` or ``config``) and state."""
        out = []
        for view in self._d.limits(self._clock()):
            key = (view["kind"], view["name"])
            out.append({**view, "source": "runtime" if key in self._runtime else "config"})
        return out

    def _list(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        return {"limits": self.views()}

    def _set(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.LimitSetBody, env.body)
        limit = _limit(body.rate, body.max_in_flight)
        key = (body.kind, body.name)
        self._runtime[key] = limit
        packed = msgpack.packb({"rate": body.rate and str(limit.rate), "max_in_flight": limit.max_in_flight})
        self._define(STORE_KIND[body.kind], body.name, packed)
        self._apply(key)
        return self._one(key)

    def _rm(self, identity: bytes, env: Envelope, _: str) -> dict[str, Any]:
        body = m.parse(m.LimitKey, env.body)
        key = (body.kind, body.name)
        if key not in self._runtime:
            if key in self._config:
                raise InvalidRequest(
                    f"the limit of {body.kind} {body.name!r} is set in the config file: remove it there and reload "
                    "(SIGHUP)"
                )
            raise UnknownName(f"no limit is set for {body.kind} {body.name!r}")
        del self._runtime[key]
        self._define(STORE_KIND[body.kind], body.name, None)
        self._apply(key)
        return {"removed": {"kind": body.kind, "name": body.name}, "limits": self.views()}

    def _one(self, key: Key) -> dict[str, Any]:
        return next(v for v in self.views() if (v["kind"], v["name"]) == key)


def _limit(rate: str | None, max_in_flight: int | None) -> Limit:
    return Limit(max_in_flight, None if rate is None else parse_rate(rate))

"""Reading the daemon's settings again on SIGHUP, and applying the ones that can change live.

Live: the routing strategy, the distributor's limits, the rate limits of the
config file (``limits``, ``type_limits``), its schedules, the log level and
``shutdown_grace_s``. Every other setting is bound to a socket or to state
built at start (the socket path, ``max_message_size``, the access lists, the
per-peer buffers, heartbeat and timer intervals): a change to one is logged as
needing a restart and the running value is kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distributor import DistributorConfig, make_strategy
from eventbus.errors import ConfigError
from eventbus.paths import resolve_socket_path
from eventbus.service import Service
from eventbus.settings import DaemonSettings, load_settings

log = logging.getLogger(__name__)

#: read when no file is named by --config or EVENTBUS_CONFIG and it exists
DEFAULT_CONFIG_FILE = Path("/etc/eventbus/eventbusd.toml")

#: settings applied by a reload
LIVE = frozenset(
    {
        "strategy",
        "log_level",
        "shutdown_grace_s",
        "limits",
        "type_limits",
        "schedules",
        *(f.name for f in dataclasses.fields(DistributorConfig)),
    }
)


def config_file_in_effect(named: Path | None, default: Path = DEFAULT_CONFIG_FILE) -> Path | None:
    """The file named on the command line or in the environment, else ``default`` if it exists."""
    if named is not None:
        return named
    return default if default.is_file() else None


@dataclass(frozen=True)
class SettingsSource:
    """Where the daemon's settings come from: a config file (or none) and the command-line flags.

    ``named`` is the file given by --config or EVENTBUS_CONFIG. Without one,
    ``default`` is read whenever it exists: at start and at every reload, so
    a default file created after the daemon started applies on SIGHUP.
    """

    named: Path | None
    flags: Mapping[str, Any] = field(default_factory=dict)
    default: Path = DEFAULT_CONFIG_FILE

    @property
    def config_file(self) -> Path | None:
        return config_file_in_effect(self.named, self.default)

    def load(self) -> DaemonSettings:
        """Read the settings again (file < environment < flags); :class:`ConfigError` names the culprit."""
        return load_settings(DaemonSettings, config_file=self.config_file, flags=self.flags)

    def describe(self) -> str:
        path = self.config_file
        return str(path) if path is not None else "the environment and flags (no config file)"


def merge(running: DaemonSettings, loaded: DaemonSettings) -> tuple[DaemonSettings, list[str], list[str]]:
    """``(settings to run with, live settings changed, settings that need a restart to change)``.

    The result keeps the running value of every setting that cannot change
    live, so it is validated again as a whole: the new values must also agree
    with the kept ones (e.g. ``heartbeat_timeout_s`` with the running
    ``heartbeat_interval_s``); :class:`ConfigError` says why not.
    """
    changed = [name for name in DaemonSettings.model_fields if getattr(running, name) != getattr(loaded, name)]
    if "socket" in changed and resolve_socket_path(loaded.socket) == running.socket:
        changed.remove("socket")  # the running one is already resolved from the same default
    live = [name for name in changed if name in LIVE]
    fixed = [name for name in changed if name not in LIVE]
    data = running.model_dump()
    data.update({name: getattr(loaded, name) for name in live})
    try:
        merged = DaemonSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"the new settings do not fit the running ones: {err['msg']}") from exc
    return merged, live, fixed


def apply(service: Service, settings: DaemonSettings, live: list[str], now: float) -> None:
    """Make ``settings`` (from :func:`merge`) the ones the service and the logging run with.

    The strategy is switched only when the file changed it, so a reload for another reason
    keeps a strategy set at run time with ``eventbusctl strategy``.
    """
    if "strategy" in live and service.distributor.strategy.name != settings.strategy:
        service.distributor.set_strategy(make_strategy(settings.strategy))
    service.perform(service.distributor.reconfigure(DistributorConfig.from_settings(settings), now))
    service.limits.configure(settings)
    service.schedules.configure(settings)
    service.settings = settings
    logging.getLogger().setLevel(settings.log_level.upper())


def reload(source: SettingsSource, service: Service, now: float) -> DaemonSettings | None:
    """Re-read the settings and apply what can change live; None (old settings kept) if they are bad."""
    log.info("reloading settings from %s", source.describe())
    try:
        merged, live, fixed = merge(service.settings, source.load())
    except ConfigError as exc:
        log.error("reload rejected, the running settings are kept: %s", exc)
        return None
    apply(service, merged, live, now)
    for name in live:
        log.info("reload: %s is now %s", name, getattr(merged, name))
    for name in fixed:
        log.warning("reload: %s changed in the settings but needs a restart to take effect", name)
    if not live and not fixed:
        log.info("reload: no setting changed")
    return merged

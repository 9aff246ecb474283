"""Settings: one pydantic model per process, read from TOML, ``EVENTBUS_*`` and flags.

Precedence: flags > environment > config file > defaults. Each field's
description is its documentation; click options are derived from the model
(:func:`click_options`), so a setting is written once.
"""

from __future__ import annotations

import enum
import json
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distributor.errors import InvalidRequest
from distributor.history import RECORD_OVERHEAD
from distributor.limits import Limit, parse_rate
from distributor.models import Segment
from distributor.schedules import zone
from distributor.strategies import STRATEGIES
from eventbus.errors import ConfigError
from eventbus.messages import ScheduleFields
from eventbus.wire import DEFAULT_MAX_MESSAGE_SIZE

ENV_PREFIX = "EVENTBUS_"
LogLevel = Literal["debug", "info", "warning", "error"]
Durability = Literal["fsync", "process", "none"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LimitSetting(_Settings):
    """A rate limit as the config file writes it: ``{rate = "10/s", max_in_flight = 4}``."""

    rate: str | None = Field(default=None, description="N/PERIOD, e.g. 10/s, 100/60s, 5/m, 1000/h")
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _readable(self) -> LimitSetting:
        try:
            self.limit()
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
        return self

    def limit(self) -> Limit:
        return Limit(self.max_in_flight, None if self.rate is None else parse_rate(self.rate))


class DaemonSettings(_Settings):
    """Every setting of ``eventbusd``."""

    socket: Path | None = Field(
        default=None,
        description="Unix socket path (default: $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/eventbus or /tmp/eventbus-UID)",
    )
    strategy: str = Field(default="least_loaded", description=f"routing strategy: {', '.join(sorted(STRATEGIES))}")
    log_level: LogLevel = Field(default="info", description="log level")
    max_message_size: int = Field(
        default=DEFAULT_MAX_MESSAGE_SIZE, ge=1024, le=256 << 20, description="largest frame accepted, in bytes"
    )
    max_queue_size: int = Field(
        default=10_000, ge=1, description="queued or pending tasks across all operations (the global cap)"
    )
    max_queued_per_operation: int | None = Field(
        default=None,
        ge=1,
        description="queued or pending tasks of any one operation, at most max_queue_size "
        "(unset: half of max_queue_size, so one unserved operation cannot fill the queue for all)",
    )
    max_queued_bytes: int = Field(
        default=256 << 20,
        ge=1024,
        description="estimated memory of all tasks not finished yet (frame size plus 64 bytes per map or "
        "array element), at least max_message_size; one operation may hold the same share of it as "
        "max_queued_per_operation is of max_queue_size; past it submissions are refused queue_full",
    )
    max_retries: int = Field(default=3, ge=0, le=100, description="retries of a failed attempt before a task fails")
    retry_backoff_base_ms: float = Field(default=100.0, gt=0, description="first retry backoff cap, doubled per retry")
    retry_backoff_max_ms: float = Field(
        default=30_000.0, gt=0, description="largest retry backoff, at least retry_backoff_base_ms"
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="how often collectors are asked to heartbeat")
    heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="silence after which a collector is unhealthy, at least twice heartbeat_interval_s",
    )
    max_finished_tasks: int = Field(default=100_000, ge=1, description="finished tasks kept for queries")
    max_finished_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="estimated memory of the finished tasks kept for queries, at least max_message_size: "
        f"each counts its result's encoded size plus {RECORD_OVERHEAD} bytes; the oldest are evicted first",
    )
    forget_unhealthy_after_s: float = Field(
        default=300.0, gt=0, description="an unhealthy collector silent this long is removed"
    )
    aging_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="priority aging: a queued task's effective priority rises one level for each this many "
        "seconds it has waited, up to aging_max_boost levels (unset: off, strict priority order)",
    )
    aging_max_boost: int = Field(
        default=9,
        ge=1,
        le=9,
        description="the most levels aging adds to a task's own priority (9: any task can reach priority 10, "
        "so none starves)",
    )
    limits: dict[Segment, LimitSetting] = Field(
        default_factory=dict,
        description="rate limits per operation, a TOML table each, [limits.NAME], with a rate (N/PERIOD: 10/s, "
        "100/60s, 5/m) and/or a max_in_flight (attempts at once); eventbusctl limit set adds to them at runtime",
    )
    type_limits: dict[Segment, LimitSetting] = Field(
        default_factory=dict,
        description="rate limits per collector type, as limits: [type_limits.TYPE]; tasks go to collectors of "
        "other types meanwhile, or wait",
    )
    schedules: dict[Segment, ScheduleFields] = Field(
        default_factory=dict,
        description="periodic schedules, a TOML table each, [schedules.NAME], with operation and every (30s, 5m) "
        "or cron ('*/5 * * * *'), and optionally payload, priority, timeout_ms, constraints, jitter_s, overlap "
        "(skip or queue), timezone; reconciled at start and on SIGHUP",
    )
    timezone: str | None = Field(
        default=None,
        description="time zone of cron schedules that name none (unset: the host's, from TZ or /etc/localtime)",
    )
    cluster_nats_url: str | None = Field(
        default=None,
        description="NATS servers (comma-separated, e.g. nats://10.0.0.5:4222) that daemons federate through; "
        "unset: clustering off. Needs the cluster extra (pip install 'eventbus[cluster]')",
    )
    cluster_name: str = Field(
        default="eventbus",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="prefixes the streams, subjects and buckets of the cluster, so clusters can share a NATS",
    )
    cluster_node: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="this daemon's name in the cluster, unique in it (unset: the host name)",
    )
    cluster_mode: Literal["overflow", "shared"] = Field(
        default="overflow",
        description="overflow: tasks no local collector can take go to other hosts; shared: every task does",
    )
    cluster_spill_after_ms: float = Field(
        default=500.0, ge=0, description="overflow: how long a task waits for a local collector before it spills"
    )
    cluster_ack_wait_s: float = Field(
        default=10.0,
        ge=1,
        le=3600,
        description="a task another daemon took from the cluster is given to a third one this long after the "
        "taker stops reporting progress (it died)",
    )
    cluster_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="copies NATS keeps of the cluster's streams and buckets when they are made (3 on a "
        "3-node NATS cluster, so one node may die)",
    )
    cluster_share_results: bool = Field(
        default=True,
        description="put each final task in the cluster's results bucket, so any daemon answers about it (costs "
        "NATS one stored message per task)",
    )
    cluster_heartbeat_s: float = Field(
        default=1.0, gt=0, le=60, description="how often this daemon refreshes its record and the leader lease"
    )
    cluster_lease_ttl_s: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="a leader silent this long loses the lease (at least 2 x cluster_heartbeat_s); another "
        "daemon takes over its singleton duties (periodic schedules)",
    )
    peer_queue_limit: int = Field(default=10_000, ge=1, description="messages buffered per slow peer before dropping")
    max_pending_bytes_per_peer: int = Field(
        default=8 << 20,
        ge=1024,
        description="bytes buffered per slow peer before dropping; a collector over it is treated as stuck "
        "(its attempts are requeued), a client loses the replies sent past it",
    )
    allowed_uids: tuple[int, ...] = Field(
        default=(), description="uids served besides the daemon's own and root (repeat the flag; JSON list in env)"
    )
    allowed_gids: tuple[int, ...] = Field(
        default=(), description="members of these groups (primary or supplementary) are served too"
    )
    admin_uids: tuple[int, ...] = Field(
        default=(),
        description="uids allowed admin verbs (strategy change, drain, undrain, stop, cancelling others' tasks) "
        "besides the daemon's own and root",
    )
    tick_interval_s: float = Field(default=0.05, gt=0, le=5, description="timer resolution (timeouts, retries)")
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long running attempts may finish before the daemon stops anyway "
        "(a second SIGTERM stops at once)",
    )
    state_dir: Path | None = Field(
        default=None,
        description="where the state database lives (default: $STATE_DIRECTORY under systemd, else "
        "$XDG_STATE_HOME/eventbus, else ~/.local/state/eventbus); one daemon at a time may use it",
    )
    durability: Durability = Field(
        default="fsync",
        description="what an acknowledged submission survives: fsync, a power loss or kill -9 (each commit "
        "is synced to disk); process, kill -9 of the daemon but not a power loss or OS crash; none, "
        "nothing (memory only, no state database; also --no-durable)",
    )
    result_ttl_s: float = Field(
        default=86_400.0, gt=0, description="finished tasks stay readable in the state database this long"
    )
    max_results: int = Field(
        default=1_000_000, ge=1, description="finished tasks kept in the state database; the oldest go first"
    )
    max_result_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="bytes of finished tasks (request and result as stored) kept in the state database; "
        "the oldest go first",
    )
    idempotency_ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        description="a submission repeating the idempotency_key of one from the same uid this recently returns "
        "that task instead of making another (keys live as long as their task is kept)",
    )
    metrics_listen: str | None = Field(
        default=None,
        description="HOST:PORT to serve Prometheus metrics on, at /metrics over HTTP (e.g. 127.0.0.1:9464; "
        "IPv6 in brackets, [::1]:9464); unset: not served. Needs the metrics extra (pip install "
        "'eventbus[metrics]'); read at start only",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r} (known: {', '.join(sorted(STRATEGIES))})")
        return value

    @property
    def spill_after_s(self) -> float | None:
        """The distributor's ``spill_after_s``: cluster_spill_after_ms in seconds (0 in shared mode), None without
        a cluster."""
        if not self.cluster_nats_url:
            return None
        return 0.0 if self.spill_first else self.cluster_spill_after_ms / 1000.0

    @property
    def spill_first(self) -> bool:
        """The distributor's ``spill_first``: in a cluster's shared mode every task goes through the cluster."""
        return bool(self.cluster_nats_url) and self.cluster_mode == "shared"

    @property
    def spill_grace_s(self) -> float:
        """The distributor's ``spill_grace_s``: a spilled attempt may wait two ack waits for another daemon."""
        return 2 * self.cluster_ack_wait_s

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zone(value)
            except InvalidRequest as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DaemonSettings:
        for low, high, factor in _AT_MOST:
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and low_value * factor > high_value:
                raise _Conflict((low, low_value), (high, high_value), factor)
        return self


#: (low, high, factor): settings accepted only when low * factor <= high
_AT_MOST: tuple[tuple[str, str, float], ...] = (
    # a collector must be able to miss one heartbeat without being declared dead
    ("heartbeat_interval_s", "heartbeat_timeout_s", 2.0),
    ("cluster_heartbeat_s", "cluster_lease_ttl_s", 2.0),
    ("retry_backoff_base_ms", "retry_backoff_max_ms", 1.0),
    ("max_queued_per_operation", "max_queue_size", 1.0),
    # a history smaller than one result forgets every result at once
    ("max_message_size", "max_finished_bytes", 1.0),
    # a limit below one frame would refuse the largest valid task, or treat its collector as stuck
    ("max_message_size", "max_queued_bytes", 1.0),
    ("max_message_size", "max_pending_bytes_per_peer", 1.0),
)


def split_host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (an IPv6 host in brackets); ValueError says what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464)")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"{address!r}: an IPv6 host is written in brackets, e.g. [::1]:9464")
        host = host[1:-1]
    elif ":" in host or "]" in host:
        raise ValueError(f"{address!r}: write an IPv6 host in brackets, e.g. [::1]:9464")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{address!r}: the port must be a number from 1 to 65535")
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"{address!r}: {host!r} is not a host name or address")
    return host, int(port)


class _Conflict(ValueError):
    """Two settings contradict each other (raised inside validation, reported by :func:`load_settings`)."""

    def __init__(self, low: tuple[str, Any], high: tuple[str, Any], factor: float) -> None:
        times = "" if factor == 1 else f"{factor:g} times "
        super().__init__(f"{high[0]} must be at least {times}{low[0]}")
        self.low, self.high = low, high


class ClientSettings(_Settings):
    """Settings of ``eventbusctl`` and the Python clients."""

    socket: Path | None = Field(default=None, description="daemon socket path (same default as eventbusd)")
    timeout: float = Field(default=10.0, gt=0, description="seconds to wait for the daemon to answer a request")


class CollectorSettings(_Settings):
    """Settings of ``eventbus-collector``."""

    socket: Path | None = Field(default=None, description="daemon socket path (same default as eventbusd)")
    log_level: LogLevel = Field(default="info", description="log level")
    request_timeout_s: float = Field(default=5.0, gt=0, description="seconds to wait for the daemon's answer")
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="on SIGTERM, how long running tasks may finish")


S = TypeVar("S", bound=BaseModel)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(
    model: type[S],
    *,
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> S:
    """Build settings from defaults < config file < environment < flags; :class:`ConfigError` names the culprit."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        data.update(_read_toml(Path(config_file)))
        origin.update(dict.fromkeys(data, str(config_file)))
    for name, field in model.model_fields.items():
        raw = env.get(env_name(name))
        if raw is not None and raw != "":
            data[name] = _from_env(raw, field.annotation)
            origin[name] = env_name(name)
    for name, value in (flags or {}).items():
        if value is not None and value != ():  # () is a repeatable flag not given
            data[name] = value
            origin[name] = "--" + name.replace("_", "-")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        conflict = err.get("ctx", {}).get("error")
        if isinstance(conflict, _Conflict):
            raise ConfigError(_conflict_message(conflict, origin)) from exc
        key = str(err["loc"][0]) if err["loc"] else "?"
        where = origin.get(key, "settings")
        raise ConfigError(f"invalid setting {key!r} from {where}: {err['msg']}") from exc


def _conflict_message(conflict: _Conflict, origin: Mapping[str, str]) -> str:
    def named(setting: tuple[str, Any]) -> str:
        name, value = setting
        shown = f"{value:g}" if isinstance(value, float) else value
        return f"{name}={shown} from {origin.get(name, 'the default')}"

    return f"contradicting settings: {conflict}; got {named(conflict.high)} and {named(conflict.low)}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _from_env(raw: str, annotation: Any) -> Any:
    """Env values are strings; lists and maps are written as JSON."""
    origin = typing.get_origin(annotation)
    if origin in (list, dict, tuple):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw  # validation names the variable
    return raw


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if annotation is Path:
        # no access check here: whether a socket can be used is found out by connecting to it,
        # which names the reason (click would call an unreadable socket a usage error)
        return click.Path(path_type=Path, readable=False)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return click.Choice([m.value for m in annotation])
    return {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(annotation, click.STRING)


def click_options(model: type[BaseModel], *, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """A decorator adding one ``--option`` per settings field (default None: unset, not overriding)."""

    def decorate(func: Any) -> Any:
        for name, field in reversed(list(model.model_fields.items())):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            shown = "" if field.default is None else f"; default {field.default}"
            helptext = f"{field.description} [env {env_name(name)}{shown}]"
            if typing.get_origin(field.annotation) is dict:  # a table: config file or environment (JSON) only
                continue
            if typing.get_origin(field.annotation) is tuple:  # a list setting: a repeatable flag
                item = _click_type(typing.get_args(field.annotation)[0])
                func = click.option(flag, name, type=item, multiple=True, help=helptext)(func)
                continue
            func = click.option(flag, name, type=_click_type(field.annotation), default=None, help=helptext)(func)
        return func

    return decorate


def sample_toml(model: type[BaseModel] = DaemonSettings) -> str:
    """The commented sample config listing every setting with its default (config/eventbusd.toml)."""
    lines = [
        "# eventbusd settings. Every key is optional; shown commented out with its default.",
        "# Precedence: command-line flags > EVENTBUS_<NAME> environment variables > this file > defaults.",
        "# Load with: eventbusd --config FILE (or EVENTBUS_CONFIG=FILE).",
    ]
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if default == {}:
            value = "{}"
        elif default is None:
            value = '""  # unset'
        elif isinstance(default, tuple):
            value = json.dumps(list(default))
        elif isinstance(default, bool):
            value = str(default).lower()
        elif isinstance(default, str | Path):
            value = json.dumps(str(default))
        else:
            value = repr(default)
        lines += ["", f"# {field.description} (env {env_name(name)})", f"# {name} = {value}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(sample_toml(), end="")

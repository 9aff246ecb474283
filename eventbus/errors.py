"""Errors of the I/O layer. All share the root :class:`EventBusError` and carry a stable ``code``."""

from __future__ import annotations

from distributor.errors import (
    DuplicateTask,
    EventBusError,
    InvalidRequest,
    InvalidState,
    QueueFull,
    UnknownCollector,
    UnknownTask,
)


class ProtocolError(EventBusError):
    """A frame could not be taken as a message. ``correlation_id`` is set when it could be read."""

    code = "bad_frame"

    def __init__(self, message: str, *, correlation_id: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.correlation_id = correlation_id


class BadVersion(ProtocolError):
    """The envelope's protocol version is not one this side speaks."""

    code = "bad_version"


class UnknownKind(ProtocolError):
    """The envelope's message type is not request, reply, error or publish."""

    code = "unknown_type"


class TooLarge(ProtocolError):
    """A frame is larger than ``max_message_size``."""

    code = "too_large"


class TooDeep(ProtocolError):
    """A frame nests maps and arrays deeper than the limit (``MAX_DEPTH`` in :mod:`eventbus.wire`)."""

    code = "too_deep"


class InvalidTopic(EventBusError):
    """A topic or subscription pattern breaks the namespace rules."""

    code = "bad_topic"


class UnknownVerb(EventBusError):
    """A request was sent to a topic nobody answers."""

    code = "unknown_topic"


class Forbidden(EventBusError):
    """The peer may not do this (e.g. report results for another collector)."""

    code = "forbidden"


class DaemonUnreachable(EventBusError):
    """No daemon answers on the socket path."""

    code = "unreachable"


class ConnectionReset(DaemonUnreachable):
    """The connection was reset (the daemon stopped or crashed) while a request awaited its answer.

    Whether the daemon acted on that request is unknown.
    """

    code = "connection_reset"


class DaemonRestarted(DaemonUnreachable):
    """The daemon went away during a wait and the one answering now does not know the task: its fate is unknown."""

    code = "daemon_restarted"


class RequestTimeout(EventBusError):
    """The daemon did not answer (or the task did not finish) in time."""

    code = "timeout"


class ShuttingDown(EventBusError):
    """The daemon is stopping: it takes no new submissions, and a task still unfinished when it stops is lost."""

    code = "shutting_down"


class UnknownName(EventBusError):
    """No limit or schedule of that name is defined."""

    code = "not_found"


class MetricsUnavailable(EventBusError):
    """The daemon cannot produce metrics: the ``metrics`` extra (prometheus_client) is not installed."""

    code = "metrics_unavailable"


class ConfigError(EventBusError):
    """A setting is invalid, or the daemon cannot start with it."""

    code = "config"


class SocketInUse(ConfigError):
    """Another live daemon owns the socket path."""

    code = "socket_in_use"


class StorageUnavailable(EventBusError):
    """The state database cannot be written (disk full, read-only, I/O error): submissions are refused."""

    code = "storage_unavailable"


class StateCorrupt(EventBusError):
    """The state database cannot be read or fails its integrity check: the daemon will not start on it."""

    code = "state_corrupt"


class BenchFailed(EventBusError):
    """``eventbusctl bench`` could not run its tasks: a helper process (collector, client, baseline) failed."""

    code = "bench_failed"


_BY_CODE: dict[str, type[EventBusError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        QueueFull,
        UnknownTask,
        UnknownCollector,
        DuplicateTask,
        InvalidState,
        InvalidTopic,
        UnknownVerb,
        Forbidden,
        RequestTimeout,
        ShuttingDown,
        MetricsUnavailable,
        StorageUnavailable,
    )
}


_PROTOCOL_BY_CODE: dict[str, type[ProtocolError]] = {
    cls.code: cls for cls in (ProtocolError, BadVersion, UnknownKind, TooLarge, TooDeep)
}


def error_from_code(code: str, message: str) -> EventBusError:
    """Rebuild the typed error a daemon reported (a generic one for codes this side does not know)."""
    protocol = _PROTOCOL_BY_CODE.get(code)
    if protocol is not None:
        return protocol(message, code=code)
    cls = _BY_CODE.get(code)
    if cls is None:
        return EventBusError(message, code=code)
    return cls(message)


__all__ = [
    "BadVersion",
    "BenchFailed",
    "ConfigError",
    "ConnectionReset",
    "DaemonRestarted",
    "DaemonUnreachable",
    "DuplicateTask",
    "EventBusError",
    "Forbidden",
    "InvalidRequest",
    "InvalidState",
    "InvalidTopic",
    "MetricsUnavailable",
    "ProtocolError",
    "QueueFull",
    "RequestTimeout",
    "ShuttingDown",
    "SocketInUse",
    "StateCorrupt",
    "StorageUnavailable",
    "TooDeep",
    "TooLarge",
    "UnknownCollector",
    "UnknownKind",
    "UnknownTask",
    "UnknownVerb",
    "error_from_code",
]

"""eventbus: a capability-routing task bus over a Unix-socket ZeroMQ broker."""

from eventbus._version import __version__
from eventbus.client import Client, SyncClient
from eventbus.errors import (
    ConfigError,
    ConnectionReset,
    DaemonRestarted,
    DaemonUnreachable,
    EventBusError,
    InvalidRequest,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    UnknownTask,
)

__all__ = [
    "Client",
    "ConfigError",
    "ConnectionReset",
    "DaemonRestarted",
    "DaemonUnreachable",
    "EventBusError",
    "InvalidRequest",
    "ProtocolError",
    "QueueFull",
    "RequestTimeout",
    "SyncClient",
    "UnknownTask",
    "__version__",
]

"""The systemd notification protocol (``sd_notify``), for a ``Type=notify`` service.

A notification is one datagram of newline-separated ``KEY=VALUE`` lines sent
to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``: a path, or ``@name`` for
the abstract namespace. Without the variable every call is a no-op, so the
daemon runs the same in a terminal, in a container and under systemd.

It is written here rather than taken from a library because the whole
protocol is a ``sendto``: the maintained binding (python-systemd) needs
libsystemd and a C build, and a pure-Python package would be a dependency for
these few lines, which the e2e tests exercise against a real datagram socket.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager; never raises (a lost notification must not stop the daemon)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``, or a no-op one when it is unset or empty."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; False if not sent."""
        if self.address is None:
            return False
        # the abstract namespace is spelled with a leading "@" in the variable, a NUL on the wire
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # a manager that stopped reading must not stall the event loop
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._warned:  # once: a watchdog ping would repeat it every few seconds
                log.warning("cannot notify the service manager at %s: %s", self.address, exc.strerror or exc)
                self._warned = True
            return False
        return True

    def reloading(self) -> bool:
        """``RELOADING=1`` with the ``CLOCK_MONOTONIC`` time systemd requires to pair it with the next READY=1."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None when no watchdog applies to us.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is for; another pid means it is not us.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(os.getpid() if pid is None else pid)):
        return None
    return usec / 2 / 1_000_000

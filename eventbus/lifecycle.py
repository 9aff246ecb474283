"""The daemon's life under a service manager: signals, status and watchdog pings, graceful stop.

Signals only set events (they run in the event loop, between callbacks);
the daemon's coroutines act on them:

- SIGTERM or SIGINT: stop taking work and let running attempts finish, up
  to ``shutdown_grace_s``; a second one stops at once.
- SIGHUP: reload the settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eventbus.notify import Notifier
from eventbus.service import Service

log = logging.getLogger(__name__)

#: how often STATUS= is refreshed
STATUS_EVERY_S = 2.0
#: how often the graceful stop checks whether running attempts are done
POLL_S = 0.05

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Signals:
    """What the process was asked to do, as events set by the signal handlers."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_now: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)

    def remove(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            log.warning("%s again: stopping at once", sig.name)
            self.stop_now.set()
        else:
            log.info("%s: stopping (running attempts may finish; send it again to stop at once)", sig.name)
            self.stop.set()


def status_line(service: Service) -> str:
    """The one-line state shown by ``systemctl status``."""
    snap = service.distributor.snapshot(time.time())
    counts = f"{snap['collectors']} collectors, {snap['tasks_queued']} queued, {snap['tasks_in_flight']} in flight"
    return f"stopping: {counts}" if service.closing else counts


async def keep_manager_informed(notifier: Notifier, service: Service, watchdog_s: float | None) -> None:
    """Refresh STATUS= every few seconds and ping the watchdog from the event loop, until cancelled.

    The ping is sent from this coroutine, not a thread, so a blocked event loop misses it
    and systemd restarts the daemon.
    """
    every = STATUS_EVERY_S if watchdog_s is None else min(STATUS_EVERY_S, watchdog_s)
    next_status = 0.0
    while True:
        fields = ["WATCHDOG=1"] if watchdog_s is not None else []
        if time.monotonic() >= next_status:
            try:
                fields.append(f"STATUS={status_line(service)}")
            except Exception:  # a bad status line must not stop the watchdog pings
                log.exception("cannot build the status line")
            next_status = time.monotonic() + STATUS_EVERY_S
        if fields:
            notifier.send(*fields)
        await asyncio.sleep(every)


async def on_reload(signals: Signals, notifier: Notifier, service: Service, reload: Callable[[], None]) -> None:
    """Each SIGHUP: RELOADING=1, ``reload()``, READY=1 (whether the new settings were taken or not)."""
    while True:
        await signals.reload.wait()
        signals.reload.clear()
        if signals.stop.is_set():  # stopping: systemd must not see READY=1 after STOPPING=1
            log.warning("SIGHUP while stopping: not reloading")
            continue
        notifier.reloading()
        try:
            reload()
        except Exception:  # a bug in one reload must not end reloading, nor the daemon
            log.exception("reload failed")
        finally:
            notifier.send("READY=1", f"STATUS={status_line(service)}")


async def wind_down(service: Service, grace_s: float, stop_now: asyncio.Event) -> bool:
    """Close the service to new work and wait for running attempts, up to ``grace_s`` or ``stop_now``.

    True when every attempt finished. Waiting clients are answered as their tasks finish.
    """
    service.close()
    deadline = time.monotonic() + grace_s
    while service.distributor.snapshot(time.time())["tasks_in_flight"] > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("shutdown_grace_s (%gs) is over with attempts still running", grace_s)
            return False
        try:
            await asyncio.wait_for(stop_now.wait(), min(POLL_S, left))
        except TimeoutError:
            continue
        return False
    return True

"""eventbusd: the daemon process. Loads settings, binds the broker, runs the service until signalled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import uvloop

from eventbus._version import __version__
from eventbus.broker import Broker
from eventbus.errors import ConfigError, EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_USAGE
from eventbus.logs import setup_logging
from eventbus.memory import fix_mmap_threshold
from eventbus.paths import resolve_socket_path
from eventbus.peers import AccessPolicy
from eventbus.service import Service
from eventbus.settings import DaemonSettings, click_options, load_settings

log = logging.getLogger("eventbus.daemon")


class Daemon:
    """One running eventbusd: broker + service + timer loop, stopped by an :class:`asyncio.Event`."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.socket_path = resolve_socket_path(settings.socket)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings.model_copy(update={"socket": self.socket_path})
        policy = access_policy(settings)
        broker = Broker(
            self.socket_path,
            max_message_size=settings.max_message_size,
            peer_queue_limit=settings.peer_queue_limit,
            max_pending_bytes_per_peer=settings.max_pending_bytes_per_peer,
            policy=policy,
        )
        service = Service(settings, broker.send, loop=loop, policy=policy, transport_counters=broker.counters)
        broker.start(loop, service.on_message, service.peer_gone)
        ticker = loop.create_task(self._tick(service, stop))
        log.info("eventbusd %s ready on %s (strategy %s)", __version__, self.socket_path, settings.strategy)
        try:
            await stop.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            broker.close()
            snap = service.distributor.snapshot(time.time())
            log.info(
                "eventbusd stopped: %d tasks submitted, %d succeeded, %d failed, %d queued, %d bad frames",
                snap["tasks_submitted"],
                snap["tasks_succeeded"],
                snap["tasks_failed"],
                snap["tasks_queued"],
                service.bad_frames,
            )

    async def _tick(self, service: Service, stop: asyncio.Event) -> None:
        interval = self.settings.tick_interval_s
        while not stop.is_set():
            await asyncio.sleep(interval)
            try:
                service.tick()
            except Exception:  # a bug in one timer must not stop all timers
                log.exception("error while firing timers")


def access_policy(settings: DaemonSettings) -> AccessPolicy:
    """Who the daemon serves: its own uid, root, and the allowed uids and groups of the settings."""
    return AccessPolicy.build(os.getuid(), settings.allowed_uids, settings.allowed_gids, settings.admin_uids)


async def _serve(settings: DaemonSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await Daemon(settings).run(stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def run_daemon(settings: DaemonSettings) -> None:
    """Run eventbusd in the foreground until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    envvar="EVENTBUS_CONFIG",
    help="TOML settings file (see config/eventbusd.toml) [env EVENTBUS_CONFIG]",
)
@click_options(DaemonSettings)
@click.version_option(__version__, prog_name="eventbusd")
def main(config_file: Path | None, **flags: Any) -> None:
    """Run the eventbus daemon in the foreground.

    Example: eventbusd --socket /tmp/eb.sock --log-level debug
    """
    try:
        settings = load_settings(DaemonSettings, config_file=config_file, flags=flags)
        setup_logging(settings.log_level, "eventbusd")
        fix_mmap_threshold()
        run_daemon(settings)
    except ConfigError as exc:
        click.echo(f"eventbusd: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except EventBusError as exc:
        click.echo(f"eventbusd: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(EXIT_OK)

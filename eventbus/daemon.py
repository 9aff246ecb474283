"""eventbusd: the daemon process. Loads settings, binds the broker, runs the service until signalled."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import uvloop

from eventbus import report
from eventbus._version import __version__
from eventbus.broker import Broker
from eventbus.clitypes import run_command
from eventbus.cluster import Cluster
from eventbus.errors import ConfigError, EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_USAGE
from eventbus.lifecycle import Signals, keep_manager_informed, on_reload, status_line, wind_down
from eventbus.logs import setup_logging
from eventbus.memory import fix_mmap_threshold, tune_gc
from eventbus.metrics_http import MetricsServer, serve_metrics
from eventbus.notify import Notifier, watchdog_interval
from eventbus.paths import default_state_dir, resolve_socket_path
from eventbus.peers import AccessPolicy
from eventbus.reload import SettingsSource, reload
from eventbus.service import Service
from eventbus.settings import DaemonSettings, click_options
from eventbus.store import Store, open_store
from eventbus.store.sqlite import check

#: at shutdown, how long the last commits may take before the daemon stops without them
PERSIST_S = 10.0

log = logging.getLogger("eventbus.daemon")


class Daemon:
    """One running eventbusd: broker + service + timer loop, driven by the :class:`Signals` events.

    ``source`` is where SIGHUP reads the settings again (None: nothing to reload);
    ``environ`` holds the service manager's variables (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``).
    """

    def __init__(
        self,
        settings: DaemonSettings,
        source: SettingsSource | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.socket_path = resolve_socket_path(settings.socket)
        self._source = source
        env = os.environ if environ is None else environ
        self._notifier = Notifier.from_environ(env)
        self._watchdog_s = watchdog_interval(env)

    async def run(self, signals: Signals) -> None:
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
        store = open_store(settings)
        service = Service(
            settings,
            broker.send,
            loop=loop,
            policy=policy,
            transport_counters=broker.counters,
            transport_pending=broker.pending,
            batch_peer=broker.batch_peer,
            store=store,
        )
        # bound first, so a second daemon on the socket is told so; nothing is read before recovery is done
        broker.start(loop, service.on_message, service.peer_gone, service.undelivered_later)
        metrics: MetricsServer | None = None
        cluster: Cluster | None = None
        try:
            if settings.cluster_nats_url:
                cluster = service.cluster = Cluster(settings, service)
            _recover(store, service, loop)
            if settings.metrics_listen is not None:
                metrics = await serve_metrics(settings.metrics_listen, service)
        except BaseException:
            broker.close()
            store.close()
            raise
        helpers = [
            loop.create_task(self._tick(service)),
            loop.create_task(keep_manager_informed(self._notifier, service, self._watchdog_s)),
            loop.create_task(on_reload(signals, self._notifier, service, lambda: self._reload(service))),
        ]
        if cluster is not None:
            helpers.append(loop.create_task(cluster.run()))
        log.info("eventbusd %s ready on %s (strategy %s)", __version__, self.socket_path, settings.strategy)
        self._notifier.send("READY=1", f"STATUS={status_line(service)}")
        try:
            await signals.stop.wait()
            self._notifier.send("STOPPING=1", f"STATUS={status_line(service)}")
            await wind_down(service, self.settings.shutdown_grace_s, signals.stop_now)
        finally:
            for helper in helpers:
                helper.cancel()
                try:
                    await helper
                except asyncio.CancelledError:
                    pass
                except Exception:  # a crashed helper must not skip the cleanup below
                    log.exception("a background task of the daemon failed")
            if metrics is not None:
                await metrics.close()
            if cluster is not None:
                await cluster.close()
            await _persist(service, store)
            refused = service.refuse_waiters()
            broker.close()
            store.close()
            self._notifier.close()
            _final_report(service, refused)

    def _reload(self, service: Service) -> None:
        if self._source is None:
            log.warning("SIGHUP: no settings source to reload from")
            return
        settings = reload(self._source, service, time.time())
        if settings is not None:
            self.settings = settings

    async def _tick(self, service: Service) -> None:
        """Fire timers until cancelled (also while stopping: attempt timeouts still apply)."""
        interval = self.settings.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                service.tick()
            except Exception:  # a bug in one timer must not stop all timers
                log.exception("error while firing timers")


def _recover(store: Store, service: Service, loop: asyncio.AbstractEventLoop) -> None:
    """Read back what the store kept and hand it to the service, before any peer is served."""
    started = time.perf_counter()
    # every object read here lives on: collecting while they pile up would walk them again and again
    gc.disable()
    try:
        recovered = store.recover()
        store.start(loop)
        service.restore(recovered)
    finally:
        gc.enable()
    gc.freeze()
    if store.durable:
        states: dict[str, int] = {}
        for task in recovered.tasks:
            states[task.state.value] = states.get(task.state.value, 0) + 1
        log.info(
            "state %s (durability %s): %d unfinished tasks taken back (%s), %d finished kept, in %.3f s",
            store.status().get("path"),
            store.durability,
            len(recovered.tasks),
            ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none",
            recovered.finished,
            time.perf_counter() - started,
        )


async def _persist(service: Service, store: Store) -> None:
    """Commit what is left and send what waited on it, unless the disk fails for ``PERSIST_S``."""
    service.flush()
    try:
        await asyncio.wait_for(store.flush(), PERSIST_S)
    except TimeoutError:
        log.error("the last changes could not be written to the state database within %gs", PERSIST_S)


def _final_report(service: Service, refused: int) -> None:
    snap = service.distributor.snapshot(time.time())
    log.info(
        "eventbusd stopped: %d tasks submitted, %d succeeded, %d failed, %d queued, %d in flight abandoned, "
        "%d waiting requests answered shutting_down, %d bad frames",
        snap["tasks_submitted"],
        snap["tasks_succeeded"],
        snap["tasks_failed"],
        snap["tasks_queued"],
        snap["tasks_in_flight"],
        refused,
        service.bad_frames,
    )
    for line in report.log_lines(report.build(service.distributor, service.started_at, time.time())):
        log.info("%s", line)


def access_policy(settings: DaemonSettings) -> AccessPolicy:
    """Who the daemon serves: its own uid, root, and the allowed uids and groups of the settings."""
    return AccessPolicy.build(os.getuid(), settings.allowed_uids, settings.allowed_gids, settings.admin_uids)


async def _serve(settings: DaemonSettings, source: SettingsSource | None) -> None:
    loop = asyncio.get_running_loop()
    signals = Signals()
    signals.install(loop)
    try:
        await Daemon(settings, source).run(signals)
    finally:
        signals.remove(loop)


def run_daemon(settings: DaemonSettings, source: SettingsSource | None = None) -> None:
    """Run eventbusd in the foreground until SIGTERM or SIGINT; SIGHUP re-reads ``source``."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings, source))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    envvar="EVENTBUS_CONFIG",
    help="TOML settings file (see config/eventbusd.toml) [env EVENTBUS_CONFIG; "
    "default /etc/eventbus/eventbusd.toml when it exists]",
)
@click_options(DaemonSettings)
@click.option("--no-durable", is_flag=True, help="keep tasks in memory only: the same as --durability none")
@click.option(
    "--check-state", is_flag=True, help="check the state database's integrity, print one line and exit (1: damaged)"
)
@click.version_option(__version__, prog_name="eventbusd")
def main(config_file: Path | None, no_durable: bool, check_state: bool, **flags: Any) -> None:
    """Run the eventbus daemon in the foreground.

    Example: eventbusd --socket /tmp/eb.sock --log-level debug
    """
    if no_durable:
        flags["durability"] = "none"
    try:
        source = SettingsSource(config_file, flags)
        settings = source.load()
        if check_state:
            sound, line = check(settings.state_dir or default_state_dir())
            click.echo(line if sound else f"eventbusd: error: {line}", err=not sound)
            sys.exit(EXIT_OK if sound else 1)
        setup_logging(settings.log_level, "eventbusd")
        # a write past a file size limit fails (the store reports it) instead of killing the daemon
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        fix_mmap_threshold()
        tune_gc()
        run_daemon(settings, source)
    except ConfigError as exc:
        click.echo(f"eventbusd: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except EventBusError as exc:
        click.echo(f"eventbusd: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(EXIT_OK)


def run() -> None:
    """Console entry point of eventbusd: usage errors are one line, exit 2."""
    run_command(main, "eventbusd")

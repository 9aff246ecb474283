"""eventbus-collector: run a collector (built-in, entry point, or module:Class) against eventbusd."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import logging
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import click
import uvloop

from collectors.builtin import BUILTINS
from collectors.runtime import CollectorRuntime
from collectors.sdk import Collector
from collectors.supervisor import Supervisor
from distributor.models import AttrValue
from eventbus.clitypes import FiniteFloatRange, run_command
from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_USAGE, exit_code_for
from eventbus.logs import setup_logging
from eventbus.settings import CollectorSettings, click_options, load_settings

ENTRY_POINT_GROUP = "eventbus.collectors"


class TargetError(Exception):
    """TARGET names no collector class."""


def _load(spec: str) -> type[Collector]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj = getattr(module, attr)
    if not (isinstance(obj, type) and issubclass(obj, Collector)):
        raise TargetError(f"{spec} is not a Collector subclass")
    return obj


def resolve_target(target: str) -> type[Collector]:
    """A built-in name, an entry point in group ``eventbus.collectors``, or ``module:Class``."""
    tried = [f"built-ins ({', '.join(sorted(BUILTINS))})"]
    if target in BUILTINS:
        return _load(BUILTINS[target])
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == target:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Collector):
                return obj
            raise TargetError(f"entry point {target!r} ({ep.value}) is not a Collector subclass")
    tried.append(f"entry points in group {ENTRY_POINT_GROUP!r}")
    if ":" in target:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would: modules beside you are found
        try:
            return _load(target)
        except (ImportError, AttributeError) as exc:
            tried.append(f"import {target} ({exc})")
    else:
        tried.append("module:Class (no ':' in the target)")
    raise TargetError(f"no collector named {target!r}; tried {'; '.join(tried)}")


def parse_attr(text: str) -> tuple[str, AttrValue]:
    """``KEY=VALUE``; numbers and true/false become typed values."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--attr")
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, raw


def default_collector_id(collector_type: str) -> str:
    host = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().split(".")[0].lower()) or "host"
    return f"{collector_type}-{host}-{os.getpid()}"[:64]


async def _serve(runtime: CollectorRuntime) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.run(stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run eventbus collectors."""


@main.command()
@click.argument("target")
@click.option("--id", "collector_id", help="collector id (default TYPE-HOST-PID)")
@click.option("--concurrency", type=click.IntRange(min=1), help="max concurrent tasks (default: the class's)")
@click.option("--attr", "attrs", multiple=True, help="attribute KEY=VALUE (repeatable), e.g. --attr skill=8")
@click.option("--time-scale", type=FiniteFloatRange(min=0), help="skilled: seconds of work per difficulty point")
@click_options(CollectorSettings)
def run(
    target: str,
    collector_id: str | None,
    concurrency: int | None,
    attrs: tuple[str, ...],
    time_scale: float | None,
    **flags: Any,
) -> None:
    """Run TARGET: a built-in (demo), an installed entry point, or module:Class.

    Example: eventbus-collector run demo --concurrency 8
    """
    attributes = dict(parse_attr(a) for a in attrs)
    if time_scale is not None:
        attributes["time_scale"] = time_scale
    try:
        cls = resolve_target(target)
    except TargetError as exc:
        click.echo(f"eventbus-collector: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        settings = load_settings(CollectorSettings, flags=flags)
        setup_logging(settings.log_level, "eventbus-collector")
        runtime = CollectorRuntime(
            cls(attributes),
            collector_id=collector_id or default_collector_id(cls.collector_type),
            socket=str(settings.socket) if settings.socket else None,
            concurrency=concurrency,
            request_timeout_s=settings.request_timeout_s,
            shutdown_grace_s=settings.shutdown_grace_s,
        )
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(runtime))
    except EventBusError as exc:
        click.echo(f"eventbus-collector: error: {exc}", err=True)
        sys.exit(exit_code_for(exc.code))
    _exit_despite_stuck_threads()
    sys.exit(EXIT_OK)


def _exit_despite_stuck_threads() -> None:
    """Sync operations that ignore cancellation would keep the process alive at exit: don't wait for them."""
    stuck = [t for t in threading.enumerate() if t.name.startswith("op_") and t.is_alive()]
    for thread in stuck:
        thread.join(0.5)
    if any(t.is_alive() for t in stuck):
        logging.getLogger(__name__).warning("operations still running in threads are abandoned at exit")
        logging.shutdown()
        os._exit(EXIT_OK)


@main.command()
@click.argument("target")
@click.option("--min", "minimum", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--max", "maximum", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--target-utilization",
    type=FiniteFloatRange(0.05, 1.0),
    default=0.7,
    show_default=True,
    help="(busy slots + queued tasks) / slots to aim for",
)
@click.option("--interval", type=FiniteFloatRange(min=0.05), default=2.0, show_default=True, help="seconds")
@click.option("--concurrency", type=click.IntRange(min=1), help="max concurrent tasks per collector")
@click.option("--attr", "attrs", multiple=True, help="attribute KEY=VALUE for every collector (repeatable)")
@click.option("--socket", type=click.Path(path_type=Path), help="daemon socket path [env EVENTBUS_SOCKET]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def supervise(
    target: str,
    minimum: int,
    maximum: int,
    target_utilization: float,
    interval: float,
    concurrency: int | None,
    attrs: tuple[str, ...],
    socket: Path | None,
    log_level: str,
) -> None:
    """Keep between --min and --max collectors of TARGET, scaled on the daemon's figures.

    Example: eventbus-collector supervise demo --min 1 --max 8 --target-utilization 0.7
    """
    if minimum > maximum:
        raise click.BadParameter(f"--min {minimum} is above --max {maximum}", param_hint="--min")
    try:
        cls = resolve_target(target)
    except TargetError as exc:
        click.echo(f"eventbus-collector: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    setup_logging(log_level, "eventbus-collector")
    child_args = ["--log-level", log_level]
    for attr in attrs:
        parse_attr(attr)  # a bad one is reported now, not by every child
        child_args += ["--attr", attr]
    if concurrency:
        child_args += ["--concurrency", str(concurrency)]
    supervisor = Supervisor(
        target=target,
        operations=frozenset(cls.operations()),
        slots_per_child=concurrency or cls.max_concurrent_tasks,
        minimum=minimum,
        maximum=maximum,
        target_utilization=target_utilization,
        interval_s=interval,
        socket=str(socket) if socket else None,
        child_args=child_args,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    supervisor.run(stop)
    sys.exit(EXIT_OK)


@main.command("list")
def list_collectors() -> None:
    """Show the collectors that can be run and their operations."""
    names = dict(BUILTINS)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    for name, spec in sorted(names.items()):
        try:
            ops = ", ".join(sorted(_load(spec).operations()))
        except Exception as exc:  # a broken plugin must not hide the others
            ops = f"(cannot load: {exc})"
        click.echo(f"{name:12} {spec}  operations: {ops}")


if __name__ == "__main__":
    main()


def run_cli() -> None:
    """Console entry point of eventbus-collector: usage errors are one line, exit 2."""
    run_command(main, "eventbus-collector")

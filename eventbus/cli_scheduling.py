"""eventbusctl commands beyond single tasks: ``limit`` (rate limits), ``schedule`` (periodic), ``cluster``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from distributor.errors import InvalidRequest
from distributor.limits import parse_rate
from distributor.schedules import ScheduleSpec, parse_every, zone
from eventbus.clictx import Ctx, emit, run
from eventbus.cliformat import cluster_text, iso, limit_table, schedule_table, schedule_text
from eventbus.clitypes import FiniteFloatRange, check_constraints, payload_value

_KIND = {False: "operation", True: "collector_type"}


def _checked(check: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback that checks a value as the daemon will, so a bad one is a usage error here."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                check(value)
            except InvalidRequest as exc:
                raise click.BadParameter(exc.message.replace("schedule 'x': ", ""), ctx, param) from None
        return value

    return callback


@click.group()
def limit() -> None:
    """Rate limits: per operation, or (--type) per collector type.

    \b
    A limit caps attempts in flight (--max-in-flight N) and dispatches per window
    (--rate N/PERIOD: a token bucket of N refilled over PERIOD; 10/s, 100/60s, 5/m,
    1000/h). A held task waits in its queue; other operations go on. Limits set here
    are kept across restarts; those of the config file ([limits.NAME],
    [type_limits.TYPE]) apply where none is set here.

    Example: eventbusctl limit set enumerate_processes --rate 10/s --max-in-flight 4
    """


@limit.command("set")
@click.argument("name")
@click.option(
    "--rate", callback=_checked(parse_rate), metavar="N/PERIOD", help="at most N dispatches per PERIOD (10/s, 5/m)"
)
@click.option("--max-in-flight", type=click.IntRange(1, 1_000_000), help="at most N attempts at once")
@click.option("--type", "is_type", is_flag=True, help="NAME is a collector type, not an operation")
@click.pass_obj
def limit_set(ctx: Ctx, name: str, rate: str | None, max_in_flight: int | None, is_type: bool) -> None:
    """Set (replace) the limit of an operation or collector type.

    Example: eventbusctl limit set enumerate_processes --rate 10/s --max-in-flight 4
    """
    if rate is None and max_in_flight is None:
        raise click.UsageError("give --rate, --max-in-flight or both")
    kind = _KIND[is_type]
    view = run(ctx, lambda c: c.set_limit(name, rate=rate, max_in_flight=max_in_flight, kind=kind))
    emit(ctx, view, lambda: click.echo(limit_table([view])))


@limit.command("list")
@click.pass_obj
def limit_list(ctx: Ctx) -> None:
    """The limits in force: rate, cap, attempts under each, tokens left, what they held back, source."""
    views = run(ctx, lambda c: c.limits())
    emit(ctx, views, lambda: click.echo(limit_table(views)))


@limit.command("rm")
@click.argument("name")
@click.option("--type", "is_type", is_flag=True, help="NAME is a collector type, not an operation")
@click.pass_obj
def limit_rm(ctx: Ctx, name: str, is_type: bool) -> None:
    """Remove a limit set with 'limit set' (the config file's limit, if any, applies again)."""
    kind = _KIND[is_type]
    views = run(ctx, lambda c: c.remove_limit(name, kind=kind))
    emit(ctx, views, lambda: click.echo(limit_table(views)))


@click.group()
def schedule() -> None:
    """Periodic schedules: an operation run every N seconds or on a cron expression.

    \b
    Each due time submits one ordinary task (id sched.NAME.<due ms>), once: a run
    missed while the daemon was down, or across a clock jump, is caught up with
    one run, not one per missed time; the clock going back never repeats one.
    While the previous run is unfinished a due time is skipped (--overlap skip,
    the default) or runs anyway (--overlap queue). Schedules are kept across
    restarts; those of the config file ([schedules.NAME]) are changed there.

    Example: eventbusctl schedule add procs enumerate_processes --every 30s
    """


@schedule.command("add")
@click.argument("name")
@click.argument("operation")
@click.option(
    "--every",
    callback=_checked(lambda v: parse_every(v)),
    help="period: 30s, 5m, 1h, 1d (due at its multiples since the epoch)",
)
@click.option(
    "--cron",
    callback=_checked(lambda v: ScheduleSpec(name="x", operation="x", cron=v)),
    help="five fields, e.g. '*/5 * * * *', in --timezone",
)
@click.option(
    "--timezone", callback=_checked(zone), help="IANA zone of --cron, e.g. Europe/Berlin [default: the daemon's]"
)
@click.option("--payload", help="JSON payload of each run, @FILE, or - for stdin")
@click.option("--priority", type=click.IntRange(1, 10), help="1-10 [default 5]")
@click.option("--timeout-ms", type=click.IntRange(min=1), help="run time limit per attempt [default 30000]")
@click.option("--require", "constraints", callback=check_constraints, multiple=True, help="e.g. 'skill>=5'")
@click.option("--jitter-s", type=FiniteFloatRange(0, 86400), help="delay each run by up to N seconds at random")
@click.option("--overlap", type=click.Choice(["skip", "queue"]), help="while the last run is unfinished [skip]")
@click.option("--replace", is_flag=True, help="replace a schedule of that name")
@click.pass_obj
def schedule_add(
    ctx: Ctx,
    name: str,
    operation: str,
    every: str | None,
    cron: str | None,
    timezone: str | None,
    payload: str | None,
    priority: int | None,
    timeout_ms: int | None,
    constraints: tuple[str, ...],
    jitter_s: float | None,
    overlap: str | None,
    replace: bool,
) -> None:
    """Add a periodic schedule.

    Example: eventbusctl schedule add procs enumerate_processes --every 30s --jitter-s 2

    Example: eventbusctl schedule add nightly compute --cron '30 2 * * *' --timezone Europe/Berlin
    """
    if (every is None) == (cron is None):
        raise click.UsageError("give one of --every or --cron")
    fields: dict[str, Any] = {
        "every": every,
        "cron": cron,
        "timezone": timezone,
        "payload": payload_value(payload),
        "priority": priority,
        "timeout_ms": timeout_ms,
        "constraints": list(constraints) or None,
        "jitter_s": jitter_s,
        "overlap": overlap,
    }
    flags = {"every": "--every", "cron": "--cron", "timezone": "--timezone", "jitter_s": "--jitter-s"}
    view = run(ctx, lambda c: c.add_schedule(name, operation, replace=replace, **fields), flags)
    emit(ctx, view, lambda: click.echo(schedule_text(view)))


@schedule.command("list")
@click.pass_obj
def schedule_list(ctx: Ctx) -> None:
    """Every schedule: when it runs, when next, its last run."""
    views = run(ctx, lambda c: c.schedules())
    emit(ctx, views, lambda: click.echo(schedule_table(views)))


@schedule.command("show")
@click.argument("name")
@click.pass_obj
def schedule_show(ctx: Ctx, name: str) -> None:
    """A schedule and its last runs, with their tasks' states."""
    view = run(ctx, lambda c: c.schedule(name))
    emit(ctx, view, lambda: click.echo(schedule_text(view)))


@schedule.command("pause")
@click.argument("name")
@click.pass_obj
def schedule_pause(ctx: Ctx, name: str) -> None:
    """Stop a schedule's runs until it is resumed (runs already submitted go on)."""
    view = run(ctx, lambda c: c.pause_schedule(name))
    emit(ctx, view, lambda: click.echo(f"schedule {name} paused"))


@schedule.command("resume")
@click.argument("name")
@click.pass_obj
def schedule_resume(ctx: Ctx, name: str) -> None:
    """Resume a paused schedule: next due after now (the paused time is not caught up)."""
    view = run(ctx, lambda c: c.resume_schedule(name))
    emit(ctx, view, lambda: click.echo(f"schedule {name} resumed, next due {iso(view['next_due'])}"))


@schedule.command("rm")
@click.argument("name")
@click.pass_obj
def schedule_rm(ctx: Ctx, name: str) -> None:
    """Remove a schedule added with 'schedule add' (runs already submitted go on)."""
    run(ctx, lambda c: c.remove_schedule(name))
    emit(ctx, {"removed": name}, lambda: click.echo(f"schedule {name} removed"))


@click.command()
@click.pass_obj
def cluster(ctx: Ctx) -> None:
    """The cluster as this daemon sees it: its node, the leader, NATS, every host's collectors and load,
    the totals, and the tasks waiting in the cluster's stream by operation.

    Example: eventbusctl cluster
    """
    view = run(ctx, lambda c: c.cluster())
    emit(ctx, view, lambda: click.echo(cluster_text(view)))

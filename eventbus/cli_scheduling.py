"""eventbusctl commands about when and how fast work runs: ``limit`` (rate limits)."""

from __future__ import annotations

import click

from distributor.errors import InvalidRequest
from distributor.limits import parse_rate
from eventbus.clictx import Ctx, emit, run
from eventbus.cliformat import limit_table

_KIND = {False: "operation", True: "collector_type"}


def _check_rate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_rate(value)
        except InvalidRequest as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
    return value


@click.group()
def limit() -> None:
    """Rate limits: per operation, or (--type) per collector type.

    \b
    A limit caps attempts in flight (--max-in-flight N) and dispatches per window
    (--rate N/PERIOD: a token bucket of N refilled over PERIOD; 10/s, 100/60s, 5/m,
    1000/h). A held task waits in its queue; other operations go on. Limits set here
    are kept across restarts; those of the config file ([limits.NAME],
    [type_limits.TYPE]) apply where none is set here.
    """


@limit.command("set")
@click.argument("name")
@click.option("--rate", callback=_check_rate, metavar="N/PERIOD", help="at most N dispatches per PERIOD (10/s, 5/m)")
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

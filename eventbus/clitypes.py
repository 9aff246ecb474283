"""click parameter types and the command group shared by the command lines."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from distributor.constraints import parse_constraint
from distributor.errors import InvalidRequest
from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_USAGE
from eventbus.paths import resolve_socket_path
from eventbus.settings import ClientSettings, load_settings
from eventbus.wire import MAX_PAYLOAD_DEPTH, depth


class FiniteFloatRange(click.FloatRange):
    """click's ``FloatRange`` that also refuses NaN and infinity.

    NaN compares false with any bound, so a plain ``FloatRange(min=0)`` lets
    it through, and ``inf`` passes every range without a maximum.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def wall_time(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An ISO 8601 date and time (``2026-12-01T09:30:00+01:00``, ``...Z``) as epoch seconds; local time without
    a UTC offset."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        message = f"{value!r} is not an ISO 8601 date and time (e.g. 2026-12-01T09:30:00Z)."
        raise click.BadParameter(message, ctx, param) from None


def check_constraints(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Check ``attribute op value`` constraints with the daemon's own parser before anything is sent."""
    for text in value:
        try:
            parse_constraint(text)
        except InvalidRequest as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
    return value


def _parse_payload(text: str | None) -> Any:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]}: {exc.strerror}", param_hint="--payload") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"invalid JSON: {exc}", param_hint="--payload") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--payload") from None


def read_specs(stream: Any, name: str) -> list[dict[str, Any]]:
    """Task specs from JSON lines (one object each, blank lines skipped); a bad line is a usage error naming it."""
    specs: list[dict[str, Any]] = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
        except RecursionError:
            spec = None
            levels = MAX_PAYLOAD_DEPTH + 1
        except ValueError as exc:  # JSONDecodeError too
            raise click.BadParameter(f"line {number}: invalid JSON: {exc}", param_hint=name) from None
        else:
            levels = depth(spec, MAX_PAYLOAD_DEPTH)
        if levels > MAX_PAYLOAD_DEPTH:
            raise click.BadParameter(f"line {number}: nests more than {MAX_PAYLOAD_DEPTH} levels", param_hint=name)
        if not isinstance(spec, dict):
            raise click.BadParameter(f"line {number}: a task spec must be a JSON object", param_hint=name)
        specs.append(spec)
    if not specs:
        raise click.BadParameter("no task spec (one JSON object per line)", param_hint=name)
    return specs


def _no_constant(name: str) -> NoReturn:
    # json.loads takes NaN and Infinity by default, though they are not JSON: refuse them (and so a typo)
    raise ValueError(f"{name} is not a valid payload value (only finite numbers are)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of the range of a float (only finite numbers are valid)")
    return number


def payload_value(text: str | None) -> Any:
    """The ``--payload`` value; one that nests deeper than a message may is a usage error."""
    limit = MAX_PAYLOAD_DEPTH
    try:
        value = _parse_payload(text)
    except RecursionError:  # the JSON parser's own limit, far deeper than the protocol's
        value = None
        levels = limit + 1
    else:
        levels = depth(value, limit)
    if levels > limit:
        raise click.BadParameter(
            f"nests more than {limit} levels of objects and arrays (the limit for a payload)", param_hint="--payload"
        )
    return value


#: ``meta`` key of the global flags as given, parsed before any of them takes effect (see ``SocketHelpGroup``)
_GIVEN = "eventbusctl.given"


class SocketHelpGroup(click.Group):
    """The command group, whose help ends with the socket path the given flags and environment select."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --help acts as soon as it is parsed: read --socket before, so the help can show its effect
        with contextlib.suppress(click.ClickException):
            ctx.meta[_GIVEN], _, _ = self.make_parser(ctx).parse_args(args=list(args))
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        given = ctx.meta.get(_GIVEN, {})
        try:
            settings = load_settings(ClientSettings, flags={k: given.get(k) for k in ClientSettings.model_fields})
            where = str(resolve_socket_path(settings.socket))
        except EventBusError as exc:
            where = f"none ({exc.message})"
        formatter.write_paragraph()
        formatter.write_text(f"Socket in effect: {where}")


def run_command(command: click.Command, prog: str, *, json_errors: bool = False) -> NoReturn:
    """Run a console command; a usage error is one line on stderr (and a JSON object with --json), exit 2.

    click's own block (Usage, Try, Error) is three lines; every eventbus command prints one.
    """
    try:
        command.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())  # a bare command: its help
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        message = exc.format_message()
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"{prog}: error: {message}{hint}", err=True)
        if json_errors and "--json" in sys.argv[1:]:
            click.echo(json.dumps({"error": {"code": "usage", "message": message}}))
        sys.exit(EXIT_USAGE)
    except click.Abort:
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(EXIT_OK)

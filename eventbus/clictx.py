"""What every eventbusctl command shares: its context (settings, --json), calling the daemon, printing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from eventbus.client import SyncClient
from eventbus.errors import EventBusError
from eventbus.exitcodes import exit_code_for
from eventbus.settings import ClientSettings


class Ctx:
    def __init__(self, settings: ClientSettings, as_json: bool) -> None:
        self.settings = settings
        self.json = as_json

    def client(self) -> SyncClient:
        return SyncClient(self.settings.socket, timeout=self.settings.timeout)


def fail(ctx: Ctx, code: str, message: str, exit_code: int) -> NoReturn:
    click.echo(f"eventbusctl: error: {message}", err=True)
    if ctx.json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}))
    sys.exit(exit_code)


def run(ctx: Ctx, call: Callable[[SyncClient], Any], flags: dict[str, str] | None = None) -> Any:
    """Call the daemon; every eventbus error becomes one line and its documented exit code.

    ``flags`` maps request fields to the options that set them, so a message about a field names the option.
    """
    try:
        with ctx.client() as client:
            return call(client)
    except EventBusError as exc:
        message = exc.message
        for field, flag in (flags or {}).items():
            if message.startswith((f"{field} ", f"{field}.", f"{field}:")):
                message = flag + message[len(field) :]
        fail(ctx, exc.code, message, exit_code_for(exc.code))


def emit(ctx: Ctx, data: Any, human: Callable[[], None]) -> None:
    if ctx.json:
        click.echo(json.dumps(data, default=str))
    else:
        human()

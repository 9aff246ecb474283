"""eventbusctl: the operator's command line. Parses, calls the client, formats; nothing more."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

import click

from distributor.models import CollectorInfo, TaskInfo, TaskState
from eventbus import cliformat
from eventbus import report as report_format
from eventbus.cli_scheduling import cluster, limit, schedule
from eventbus.clictx import Ctx as _Ctx
from eventbus.clictx import emit as _emit
from eventbus.clictx import fail as _fail
from eventbus.clictx import run as _run
from eventbus.client import SyncClient
from eventbus.clitypes import (
    FiniteFloatRange,
    SocketHelpGroup,
    check_constraints,
    payload_value,
    read_specs,
    run_command,
    wall_time,
)
from eventbus.errors import EventBusError
from eventbus.exitcodes import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TASK_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for,
)
from eventbus.messages import SUBSCRIPTION_DROPPED, TaskPage
from eventbus.settings import ClientSettings, click_options, load_settings


@click.group(cls=SocketHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click_options(ClientSettings)
@click.option("--json", "as_json", is_flag=True, help="machine-readable JSON output")
@click.pass_context
def main(click_ctx: click.Context, /, as_json: bool, **flags: Any) -> None:
    """Talk to a running eventbusd.

    Exit codes: 0 ok, 1 task failed/cancelled/expired, 2 usage, 3 daemon
    unreachable (or gone or restarted while waiting), 4 rejected by the
    daemon, 5 timed out.

    Example: eventbusctl --socket /run/eventbus/eventbus.sock status

    \b
    Shell completion (bash; zsh_source and fish_source likewise):
      eval "$(_EVENTBUSCTL_COMPLETE=bash_source eventbusctl)"
    """
    ctx = _Ctx(ClientSettings(), as_json)
    click_ctx.obj = ctx
    try:
        ctx.settings = load_settings(ClientSettings, flags=flags)
    except EventBusError as exc:
        _fail(ctx, exc.code, exc.message, EXIT_USAGE)


def run() -> None:
    """Console entry point: usage errors become one line (and a JSON object with --json), exit 2."""
    run_command(main, "eventbusctl", json_errors=True)


@main.command()
@click.argument("operation")
@click.option("--payload", help="JSON payload, @FILE to read it from a file, or - for stdin")
@click.option("--priority", type=click.IntRange(1, 10), help="1-10, higher first [default 5]")
@click.option("--timeout-ms", type=click.IntRange(min=1), help="run time limit per attempt [default 30000]")
@click.option("--deadline-s", type=FiniteFloatRange(min=0, min_open=True), help="expire if not done within N s")
@click.option("--delay-s", type=FiniteFloatRange(min=0), help="queue it only N seconds from now (scheduled until then)")
@click.option(
    "--at", callback=wall_time, metavar="ISO8601", help="queue it only at this time (local time without an offset)"
)
@click.option(
    "--require",
    "constraints",
    callback=check_constraints,
    multiple=True,
    help="attribute constraint, e.g. 'skill>=5' (repeatable)",
)
@click.option("--after", "depends_on", multiple=True, help="run only after this task succeeded (repeatable)")
@click.option("--id", "task_id", help="task id (generated when absent)")
@click.option(
    "--idempotency-key",
    help="submitting again with the same key (within idempotency_ttl_s) prints the first task's id, runs nothing new",
)
@click.option("--wait", is_flag=True, help="wait for the final result and print it")
@click.option(
    "--wait-timeout", type=FiniteFloatRange(min=0), default=None, help="give up waiting after N seconds (exit 5)"
)
@click.pass_obj
def submit(
    ctx: _Ctx,
    operation: str,
    payload: str | None,
    priority: int | None,
    timeout_ms: int | None,
    deadline_s: float | None,
    delay_s: float | None,
    at: float | None,
    constraints: tuple[str, ...],
    depends_on: tuple[str, ...],
    task_id: str | None,
    idempotency_key: str | None,
    wait: bool,
    wait_timeout: float | None,
) -> None:
    """Submit a task; print its id, or with --wait its result.

    Example: eventbusctl submit echo --payload '{"hello": 1}' --wait

    Example: eventbusctl submit solve --payload '{"difficulty": 7}' --require 'skill>=7' --deadline-s 60

    Example: eventbusctl submit echo --delay-s 30    (or --at 2026-12-24T18:00:00Z)
    """
    if delay_s is not None and at is not None:
        raise click.UsageError("--delay-s and --at both say when to run it: give one")
    value = payload_value(payload)
    now = time.time()
    deadline = now + deadline_s if deadline_s is not None else None
    not_before = now + delay_s if delay_s is not None else at
    if not_before is not None and deadline is not None and not_before >= deadline:
        when = f"--delay-s {delay_s:g}" if delay_s is not None else "--at"
        raise click.UsageError(f"{when} is not before --deadline-s {deadline_s:g}: the task could never run")

    fields: dict[str, Any] = {
        "priority": priority,
        "timeout_ms": timeout_ms,
        "deadline": deadline,
        "not_before": not_before,
        "task_id": task_id,
        "constraints": list(constraints) or None,
        "depends_on": list(depends_on) or None,
        "idempotency_key": idempotency_key,
    }

    def unoffered(tid: str) -> None:
        click.echo(
            f"eventbusctl: no live collector offers {operation!r}: task {tid} stays queued until one does "
            "(still waiting; --wait-timeout N gives up after N seconds)",
            err=True,
        )

    def call(client: SyncClient) -> str | TaskInfo:
        if not wait:
            return client.submit(operation, value, **fields)
        return client.run(operation, value, timeout=wait_timeout, on_unoffered=unoffered, **fields)

    flags = {"depends_on": "--after", "constraints": "--require", "deadline": "--deadline-s"}
    out = _run(ctx, call, {**flags, "idempotency_key": "--idempotency-key"})
    if isinstance(out, TaskInfo):
        _print_final(ctx, out)
    else:
        _emit(ctx, {"task_id": out}, lambda: click.echo(out))


@main.command()
@click.argument("source", type=click.File("r"), metavar="FILE|-")
@click.option("--wait", is_flag=True, help="wait for every task and print the results in input order")
@click.option(
    "--wait-timeout", type=FiniteFloatRange(min=0, min_open=True), help="with --wait: give up after N seconds"
)
@click.pass_obj
def batch(ctx: _Ctx, source: TextIO, wait: bool, wait_timeout: float | None) -> None:
    """Submit many tasks at once: one JSON object per line, each a submit body.

    \b
    A spec has the fields of control.task.submit (docs/PROTOCOL.md):
      {"operation": "echo", "payload": {"n": 1}, "priority": 7, "task_id": "job-1"}
    Prints one JSON line per spec, in input order: {"index", "task_id"}, or
    {"index", "error": {code, message}} for a spec the daemon refused (the
    others are still taken). With --wait: {"index", "task_id", "state",
    "value"} per task once final (with --json, the whole task record).

    Exit 0 when every spec was taken (and, with --wait, succeeded); else one
    line on stderr counts what went wrong and names the first, and the exit
    code is the gravest: 3 the daemon went away (those tasks' fate is
    unknown), 4 a spec was refused, 5 --wait-timeout passed first
    (unfinished tasks print in their current state), 1 a task failed, was
    cancelled or expired.

    Example: eventbusctl batch jobs.jsonl --wait
    """
    specs = read_specs(source, "FILE")
    #: what went wrong, by exit code: (how many, the first one's error code and message)
    trouble: dict[int, tuple[int, str, str]] = {}

    def note(exit_code: int, code: str, message: str) -> None:
        count, first_code, first = trouble.get(exit_code, (0, code, message))
        trouble[exit_code] = (count + 1, first_code, first)

    def line(index: int, outcome: str | TaskInfo | EventBusError) -> None:
        if isinstance(outcome, EventBusError):
            note(exit_code_for(outcome.code), outcome.code, outcome.message)
            item: dict[str, Any] = {"index": index, "error": {"code": outcome.code, "message": outcome.message}}
        elif isinstance(outcome, str):
            item = {"index": index, "task_id": outcome}
        else:
            if not outcome.state.terminal:
                note(EXIT_TIMEOUT, "timeout", f"task {outcome.task_id} is still {outcome.state.value}")
            elif outcome.state is not TaskState.SUCCEEDED:
                err = outcome.error
                why = f"{err.type}: {err.message}" if err else "no error recorded"
                note(EXIT_TASK_FAILED, "task_failed", f"task {outcome.task_id} {outcome.state.value}: {why}")
            item = {"index": index, **(outcome.model_dump(mode="json") if ctx.json else cliformat.outcome(outcome))}
        click.echo(json.dumps(item, default=repr))

    def call(client: SyncClient) -> None:
        outcomes = client.run_many(specs, timeout=wait_timeout) if wait else iter(client.submit_many(specs))
        for index, outcome in enumerate(outcomes):
            line(index, outcome)

    _run(ctx, call)
    for exit_code in (EXIT_UNREACHABLE, EXIT_REJECTED, EXIT_TIMEOUT, EXIT_USAGE):
        if exit_code in trouble:
            count, code, first = trouble[exit_code]
            _fail(
                ctx,
                code,
                f"{count} of {len(specs)} task specs: {_BATCH_TROUBLE[exit_code]} (first: {first})",
                exit_code,
            )
    if EXIT_TASK_FAILED in trouble:
        count, _, first = trouble[EXIT_TASK_FAILED]
        click.echo(f"eventbusctl: {count} of {len(specs)} tasks did not succeed (first: {first})", err=True)
        sys.exit(EXIT_TASK_FAILED)


_BATCH_TROUBLE = {
    EXIT_UNREACHABLE: "fate unknown, the daemon went away",
    EXIT_REJECTED: "refused by the daemon",
    EXIT_TIMEOUT: "not final within --wait-timeout",
    EXIT_USAGE: "not taken",
}


def _print_final(ctx: _Ctx, info: TaskInfo) -> None:
    """Print a final task: its value on success, its error otherwise (exit 1)."""
    ok = info.state is TaskState.SUCCEEDED
    if ctx.json:
        click.echo(info.model_dump_json())
    elif ok:
        click.echo(json.dumps(info.result.value if info.result else None, default=repr))
    if not ok:
        _exit_unsuccessful(info)


def _exit_unsuccessful(info: TaskInfo) -> NoReturn:
    """One line on stderr saying why the task did not succeed, then exit 1."""
    err = info.error
    reason = f"{err.type}: {err.message}" if err else "no error recorded"
    click.echo(f"eventbusctl: task {info.task_id} {info.state.value}: {reason} ({cliformat.attempts(info)})", err=True)
    sys.exit(EXIT_TASK_FAILED)


@main.command()
@click.argument("task_id")
@click.pass_obj
def task(ctx: _Ctx, task_id: str) -> None:
    """Show a task's state, attempts, times and result (exit 1 if it failed, was cancelled or expired).

    Example: eventbusctl task 3f2a9c0e1b7d4e55a0c1d2e3f4a5b6c7
    """
    info: TaskInfo = _run(ctx, lambda c: c.get(task_id))
    if ctx.json:
        click.echo(info.model_dump_json())
    else:
        click.echo(cliformat.task_text(info))
    if info.state in (TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED):
        _exit_unsuccessful(info)


@main.command()
@click.option("--state", type=click.Choice([s.value for s in TaskState]), help="only tasks in this state")
@click.option("--operation", help="only tasks of this operation")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after-cursor", help="continue a listing where it stopped (the cursor it printed)")
@click.pass_obj
def tasks(ctx: _Ctx, state: str | None, operation: str | None, limit: int, after_cursor: str | None) -> None:
    """List known tasks, newest first (in as many requests as it takes).

    When more tasks match than --limit, the cursor to continue from is
    printed to stderr.

    Example: eventbusctl tasks --state failed --operation echo --limit 20
    """
    if after_cursor is not None and not (after_cursor.isascii() and after_cursor.isdigit()):
        raise click.BadParameter("is not a cursor this command printed", param_hint="--after-cursor")
    page: TaskPage = _run(ctx, lambda c: c.task_page(state, operation, limit, after=after_cursor))
    infos = page.tasks
    if page.next is not None:
        click.echo(f"eventbusctl: more tasks: continue with --after-cursor {page.next}", err=True)

    def human() -> None:
        for i in infos:
            took = f"{i.finished_at - i.created_at:.3f}s" if i.finished_at else "-"
            click.echo(
                f"{i.task_id}  {i.operation:12} {i.state.value:10} p{cliformat.priority(i)}  attempt={i.attempt}  "
                f"collector={i.collector_id or '-'}  took={took}"
            )

    _emit(ctx, [i.model_dump(mode="json") for i in infos], human)


@main.command()
@click.argument("name", required=False)
@click.pass_obj
def strategy(ctx: _Ctx, name: str | None) -> None:
    """Show the routing strategy, or switch to NAME (round_robin, least_loaded, first_available, random, best_fit).

    Example: eventbusctl strategy best_fit
    """
    current = _run(ctx, lambda c: c.strategy(name))
    _emit(ctx, {"strategy": current}, lambda: click.echo(current))


def _set_status(ctx: _Ctx, collector_id: str, call: Callable[[SyncClient], CollectorInfo]) -> None:
    info = _run(ctx, call)
    _emit(ctx, info.model_dump(mode="json"), lambda: click.echo(f"{collector_id} {info.status.value}"))


@main.command()
@click.argument("collector_id")
@click.pass_obj
def drain(ctx: _Ctx, collector_id: str) -> None:
    """Stop sending new tasks to a collector; its running tasks finish.

    Example: eventbusctl drain demo-1
    """
    _set_status(ctx, collector_id, lambda c: c.drain(collector_id))


@main.command()
@click.argument("collector_id")
@click.pass_obj
def undrain(ctx: _Ctx, collector_id: str) -> None:
    """Resume sending tasks to a drained collector.

    Example: eventbusctl undrain demo-1
    """
    _set_status(ctx, collector_id, lambda c: c.undrain(collector_id))


@main.command()
@click.argument("collector_id", required=False)
@click.option("--all", "every", is_flag=True, help="stop every registered collector")
@click.pass_obj
def stop(ctx: _Ctx, collector_id: str | None, every: bool) -> None:
    """Ask a collector (or --all) to finish its running tasks, deregister and exit.

    Example: eventbusctl stop --all
    """
    if bool(collector_id) == every:
        raise click.UsageError("give a COLLECTOR_ID or --all (not both)")
    asked = _run(ctx, lambda c: c.stop_collectors(collector_id))
    _emit(ctx, {"collectors": asked}, lambda: click.echo("\n".join(asked) or "no collectors"))


@main.command()
@click.argument("task_id")
@click.pass_obj
def cancel(ctx: _Ctx, task_id: str) -> None:
    """Cancel a queued or running task.

    Example: eventbusctl cancel 3f2a9c0e1b7d4e55a0c1d2e3f4a5b6c7
    """
    info: TaskInfo = _run(ctx, lambda c: c.cancel(task_id))
    _emit(ctx, info.model_dump(mode="json"), lambda: click.echo(f"{task_id} {info.state.value}"))


@main.command()
@click.pass_obj
def status(ctx: _Ctx) -> None:
    """Version, uptime, strategy, collectors, queued and in-flight tasks, durability.

    Example: eventbusctl status
    """
    data = _run(ctx, lambda c: c.status())

    def human() -> None:
        for key in ("version", "socket", "strategy", "collectors", "active_collectors", "tasks_queued"):
            click.echo(f"{key:18} {data[key]}")
        click.echo(f"{'tasks_in_flight':18} {data['tasks_in_flight']}")
        click.echo(f"{'uptime_s':18} {data['uptime_s']:.1f}")
        # (a daemon before the state database says durable only)
        mode = data.get("durability", "fsync" if data["durable"] else "none")
        click.echo(f"{'durable':18} {'on' if data['durable'] else 'off'} (durability {mode})")
        if data.get("storage_available") is False:
            click.echo(f"{'storage':18} UNAVAILABLE: the state database cannot be written; submissions are refused")
        click.echo(f"{'cluster':18} {cliformat.cluster_line(data.get('cluster') or {'enabled': False})}")

    _emit(ctx, data, human)


@main.command()
@click.pass_obj
def collectors(ctx: _Ctx) -> None:
    """Each collector: id, type, operations, attributes, load, status, heartbeat age, success rate.

    Example: eventbusctl --json collectors
    """
    infos = _run(ctx, lambda c: c.collectors())
    now = time.time()

    def human() -> None:
        if not infos:
            click.echo("no collectors registered")
        for c in infos:
            rate = "-" if c.success_rate is None else f"{c.success_rate:.0%}"
            attrs = ",".join(f"{k}={v}" for k, v in c.attributes.items()) or "-"
            click.echo(
                f"{c.collector_id}  type={c.collector_type}  ops={','.join(c.supported_operations)}  "
                f"attrs={attrs}  load={c.current_tasks}/{c.max_concurrent_tasks}  {c.status.value}  "
                f"heartbeat={now - c.last_heartbeat:.1f}s ago  success={rate}  util={c.utilization:.0%}"
            )

    _emit(ctx, [c.model_dump(mode="json") for c in infos], human)


@main.command()
@click.pass_obj
def stats(ctx: _Ctx) -> None:
    """Counters, queue depths and latency percentiles.

    Example: eventbusctl stats
    """
    data = _run(ctx, lambda c: c.stats())
    _emit(ctx, data, lambda: click.echo(cliformat.stats_text(data)))


@main.command()
@click.pass_obj
def report(ctx: _Ctx) -> None:
    """Completion-time percentiles per operation, collectors' utilization and success, errors by type, uptime.

    Example: eventbusctl report
    """
    data = _run(ctx, lambda c: c.report())
    _emit(ctx, data, lambda: click.echo(report_format.table(data)))


@main.command()
@click.pass_obj
def metrics(ctx: _Ctx) -> None:
    """The daemon's metrics in the Prometheus text format (as served on metrics_listen).

    Example: eventbusctl metrics | grep '^eventbus_tasks_'
    """
    text: str = _run(ctx, lambda c: c.metrics())
    _emit(ctx, {"text": text}, lambda: click.echo(text, nl=False))


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--count", type=click.IntRange(min=1), default=None, help="exit after N events")
@click.pass_obj
def watch(ctx: _Ctx, patterns: tuple[str, ...], count: int | None) -> None:
    """Stream events matching PATTERNS (default events.#) until interrupted.

    A watcher that falls behind is told on stderr how many events it lost (with --json, also as a
    control.subscription.dropped line in the stream, where the gap is).

    Example: eventbusctl watch 'events.task.+.sleep' --count 10
    """

    def call(client: SyncClient) -> None:
        client.subscribe(*(patterns or ("events.#",)))
        seen = 0
        for topic, body in client.events():
            if ctx.json:
                click.echo(json.dumps({"topic": topic, "body": body}, default=str))
            if topic == SUBSCRIPTION_DROPPED:
                click.echo(
                    f"eventbusctl: dropped {body.get('dropped')} events: this watcher fell behind "
                    "and the daemon's buffer for it was full",
                    err=True,
                )
                continue
            if not ctx.json:
                detail = " ".join(f"{k}={v}" for k, v in body.items() if k not in ("at",))
                click.echo(f"{time.strftime('%H:%M:%S')} {topic} {detail}")
            seen += 1
            if count is not None and seen >= count:
                return

    with contextlib.suppress(KeyboardInterrupt):
        _run(ctx, call)
    sys.exit(EXIT_OK)


@main.command()
@click.option("--collectors", type=click.IntRange(1, 64), default=1, show_default=True, help="demo collectors")
@click.option(
    "--idle-collectors",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="collectors that only register and heartbeat (all held by one helper process)",
)
@click.option("--clients", type=click.IntRange(1, 64), default=1, show_default=True, help="client processes")
@click.option(
    "--in-flight", type=click.IntRange(1, 10_000), default=100, show_default=True, help="tasks each client keeps open"
)
@click.option("--tasks", type=click.IntRange(min=1), help="tasks measured, shared by the clients [default 5000]")
@click.option("--duration", type=FiniteFloatRange(min=0, min_open=True), help="measure for S seconds instead")
@click.option("--payload-bytes", type=click.IntRange(0, 256 << 10), default=64, show_default=True)
@click.option("--operation", type=click.Choice(["echo"]), default="echo", show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="also run the raw pyzmq baseline")
@click.option(
    "--durability",
    metavar="MODE[,MODE]",
    multiple=True,
    help="the private eventbusd's durability: fsync, process or none (repeatable or comma-separated: "
    "one run per mode, each on a fresh daemon; the first is reported at the top level) [default fsync]",
)
@click.pass_obj
def bench(
    ctx: _Ctx,
    collectors: int,
    idle_collectors: int,
    clients: int,
    in_flight: int,
    tasks: int | None,
    duration: float | None,
    payload_bytes: int,
    operation: str,
    baseline: bool,
    durability: tuple[str, ...],
) -> None:
    """Throughput and latency through eventbusd, next to a raw pyzmq broker on the same machine.

    Without --socket it runs its own eventbusd on a temp socket with its state in a temp directory
    (EVENTBUS_SOCKET is not enough: a bench never loads a shared daemon by accident), once per
    --durability mode; with --socket it uses that daemon, in its own mode. Either way it starts its
    own collectors, idle collectors and client processes, and stops them.
    Exit 1 if a task failed, came back with a wrong value or was lost.

    Example: eventbusctl bench --tasks 20000 --in-flight 100 --durability fsync,none
    """
    from eventbus import bench as b  # imported here: the other commands do not load it

    if tasks is not None and duration is not None:
        raise click.UsageError("give --tasks or --duration, not both")
    socket = click.get_current_context().find_root().params.get("socket")
    modes: list[str] = []
    for mode in (m.strip() for given in durability for m in given.split(",")):
        if mode not in b.DURABILITY_MODES:
            raise click.BadParameter(
                f"{mode!r} is not one of {', '.join(b.DURABILITY_MODES)}", param_hint="--durability"
            )
        if mode not in modes:
            modes.append(mode)
    if modes and socket is not None:
        raise click.UsageError(
            "--durability is for the bench's private daemon: with --socket, that daemon's own is measured"
        )
    opts = b.BenchOptions(
        collectors=collectors,
        idle_collectors=idle_collectors,
        clients=clients,
        in_flight=in_flight,
        tasks=None if duration is not None else tasks or 5000,
        duration=duration,
        payload_bytes=payload_bytes,
        operation=operation,
        baseline=baseline,
        socket=socket,
        durability=tuple(modes) or ("fsync",),
    )
    try:
        doc = b.run_bench(opts, b.ProgressLine(sys.stderr))
    except EventBusError as exc:
        _fail(ctx, exc.code, exc.message, exit_code_for(exc.code))
    _emit(ctx, doc, lambda: click.echo(b.table(doc)))
    problem = b.unsuccessful(doc)
    if problem:
        click.echo(f"eventbusctl: bench: {problem}", err=True)
        sys.exit(EXIT_TASK_FAILED)


main.add_command(cluster)
main.add_command(limit)
main.add_command(schedule)

"""Every documented exit code, produced by a real process for each documented cause (issue 13).

One table holds every case: the command, the cause, the code it must exit with. Each case runs
the real ``eventbusctl`` (with ``--json``, and plain too once per way of printing an outcome),
``eventbusd`` or ``eventbus-collector`` and checks the code, one line on stderr, no traceback, and with ``--json``
the ``{"error": {"code", "message"}}`` object on stdout. The last tests check that the table
produces every code documented in ``eventbus/exitcodes.py`` and README.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventbus import exitcodes
from eventbus.errors import EventBusError
from eventbus.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_TASK_FAILED, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_USAGE
from tests.e2e.conftest import Bus, command, wait_until

pytestmark = pytest.mark.e2e

CTL, DAEMON, COLLECTOR = "eventbusctl", "eventbusd", "eventbus-collector"
REPO = Path(__file__).resolve().parents[2]

#: uid allowed by the side daemon (not an admin); NOBODY is neither allowed nor an admin
GUEST, NOBODY, NOGROUP = 65533, 65534, 65534
AS_OTHER_USER = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to run as another uid"
)
#: a constraint no collector meets: the task stays queued, yet its operation is offered (no hint on stderr)
UNMATCHED = "zone==mars"
#: a collector that leaves at once when told to stop, even with a running task or its daemon gone
QUICK_COLLECTOR = ("demo", "--shutdown-grace-s", "0", "--request-timeout-s", "0.5")


# ---- the daemons the cases run against --------------------------------------------------------


def _new_bus() -> Bus:
    return Bus(Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp")))


def _close(bus: Bus) -> None:
    bus.close()
    shutil.rmtree(bus.root, ignore_errors=True)


@pytest.fixture(scope="module")
def main_bus() -> Iterator[Bus]:
    """A daemon with a demo collector, shared by the cases that leave it as they found it."""
    bus = _new_bus()
    try:
        bus.start_daemon("--retry-backoff-base-ms", "10")
        bus.start_collector("demo-1", *QUICK_COLLECTOR, "--concurrency", "16")
        yield bus
    finally:
        _close(bus)


@pytest.fixture(scope="module")
def side_bus() -> Iterator[Bus]:
    """A daemon whose queue (``--max-queue-size 1``) is full, serving GUEST too, its socket open to NOGROUP."""
    bus = _new_bus()
    try:
        bus.root.chmod(0o755)
        bus.start_daemon("--max-queue-size", "1", "--allowed-uids", str(GUEST))
        if os.geteuid() == 0:  # let the other uids reach the socket: the daemon's own check is what is tested
            os.chown(bus.root, -1, NOGROUP)
            os.chown(bus.socket, -1, NOGROUP)
        with bus.client() as c:
            c.submit("held")  # nobody offers it: it holds the only queue slot
        yield bus
    finally:
        _close(bus)


class Ctx:
    """What a case's setup may use: the shared daemons (started on first use) and a private Bus."""

    def __init__(self, request: pytest.FixtureRequest, own: Bus) -> None:
        self._request = request
        self.own = own

    @property
    def main(self) -> Bus:
        bus: Bus = self._request.getfixturevalue("main_bus")
        return bus

    @property
    def side(self) -> Bus:
        bus: Bus = self._request.getfixturevalue("side_bus")
        return bus


# ---- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One process to run: its arguments (after the program), environment, and what to do meanwhile."""

    args: Sequence[str]
    env: Mapping[str, str]
    stdin: str | None = None
    uid: int | None = None
    #: run once the process has started, e.g. to kill its daemon while it waits
    meanwhile: Callable[[subprocess.Popen[str]], None] | None = None
    #: run after the process ended, whatever happened, e.g. to resume a frozen daemon
    then: Callable[[], None] | None = None


Setup = Callable[[Ctx], Call]


@dataclass(frozen=True)
class Case:
    program: str
    cause: str
    code: int
    setup: Setup
    #: ``error.code`` of the JSON object eventbusctl prints with --json (failures other than exit 1)
    error: str | None = None
    #: non-empty stderr lines; None: stderr is the process's log (checked for tracebacks only)
    stderr_lines: int | None = 1
    #: eventbusctl: run with --json (every case) and plain (once per way of printing an outcome)
    modes: tuple[bool, ...] = (True,)
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.program}-{self.code}-{re.sub(r'[^a-z0-9]+', '-', self.cause.lower()).strip('-')}"


def ctl(*args: str, on: str = "main", stdin: str | None = None, uid: int | None = None) -> Setup:
    """eventbusctl ``args`` against the ``main``, ``side`` or ``own`` (no daemon) socket."""

    def setup(ctx: Ctx) -> Call:
        bus: Bus = getattr(ctx, on)
        return Call(args, bus.env, stdin, uid)

    return setup


def tool(*args: str, on: str = "own") -> Setup:
    """eventbusd or eventbus-collector ``args``; ``{root}`` in an argument is the private temp directory."""

    def setup(ctx: Ctx) -> Call:
        bus: Bus = getattr(ctx, on)
        return Call([a.format(root=ctx.own.root) for a in args], bus.env)

    return setup


def config_file(text: str) -> Setup:
    def setup(ctx: Ctx) -> Call:
        path = ctx.own.root / "eventbusd.toml"
        path.write_text(text)
        return Call(["--config", str(path)], ctx.own.env)

    return setup


def task_in(state: str) -> Setup:
    """``eventbusctl task ID`` of a task that ended ``state``."""

    def setup(ctx: Ctx) -> Call:
        with ctx.main.client() as c:
            if state == "succeeded":
                tid = c.submit("echo", 1)
            elif state == "failed":
                tid = c.submit("fail", {"message": "on purpose"})
            elif state == "cancelled":
                tid = c.submit("echo", constraints=[UNMATCHED])
                c.cancel(tid)
            else:
                tid = c.submit("echo", constraints=[UNMATCHED], deadline=time.time() + 0.2)
            assert c.wait(tid, timeout=20).state.value == state
        return Call(["task", tid], ctx.main.env)

    return setup


def _queued(ctx: Ctx) -> str:
    with ctx.main.client() as c:
        return c.submit("echo", constraints=[UNMATCHED])


def cancel_queued(ctx: Ctx) -> Call:
    return Call(["cancel", _queued(ctx)], ctx.main.env)


def cancel_finished(ctx: Ctx) -> Call:
    with ctx.main.client() as c:
        tid = c.submit("echo", 1)
        c.wait(tid, timeout=20)
    return Call(["cancel", tid], ctx.main.env)


def after_cancelled(ctx: Ctx) -> Call:
    tid = _queued(ctx)
    with ctx.main.client() as c:
        c.cancel(tid)
    return Call(["submit", "echo", "--after", tid, "--wait"], ctx.main.env)


def duplicate_id(ctx: Ctx) -> Call:
    tid = f"dup-{uuid.uuid4().hex}"
    with ctx.main.client() as c:
        c.submit("echo", 1, task_id=tid)
    return Call(["submit", "echo", "--id", tid], ctx.main.env)


def too_large_payload(ctx: Ctx) -> Call:
    path = ctx.own.root / "big.json"
    path.write_text(json.dumps("x" * (2 << 20)))  # past max_message_size (1 MiB)
    return Call(["submit", "echo", "--payload", f"@{path}"], ctx.main.env)


def cancelled_while_waiting(ctx: Ctx) -> Call:
    tid = f"cw-{uuid.uuid4().hex}"

    def cancel(_: subprocess.Popen[str]) -> None:
        wait_until(lambda: _knows(ctx.main, tid), 10, "the task to be submitted")
        with ctx.main.client() as c:
            c.cancel(tid)

    return Call(["submit", "echo", "--require", UNMATCHED, "--id", tid, "--wait"], ctx.main.env, meanwhile=cancel)


def _knows(bus: Bus, tid: str) -> bool:
    with bus.client() as c:
        try:
            c.get(tid)
        except EventBusError:
            return False
        return True


def _waiting(bus: Bus) -> bool:
    with bus.client() as c:
        return int(c.stats()["waiting_requests"]) >= 1


def watch_one_event(ctx: Ctx) -> Call:
    def publish(proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 15
        with ctx.main.client() as c:  # until the watcher, subscribed at some point, has seen one
            while proc.poll() is None and time.monotonic() < deadline:
                c.submit("echo", 1)
                time.sleep(0.2)

    return Call(["watch", "--count", "1", "events.task.#"], ctx.main.env, meanwhile=publish)


def socket_without_daemon(ctx: Ctx) -> Call:
    import socket

    with socket.socket(socket.AF_UNIX) as s:  # a socket file nobody listens on (a dead daemon's)
        s.bind(str(ctx.own.socket))
    return Call(["status"], ctx.own.env)


def _wait_on_own_daemon(ctx: Ctx, then: Callable[[Bus], None], timeout: str = "1") -> Call:
    """``submit --wait`` on a private daemon; ``then`` runs once the client waits.

    ``timeout`` also bounds how long the client gives a daemon to take the connection back.
    """
    own = ctx.own
    own.start_daemon()
    own.start_collector("c1", *QUICK_COLLECTOR)

    def meanwhile(proc: subprocess.Popen[str]) -> None:
        wait_until(lambda: proc.poll() is not None or _waiting(own), 10, "the client to wait")
        then(own)

    args = ["--timeout", timeout, "submit", "echo", "--require", UNMATCHED, "--wait"]
    return Call(args, own.env, meanwhile=meanwhile)


def _kill_daemon(bus: Bus) -> None:
    assert bus.daemon is not None
    bus.daemon.popen.kill()
    bus.daemon.wait(5)


def daemon_went_away(ctx: Ctx) -> Call:
    return _wait_on_own_daemon(ctx, _kill_daemon)


def daemon_restarted(ctx: Ctx) -> Call:
    def restart(bus: Bus) -> None:
        _kill_daemon(bus)
        bus.start_daemon("--no-durable")  # one that does not know the task (a durable one would)

    # the new daemon must be up within the client's grace: it takes up to about a second to start
    return _wait_on_own_daemon(ctx, restart, timeout="10")


def daemon_shutting_down(ctx: Ctx) -> Call:
    own = ctx.own
    daemon = own.start_daemon()
    own.start_collector("c1", *QUICK_COLLECTOR)
    with own.client() as c:
        c.submit("sleep", {"seconds": 30})  # keeps the daemon in its grace period
        wait_until(lambda: c.status()["tasks_in_flight"] == 1, 10, "the task to run")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: "stopping (running attempts may finish" in daemon.output(), 10, "the stop to begin")
    return Call(["submit", "echo"], own.env)  # teardown's second SIGTERM stops the daemon at once


def daemon_frozen(ctx: Ctx) -> Call:
    daemon = ctx.own.start_daemon()
    daemon.signal(signal.SIGSTOP)
    return Call(["--timeout", "1", "status"], ctx.own.env, then=lambda: daemon.signal(signal.SIGCONT))


def daemon_sigterm(ctx: Ctx) -> Call:
    def stop(proc: subprocess.Popen[str]) -> None:
        wait_until(lambda: ctx.own.socket.exists() and _answers(ctx.own), 15, "eventbusd to answer")
        proc.send_signal(signal.SIGTERM)

    return Call([], ctx.own.env, meanwhile=stop)


def _answers(bus: Bus) -> bool:
    try:
        with bus.client(timeout=1) as c:
            c.status()
    except EventBusError:
        return False
    return True


def collector_stopped(how: str) -> Setup:
    def setup(ctx: Ctx) -> Call:
        cid = f"leaving-{how}-{uuid.uuid4().hex[:8]}"

        def stop(proc: subprocess.Popen[str]) -> None:
            def registered() -> bool:
                assert proc.poll() is None, "the collector exited early"
                with ctx.main.client() as c:
                    return any(info.collector_id == cid for info in c.collectors())

            wait_until(registered, 15, "the collector to register")
            if how == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                with ctx.main.client() as c:
                    assert c.stop_collectors(cid) == [cid]

        return Call(["run", "demo", "--id", cid], ctx.main.env, meanwhile=stop)

    return setup


PLAIN_TOO = (False, True)

CASES: list[Case] = [
    # 0: success
    Case(
        CTL,
        "submit prints the task id",
        EXIT_OK,
        ctl("submit", "echo", "--payload", "1"),
        stderr_lines=0,
        modes=PLAIN_TOO,
    ),
    Case(
        CTL,
        "submit --wait of a task that succeeds",
        EXIT_OK,
        ctl("submit", "echo", "--wait"),
        stderr_lines=0,
        modes=PLAIN_TOO,
    ),
    Case(CTL, "task of a succeeded task", EXIT_OK, task_in("succeeded"), stderr_lines=0, modes=PLAIN_TOO),
    Case(CTL, "cancel of a queued task", EXIT_OK, cancel_queued, stderr_lines=0, modes=PLAIN_TOO),
    Case(CTL, "status", EXIT_OK, ctl("status"), stderr_lines=0, modes=PLAIN_TOO),
    Case(CTL, "watch --count 1", EXIT_OK, watch_one_event, stderr_lines=0),
    Case(DAEMON, "sigterm with no work", EXIT_OK, daemon_sigterm, stderr_lines=None),
    Case(COLLECTOR, "sigterm drains", EXIT_OK, collector_stopped("sigterm"), stderr_lines=None),
    Case(COLLECTOR, "eventbusctl stop", EXIT_OK, collector_stopped("ctl"), stderr_lines=None),
    # 1: the task failed, was cancelled or expired
    Case(CTL, "submit --wait of a task that fails", EXIT_TASK_FAILED, ctl("submit", "fail", "--wait"), modes=PLAIN_TOO),
    Case(
        CTL,
        "submit --wait expires queued past --deadline-s",
        EXIT_TASK_FAILED,
        ctl("submit", "echo", "--require", UNMATCHED, "--deadline-s", "0.3", "--wait"),
        modes=PLAIN_TOO,
    ),
    Case(
        CTL,
        "submit --wait expires running past --deadline-s",
        EXIT_TASK_FAILED,
        ctl("submit", "sleep", "--payload", '{"seconds": 3}', "--deadline-s", "0.3", "--wait"),
    ),
    Case(CTL, "submit --wait cancelled meanwhile", EXIT_TASK_FAILED, cancelled_while_waiting),
    Case(CTL, "submit --wait after a cancelled task", EXIT_TASK_FAILED, after_cancelled),
    Case(CTL, "task of a failed task", EXIT_TASK_FAILED, task_in("failed"), modes=PLAIN_TOO),
    Case(
        CTL,
        "task of a cancelled task",
        EXIT_TASK_FAILED,
        task_in("cancelled"),
        modes=PLAIN_TOO,
    ),
    Case(CTL, "task of an expired task", EXIT_TASK_FAILED, task_in("expired")),
    # 2: usage error (all against a socket with no daemon: nothing is sent)
    Case(CTL, "unknown flag", EXIT_USAGE, ctl("submit", "echo", "--bogus", on="own"), "usage", modes=PLAIN_TOO),
    Case(CTL, "unknown command", EXIT_USAGE, ctl("frobnicate", on="own"), "usage"),
    Case(CTL, "missing argument", EXIT_USAGE, ctl("task", on="own"), "usage"),
    Case(
        CTL,
        "payload not json",
        EXIT_USAGE,
        ctl("submit", "echo", "--payload", "{nope", on="own"),
        "usage",
        modes=PLAIN_TOO,
    ),
    Case(CTL, "payload nan", EXIT_USAGE, ctl("submit", "echo", "--payload", "NaN", on="own"), "usage"),
    Case(
        CTL,
        "payload from stdin not json",
        EXIT_USAGE,
        ctl("submit", "echo", "--payload", "-", on="own", stdin="{"),
        "usage",
    ),
    Case(
        CTL,
        "payload file missing",
        EXIT_USAGE,
        ctl("submit", "echo", "--payload", "@/nonexistent/payload.json", on="own"),
        "usage",
    ),
    Case(
        CTL,
        "payload nested too deep",
        EXIT_USAGE,
        ctl("submit", "echo", "--payload", "[" * 63 + "]" * 63, on="own"),
        "usage",
    ),
    Case(CTL, "malformed require", EXIT_USAGE, ctl("submit", "echo", "--require", "skill>>5", on="own"), "usage"),
    Case(CTL, "priority out of range", EXIT_USAGE, ctl("submit", "echo", "--priority", "11", on="own"), "usage"),
    Case(CTL, "deadline nan", EXIT_USAGE, ctl("submit", "echo", "--deadline-s", "nan", on="own"), "usage"),
    Case(CTL, "negative wait timeout", EXIT_USAGE, ctl("submit", "echo", "--wait-timeout", "-1", on="own"), "usage"),
    Case(CTL, "limit zero", EXIT_USAGE, ctl("tasks", "--limit", "0", on="own"), "usage"),
    Case(CTL, "bad cursor", EXIT_USAGE, ctl("tasks", "--after-cursor", "abc", on="own"), "usage"),
    Case(CTL, "stop without id or all", EXIT_USAGE, ctl("stop", on="own"), "usage"),
    Case(CTL, "bad timeout setting", EXIT_USAGE, ctl("--timeout", "-1", "status", on="own"), "config", modes=PLAIN_TOO),
    Case(DAEMON, "unknown flag", EXIT_USAGE, tool("--bogus")),
    Case(DAEMON, "bad flag value", EXIT_USAGE, tool("--max-retries", "-1")),
    Case(
        DAEMON, "contradicting settings", EXIT_USAGE, tool("--max-queue-size", "1", "--max-queued-per-operation", "5")
    ),
    Case(DAEMON, "config file missing", EXIT_USAGE, tool("--config", "{root}/missing.toml")),
    Case(DAEMON, "config file not toml", EXIT_USAGE, config_file("max_retries = [\n")),
    Case(DAEMON, "config file bad value", EXIT_USAGE, config_file("max_retries = -1\n")),
    Case(DAEMON, "config file unknown setting", EXIT_USAGE, config_file("no_such_setting = 1\n")),
    Case(DAEMON, "socket path too long", EXIT_USAGE, tool("--socket", "{root}/" + "x" * 120 + "/eb.sock")),
    Case(DAEMON, "socket in use by a running daemon", EXIT_USAGE, tool(on="main")),
    Case(COLLECTOR, "unknown flag", EXIT_USAGE, tool("run", "demo", "--bogus")),
    Case(COLLECTOR, "unknown target", EXIT_USAGE, tool("run", "no-such-collector")),
    Case(COLLECTOR, "target not a collector", EXIT_USAGE, tool("run", "json:dumps")),
    Case(COLLECTOR, "malformed attr", EXIT_USAGE, tool("run", "demo", "--attr", "x")),
    Case(COLLECTOR, "bad setting", EXIT_USAGE, tool("run", "demo", "--request-timeout-s", "-1")),
    # 3: daemon unreachable
    Case(CTL, "no socket", EXIT_UNREACHABLE, ctl("status", on="own"), "unreachable", modes=PLAIN_TOO),
    Case(CTL, "socket nobody listens on", EXIT_UNREACHABLE, socket_without_daemon, "unreachable"),
    Case(
        CTL,
        "permission denied",
        EXIT_UNREACHABLE,
        ctl("status", uid=NOBODY),
        "unreachable",
        marks=(AS_OTHER_USER,),
    ),
    Case(CTL, "daemon went away during wait", EXIT_UNREACHABLE, daemon_went_away, "unreachable"),
    Case(CTL, "daemon restarted during wait", EXIT_UNREACHABLE, daemon_restarted, "daemon_restarted"),
    Case(CTL, "daemon shutting down", EXIT_UNREACHABLE, daemon_shutting_down, "shutting_down"),
    # 4: rejected by the daemon
    Case(CTL, "unknown task id", EXIT_REJECTED, ctl("task", "no-such-task"), "not_found", modes=PLAIN_TOO),
    Case(CTL, "cancel unknown task id", EXIT_REJECTED, ctl("cancel", "no-such-task"), "not_found"),
    Case(CTL, "after unknown task id", EXIT_REJECTED, ctl("submit", "echo", "--after", "no-such-task"), "invalid"),
    Case(CTL, "cancel a finished task", EXIT_REJECTED, cancel_finished, "invalid_state"),
    Case(CTL, "duplicate task id", EXIT_REJECTED, duplicate_id, "duplicate"),
    Case(CTL, "invalid operation name", EXIT_REJECTED, ctl("submit", "Bad Op!"), "invalid"),
    Case(CTL, "unknown strategy", EXIT_REJECTED, ctl("strategy", "no-such-strategy"), "invalid"),
    Case(CTL, "drain unknown collector", EXIT_REJECTED, ctl("drain", "no-such-collector"), "unknown_collector"),
    Case(CTL, "watch pattern never published", EXIT_REJECTED, ctl("watch", "control.#"), "bad_topic"),
    Case(CTL, "payload too large", EXIT_REJECTED, too_large_payload, "too_large"),
    Case(CTL, "queue full", EXIT_REJECTED, ctl("submit", "echo", on="side"), "queue_full"),
    Case(
        CTL,
        "uid not allowed",
        EXIT_REJECTED,
        ctl("status", on="side", uid=NOBODY),
        "forbidden",
        marks=(AS_OTHER_USER,),
    ),
    Case(
        CTL,
        "admin verb by a non-admin",
        EXIT_REJECTED,
        ctl("strategy", "best_fit", on="side", uid=GUEST),
        "forbidden",
        marks=(AS_OTHER_USER,),
    ),
    Case(
        COLLECTOR, "invalid id refused at registration", EXIT_REJECTED, tool("run", "demo", "--id", "Bad!", on="main")
    ),
    # 5: timed out waiting
    Case(
        CTL,
        "wait timeout shorter than the task",
        EXIT_TIMEOUT,
        ctl("submit", "sleep", "--payload", '{"seconds": 2}', "--wait", "--wait-timeout", "0.3"),
        "timeout",
        modes=PLAIN_TOO,
    ),
    Case(
        CTL,
        "wait timeout on an operation nobody offers",
        EXIT_TIMEOUT,
        ctl("submit", "nobody-offers-this", "--wait", "--wait-timeout", "0.3"),
        "timeout",
        stderr_lines=2,  # README: it "says at once that no collector offers it", then the error line
        modes=PLAIN_TOO,
    ),
    Case(CTL, "no answer from a frozen daemon", EXIT_TIMEOUT, daemon_frozen, "timeout"),
]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for as_json in case.modes if case.program == CTL else (False,):
            case_id = case.id + ("-json" if as_json else "")
            params.append(pytest.param(case, as_json, id=case_id, marks=case.marks))
    return params


# ---- running and checking ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{self.argv} exited {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def execute(program: str, call: Call, as_json: bool, timeout: float = 40) -> Outcome:
    argv = [command(program), *(["--json"] if as_json else []), *call.args]
    if call.uid is not None:
        argv = ["setpriv", f"--reuid={call.uid}", f"--regid={NOGROUP}", "--clear-groups", *argv]
    proc = subprocess.Popen(
        argv,
        env=dict(call.env),
        stdin=subprocess.DEVNULL if call.stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if call.meanwhile is not None:
            call.meanwhile(proc)
        out, err = proc.communicate(call.stdin, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        if call.then is not None:
            call.then()
    return Outcome(argv, proc.returncode, out, err)


def check_ctl_output(case: Case, as_json: bool, out: Outcome) -> None:
    """What eventbusctl prints on stdout for the case's exit code."""
    if case.code == EXIT_OK:
        assert out.stdout.strip(), out
        if as_json:
            data = json.loads(out.stdout)
            assert not (isinstance(data, dict) and list(data) == ["error"]), out
    elif case.code == EXIT_TASK_FAILED:  # the final task itself, not an error object
        if as_json:
            info = json.loads(out.stdout)
            assert info["state"] in ("failed", "cancelled", "expired"), out
            assert isinstance(info["error"]["type"], str) and isinstance(info["error"]["message"], str), out
        elif out.stdout:
            assert re.search(r"^state\s+(failed|cancelled|expired)$", out.stdout, re.MULTILINE), out
    else:
        line = out.stderr.strip().splitlines()[-1]
        if as_json:
            data = json.loads(out.stdout)
            assert list(data) == ["error"] and sorted(data["error"]) == ["code", "message"], out
            assert data["error"]["code"] == case.error, out
            assert line.startswith(f"eventbusctl: error: {data['error']['message']}"), out
        else:
            assert out.stdout == "", out
            assert line.startswith("eventbusctl: error: "), out


@pytest.mark.parametrize(("case", "as_json"), _params())
def test_exit_code(case: Case, as_json: bool, request: pytest.FixtureRequest, bare_bus: Bus) -> None:
    out = execute(case.program, case.setup(Ctx(request, bare_bus)), as_json)
    assert out.code == case.code, out
    assert "Traceback" not in out.stdout + out.stderr, out
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if case.stderr_lines is not None:
        assert len(lines) == case.stderr_lines, out
    elif case.code == EXIT_OK:
        assert not any(" ERROR " in line or " CRITICAL " in line for line in lines), out
    if case.program == CTL:
        check_ctl_output(case, as_json, out)
    elif case.code != EXIT_OK:
        assert lines[-1].startswith((f"{case.program}: error: ", "Error: ")), out


# ---- the table against the documentation ------------------------------------------------------


def documented_codes() -> set[int]:
    return {value for name, value in vars(exitcodes).items() if name.startswith("EXIT_") and isinstance(value, int)}


def test_the_table_produces_every_documented_exit_code() -> None:
    assert documented_codes() == {0, 1, 2, 3, 4, 5}
    assert {case.code for case in CASES if case.program == CTL} == documented_codes()
    assert {case.code for case in CASES if case.program == DAEMON} == {EXIT_OK, EXIT_USAGE}
    # the runner exits 0 or 2 itself, and with exit_code_for() on an error from the daemon
    assert {case.code for case in CASES if case.program == COLLECTOR} == {EXIT_OK, EXIT_USAGE, EXIT_REJECTED}


def test_the_readme_documents_the_same_exit_codes() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("### Exit codes of `eventbusctl`", 1)[1].split("\n#", 1)[0]
    assert {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)} == documented_codes()


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))

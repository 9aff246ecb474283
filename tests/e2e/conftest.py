"""Fixtures that start the real eventbusd and collector processes on a short temp socket path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventbus.client import SyncClient
from eventbus.errors import EventBusError

BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """The console script installed beside this interpreter."""
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project (make test does) before running e2e tests")
    return str(path)


class Proc:
    """A child process whose output goes to a log file, killed at teardown if still alive."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.argv = argv
        self.log = log
        self._fh = log.open("ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0, *, again_after: float | None = None) -> int | None:
        """SIGTERM (again after ``again_after`` s if given: eventbusd then stops at once), SIGKILL after ``timeout``."""
        if self.popen.poll() is None and again_after is not None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(again_after)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._fh.close()
        return self.popen.returncode


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Bus:
    """One daemon on a private socket, plus helpers to start collectors and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "eb.sock"
        self.procs: list[Proc] = []
        self.state = root / "state"
        self.env = {**os.environ, "EVENTBUS_SOCKET": str(self.socket), "EVENTBUS_STATE_DIR": str(self.state)}
        self.daemon: Proc | None = None

    def start_daemon(self, *args: str) -> Proc:
        self.daemon = self.spawn([command("eventbusd"), "--log-level", "debug", *args], "eventbusd")
        wait_until(self._answers, 15, "eventbusd to answer")
        return self.daemon

    def _answers(self) -> bool:
        if self.daemon is not None and self.daemon.popen.poll() is not None:
            raise AssertionError(f"eventbusd exited early:\n{self.daemon.output()}")
        try:
            with SyncClient(self.socket, timeout=1) as c:
                c.status()
            return True
        except EventBusError:
            return False

    def spawn(self, argv: list[str], name: str, cwd: Path | None = None) -> Proc:
        proc = Proc(argv, self.root / f"{name}-{len(self.procs)}.log", self.env, cwd)
        self.procs.append(proc)
        return proc

    def start_collector(self, collector_id: str, target: str = "demo", *args: str) -> Proc:
        proc = self.spawn(
            [command("eventbus-collector"), "run", target, "--id", collector_id, "--log-level", "debug", *args],
            f"collector-{collector_id}",
        )

        def registered() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"collector {collector_id} exited early:\n{proc.output()}")
            with self.client() as c:
                return any(info.collector_id == collector_id for info in c.collectors())

        wait_until(registered, 15, f"collector {collector_id} to register")
        return proc

    def client(self, timeout: float = 10.0) -> SyncClient:
        return SyncClient(self.socket, timeout=timeout)

    def ctl(self, *args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command("eventbusctl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            # a daemon whose collectors were killed mid-task would wait out shutdown_grace_s
            proc.stop(again_after=1.0 if Path(proc.argv[0]).name == "eventbusd" else None)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in self.procs)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp directory with a short path (Unix socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bus(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[Bus]:
    """A running daemon; its and its collectors' logs are printed when a test fails."""
    b = Bus(short_tmp)
    b.start_daemon()
    try:
        yield b
    finally:
        b.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(b.logs())


@pytest.fixture
def bare_bus(short_tmp: Path) -> Iterator[Bus]:
    """A Bus whose daemon the test starts itself (or not at all)."""
    b = Bus(short_tmp)
    try:
        yield b
    finally:
        b.close()

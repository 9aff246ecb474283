"""The bench's helper processes: each in its own session, its output in a log file, stopped for sure."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

#: SIGTERM first; a second SIGTERM (eventbusd: stop at once) after this long, SIGKILL after as long again
STOP_GRACE_S = 3.0


def child_env() -> dict[str, str]:
    """This environment without ``EVENTBUS_*``: the bench passes its helpers every setting they use."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}


class Child:
    """A helper process in its own session (so a Ctrl-C at the terminal reaches only the bench, which
    stops it), stderr in ``log``; with ``speaks``, its stdout is read as JSON lines, one event each."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, speaks: bool = False) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as fh:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if speaks else subprocess.DEVNULL,
                stdout=subprocess.PIPE if speaks else fh,
                stderr=fh,
                env=child_env(),
                start_new_session=True,
            )
        self._buffer = b""
        if self.popen.stdout is not None:
            os.set_blocking(self.popen.stdout.fileno(), False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.popen.stdout

    def alive(self) -> bool:
        return self.popen.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """The complete JSON lines it wrote since the last call (lines that are not JSON are skipped)."""
        if self.popen.stdout is None:
            return []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.popen.stdout.fileno(), 1 << 16):
                self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    out.append(event)
        return out

    def tell(self, line: bytes) -> None:
        """Write a line to its stdin (nothing if it is gone)."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.write(line)
                self.popen.stdin.flush()

    def last_words(self) -> str:
        """The last line of its log, to say why it failed."""
        with contextlib.suppress(OSError):
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1][:300]
        return f"exit status {self.popen.poll()}"

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)  # its own session: the group is its own

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, again after ``grace`` s, SIGKILL after ``grace`` more; then reap it and close its pipes."""
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            self.signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
                break
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def stop_all(children: list[Child]) -> None:
    """Stop every child and empty the list. The first (the daemon, or the baseline broker) is stopped
    last, once the others are gone, so collectors deregister from a daemon that is not stopping."""
    for child in children[1:]:
        child.signal(signal.SIGTERM)
    while children:
        children.pop().stop()


def wait_readable(children: Sequence[Child], timeout: float) -> None:
    """Return when one of the children wrote something (or closed its stdout), or after ``timeout`` s."""
    with selectors.DefaultSelector() as sel:
        for child in children:
            if child.stdout is not None and not child.stdout.closed:
                sel.register(child.stdout, selectors.EVENT_READ)
        if sel.get_map():
            sel.select(timeout)
        else:
            time.sleep(timeout)


def listener_pid(path: Path) -> int | None:
    """The pid of the process listening on the Unix socket ``path`` (``SO_PEERCRED``), None if unknown."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to ``needed`` (at most the hard limit); children inherit it.

    A thousand idle collectors are a thousand connections, each a file descriptor in the daemon
    and two (connection and mailbox) in the helper that holds them: past the usual soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM interrupts what runs inside like Ctrl-C, so its cleanup runs (only the main thread gets signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

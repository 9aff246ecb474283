"""Whether a client's connection to the daemon is up, learnt from the DEALER's socket monitor.

A DEALER never says that its peer went away: libzmq quietly reconnects, and a
request written to the old connection is simply never answered. The socket
monitor does say it. When the daemon exits, cleanly or by kill -9, the kernel
closes its end and the monitor reports ``EVENT_DISCONNECTED`` at once; a
daemon that is merely stopped (SIGSTOP) or slow keeps the connection and
reports nothing. ``EVENT_HANDSHAKE_SUCCEEDED`` says a daemon (the same or a
new one) took the connection back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from distributor.errors import UnknownTask
from distributor.models import TaskInfo
from eventbus._requests import Call, Submitted, new_task_id, submit_wait, wait_chunk
from eventbus.errors import (
    ConnectionReset,
    DaemonRestarted,
    DaemonUnreachable,
    EventBusError,
    Forbidden,
    RequestTimeout,
)

#: the only events the clients act on (no reconnect-attempt noise)
MONITORED_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def link_event(frames: list[bytes]) -> bool | None:
    """True if a monitor message says the connection is up, False if it dropped, None otherwise.

    Raises :class:`Forbidden` when the daemon refused the connection (this uid is not served).
    """
    event = parse_monitor_message(frames)["event"]
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return True
    if event == zmq.EVENT_DISCONNECTED:
        return False
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        raise Forbidden(
            f"eventbusd refused the connection: uid {os.getuid()} is not allowed "
            "(the daemon serves its own uid, root, allowed_uids and allowed_gids)"
        )
    return None


class SyncLink:
    """Follows a blocking DEALER's connection; ``poller`` waits for a message or a monitor event."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._sock = sock
        self._mon: zmq.Socket[bytes] = sock.get_monitor_socket(MONITORED_EVENTS)
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self._mon, zmq.POLLIN)
        #: probe() found the daemon before the connection was made: assume up until told otherwise
        self.up = True
        #: the connection dropped since the owner last cleared this (even if it is up again)
        self.dropped = False
        #: the daemon refused the connection: every request fails with it
        self.refused: Forbidden | None = None

    def update(self) -> None:
        """Apply the monitor events received so far."""
        # EVENTS, not a poll: no system call on the hot path when nothing happened
        if self.refused is not None:
            raise self.refused
        while int(self._mon.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                state = link_event(self._mon.recv_multipart())
            except Forbidden as exc:
                self.refused = exc
                raise
            if state is not None:
                self.up = state
                self.dropped = self.dropped or not state

    def wait_up(self, within: float) -> bool:
        """Whether the connection is up, waiting up to ``within`` seconds for it to come back."""
        self.update()
        if self.up:
            return True
        deadline = time.monotonic() + within
        while not self.up:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._mon.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                self.update()
        return True

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        finally:
            self._mon.close(linger=0)


def reset_error(path: Path, what: str, consequence: str) -> ConnectionReset:
    """The error for a request (or an event stream) whose connection dropped under it."""
    return ConnectionReset(
        f"connection to eventbusd at {path} was reset while waiting for {what} "
        f"(the daemon stopped or crashed): {consequence}"
    )


#: what a reset means for a request that was waiting for its answer
UNKNOWN_OUTCOME = "whether it acted on the request is unknown"


def not_back(path: Path, within: float) -> DaemonUnreachable:
    """The error once the connection stayed down for ``within`` seconds though something listens on ``path``."""
    return DaemonUnreachable(f"eventbusd at {path} did not take the connection back within {within:g}s")


def lost_task(exc: EventBusError, path: Path, task_id: str) -> EventBusError:
    """What a wait raises when asking again after a reset failed with ``exc``: the task's fate is unknown."""
    if isinstance(exc, UnknownTask):
        return DaemonRestarted(
            f"eventbusd at {path} restarted while waiting for task {task_id} and the new daemon does not know "
            "the task: its fate is unknown"
        )
    if type(exc) is DaemonUnreachable:
        return DaemonUnreachable(
            f"eventbusd at {path} went away while waiting for task {task_id} ({exc.message}): "
            "the task's fate is unknown"
        )
    return exc


class TaskWait:
    """What waiting for a task decides, for both clients (they only send the requests).

    Each round: if the connection was reset, wait up to :meth:`relink_within` for it to be
    taken back; ask ``control.task.get`` with :meth:`chunk`; hand the answer to :meth:`got`
    (the final info, or None to ask again) or the error to :meth:`failed`.
    """

    def __init__(self, path: Path, task_id: str, timeout: float | None, now: float, grace: float) -> None:
        self.path, self.task_id, self.timeout, self.grace = path, task_id, timeout, grace
        self.deadline = None if timeout is None else now + timeout
        self.reset = False

    @classmethod
    def run(
        cls,
        path: Path,
        operation: str,
        payload: Any,
        fields: dict[str, Any],
        *,
        timeout: float | None,
        now: float,
        grace: float,
        request_timeout: float,
    ) -> tuple[TaskWait, Call[Submitted]]:
        """The wait of a ``run`` and the submit that starts it (asking the daemon to hold the answer).

        The task id is chosen here when ``fields`` names none, so the wait can ask for it again
        after a reset. Hand the submit's answer to :meth:`submitted`, or its error to :meth:`failed`.
        """
        fields = dict(fields)
        task_id = fields.pop("task_id", None) or new_task_id()
        w = cls(path, task_id, timeout, now, grace)
        return w, submit_wait(operation, payload, w.chunk(now), request_timeout, task_id=task_id, **fields)

    def submitted(self, first: Submitted, on_unoffered: Callable[[str], None] | None) -> TaskInfo | None:
        """The final info if the submit's answer has it, else None to go on waiting.

        ``on_unoffered(task_id)`` is called first when no live collector offers the operation
        (the task stays queued).
        """
        self.task_id = first.info.task_id  # (for a repeated idempotency key, the first task's)
        if first.info.state.terminal:
            return first.info
        if not first.offered and on_unoffered is not None:
            on_unoffered(self.task_id)
        return None

    def relink_within(self, now: float) -> float | None:
        """How long to wait for the connection first (None: it was not reset)."""
        # the answer went with the connection: ask again once a daemon is back
        return reconnect_bound(self.grace, self.deadline, now) if self.reset else None

    def chunk(self, now: float) -> float:
        return wait_chunk(self.deadline, now)

    def failed(self, exc: EventBusError) -> None:
        """A round failed: returns to ask again after a reset, else raises what the wait raises."""
        if isinstance(exc, ConnectionReset):
            self.reset = True
            return
        if not self.reset:
            raise exc
        raise lost_task(exc, self.path, self.task_id) from exc

    def got(self, info: TaskInfo, now: float) -> TaskInfo | None:
        """The final info, or None to ask again; :class:`RequestTimeout` past the deadline."""
        self.reset = False
        if info.state.terminal:
            return info
        if self.deadline is not None and now >= self.deadline:
            raise RequestTimeout(f"task {self.task_id} is still {info.state.value} after {self.timeout:g}s")
        return None


def reconnect_bound(grace: float, deadline: float | None, now: float) -> float:
    """How long a wait gives the daemon to come back: ``grace``, but never past the wait's own deadline."""
    return grace if deadline is None else max(0.0, min(grace, deadline - now))


__all__ = [
    "MONITORED_EVENTS",
    "UNKNOWN_OUTCOME",
    "SyncLink",
    "TaskWait",
    "link_event",
    "lost_task",
    "not_back",
    "reconnect_bound",
    "reset_error",
]

"""Idle collectors for ``eventbusctl bench``: ``python -m eventbus.bench.idle SOCKET COUNT PREFIX``.

One process opens COUNT DEALER connections to the daemon, each with its own collector id
(``PREFIX-<i>``, also its routing id), registers each for an operation no bench task uses, and
heartbeats each at the interval the daemon's register reply asks for, spread evenly over that
interval. It prints ``{"event": "ready"}`` once every collector is registered; on SIGTERM it
deregisters them and exits. Raw pyzmq and one poll loop, so a thousand cost one process.
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from distributor.models import CollectorCapability
from eventbus import messages as m
from eventbus.bench.procs import raise_fd_limit
from eventbus.errors import EventBusError
from eventbus.paths import endpoint
from eventbus.wire import Envelope, Kind, decode, encode

#: the one operation the idle collectors offer: no bench task asks for it
IDLE_OPERATION = "bench-idle-noop"
REGISTER_WITHIN_S = 60.0
#: how often the heartbeats due are sent and the answers read
TICK_S = 0.1
#: how long the deregistrations at exit are waited for
DEREGISTER_WITHIN_S = 3.0


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class IdleCollectors:
    """COUNT registered collectors that never take a task."""

    def __init__(self, path: str, count: int, prefix: str) -> None:
        self.ids = [f"{prefix}-{i}" for i in range(count)]
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._ctx.setsockopt(zmq.MAX_SOCKETS, count + 64)  # libzmq's default cap is 1023 sockets
        self._socks: list[zmq.Socket[bytes]] = []
        self._poller = zmq.Poller()
        for cid in self.ids:
            sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, cid.encode())
            sock.connect(endpoint(Path(path)))
            self._socks.append(sock)
            self._poller.register(sock, zmq.POLLIN)
        self._index = {sock: i for i, sock in enumerate(self._socks)}
        self.registered: set[int] = set()
        self.interval = 5.0
        self.stop = False

    def _send(self, i: int, topic: str, body: dict[str, Any]) -> None:
        self._socks[i].send(encode(Envelope(Kind.REQUEST, f"{topic.rpartition('.')[2]}-{i}", topic, body)))

    def register(self, i: int) -> None:
        cap = CollectorCapability(
            collector_id=self.ids[i],
            collector_type="bench-idle",
            supported_operations=[IDLE_OPERATION],
            max_concurrent_tasks=1,
        )
        self._send(i, m.REGISTER, cap.model_dump(mode="json"))

    def pump(self, timeout_ms: int) -> None:
        """Handle the answers that arrive within ``timeout_ms``: note registrations, register again if forgotten."""
        for sock, _ in self._poller.poll(timeout_ms):
            i = self._index[sock]
            while True:
                try:
                    env = decode(sock.recv(zmq.NOBLOCK), 4 << 20)
                except zmq.Again:
                    break
                except EventBusError:
                    continue
                self._handle(i, env)

    def _handle(self, i: int, env: Envelope) -> None:
        if env.kind is Kind.REPLY and env.id.startswith("register-"):
            self.registered.add(i)
            self.interval = float(env.body.get("heartbeat_interval_s", self.interval))
        elif env.kind is Kind.ERROR and env.body.get("code") == "unknown_collector":
            self.registered.discard(i)  # the daemon forgot it (restarted): register again
            self.register(i)
        elif env.kind is Kind.ERROR and env.id.startswith("register-"):
            raise SystemExit(f"{self.ids[i]}: register refused: {env.body.get('message')}")

    def serve(self) -> None:
        """Heartbeat every collector once per interval, spread over it, until :attr:`stop` is set.

        It wakes once per :data:`TICK_S`: sends the heartbeats due by then and reads every answer
        that came meanwhile. A poll over a thousand sockets costs about a millisecond, so polling
        at each answer would cost this process more CPU than the daemon spends on the heartbeats,
        and on a small machine the bench would measure that rather than the daemon.
        """
        now = time.monotonic()
        due = collections.deque((now + self.interval * i / len(self.ids), i) for i in range(len(self.ids)))
        tick = now
        while not self.stop:
            tick += TICK_S
            time.sleep(max(0.0, tick - time.monotonic()))
            self.pump(0)
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, i = due.popleft()
                self._send(i, f"{m.HEARTBEAT_PREFIX}.{self.ids[i]}", {"current_tasks": 0})
                due.append((now + self.interval, i))

    def close(self) -> None:
        """Deregister every collector (waiting a little for the answers) and close the sockets."""
        for i in self.registered:
            self._send(i, m.DEREGISTER, {"collector_id": self.ids[i]})
        deadline = time.monotonic() + DEREGISTER_WITHIN_S
        while self.registered and time.monotonic() < deadline:
            for sock, _ in self._poller.poll(100):
                self.registered.discard(self._index[sock])
                sock.recv()
        for sock in self._socks:
            sock.close(linger=0)
        self._ctx.term()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path, count, prefix = args[0], int(args[1]), args[2]
    raise_fd_limit(3 * count + 256)
    idle = IdleCollectors(path, count, prefix)

    def on_term(signum: int, frame: FrameType | None) -> None:
        idle.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        for i in range(count):
            idle.register(i)
        deadline = time.monotonic() + REGISTER_WITHIN_S
        while len(idle.registered) < count and not idle.stop:
            if time.monotonic() > deadline:
                _emit(event="error", message=f"{count - len(idle.registered)} idle collectors not registered")
                return 1
            idle.pump(100)
        _emit(event="ready")
        idle.serve()
    finally:
        idle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The raw pyzmq baseline of ``eventbusctl bench``: what a bare ZeroMQ broker costs on this machine.

``python -m eventbus.bench.baseline broker FRONT BACK N``: a ROUTER for clients (FRONT) and a
ROUTER for workers (BACK), driven by one blocking ``zmq.Poller`` loop. It announces
``{"event": "ready"}`` on stdout once N workers said ``READY``, then hands each client request
to the workers in turn (round robin) and each answer back to its client. No validation, no
storage, no routing beyond that: the floor any broker on this machine starts from.

``python -m eventbus.bench.baseline worker BACK``: a DEALER that echoes every request.
"""

from __future__ import annotations

import collections
import json
import sys
from typing import Any

import zmq

READY = b"READY"
#: messages taken from one socket before the other gets its turn
BATCH = 256
#: never unbounded (PLATFORM-NOTES): deep enough for any window the bench uses
HWM = 100_000


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return sock


def broker(front: str, back: str, workers_expected: int) -> None:
    """Run the broker until killed."""
    ctx: zmq.Context[Any] = zmq.Context()
    clients, workers = _socket(ctx, zmq.ROUTER), _socket(ctx, zmq.ROUTER)
    clients.bind(front)
    workers.bind(back)
    ready: list[bytes] = []
    turn = 0
    waiting: collections.deque[list[bytes]] = collections.deque()  # requests that came before any worker
    poller = zmq.Poller()
    poller.register(clients, zmq.POLLIN)
    poller.register(workers, zmq.POLLIN)
    while True:
        events = dict(poller.poll())
        for _ in range(BATCH if workers in events else 0):
            try:
                frames = workers.recv_multipart(zmq.NOBLOCK)  # [worker, client, seq, payload]
            except zmq.Again:
                break
            if frames[1:] == [READY]:
                ready.append(frames[0])
                if len(ready) == workers_expected:
                    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
                    sys.stdout.flush()
                continue
            clients.send_multipart(frames[1:])
        while waiting and ready:
            turn = (turn + 1) % len(ready)
            workers.send_multipart([ready[turn], *waiting.popleft()])
        for _ in range(BATCH if clients in events else 0):
            try:
                request = clients.recv_multipart(zmq.NOBLOCK)  # [client, seq, payload]
            except zmq.Again:
                break
            if not ready:
                waiting.append(request)
                continue
            turn = (turn + 1) % len(ready)
            workers.send_multipart([ready[turn], *request])


def worker(back: str) -> None:
    """Echo every request until killed."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = _socket(ctx, zmq.DEALER)
    sock.connect(back)
    sock.send(READY)
    while True:
        sock.send_multipart(sock.recv_multipart())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["broker"] and len(args) == 4:
        broker(args[1], args[2], int(args[3]))
    elif args[:1] == ["worker"] and len(args) == 2:
        worker(args[1])
    else:
        sys.stderr.write("usage: python -m eventbus.bench.baseline broker FRONT BACK N | worker BACK\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

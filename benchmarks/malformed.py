"""Malformed frames against a live daemon while a real client keeps submitting: RSS before and after.

Sends N frames of four kinds in turn (random bytes, deeply nested msgpack,
frames just under twice the size limit, and valid envelopes around bad
bodies), reads every answer, and meanwhile submits and awaits echo tasks on
a normal connection. Prints the daemon's RSS before and after, how many
frames were answered, and the daemon's ``bad_frames`` counter.

Usage: python benchmarks/malformed.py [--frames 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack
import zmq

from eventbus.client import SyncClient
from eventbus.errors import EventBusError

BIN = Path(sys.executable).parent
#: the daemon's default frame limit; frames up to twice it reach the decoder
LIMIT = 1 << 20


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (from /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _nested(depth: int) -> bytes:
    # msgpack: 0x91 is a one-element array; depth of them around a nil
    return b"\x91" * depth + b"\xc0"


#: many small objects: decoding one allocates ~100k Python objects
_SMALL_OBJECTS = [{"k": i, "s": "x" * (i % 7)} for i in range(60_000)]
_SMALL_OBJECTS_FRAME: bytes = msgpack.packb(_SMALL_OBJECTS)
#: the ``body`` entry of kind 5's envelope, key and value
_BODY_FRAME: bytes = msgpack.packb("body") + msgpack.packb(
    {"operation": "echo", "payload": _SMALL_OBJECTS, "priority": "high"}
)
_TOO_LARGE = b"\xc4" + random.Random(0).randbytes(2 * LIMIT - 64)


#: the kinds of bad input sent in turn (overridable for experiments: EVENTBUS_MALFORMED_KINDS=2,4)
KINDS = tuple(int(k) for k in os.environ.get("EVENTBUS_MALFORMED_KINDS", "0,1,2,3,4,5").split(","))


def malformed_frame(i: int, rng: random.Random) -> bytes:
    """Frame number ``i``: one of six kinds of bad input, in turn."""
    kind = KINDS[i % len(KINDS)]
    if kind == 0:
        return rng.randbytes(rng.randint(1, 4096))
    if kind == 1:
        return _nested(rng.randint(100, 100_000))
    if kind == 2:
        return _TOO_LARGE  # a truncated bin 8: too large, then garbage
    if kind == 3:
        body = {"operation": "echo", "payload": {"deep": msgpack.unpackb(_nested(200))}, "bad": {1: 2}}
        return msgpack.packb({"v": 1, "kind": "request", "id": f"m{i}", "topic": "control.task.submit", "body": body})  # type: ignore[no-any-return]
    if kind == 4:  # valid msgpack, not an envelope: everything is decoded, then refused
        return _SMALL_OBJECTS_FRAME
    # a valid envelope around a body that fails validation after decoding (the body is packed once:
    # building these large frames would otherwise cost the sender as much CPU as the daemon)
    head = {"v": 1, "kind": "request", "id": f"m{i}", "topic": "control.task.submit"}
    return b"\x85" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in head.items()) + _BODY_FRAME


@dataclass
class Outcome:
    frames: int
    answered: int
    bad_frames: int
    submitted: int
    succeeded: int
    rss_before_kib: int
    rss_after_kib: int

    @property
    def growth_kib(self) -> int:
        return self.rss_after_kib - self.rss_before_kib


def flood(socket: Path, daemon_pid: int, frames: int, seed: int = 1, window: int = 1) -> Outcome:
    """Send ``frames`` malformed frames to the daemon on ``socket`` while submitting echo tasks.

    Up to ``window`` frames are in flight at once (sent before their answers are read).
    """
    rng = random.Random(seed)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RCVTIMEO, 10_000)
    raw.connect(f"ipc://{socket}")
    answered = submitted = succeeded = 0
    with SyncClient(socket, timeout=30) as client:
        client.wait(client.submit("echo", {"warm": 1}), timeout=30)
        before = rss_kib(daemon_pid)
        try:
            for i in range(frames):
                raw.send(malformed_frame(i, rng))
                if i + 1 >= window:  # keep ``window`` frames in flight
                    raw.recv()  # every frame is answered (an error); a missing answer raises zmq.Again
                    answered += 1
                if i % 50 == 0:
                    submitted += 1
                    info = client.wait(client.submit("echo", {"i": i}), timeout=30)
                    succeeded += info.state.value == "succeeded"
            for _ in range(min(window, frames) - 1):
                raw.recv()
                answered += 1
        finally:
            raw.close(linger=0)
            ctx.term()
        time.sleep(1.5)  # let the daemon go idle (it may return memory then)
        after = rss_kib(daemon_pid)
        bad = int(client.stats()["bad_frames"])
    return Outcome(frames, answered, bad, submitted, succeeded, before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1, help="frames in flight at once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ebm-", dir="/tmp"))
    sock = root / "eb.sock"
    env = {**os.environ, "EVENTBUS_SOCKET": str(sock), "EVENTBUS_LOG_LEVEL": "error"}
    procs = [subprocess.Popen([str(BIN / "eventbusd")], env=env)]
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.append(subprocess.Popen([str(BIN / "eventbus-collector"), "run", "demo", "--id", "m1"], env=env))
        time.sleep(1.5)
        out = flood(sock, procs[0].pid, args.frames, window=args.window)
    except EventBusError as exc:
        raise SystemExit(f"malformed: {exc}") from None
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(out), "growth_kib": out.growth_kib}))
    else:
        print(
            f"{out.frames} malformed frames, {out.answered} answered, bad_frames={out.bad_frames}; "
            f"{out.succeeded}/{out.submitted} echo tasks succeeded meanwhile; daemon RSS "
            f"{out.rss_before_kib / 1024:.1f} -> {out.rss_after_kib / 1024:.1f} MiB "
            f"({out.growth_kib / 1024:+.1f} MiB)"
        )


if __name__ == "__main__":
    main()

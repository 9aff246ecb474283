"""Batch frames (protocol version 2) through the real daemon, and version-1 peers beside them."""

from __future__ import annotations

import pytest
import zmq

from eventbus import messages as m
from eventbus.paths import endpoint
from eventbus.wire import Envelope, Kind, decode, decode_batch, encode, encode_batch, is_batch
from tests.e2e.conftest import Bus

pytestmark = pytest.mark.e2e


def _dealer(bus: Bus) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint(bus.socket))
    return ctx, sock


def _receive(sock: zmq.Socket[bytes], n: int) -> list[bytes]:
    frames: list[bytes] = []
    got = 0
    while got < n:
        assert sock.poll(10_000), f"only {got} of {n} answers came"
        frame = sock.recv()
        frames.append(frame)
        got += len(decode_batch(frame)) if is_batch(frame) else 1
    return frames


def test_a_batch_frame_of_requests_is_answered_in_one_batch_frame(bus: Bus) -> None:
    ctx, sock = _dealer(bus)
    try:
        requests = [encode(Envelope(Kind.REQUEST, f"r{i}", m.STATUS, {}), version=2) for i in range(3)]
        bad = encode(Envelope(Kind.REQUEST, "r-bad", "control.no.such.verb", {}), version=2)
        sock.send(encode_batch([*requests, bad]))
        [frame] = _receive(sock, 4)
        answers = decode_batch(frame)
        assert [a.id for a in answers if isinstance(a, Envelope)] == ["r0", "r1", "r2", "r-bad"]
        assert [a.kind for a in answers if isinstance(a, Envelope)] == [Kind.REPLY] * 3 + [Kind.ERROR]
    finally:
        sock.close()
        ctx.term()


def test_a_version_1_peer_only_ever_gets_single_envelope_frames(bus: Bus) -> None:
    ctx, sock = _dealer(bus)
    try:
        for i in range(20):
            sock.send(encode(Envelope(Kind.REQUEST, f"r{i}", m.STATUS, {})))
        frames = _receive(sock, 20)
        assert len(frames) == 20 and not any(is_batch(f) for f in frames)
        assert [decode(f).id for f in frames] == [f"r{i}" for i in range(20)]
        assert all(decode(f).version == 1 for f in frames)
    finally:
        sock.close()
        ctx.term()


def test_a_batch_of_version_1_envelopes_is_read_but_answered_in_single_frames(bus: Bus) -> None:
    ctx, sock = _dealer(bus)
    try:
        sock.send(encode_batch([encode(Envelope(Kind.REQUEST, f"r{i}", m.STATUS, {})) for i in range(3)]))
        frames = _receive(sock, 3)
        assert [decode(f).id for f in frames] == ["r0", "r1", "r2"]
    finally:
        sock.close()
        ctx.term()


def test_a_version_1_peer_gets_a_batch_of_tasks_answered_in_single_frames(bus: Bus) -> None:
    bus.start_collector("v1-batch", "demo", "--concurrency", "50")
    ctx, sock = _dealer(bus)
    try:
        specs = [{"operation": "echo", "payload": i} for i in range(100)]
        body = {"tasks": [*specs[:50], {"operation": "no such op"}, *specs[50:]], "wait": True}
        sock.send(encode(Envelope(Kind.REQUEST, "b1", m.BATCH, body)))
        replies: list[Envelope] = []
        while not replies or replies[-1].body["remaining"]:
            assert sock.poll(10_000), f"the stream stopped after {len(replies)} replies"
            frame = sock.recv()
            assert not is_batch(frame)
            replies.append(decode(frame))
        assert {(r.id, r.kind, r.topic) for r in replies} == {("b1", Kind.REPLY, m.BATCH)}
        items = [item for r in replies for item in r.body["items"]]
        first, results = items[:101], items[101:]
        assert [item["index"] for item in first] == list(range(101))
        assert first[50]["error"]["code"] == "invalid" and first[50]["error"]["message"].startswith("tasks[50]: ")
        assert sorted(item["index"] for item in results) == [i for i in range(101) if i != 50]
        for item in results:
            assert item["task"]["state"] == "succeeded"
            assert item["task"]["result"]["value"] == (item["index"] if item["index"] < 50 else item["index"] - 1)
    finally:
        sock.close()
        ctx.term()

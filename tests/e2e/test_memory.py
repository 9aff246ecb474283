"""Memory the daemon holds is bounded in bytes: stuck peers, malformed floods."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq

from benchmarks.malformed import flood, rss_kib
from eventbus.errors import QueueFull
from tests.e2e.conftest import Bus, wait_until

pytestmark = pytest.mark.e2e

PAYLOAD = "x" * (256 << 10)


@pytest.fixture
def mute_collector(bus: Bus) -> Iterator[zmq.Socket[bytes]]:
    """A collector that registers and then never reads anything the daemon sends it."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"mute")
    sock.setsockopt(zmq.RCVHWM, 1)  # read nothing: let everything pile up on the daemon's side
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.connect(f"ipc://{bus.socket}")
    body = {
        "collector_id": "mute",
        "collector_type": "raw",
        "supported_operations": ["hoard"],
        "max_concurrent_tasks": 1000,
    }
    sock.send(
        msgpack.packb({"v": 1, "kind": "request", "id": "r", "topic": "control.collector.register", "body": body})
    )
    try:
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()


def test_a_collector_that_never_reads_is_treated_as_stuck_within_its_byte_budget(
    bus: Bus, mute_collector: zmq.Socket[bytes]
) -> None:
    assert bus.daemon is not None
    with bus.client() as c:
        wait_until(lambda: any(i.collector_id == "mute" for i in c.collectors()), 10, "the mute collector")
        before = rss_kib(bus.daemon.pid)
        ids = [c.submit("hoard", PAYLOAD) for _ in range(300)]
        wait_until(lambda: c.collectors()[0].status.value == "unhealthy", 15, "the stuck collector to be suspended")
        stats = c.stats()
        # what it was sent past its budget was dropped, and its attempts went back to the queue
        assert stats["messages_undelivered"] >= 1
        assert stats["tasks_redelivered"] >= 1
        assert {c.get(t).state.value for t in ids} == {"queued"}
    grown_mib = (rss_kib(bus.daemon.pid) - before) / 1024
    # 300 queued payloads of 256 KiB are ~75 MiB themselves; what the stuck peer holds comes on top:
    # at most the pipe (64 frames) and the byte budget (8 MiB), not the 10,000-message count cap
    assert grown_mib < 75 + 16 + 8 + 40, grown_mib


@pytest.mark.timeout(300)
def test_ten_thousand_malformed_frames_grow_the_daemon_by_at_most_32_mib(bus: Bus) -> None:
    assert bus.daemon is not None
    bus.start_collector("m1", "demo")
    out = flood(bus.socket, bus.daemon.pid, 10_000, window=100)  # 100 in flight: bursts, not one at a time
    assert out.answered == 10_000
    assert out.succeeded == out.submitted > 0
    assert out.growth_kib <= 32 * 1024, out


def test_unfinished_tasks_are_charged_for_what_they_decode_to_not_their_frame(bare_bus: Bus) -> None:
    bus = bare_bus
    bus.start_daemon("--max-queued-bytes", str(32 << 20), "--max-queued-per-operation", "10000")
    many_maps: list[dict[str, int]] = [{} for _ in range(100_000)]  # ~100 KB on the wire, ~7 MB once decoded
    accepted = 0
    with bus.client() as c:
        with pytest.raises(QueueFull, match="max_queued_bytes"):
            for _ in range(100):
                c.submit("nobody-serves-this", many_maps)
                accepted += 1
        stats = c.stats()
    assert 2 <= accepted <= 5, accepted
    assert stats["unfinished_bytes"] >= accepted * 64 * 100_000

"""Metrics: the distributor's timing histograms, the Prometheus collector, and the endpoint on metrics_listen."""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from distributor import CollectorCapability, Dispatch, DistributorConfig, ErrorInfo, TaskDistributor, TaskRequest
from distributor.models import TaskResult
from distributor.report import MAX_KEYS, OTHER
from distributor.timings import BUCKETS, Histogram, Timings
from eventbus import messages as m
from eventbus import metrics_http
from eventbus.errors import ConfigError, MetricsUnavailable
from eventbus.metrics_http import MetricsServer, load_exporter, serve_metrics
from eventbus.reload import LIVE
from eventbus.settings import DaemonSettings, load_settings
from eventbus.wire import Kind
from tests.service_harness import ME, Harness

# ---- histograms ------------------------------------------------------------


def test_an_observation_on_a_bound_counts_in_that_bucket_and_the_sum() -> None:
    h = Histogram()
    h.observe(0.001)
    h.observe(0.0011)
    h.observe(1000.0)
    cumulative = list(h.cumulative())
    assert [bound for bound, _ in cumulative] == [*BUCKETS, float("inf")]
    assert cumulative[0] == (0.001, 1) and cumulative[1] == (0.0025, 2)
    assert cumulative[-2] == (300.0, 2) and cumulative[-1] == (float("inf"), 3)
    assert h.count == 3 and h.sum == pytest.approx(1000.0021)


def test_a_negative_duration_counts_as_zero() -> None:
    h = Histogram()
    h.observe(-5.0)
    assert h.sum == 0.0 and next(h.cumulative()) == (0.001, 1)


def test_operations_past_the_cap_share_the_other_histograms() -> None:
    timings = Timings()
    for i in range(MAX_KEYS + 50):
        timings.succeeded(f"op{i}", 1.0)
    ops = timings.operations()
    assert len(ops) == MAX_KEYS
    assert ops[OTHER].end_to_end.count == 51
    assert ops["op0"].end_to_end.count == 1


def _cap(cid: str = "c1") -> CollectorCapability:
    return CollectorCapability(
        collector_id=cid, collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=1
    )


def _result(d: Dispatch, success: bool) -> TaskResult:
    error = None if success else ErrorInfo(type="RuntimeError", message="boom")
    return TaskResult(
        task_id=d.task.task_id or "", attempt=d.attempt, collector_id=d.collector_id, success=success, error=error
    )


def test_the_distributor_times_queue_wait_run_and_end_to_end() -> None:
    dist = TaskDistributor(DistributorConfig(max_retries=1, retry_backoff_base_ms=1), rng=random.Random(1))
    dist.submit(TaskRequest(operation="echo"), 100.0)
    (first,) = [a for a in dist.register(_cap(), 102.0) if isinstance(a, Dispatch)]  # waited 2 s
    dist.complete(_result(first, False), 102.5)  # ran 0.5 s, failed: retried
    (second,) = [a for a in dist.tick(110.0) if isinstance(a, Dispatch)]  # requeued at 110, dispatched at once
    dist.complete(_result(second, True), 113.0)  # ran 3 s; 13 s after submission
    echo = dist.timings.operations()["echo"]
    assert echo.queue_wait.count == 2 and echo.queue_wait.sum == pytest.approx(2.0)
    assert echo.run.count == 2 and echo.run.sum == pytest.approx(3.5)
    assert echo.end_to_end.count == 1 and echo.end_to_end.sum == pytest.approx(13.0)


def test_a_task_that_does_not_succeed_is_not_timed_end_to_end() -> None:
    dist = TaskDistributor()
    task_id, _ = dist.submit(TaskRequest(operation="echo"), 1.0)
    dist.cancel(task_id, 2.0)
    assert dist.timings.operations() == {} or dist.timings.operations()["echo"].end_to_end.count == 0


# ---- the collector -----------------------------------------------------------


def _families(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(samples: list[Sample], suffix: str = "", **labels: str) -> float:
    for s in samples:
        if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {suffix} {labels} in {samples}")


def test_the_scrape_holds_the_counters_of_stats_and_rejections_by_code(harness: Harness) -> None:
    harness.request(m.REGISTER, _cap("c1").model_dump(), identity=b"c1")
    for _ in range(3):
        harness.request(m.SUBMIT, {"operation": "echo"})
    harness.request(m.SUBMIT, {"operation": "BAD OP"})  # invalid
    harness.request("control.admin.nothing", {})  # unknown_topic
    harness.service.on_message(b"client", [b"\xc1garbage"], ME)  # bad_frame
    stats = harness.request(m.STATS, {}).body
    families = _families(harness.request(m.METRICS, {}).body["text"])
    for key in ("tasks_submitted", "tasks_distributed", "tasks_succeeded", "bad_frames", "connections"):
        assert _value(families[f"eventbus_{key}"], "_total") == stats[key], key
    rejected = families["eventbus_requests_rejected"]
    assert _value(rejected, code="invalid") == 1 and _value(rejected, code="unknown_topic") == 1
    assert _value(rejected, code="bad_frame") == 1
    assert _value(families["eventbus_tasks_in_flight"]) == 1 == stats["tasks_in_flight"]
    assert _value(families["eventbus_queue_depth"], operation="echo") == 2
    assert _value(families["eventbus_collectors"], status="available") == 1
    assert _value(families["eventbus_collectors"], status="unhealthy") == 0
    assert _value(families["eventbus_peer_pending_bytes"]) == 4096 and _value(families["eventbus_peers_pending"]) == 2
    assert "process_cpu_seconds" in families or sys.platform != "linux"


def test_the_scrape_holds_a_histogram_per_operation(harness: Harness) -> None:
    d, clock = harness.service.distributor, harness.clock
    harness.request(m.SUBMIT, {"operation": "echo"})
    clock.now += 0.3
    (dispatch,) = [a for a in d.register(_cap("c1"), clock.now) if isinstance(a, Dispatch)]
    clock.now += 2.0
    harness.service.perform(d.complete(_result(dispatch, True), clock.now))
    families = _families(harness.service.metrics().exposition().decode())
    wait = families["eventbus_task_queue_wait_seconds"]
    assert _value(wait, "_bucket", operation="echo", le="0.25") == 0
    assert _value(wait, "_bucket", operation="echo", le="0.5") == 1
    assert _value(wait, "_count", operation="echo") == 1
    run = families["eventbus_task_run_seconds"]
    assert _value(run, "_sum", operation="echo") == pytest.approx(2.0)
    assert _value(run, "_bucket", operation="echo", le="+Inf") == 1
    assert _value(families["eventbus_task_end_to_end_seconds"], "_sum", operation="echo") == pytest.approx(2.3)


def test_without_the_extra_the_verb_answers_metrics_unavailable(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "eventbus.metrics", raising=False)
    reply = harness.request(m.METRICS, {})
    assert reply.kind is Kind.ERROR and reply.body["code"] == MetricsUnavailable.code
    with pytest.raises(MetricsUnavailable):
        load_exporter(harness.service, lambda: (0, 0))


def test_without_the_extra_metrics_listen_is_a_startup_error(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "eventbus.metrics", raising=False)
    with pytest.raises(ConfigError, match=r"metrics_listen needs the metrics extra: pip install 'eventbus\[metrics\]'"):
        asyncio.run(serve_metrics("127.0.0.1:1", harness.service))


# ---- settings ----------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1:9464", "[::1]:9464", "localhost:1", "0.0.0.0:65535", "[::]:80"])
def test_metrics_listen_takes_host_and_port(address: str) -> None:
    assert load_settings(DaemonSettings, flags={"metrics_listen": address}, environ={}).metrics_listen == address


@pytest.mark.parametrize("address", ["9464", ":9464", "::1:9464", "[::1]", "[]:80", "host:0", "host:65536", "h:x"])
def test_a_bad_metrics_listen_names_the_setting(address: str) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_settings(DaemonSettings, flags={"metrics_listen": address}, environ={})


def test_metrics_are_off_by_default_and_need_a_restart_to_change() -> None:
    assert DaemonSettings().metrics_listen is None
    assert "metrics_listen" not in LIVE


# ---- the HTTP endpoint ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def _serve_and(scenario: Any) -> Any:
    async def run() -> Any:
        server = MetricsServer(lambda: b"eventbus_up 1\n", "text/plain; version=0.0.4")
        port = _free_port()
        await server.start(f"127.0.0.1:{port}")
        try:
            return await scenario(port)
        finally:
            await server.close()

    return asyncio.run(run())


def test_get_metrics_answers_the_exposition_and_closes() -> None:
    async def scenario(port: int) -> bytes:
        return await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")

    answer = _serve_and(scenario)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4" in head and b"Connection: close" in head
    assert body == b"eventbus_up 1\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"hello\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
    ],
)
def test_other_requests_get_an_error_status(request_bytes: bytes, status: bytes) -> None:
    async def scenario(port: int) -> bytes:
        return await _exchange(port, request_bytes)

    assert _serve_and(scenario).startswith(b"HTTP/1.1 " + status)


def test_a_client_slow_to_send_its_head_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_http, "HEAD_TIMEOUT_S", 0.1)

    async def scenario(port: int) -> bytes:
        return await _exchange(port, b"GET /metrics HTTP/1.1\r\n")  # never ends its head

    assert _serve_and(scenario).startswith(b"HTTP/1.1 408")


def test_connections_past_the_cap_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 1)

    async def scenario(port: int) -> bytes:
        _, idle = await asyncio.open_connection("127.0.0.1", port)  # holds the only slot
        await asyncio.sleep(0.05)
        try:
            return await _exchange(port, b"")  # answered before it could send its request
        finally:
            idle.close()
            await idle.wait_closed()

    assert _serve_and(scenario).startswith(b"HTTP/1.1 503")


def test_a_port_in_use_is_a_one_line_config_error() -> None:
    async def scenario(port: int) -> None:
        other = MetricsServer(lambda: b"", "text/plain")
        with pytest.raises(ConfigError) as caught:
            await other.start(f"127.0.0.1:{port}")
        assert f"cannot serve metrics on 127.0.0.1:{port}" in str(caught.value)
        assert "\n" not in str(caught.value)

    _serve_and(scenario)


def test_closing_the_server_ends_the_connections_it_serves(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> bytes:
        server = MetricsServer(lambda: b"", "text/plain")
        port = _free_port()
        await server.start(f"127.0.0.1:{port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # waiting for the rest of its head
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), 2)
        answer = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        return answer

    assert asyncio.run(run()) == b""
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_head_answers_the_headers_only() -> None:
    async def scenario(port: int) -> bytes:
        return await _exchange(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")

    head, body = _serve_and(scenario).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 14" in head and body == b""


def test_the_scrape_holds_each_rate_limit(harness: Harness) -> None:
    harness.request(m.LIMIT_SET, {"name": "echo", "rate": "1/m", "max_in_flight": 5})
    harness.request(m.LIMIT_SET, {"kind": "collector_type", "name": "demo", "max_in_flight": 3})
    harness.request(m.REGISTER, {**_cap("c1").model_dump(), "max_concurrent_tasks": 4}, identity=b"c1")
    for _ in range(3):
        harness.request(m.SUBMIT, {"operation": "echo"})  # one goes, the bucket is empty: two held, slots free
    families = _families(harness.request(m.METRICS, {}).body["text"])
    assert _value(families["eventbus_limit_in_flight"], kind="operation", name="echo") == 1
    assert _value(families["eventbus_limit_in_flight"], kind="collector_type", name="demo") == 1
    assert _value(families["eventbus_limit_tokens"], kind="operation", name="echo") < 1
    assert _value(families["eventbus_limit_held"], kind="operation", name="echo") == 1
    assert _value(families["eventbus_limit_waited_seconds"], "_total", kind="operation", name="echo") == 0

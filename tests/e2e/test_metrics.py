"""Metrics on metrics_listen, scraped over HTTP as Prometheus would, agree with stats; eventbusctl metrics too."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from eventbus.metrics import COUNTERS
from tests.e2e.conftest import Bus, command

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> tuple[str, str]:
    """``(content type, body)`` of ``GET /metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


def _families(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _sample(samples: list[Sample], name: str, **labels: str) -> float:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_a_scrape_agrees_with_stats_and_with_eventbusctl_metrics(bare_bus: Bus) -> None:
    port = _free_port()
    daemon = bare_bus.start_daemon("--metrics-listen", f"127.0.0.1:{port}", "--max-retries", "1")
    bare_bus.start_collector("met-1")
    with bare_bus.client() as c:
        ok = [c.submit("echo", {"n": i}) for i in range(5)]
        failing = c.submit("fail", {"message": "on purpose"})
        for task_id in [*ok, failing]:
            c.wait(task_id, timeout=20)
    assert bare_bus.ctl("submit", "not an operation").returncode == 4  # invalid
    assert bare_bus.ctl("task", "no-such-task").returncode == 4  # not_found

    with bare_bus.client() as c:
        stats = c.stats()  # nothing changes the counters between this and the scrape
        content_type, text = _scrape(port)
    assert content_type.startswith("text/plain")
    families = _families(text)
    for key in COUNTERS:
        assert _sample(families[f"eventbus_{key}"], f"eventbus_{key}_total") == stats[key], key
    assert stats["tasks_succeeded"] == 5 and stats["tasks_failed"] == 1
    rejected = families["eventbus_requests_rejected"]
    assert _sample(rejected, "eventbus_requests_rejected_total", code="invalid") == 1
    assert _sample(rejected, "eventbus_requests_rejected_total", code="not_found") == 1

    end_to_end = families["eventbus_task_end_to_end_seconds"]
    assert _sample(end_to_end, "eventbus_task_end_to_end_seconds_count", operation="echo") == 5
    assert _sample(end_to_end, "eventbus_task_end_to_end_seconds_count", operation="fail") == 0
    run = families["eventbus_task_run_seconds"]
    assert _sample(run, "eventbus_task_run_seconds_count", operation="echo") == 5
    assert _sample(run, "eventbus_task_run_seconds_count", operation="fail") == 2  # first attempt and one retry
    wait = families["eventbus_task_queue_wait_seconds"]
    for operation, dispatched in stats["tasks_by_type"].items():
        assert _sample(wait, "eventbus_task_queue_wait_seconds_count", operation=operation) == dispatched
    assert _sample(families["eventbus_collectors"], "eventbus_collectors", status="available") == 1
    assert _sample(families["eventbus_tasks_in_flight"], "eventbus_tasks_in_flight") == 0

    printed = bare_bus.ctl("metrics")
    assert printed.returncode == 0, printed.stderr
    assert set(_families(printed.stdout)) == set(families)
    as_json = bare_bus.ctl("--json", "metrics")
    assert set(_families(json.loads(as_json.stdout)["text"])) == set(families)

    assert daemon.stop() == 0


def test_a_metrics_port_in_use_stops_eventbusd_with_one_line(bare_bus: Bus) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [command("eventbusd"), "--log-level", "warning", "--metrics-listen", f"127.0.0.1:{port}"],
            env=bare_bus.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"eventbusd: error: cannot serve metrics on 127.0.0.1:{port}: "), line
    assert not bare_bus.socket.exists()  # the daemon's socket was closed again

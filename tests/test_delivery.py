"""What the daemon does when the transport reports, after the fact, messages it could not deliver."""

from __future__ import annotations

from distributor import CollectorCapability
from eventbus import messages as m
from tests.service_harness import Harness


def test_undelivered_messages_to_a_collector_requeue_its_attempts(harness: Harness) -> None:
    cap = CollectorCapability(
        collector_id="c1", collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=1
    )
    harness.request(m.REGISTER, cap.model_dump(), identity=b"c1")
    task_id = harness.request(m.SUBMIT, {"operation": "echo"}, corr="s").body["task_id"]
    assert harness.service.stats()["tasks_in_flight"] == 1
    harness.service.undelivered_later(b"c1", 2)  # e.g. its dispatch, in a batch frame that was dropped
    stats = harness.service.stats()
    assert stats["messages_undelivered"] == 2
    assert stats["tasks_in_flight"] == 0 and stats["tasks_queued"] == 1
    assert harness.request(m.GET, {"task_id": task_id}, corr="g").body["state"] == "queued"


def test_undelivered_messages_to_a_client_are_only_counted(harness: Harness) -> None:
    harness.request(m.SUBMIT, {"operation": "echo"}, corr="s")
    harness.service.undelivered_later(b"client", 1)
    stats = harness.service.stats()
    assert stats["messages_undelivered"] == 1 and stats["tasks_queued"] == 1

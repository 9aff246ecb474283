"""Replies bounded by the frame limit: task list pages, cut records, and the listing they walk."""

from __future__ import annotations

from typing import Any

from distributor import DistributorConfig, TaskDistributor
from distributor.models import INVALID_RESULT, CollectorCapability, ErrorInfo, TaskInfo, TaskRequest, TaskResult
from eventbus.replies import encode_reply, task_page
from eventbus.wire import Envelope, Kind, decode, encode

TOPIC = "control.task.list"


def _size(corr: str, body: dict[str, Any]) -> int:
    return len(encode(Envelope(Kind.REPLY, corr, TOPIC, body), 1 << 30))


def _filled(n: int) -> TaskDistributor:
    d = TaskDistributor(DistributorConfig(max_queue_size=100_000, max_queued_per_operation=100_000))
    for i in range(n):
        d.submit(TaskRequest(operation="op", task_id=f"t{i:05d}", constraints=["region==" + "x" * 200]), float(i))
    return d


def test_task_pages_fit_the_frame_limit_and_list_every_task_once_newest_first() -> None:
    d = _filled(300)
    seen: list[str] = []
    cursor: int | None = None
    while True:
        page = task_page(d.tasks_before(cursor), 10_000, "req-1", TOPIC, 8192)
        assert _size("req-1", page) <= 8192
        seen += [t["task_id"] for t in page["tasks"]]
        if page["next"] is None:
            assert page["truncated"] is False
            break
        assert page["truncated"] is True  # cut by bytes, long before 10,000 tasks
        cursor = int(page["next"])
    assert seen == [f"t{i:05d}" for i in reversed(range(300))]


def test_a_page_stops_at_limit_with_a_cursor_and_the_last_page_has_none() -> None:
    d = _filled(5)
    first = task_page(d.tasks_before(None), 3, "r", TOPIC, 1 << 20)
    assert [t["task_id"] for t in first["tasks"]] == ["t00004", "t00003", "t00002"]
    assert first["next"] is not None and first["truncated"] is False
    rest = task_page(d.tasks_before(int(first["next"])), 3, "r", TOPIC, 1 << 20)
    assert [t["task_id"] for t in rest["tasks"]] == ["t00001", "t00000"] and rest["next"] is None


def _finished_with(value: object) -> TaskInfo:
    result = TaskResult(task_id="big", attempt=1, collector_id="c1", success=True, value=value)
    info = _filled(1).get("t00000")
    return info.model_copy(update={"task_id": "big", "result": result})


def test_a_task_too_large_for_any_page_is_listed_without_its_value() -> None:
    page = task_page([(7, _finished_with("x" * 5000))], 10, "r", TOPIC, 4096)
    assert _size("r", page) <= 4096
    (item,) = page["tasks"]
    assert item["truncated"] is True and item["result"]["value"] is None and page["truncated"] is True


def test_a_task_reply_over_the_limit_is_cut_to_its_record_with_truncated() -> None:
    body = _finished_with("x" * 5000).model_dump()
    frame = encode_reply("r", "control.task.get", body, 4096)
    info = TaskInfo.model_validate(decode(frame, 4096).body)
    assert info.truncated and info.result is not None and info.result.value is None and info.result.success


def test_a_reply_with_a_long_list_keeps_the_items_that_fit() -> None:
    body = {"collectors": [{"collector_id": f"c{i}", "pad": "y" * 100} for i in range(100)]}
    reply = decode(encode_reply("r", "control.admin.collectors", body, 2048), 2048).body
    kept = reply["collectors"]
    assert reply["truncated"] is True and 0 < len(kept) < 100 and kept == body["collectors"][: len(kept)]


def test_a_reply_within_the_limit_is_not_marked() -> None:
    assert "truncated" not in decode(encode_reply("r", "control.admin.status", {"a": 1}, 2048)).body


def test_the_listing_skips_forgotten_tasks_and_ids_reused_by_newer_tasks() -> None:
    d = TaskDistributor(DistributorConfig(max_finished_tasks=1))
    for i in range(3):
        d.submit(TaskRequest(operation="op", task_id=f"t{i}"), float(i))
    assert [t.task_id for t in d.tasks()] == ["t2", "t1", "t0"]
    d.cancel("t0", 3.0)
    d.cancel("t1", 4.0)
    d.submit(TaskRequest(operation="op", task_id="t9"), 5.0)  # t0 is forgotten past the history limit
    d.submit(TaskRequest(operation="op", task_id="t0"), 6.0)  # its id taken by a new task
    assert [t.task_id for t in d.tasks()] == ["t0", "t9", "t2", "t1"]
    (t9_cursor, _), *_ = d.tasks_before(None, operation="op")
    assert [info.task_id for _, info in d.tasks_before(t9_cursor)] == ["t9", "t2", "t1"]


def test_an_invalid_result_fails_the_task_without_a_retry() -> None:
    d = TaskDistributor(DistributorConfig(max_retries=3))
    d.register(
        CollectorCapability(collector_id="c1", collector_type="t", supported_operations=["op"], max_concurrent_tasks=1),
        0.0,
    )
    d.submit(TaskRequest(operation="op", task_id="t1"), 0.0)
    error = ErrorInfo(type=INVALID_RESULT, message="map keys must be strings")
    d.complete(TaskResult(task_id="t1", attempt=1, collector_id="c1", success=False, error=error), 1.0)
    info = d.get("t1")
    assert info.state.value == "failed" and info.attempt == 1 and info.retries == 0


def test_readers_skip_fields_a_newer_daemon_adds_to_what_it_reports() -> None:
    from distributor import CollectorCapability, CollectorInfo, TaskDistributor, TaskInfo, TaskRequest

    dist = TaskDistributor()
    tid, _ = dist.submit(TaskRequest(operation="echo"), 0.0)
    dist.register(
        CollectorCapability(collector_id="c1", collector_type="t", supported_operations=["x"], max_concurrent_tasks=1),
        0.0,
    )
    task = {**dist.get(tid).model_dump(), "added_later": 1}
    collector = {**dist.collectors(0.0)[0].model_dump(), "added_later": [1]}
    assert TaskInfo.model_validate(task).task_id == tid
    assert CollectorInfo.model_validate(collector).collector_id == "c1"

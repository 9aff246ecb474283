"""``control.task.batch``: many submit specs in one request, each taken or refused on its own."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributor import CollectorCapability
from distributor.models import PRIORITY_MAX, PRIORITY_MIN
from eventbus import messages as m
from eventbus.peers import AccessPolicy
from eventbus.replies import item_frames
from eventbus.wire import Envelope, Kind, decode, encode
from tests.service_harness import ME, Harness

C1 = b"c1"


def _register(harness: Harness, slots: int = 1000) -> None:
    cap = CollectorCapability(
        collector_id="c1", collector_type="demo", supported_operations=["echo"], max_concurrent_tasks=slots
    )
    assert harness.request(m.REGISTER, cap.model_dump(), identity=C1).kind is Kind.REPLY


def _replies(harness: Harness, corr: str = "b1") -> list[Envelope]:
    return [env for env in harness.to(b"client") if env.id == corr]


def _items(harness: Harness, corr: str = "b1") -> list[dict[str, Any]]:
    return [item for env in _replies(harness, corr) for item in env.body["items"]]


def _dispatches(harness: Harness) -> list[dict[str, Any]]:
    return [env.body for env in harness.to(C1) if env.topic.startswith(m.TASK_PREFIX)]


def _report(harness: Harness, dispatch: dict[str, Any], n: int) -> None:
    task_id, attempt = dispatch["task"]["task_id"], dispatch["attempt"]
    result = {"task_id": task_id, "attempt": attempt, "collector_id": "c1", "success": True, "value": n}
    body = {"event": "result", "task_id": task_id, "attempt": attempt, "result": result}
    harness.request(f"{m.RESULT_PREFIX}.c1", body, identity=C1, corr="")


def _turn(harness: Harness) -> None:
    harness.loop.run_until_complete(asyncio.sleep(0))


def test_without_wait_one_reply_lists_every_spec_in_order(harness: Harness) -> None:
    specs = [{"operation": "echo", "payload": i} for i in range(5)]
    reply = harness.request(m.BATCH, {"tasks": specs}, corr="b1")
    assert (reply.kind, reply.topic) == (Kind.REPLY, m.BATCH)
    assert reply.body["remaining"] == 0
    assert [item["index"] for item in reply.body["items"]] == list(range(5))
    ids = [item["task_id"] for item in reply.body["items"]]
    assert len(set(ids)) == 5
    assert harness.service.stats()["tasks_queued"] == 5
    # each task is what its spec says
    for i, task_id in enumerate(ids):
        got = harness.request(m.GET, {"task_id": task_id}, corr=f"g{i}")
        assert got.body["operation"] == "echo" and got.body["state"] == "queued"


def test_an_invalid_spec_is_refused_with_its_index_and_the_rest_are_taken(harness: Harness) -> None:
    specs: list[Any] = [
        {"operation": "echo"},
        {"operation": "no such op!"},
        "not a map",
        {"operation": "echo", "priority": 99},
        {"operation": "echo", "task_id": "same"},
        {"operation": "echo", "task_id": "same"},
        {"operation": "echo", "wait": True},
    ]
    items = harness.request(m.BATCH, {"tasks": specs}, corr="b1").body["items"]
    assert [item["index"] for item in items] == list(range(len(specs)))
    assert "task_id" in items[0] and "task_id" in items[4]
    codes = {i: item["error"]["code"] for i, item in enumerate(items) if "error" in item}
    assert codes == {1: "invalid", 2: "invalid", 3: "invalid", 5: "duplicate", 6: "invalid"}
    for i in codes:
        assert items[i]["error"]["message"].startswith(f"tasks[{i}]: ")
    assert harness.service.stats()["tasks_submitted"] == 2
    assert harness.service.rejected["invalid"] == 4


_valid = st.builds(
    lambda p, pr: {"operation": "echo", "payload": p, "priority": pr},
    st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=8) | st.none(),
    st.integers(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX),
)
_invalid = st.sampled_from(
    [{"operation": ""}, {"operation": "echo", "priority": -1}, {"payload": 1}, {"operation": "echo", "extra": 1}, 7, []]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_valid, min_size=0, max_size=30), st.data())
def test_a_batch_with_one_invalid_spec_rejects_only_that_spec_with_its_index(
    valid: list[dict[str, Any]], data: st.DataObject
) -> None:
    loop = asyncio.new_event_loop()
    try:
        harness = Harness(loop)
        at = data.draw(st.integers(min_value=0, max_value=len(valid)), label="at")
        specs: list[Any] = [*valid[:at], data.draw(_invalid, label="invalid"), *valid[at:]]
        items = harness.request(m.BATCH, {"tasks": specs}, corr="b1").body["items"]
        assert [item["index"] for item in items] == list(range(len(specs)))
        assert [i for i, item in enumerate(items) if "error" in item] == [at]
        assert items[at]["error"]["message"].startswith(f"tasks[{at}]: ")
        assert harness.service.stats()["tasks_submitted"] == len(valid)
        for item, spec in zip(items[:at] + items[at + 1 :], valid, strict=True):
            task = harness.request(m.GET, {"task_id": item["task_id"]}, corr="g").body
            assert (task["priority"], task["operation"]) == (spec["priority"], "echo")
        harness.service.close()
    finally:
        loop.close()


def test_the_batch_itself_is_refused_when_it_is_not_a_list_of_1_to_1024_specs(harness: Harness) -> None:
    bodies: list[dict[str, Any]] = [
        {"tasks": []},
        {"tasks": [{"operation": "echo"}] * (m.MAX_BATCH_TASKS + 1)},
        {},
        {"tasks": {}},
    ]
    for body in bodies:
        reply = harness.request(m.BATCH, body, corr="b1")
        assert reply.kind is Kind.ERROR and reply.body["code"] == "invalid"
    assert harness.service.stats()["tasks_submitted"] == 0


def test_with_wait_results_follow_as_tasks_finish_coalesced_per_loop_turn(harness: Harness) -> None:
    _register(harness)
    specs = [{"operation": "echo", "payload": i} for i in range(6)]
    harness.request(m.BATCH, {"tasks": specs, "wait": True}, corr="b1")
    [first] = _replies(harness)
    assert first.body["remaining"] == 6 and all("offered" not in item for item in first.body["items"])
    index_of = {item["task_id"]: item["index"] for item in first.body["items"]}
    dispatches = _dispatches(harness)
    assert len(dispatches) == 6
    # three finish in one turn of the loop: one reply with the three, in the order they finished
    for d in (dispatches[4], dispatches[0], dispatches[2]):
        _report(harness, d, index_of[d["task"]["task_id"]])
    _turn(harness)
    second = _replies(harness)[1]
    assert [item["index"] for item in second.body["items"]] == [4, 0, 2]
    assert second.body["remaining"] == 3
    for d in (dispatches[1], dispatches[3], dispatches[5]):
        _report(harness, d, index_of[d["task"]["task_id"]])
        _turn(harness)
    replies = _replies(harness)
    assert [r.body["remaining"] for r in replies] == [6, 3, 2, 1, 0]
    results = {item["index"]: item["task"] for r in replies[1:] for item in r.body["items"]}
    assert sorted(results) == list(range(6))
    assert all(t["state"] == "succeeded" and t["result"]["value"] == i for i, t in results.items())
    assert harness.service.stats()["waiting_requests"] == 0
    _turn(harness)
    assert len(_replies(harness)) == 5  # nothing after remaining 0


def test_with_wait_a_spec_refused_or_unoffered_says_so_in_the_first_reply(harness: Harness) -> None:
    specs = [{"operation": "echo"}, {"operation": "bad op"}]
    harness.request(m.BATCH, {"tasks": specs, "wait": True, "wait_s": 0.05}, corr="b1")
    [first] = _replies(harness)
    assert first.body["remaining"] == 1
    assert first.body["items"][0]["offered"] is False and "error" in first.body["items"][1]
    harness.loop.run_until_complete(asyncio.sleep(0.2))  # the wait runs out: the task as it is now
    last = _replies(harness)[-1]
    assert last.body["remaining"] == 0
    [item] = last.body["items"]
    assert item["index"] == 0 and item["task"]["state"] == "queued"
    assert harness.service.stats()["waiting_requests"] == 0


def test_tasks_final_when_submitted_are_reported_on_the_next_turn(harness: Harness) -> None:
    # a dependency on a task that failed ends the dependent task at once
    parent = harness.request(m.SUBMIT, {"operation": "echo", "task_id": "p"}, corr="s1")
    assert parent.kind is Kind.REPLY
    harness.request(m.CANCEL, {"task_id": "p"}, corr="c")
    harness.request(m.BATCH, {"tasks": [{"operation": "echo", "depends_on": ["p"]}], "wait": True}, corr="b1")
    _turn(harness)
    first, second = _replies(harness)
    assert first.body["remaining"] == 1 and second.body["remaining"] == 0
    assert second.body["items"][0]["task"]["state"] in {"failed", "cancelled"}


def test_a_waiting_batch_is_told_once_when_the_daemon_stops(harness: Harness) -> None:
    _register(harness)
    harness.request(m.BATCH, {"tasks": [{"operation": "echo"}] * 3, "wait": True}, corr="b1")
    assert harness.service.refuse_waiters() == 1
    last = _replies(harness)[-1]
    assert last.kind is Kind.ERROR and last.body["code"] == "shutting_down"
    harness.service.close()
    reply = harness.request(m.BATCH, {"tasks": [{"operation": "echo"}]}, corr="b2")
    assert reply.kind is Kind.ERROR and reply.body["code"] == "shutting_down"


def test_a_batch_without_an_id_is_taken_without_reply(harness: Harness) -> None:
    _register(harness)
    harness.request(m.BATCH, {"tasks": [{"operation": "echo"}] * 2, "wait": True}, corr="")
    _turn(harness)
    assert harness.to(b"client") == []
    assert harness.service.stats()["tasks_submitted"] == 2
    assert harness.service.stats()["waiting_requests"] == 0


def test_a_batch_from_a_peer_not_served_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        harness = Harness(loop)
        harness.service._policy = AccessPolicy.build(os.getuid() + 1, (), (), ())
        outsider = ME.__class__(uid=ME.uid, gid=ME.gid, pid=ME.pid, conn=2, served=False)
        frame = encode(Envelope(Kind.REQUEST, "b1", m.BATCH, {"tasks": [{"operation": "echo"}]}))
        harness.service.on_message(b"client", [frame], outsider)
        [reply] = harness.to(b"client")
        assert reply.body["code"] == "forbidden"
        assert harness.service.stats()["tasks_submitted"] == 0
    finally:
        loop.close()


@pytest.mark.parametrize("max_size", [600, 2000, 1 << 20])
def test_items_are_split_over_frames_in_order_and_remaining_counts_down(max_size: int) -> None:
    items = [{"index": i, "task_id": f"{i:032x}"} for i in range(40)]
    items.append({"index": 40, "task": {"task_id": "t", "result": {"value": "x" * 5000}, "truncated": False}})
    frames = item_frames("b1", m.BATCH, items, 7, max_size)
    bodies = [decode(f, max_size).body for f in frames]
    assert all(len(f) <= max_size for f in frames)
    got = [item for b in bodies for item in b["items"]]
    assert [item["index"] for item in got] == list(range(41))
    counts = [b["remaining"] for b in bodies]
    assert counts[-1] == 7 and counts == sorted(counts, reverse=True)
    assert all(counts[i] == counts[i + 1] + len(bodies[i + 1]["items"]) for i in range(len(bodies) - 1))
    if max_size < 5000:
        assert got[40]["task"]["truncated"] is True and got[40]["task"]["result"]["value"] is None

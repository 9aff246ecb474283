"""Topic validation and MQTT-style matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import InvalidTopic
from eventbus.topics import Subscriptions, matches, validate_pattern, validate_topic


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("events.task.succeeded.echo", "events.task.succeeded.echo", True),
        ("events.task.+.echo", "events.task.failed.echo", True),
        ("events.task.+.echo", "events.task.failed.sleep", False),
        ("events.#", "events.task.failed.sleep", True),
        ("events.#", "events", True),
        ("events.task.#", "events.collector.joined.demo", False),
        ("+", "events", True),
        ("+", "events.task", False),
        ("events.task", "events.task.queued", False),
        ("events.task.queued.echo", "events.task", False),
        ("#", "a.b.c", True),
    ],
)
def test_matching(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize("topic", ["", "a..b", "A.b", "a.b c", "a.+", "a.#", ".".join("a" * 9), "a.b."])
def test_invalid_topics_are_rejected(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


@pytest.mark.parametrize("pattern", ["#.a", "a.#.b", "a.b+", "a.*"])
def test_invalid_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_pattern(pattern)


segments = st.lists(st.from_regex(r"[a-z0-9_-]{1,5}", fullmatch=True), min_size=1, max_size=8)


@given(segments)
def test_a_topic_matches_itself_hash_and_plus_patterns(parts: list[str]) -> None:
    topic = ".".join(parts)
    assert matches(topic, topic)
    assert matches("#", topic)
    assert matches(".".join("+" * len(parts)), topic)
    assert not matches(".".join("+" * (len(parts) + 1)), topic)


def test_subscriptions_return_only_matching_peers() -> None:
    subs = Subscriptions()
    subs.add(b"a", ["events.task.#"])
    subs.add(b"b", ["events.collector.+.demo"])
    assert subs.subscribers("events.task.queued.echo") == [b"a"]
    assert subs.subscribers("events.collector.joined.demo") == [b"b"]
    subs.remove(b"a")
    assert subs.subscribers("events.task.queued.echo") == []


def test_subscribing_with_an_invalid_pattern_is_rejected() -> None:
    with pytest.raises(InvalidTopic):
        Subscriptions().add(b"a", ["events.#.x"])


@pytest.mark.parametrize("pattern", ["control.collector.task.#", "control.#", "task.+.echo", "eventsx.#"])
def test_a_subscription_that_can_never_match_an_event_is_refused_naming_the_rule(pattern: str) -> None:
    subs = Subscriptions()
    with pytest.raises(InvalidTopic, match=r"only events\.\* topics are published") as err:
        subs.add(b"a", ["events.#", pattern])
    assert err.value.code == "bad_topic"
    assert len(subs) == 0  # all or nothing


@pytest.mark.parametrize("pattern", ["events", "events.#", "+.task.#", "#", "+"])
def test_patterns_that_can_match_an_event_are_taken(pattern: str) -> None:
    subs = Subscriptions()
    subs.add(b"a", [pattern])
    assert subs.subscribers("events") == [b"a"] or subs.subscribers("events.task.queued.echo") == [b"a"]

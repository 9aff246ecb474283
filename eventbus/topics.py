"""The topic namespace: validation and MQTT-style matching (``+`` one segment, ``#`` the rest)."""

from __future__ import annotations

import re

from eventbus.errors import InvalidTopic

MAX_DEPTH = 8
MAX_LENGTH = 255
_SEGMENT = re.compile(r"[a-z0-9_-]+\Z")


#: topics already found valid (most messages repeat a few topics); cleared when full
_VALID_TOPICS: set[str] = set()
_VALID_TOPICS_MAX = 4096


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid concrete topic, else raise :class:`InvalidTopic`."""
    if topic in _VALID_TOPICS:
        return topic
    _check(topic, wildcards=False)
    if len(_VALID_TOPICS) >= _VALID_TOPICS_MAX:
        _VALID_TOPICS.clear()
    _VALID_TOPICS.add(topic)
    return topic


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription pattern, else raise :class:`InvalidTopic`."""
    _check(pattern, wildcards=True)
    return pattern


#: the only topics published to subscribers are events (the rest are requests, replies and commands)
EVENTS_ROOT = "events"


def validate_subscription(pattern: str) -> str:
    """Return ``pattern`` if it is valid and can match an ``events.`` topic, else raise :class:`InvalidTopic`.

    A pattern that can never deliver (``control.collector.task.#``) would
    otherwise be accepted and stay silent.
    """
    validate_pattern(pattern)
    if pattern.split(".", 1)[0] not in (EVENTS_ROOT, "+", "#"):
        raise InvalidTopic(
            f"pattern {pattern!r} can never match: only {EVENTS_ROOT}.* topics are published to subscribers "
            f"(a pattern's first segment must be {EVENTS_ROOT!r}, '+' or '#')"
        )
    return pattern


def _check(text: object, *, wildcards: bool) -> None:
    what = "pattern" if wildcards else "topic"
    if not isinstance(text, str) or not text:
        raise InvalidTopic(f"{what} must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise InvalidTopic(f"{what} is {len(text)} characters long (max {MAX_LENGTH})")
    segments = text.split(".")
    if len(segments) > MAX_DEPTH:
        raise InvalidTopic(f"{what} {text!r} has {len(segments)} segments (max {MAX_DEPTH})")
    for i, seg in enumerate(segments):
        if wildcards and seg == "+":
            continue
        if wildcards and seg == "#":
            if i != len(segments) - 1:
                raise InvalidTopic(f"pattern {text!r}: '#' is only allowed as the last segment")
            continue
        if not _SEGMENT.match(seg):
            raise InvalidTopic(f"{what} {text!r}: segment {seg!r} must match [a-z0-9_-]+")


def matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern`` (both assumed valid)."""
    return _match(pattern.split("."), topic.split("."))


def _match(pat: list[str], top: list[str]) -> bool:
    for i, p in enumerate(pat):
        if p == "#":
            return True
        if i >= len(top) or (p != "+" and p != top[i]):
            return False
    return len(pat) == len(top)


class Subscriptions:
    """Patterns per subscriber; answers who wants a topic."""

    def __init__(self) -> None:
        self._by_peer: dict[bytes, dict[str, list[str]]] = {}

    def __len__(self) -> int:
        return len(self._by_peer)

    def __contains__(self, peer: object) -> bool:
        return peer in self._by_peer

    def add(self, peer: bytes, patterns: list[str]) -> None:
        for p in patterns:  # all or nothing
            validate_subscription(p)
        mine = self._by_peer.setdefault(peer, {})
        for p in patterns:
            mine[p] = p.split(".")

    def remove(self, peer: bytes, patterns: list[str] | None = None) -> None:
        if patterns is None:
            self._by_peer.pop(peer, None)
            return
        mine = self._by_peer.get(peer, {})
        for p in patterns:
            mine.pop(p, None)
        if not mine:
            self._by_peer.pop(peer, None)

    def subscribers(self, topic: str) -> list[bytes]:
        """Peers with at least one pattern matching ``topic``."""
        if not self._by_peer:
            return []
        parts = topic.split(".")
        return [peer for peer, pats in self._by_peer.items() if any(_match(p, parts) for p in pats.values())]

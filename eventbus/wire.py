"""The wire format: a versioned msgpack envelope, one ZeroMQ frame per message.

See docs/PROTOCOL.md for the normative description.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack

from eventbus.errors import BadVersion, ProtocolError, TooLarge, UnknownKind
from eventbus.topics import validate_topic

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
MAX_ID_LENGTH = 64


class Kind(enum.StrEnum):
    """The message type of an envelope."""

    REQUEST = "request"
    REPLY = "reply"
    ERROR = "error"
    PUBLISH = "publish"


_KINDS = {k.value: k for k in Kind}


@dataclass(slots=True)
class Envelope:
    """One message: ``kind``, correlation ``id``, ``topic`` and a map ``body``."""

    kind: Kind
    id: str
    topic: str
    body: dict[str, Any] = field(default_factory=dict)
    #: size of the frame it was decoded from (0 for envelopes built locally)
    size: int = field(default=0, compare=False)


def encode(env: Envelope, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Serialise an envelope; :class:`TooLarge` past ``max_size``, :class:`ProtocolError` if unencodable."""
    try:
        data: bytes = msgpack.packb(
            {"v": PROTOCOL_VERSION, "kind": env.kind.value, "id": env.id, "topic": env.topic, "body": env.body},
            use_bin_type=True,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"body cannot be encoded as msgpack: {exc}", correlation_id=env.id) from exc
    if len(data) > max_size:
        raise TooLarge(f"message of {len(data)} bytes exceeds the limit of {max_size}", correlation_id=env.id)
    return data


def decode(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Envelope:
    """Parse and check one frame. Every failure is a :class:`ProtocolError` subclass."""
    if len(data) > max_size:
        raise TooLarge(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack: {type(exc).__name__}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(f"envelope must be a map, got {type(raw).__name__}")
    corr = raw.get("id")
    if not isinstance(corr, str) or len(corr) > MAX_ID_LENGTH:
        raise ProtocolError(f"envelope 'id' must be a string of at most {MAX_ID_LENGTH} characters")
    version = raw.get("v")
    if version != PROTOCOL_VERSION:
        raise BadVersion(
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})",
            correlation_id=corr,
        )
    kind = _KINDS.get(raw.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise UnknownKind(f"unknown message type {raw.get('kind')!r}", correlation_id=corr)
    topic = raw.get("topic")
    try:
        validate_topic(topic)  # type: ignore[arg-type]
    except Exception as exc:
        raise ProtocolError(str(exc), correlation_id=corr, code="bad_topic") from exc
    body = raw.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError(f"envelope 'body' must be a map, got {type(body).__name__}", correlation_id=corr)
    extra = set(raw) - {"v", "kind", "id", "topic", "body"}
    if extra:
        raise ProtocolError(f"unknown envelope fields: {sorted(extra)}", correlation_id=corr)
    return Envelope(kind, corr, topic, body, len(data))  # type: ignore[arg-type]


MAX_ERROR_MESSAGE = 1024


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of an ``error`` envelope (the message cut to 1 KiB so an error always fits)."""
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return {"code": code, "message": message}

"""The wire format: a versioned msgpack envelope, one ZeroMQ frame per message.

See docs/PROTOCOL.md for the normative description.
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from eventbus.errors import BadVersion, ProtocolError, TooDeep, TooLarge, UnknownKind
from eventbus.topics import validate_topic

#: the highest protocol version this side speaks. Version 2 adds batch frames (several envelopes in
#: one frame); envelopes are the same in both. A peer that sends a ``v: 2`` envelope or a batch frame
#: may be sent batch frames; the daemon writes ``v: 1`` in what it sends, which every peer reads.
PROTOCOL_VERSION = 2
#: the envelope versions read
VERSIONS = (1, 2)
#: envelopes in one batch frame, at most
MAX_BATCH = 1024
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
MAX_ID_LENGTH = 64
#: maps and arrays a frame sent to the daemon may nest, the envelope map counted as level 1
MAX_DEPTH = 64
#: extra levels a peer accepts in what the daemon sends: the daemon embeds values it took
#: at MAX_DEPTH in records (a result value sits two levels deeper in a task list reply)
DEPTH_HEADROOM = 8
#: levels a task payload may nest: it sits in a submit's body, inside the envelope
MAX_PAYLOAD_DEPTH = MAX_DEPTH - 2


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
    #: size of the frame (or, in a batch frame, of the envelope) it was decoded from (0 when built locally)
    size: int = field(default=0, compare=False)
    #: estimated memory of the decoded message: its size plus ELEMENT_COST per map or array
    #: element (a 1 MiB frame of empty maps decodes to ~70 MB of Python objects)
    weight: int = field(default=0, compare=False)
    #: the ``v`` it was decoded with
    version: int = field(default=1, compare=False)


def encode(env: Envelope, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, version: int = 1) -> bytes:
    """Serialise an envelope; :class:`TooLarge` past ``max_size``, :class:`ProtocolError` if unencodable."""
    try:
        data: bytes = msgpack.packb(
            {"v": version, "kind": env.kind.value, "id": env.id, "topic": env.topic, "body": env.body},
            use_bin_type=True,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"body cannot be encoded as msgpack: {exc}", correlation_id=env.id) from exc
    if len(data) > max_size:
        raise TooLarge(f"message of {len(data)} bytes exceeds the limit of {max_size}", correlation_id=env.id)
    return data


def decode(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_depth: int = MAX_DEPTH) -> Envelope:
    """Parse and check one frame. Every failure is a :class:`ProtocolError` subclass.

    The error's ``correlation_id`` is the frame's ``id`` whenever the envelope
    head can be read, even when the rest of the frame cannot.
    """
    if len(data) > max_size:
        raise TooLarge(f"frame of {len(data)} bytes exceeds the limit of {max_size}", correlation_id=peek_id(data))
    return _envelope(_unpack(data, max_depth), data, 0, len(data), max_depth)


def is_batch(data: bytes) -> bool:
    """Whether a frame is a batch frame (a msgpack array of envelopes) rather than one envelope."""
    return bool(data) and (0x90 <= data[0] <= 0x9F or data[0] in (0xDC, 0xDD))


def decode_batch(
    data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_depth: int = MAX_DEPTH
) -> list[Envelope | ProtocolError]:
    """Parse a batch frame: its envelopes in order, each checked as :func:`decode` checks a frame.

    An envelope that fails its checks is returned as its error, and the others
    still count; a frame that cannot be read as a batch at all raises.
    """
    if len(data) > max_size:
        raise TooLarge(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, ext_hook=_refuse_ext, max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    try:
        count = unpacker.read_array_header()
    except Exception as exc:
        raise ProtocolError(f"frame is not valid msgpack: {_why(exc)}") from exc
    if not 1 <= count <= MAX_BATCH:
        raise ProtocolError(f"a batch frame holds 1 to {MAX_BATCH} envelopes, not {count}")
    out: list[Envelope | ProtocolError] = []
    start = unpacker.tell()
    for _ in range(count):
        raw = _unpack_next(unpacker, max_depth)
        end = unpacker.tell()
        try:
            out.append(_envelope(raw, data, start, end, max_depth))
        except ProtocolError as exc:
            out.append(exc)
        start = end
    if start != len(data):
        raise ProtocolError(f"{len(data) - start} bytes follow the {count} envelopes of a batch frame")
    return out


def encode_batch(parts: list[bytes]) -> bytes:
    """A batch frame of already encoded envelopes (no re-encoding: an array header, then the parts)."""
    n = len(parts)
    head = (
        bytes([0x90 | n])
        if n < 16
        else b"\xdc" + n.to_bytes(2, "big")
        if n < 1 << 16
        else b"\xdd" + n.to_bytes(4, "big")
    )
    return head + b"".join(parts)


def batches(parts: list[bytes], max_size: int) -> Iterator[tuple[bytes, int]]:
    """``(frame, envelopes in it)``: ``parts`` (encoded envelopes) in as few frames as ``max_size`` and
    :data:`MAX_BATCH` allow; one part alone is sent as itself, not as a batch of one."""
    start = 0
    while start < len(parts):
        end, size = start + 1, len(parts[start]) + 5
        while end < len(parts) and end - start < MAX_BATCH and size + len(parts[end]) <= max_size:
            size += len(parts[end])
            end += 1
        yield (parts[start] if end - start == 1 else encode_batch(parts[start:end])), end - start
        start = end


def _unpack_next(unpacker: msgpack.Unpacker, max_depth: int) -> Any:
    try:
        return unpacker.unpack()
    except msgpack.StackError as exc:
        raise _too_deep(max_depth, "") from exc
    except _ExtTypeFound as exc:
        raise ProtocolError(str(exc)) from exc
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack: {_why(exc)}") from exc


def _envelope(raw: Any, data: bytes, start: int, end: int, max_depth: int) -> Envelope:
    """Check a decoded envelope that took ``data[start:end]``."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"envelope must be a map, got {type(raw).__name__}")
    corr = raw.get("id")
    if not isinstance(corr, str) or len(corr) > MAX_ID_LENGTH:
        raise ProtocolError(f"envelope 'id' must be a string of at most {MAX_ID_LENGTH} characters")
    # a frame without a timestamp's head bytes holds no timestamp: only the others are searched
    searched = _TIMESTAMP_HEAD.search(data, start, end) is not None
    levels, elements, stamped = _walk(raw, max_depth, searched)
    if levels > max_depth:
        raise _too_deep(max_depth, corr)
    if stamped:
        raise ProtocolError(f"{_NO_EXT} (found a timestamp, ext type -1)", correlation_id=corr)
    version = raw.get("v")
    if version not in VERSIONS or type(version) is not int:
        raise BadVersion(
            f"protocol version {version!r} is not supported (this side speaks {', '.join(map(str, VERSIONS))})",
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
    size = end - start
    return Envelope(kind, corr, topic, body, size, size + ELEMENT_COST * elements, version)  # type: ignore[arg-type]


_NO_EXT = "msgpack ext types are not part of the protocol"
#: how a msgpack timestamp starts (fixext 4, fixext 8, ext 8 of 12 bytes, each of type -1): msgpack
#: decodes timestamps itself, without the ext hook, so a frame holding one of these is searched
_TIMESTAMP_HEADS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")
#: one search for any of them (a frame without one is never walked)
_TIMESTAMP_HEAD = re.compile(b"|".join(re.escape(h) for h in _TIMESTAMP_HEADS))


class _ExtTypeFound(ValueError):
    pass


def _refuse_ext(code: int, data: bytes) -> Any:
    # decoded, an ext value would reach a model as an ExtType tuple and be re-sent as an array
    raise _ExtTypeFound(f"{_NO_EXT} (found ext type {code})")


def _unpack(data: bytes, max_depth: int) -> Any:
    try:
        # strict keys: a map with int keys would be hashed by a predictable hash (a flooding risk)
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except msgpack.StackError as exc:  # deeper than msgpack's own stack, far past max_depth
        raise _too_deep(max_depth, peek_id(data)) from exc
    except _ExtTypeFound as exc:
        raise ProtocolError(str(exc), correlation_id=peek_id(data)) from exc
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack: {_why(exc)}", correlation_id=peek_id(data)) from exc


def _why(exc: Exception) -> str:
    if isinstance(exc, ValueError) and "map key" in str(exc):
        return "map keys must be strings"
    return type(exc).__name__


def _too_deep(max_depth: int, corr: str) -> TooDeep:
    return TooDeep(f"message nests maps and arrays more than {max_depth} levels deep (the limit)", correlation_id=corr)


_CONTAINERS = (dict, list)


#: bytes a decoded map or array element costs beyond its share of the frame (object header,
#: slot, hash entry): an estimate, used to bound what decoded messages hold in memory
ELEMENT_COST = 64


def measure(value: Any, limit: int) -> tuple[int, int]:
    """(levels, elements): how many levels of maps and arrays ``value`` nests (a scalar: 0), counted
    up to ``limit + 1``, and how many elements those maps and arrays hold.

    Iterative, breadth first: deep input never recurses, and counting stops
    one level past ``limit``. Map keys are not visited.
    """
    levels, elements, _ = _walk(value, limit, False)
    return levels, elements


def _walk(value: Any, limit: int, timestamps: bool) -> tuple[int, int, bool]:
    """:func:`measure`, and with ``timestamps`` whether a msgpack Timestamp is among the values walked
    (within ``limit + 1`` levels: deeper input is refused as too deep anyway), in the same walk."""
    if type(value) is msgpack.Timestamp:
        return 0, 0, True
    level = [value] if type(value) in _CONTAINERS else []
    levels = elements = 0
    while level and levels <= limit:
        levels += 1
        elements += sum(map(len, level))
        # one comprehension per level: the per-item loop overhead is most of the cost
        if timestamps:
            values = [v for item in level for v in (item.values() if type(item) is dict else item)]
            if msgpack.Timestamp in map(type, values):
                return levels, elements, True
            level = [v for v in values if type(v) in _CONTAINERS]
        else:
            level = [
                v for item in level for v in (item.values() if type(item) is dict else item) if type(v) in _CONTAINERS
            ]
    return levels, elements, False


def weigh(value: Any) -> tuple[int, int]:
    """``(size, weight)`` of a value that came in a frame, as :class:`Envelope` gives them for a whole
    message: the bytes it takes encoded, and those plus ELEMENT_COST per map or array element."""
    size = len(msgpack.packb(value, use_bin_type=True))
    return size, size + ELEMENT_COST * measure(value, MAX_DEPTH)[1]


def depth(value: Any, limit: int) -> int:
    """How many levels of maps and arrays ``value`` nests, counted up to ``limit + 1`` (see :func:`measure`)."""
    return measure(value, limit)[0]


def check_value(value: Any, max_depth: int = MAX_DEPTH, *, above: int = 0) -> None:
    """Raise what the daemon would answer to ``value`` sent ``above`` levels deep in a frame:
    :class:`TooDeep` past ``max_depth`` levels, :class:`ProtocolError` for a map key that is not a string.

    Unlike :func:`depth` it accepts what a sender may hold (tuples, dict
    subclasses) and visits map keys.
    """
    level, levels = [value], above + 1  # the level of what ``level`` holds, if containers
    while True:
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                bad = next((k for k in item if not isinstance(k, str)), None)
                if bad is not None:
                    raise ProtocolError(f"map keys must be strings, found {type(bad).__name__} key {bad!r:.40}")
                below += [v for v in item.values() if isinstance(v, dict | list | tuple)]
            elif isinstance(item, list | tuple):
                below += [v for v in item if isinstance(v, dict | list | tuple)]
        if not below:
            return
        levels += 1
        if levels > max_depth:
            raise _too_deep(max_depth, "")
        level = below


def peek_id(data: bytes) -> str:
    """The ``id`` of a frame read from its head alone ("" when it cannot be read).

    Used for frames that cannot be decoded whole, so the answer still
    correlates: encoders write ``id`` before ``body``, so only small values are read.
    """
    try:
        unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, strict_map_key=True)
        for _ in range(min(unpacker.read_map_header(), 8)):
            if unpacker.unpack() == "id":
                corr = unpacker.unpack()
                return corr if isinstance(corr, str) and len(corr) <= MAX_ID_LENGTH else ""
            unpacker.skip()
    except Exception:  # garbage: nothing to correlate with
        return ""
    return ""


MAX_ERROR_MESSAGE = 1024


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of an ``error`` envelope (the message cut to 1 KiB so an error always fits)."""
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return {"code": code, "message": message}

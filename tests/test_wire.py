"""The wire envelope: round trips, limits and typed errors for every kind of bad frame."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import BadVersion, EventBusError, ProtocolError, TooLarge, UnknownKind
from eventbus.wire import PROTOCOL_VERSION, Envelope, Kind, decode, encode

segment = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
topics = st.lists(segment, min_size=1, max_size=8).map(".".join)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
envelopes = st.builds(
    Envelope,
    kind=st.sampled_from(list(Kind)),
    id=st.text(max_size=64),
    topic=topics,
    body=st.dictionaries(st.text(max_size=8), values, max_size=5),
)


@given(envelopes)
def test_any_valid_envelope_decodes_to_itself(env: Envelope) -> None:
    assert decode(encode(env)) == env


@given(st.binary(max_size=256))
def test_any_bytes_decode_to_an_envelope_or_a_protocol_error(data: bytes) -> None:
    try:
        env = decode(data)
    except ProtocolError as exc:
        assert exc.code in {"bad_frame", "bad_version", "unknown_type", "too_large", "bad_topic"}
    else:
        assert isinstance(env, Envelope)


def _raw(**fields: object) -> bytes:
    base: dict[str, object] = {"v": PROTOCOL_VERSION, "kind": "request", "id": "c1", "topic": "a.b", "body": {}}
    base.update(fields)
    return msgpack.packb(base)  # type: ignore[no-any-return]


def test_wrong_version_is_bad_version_and_keeps_the_correlation_id() -> None:
    with pytest.raises(BadVersion) as err:
        decode(_raw(v=2))
    assert err.value.correlation_id == "c1"
    assert err.value.code == "bad_version"


def test_unknown_kind_is_unknown_type() -> None:
    with pytest.raises(UnknownKind):
        decode(_raw(kind="shout"))


def test_invalid_topic_is_rejected_with_bad_topic() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(_raw(topic="Upper.Case"))
    assert err.value.code == "bad_topic"


def test_body_must_be_a_map() -> None:
    with pytest.raises(ProtocolError, match="body"):
        decode(_raw(body=[1, 2]))


def test_unknown_envelope_fields_are_rejected() -> None:
    with pytest.raises(ProtocolError, match="unknown envelope fields"):
        decode(_raw(extra=1))


def test_frame_over_the_limit_is_too_large() -> None:
    with pytest.raises(TooLarge):
        decode(b"\x80" * 2048, max_size=1024)


def test_encoding_over_the_limit_is_too_large() -> None:
    with pytest.raises(TooLarge):
        encode(Envelope(Kind.REQUEST, "x", "a.b", {"blob": b"x" * 2048}), max_size=1024)


def test_unencodable_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        encode(Envelope(Kind.REQUEST, "x", "a.b", {"obj": object()}))


def test_protocol_errors_share_the_eventbus_root() -> None:
    assert issubclass(ProtocolError, EventBusError)

"""The wire envelope: round trips, limits and typed errors for every kind of bad frame."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import BadVersion, EventBusError, ProtocolError, TooDeep, TooLarge, UnknownKind, error_from_code
from eventbus.wire import (
    MAX_BATCH,
    MAX_DEPTH,
    PROTOCOL_VERSION,
    Envelope,
    Kind,
    batches,
    check_value,
    decode,
    decode_batch,
    depth,
    encode,
    encode_batch,
    is_batch,
)

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
        assert exc.code in {"bad_frame", "bad_version", "unknown_type", "too_large", "too_deep", "bad_topic"}
    else:
        assert isinstance(env, Envelope)


def _raw(**fields: object) -> bytes:
    base: dict[str, object] = {"v": PROTOCOL_VERSION, "kind": "request", "id": "c1", "topic": "a.b", "body": {}}
    base.update(fields)
    return msgpack.packb(base)  # type: ignore[no-any-return]


def test_wrong_version_is_bad_version_and_keeps_the_correlation_id() -> None:
    with pytest.raises(BadVersion) as err:
        decode(_raw(v=3))
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


def _nested(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


def test_a_frame_nested_past_the_limit_is_too_deep_naming_the_limit_and_keeping_the_id() -> None:
    decode(_raw(body={"p": _nested(MAX_DEPTH - 2)}))  # envelope, body, then the payload's levels
    with pytest.raises(TooDeep) as err:
        decode(_raw(body={"p": _nested(MAX_DEPTH - 1)}))
    assert err.value.code == "too_deep" and err.value.correlation_id == "c1"
    assert f"{MAX_DEPTH} levels" in err.value.message


def test_a_frame_deeper_than_msgpack_can_unpack_is_too_deep_with_its_id() -> None:
    head = _raw(body={})[:-1]  # the envelope up to the body's empty map
    with pytest.raises(TooDeep) as err:
        decode(head + b"\x81\xa1x" + b"\x91" * 5000 + b"\xc0")
    assert err.value.correlation_id == "c1"


def test_a_map_key_that_is_not_a_string_is_bad_frame_with_the_id() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(_raw(body={"result": {1: "x"}}))
    assert err.value.code == "bad_frame" and err.value.correlation_id == "c1"
    assert "map keys must be strings" in err.value.message


def test_a_frame_over_the_limit_keeps_the_id_when_its_head_is_readable() -> None:
    with pytest.raises(TooLarge) as err:
        decode(_raw(body={"blob": b"x" * 2048}), max_size=1024)
    assert err.value.correlation_id == "c1"


def test_garbage_has_no_id_to_echo() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(b"\xdf\xff\xff\xff\xff\xc1")
    assert err.value.correlation_id == ""


def test_depth_counts_levels_of_maps_and_arrays_and_stops_past_the_limit() -> None:
    assert depth(0, 64) == 0
    assert depth({"a": [1, {"b": []}]}, 64) == 4
    assert depth(_nested(10_000), 64) == 65


def test_check_value_refuses_what_the_daemon_would_refuse() -> None:
    check_value({"a": (1, [2])}, 64)
    with pytest.raises(ProtocolError, match="map keys must be strings"):
        check_value([{"ok": {2: "x"}}], 64)
    with pytest.raises(TooDeep, match="64 levels"):
        check_value(_nested(64), 64, above=1)


def test_error_codes_from_the_daemon_become_the_typed_protocol_errors() -> None:
    assert isinstance(error_from_code("too_deep", "m"), TooDeep)
    assert isinstance(error_from_code("too_large", "m"), TooLarge)


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(5, b"x"), {"at": [msgpack.Timestamp(1, 5)]}, msgpack.Timestamp(2**40, 1), msgpack.Timestamp(0)],
)
def test_a_msgpack_ext_type_anywhere_is_bad_frame_with_the_id(value: object) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(_raw(body={"payload": value}))
    assert err.value.code == "bad_frame" and err.value.correlation_id == "c1"
    assert "ext type" in err.value.message


def test_bytes_that_look_like_a_timestamp_header_are_taken() -> None:
    body = {"payload": [b"\xd6\xff", "\xd6\xff", b"\xc7\x0c\xff"]}
    assert decode(_raw(body=body)).body == body


# ---- batch frames (protocol version 2) ---------------------------------------


@given(st.lists(envelopes, min_size=1, max_size=40), st.integers(min_value=300, max_value=4096))
def test_any_list_of_valid_envelopes_survives_batching(envs: list[Envelope], max_size: int) -> None:
    parts = [encode(e, version=2) for e in envs]
    back: list[Envelope | ProtocolError] = []
    for frame, count in batches(parts, max_size):
        got = decode_batch(frame) if is_batch(frame) else [decode(frame)]
        assert len(got) == count
        assert len(frame) <= max_size or count == 1  # one envelope alone may be as large as it is
        back += got
    assert back == envs
    assert all(isinstance(e, Envelope) and e.version == 2 for e in back)


def test_a_bad_envelope_in_a_batch_fails_alone_with_its_id() -> None:
    good = encode(Envelope(Kind.REQUEST, "a", "a.b", {"n": 1}), version=2)
    bad = _raw(id="b", topic="Not A Topic")
    worse = msgpack.packb([1, 2])  # not even a map
    items = decode_batch(encode_batch([good, bad, worse, good]))
    assert isinstance(items[0], Envelope) and isinstance(items[3], Envelope)
    assert isinstance(items[1], ProtocolError) and items[1].correlation_id == "b" and items[1].code == "bad_topic"
    assert isinstance(items[2], ProtocolError)
    assert items[0].size == len(good)  # each envelope's own size, not the frame's


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x90", "1 to"),  # empty
        (b"\xdd" + (MAX_BATCH + 1).to_bytes(4, "big"), "1 to"),
        (encode_batch([_raw()]) + b"\xc0", "follow"),
        (b"\x92\xc1\xc1", "not valid msgpack"),
    ],
)
def test_a_frame_that_is_no_batch_is_refused_whole(frame: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode_batch(frame)


def test_batches_respect_the_size_and_count_limits() -> None:
    parts = [encode(Envelope(Kind.REQUEST, str(i), "a.b", {"pad": "x" * 100})) for i in range(3000)]
    frames = list(batches(parts, 10_000))
    assert sum(n for _, n in frames) == 3000
    assert all(len(f) <= 10_000 and n <= MAX_BATCH for f, n in frames)
    [(alone, count)] = list(batches(parts[:1], 10_000))
    assert (alone, count) == (parts[0], 1) and not is_batch(alone)


def test_version_1_and_2_envelopes_are_read_and_others_refused() -> None:
    assert decode(_raw(v=1)).version == 1
    assert decode(_raw(v=2)).version == 2
    with pytest.raises(BadVersion):
        decode(_raw(v=True))

"""Control messages and handshake payloads: roundtrips, strict schemas, bounded decoding of hostile input."""

from __future__ import annotations

import math
import os
import random
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiomnet.constants import MAX_CONTROL_MESSAGE_SIZE, PROTOCOL_VERSION
from axiomnet.control import (
    MAX_CAPABILITIES,
    MAX_CAPABILITY_LEN,
    MAX_HEARTBEAT_SEQ,
    HandshakePayload,
    Heartbeat,
    decode_control,
    decode_handshake_payload,
    encode_control,
    unpack_bounded,
)
from axiomnet.errors import InvalidCoordinates, MalformedPacket, RemoteProtocolError
from axiomnet.geometry import TAU, Coords

FUZZ_INPUTS = 10_000


# --- helpers --------------------------------------------------------------------------------------------
def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def heartbeat_map(**changes: Any) -> dict[str, Any]:
    """A valid heartbeat as a plain map, with ``changes`` applied (a value of ``...`` deletes the key)."""
    fields: dict[str, Any] = {"t": "hb", "seq": 7, "coords": [0.5, 1.0], "load": 0.25}
    for key, value in changes.items():
        if value is ...:
            del fields[key]
        else:
            fields[key] = value
    return fields


def decode_or_none(data: bytes) -> Heartbeat | None:
    """decode_control with the two documented rejections as None; anything else escapes and fails."""
    try:
        return decode_control(data)
    except (MalformedPacket, InvalidCoordinates):
        return None


coords_st = st.builds(
    Coords,
    st.floats(0.0, 1.0, exclude_max=True) | st.sampled_from([0.0, 1 - 1e-12, math.nextafter(1.0, 0.0)]),
    st.floats(0.0, TAU, exclude_max=True),
)
heartbeats = st.builds(
    Heartbeat, st.integers(0, MAX_HEARTBEAT_SEQ), coords_st, st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0])
)


# --- heartbeat roundtrip and layout -------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(hb=heartbeats)
def test_heartbeat_roundtrip(hb: Heartbeat) -> None:
    data = encode_control(hb)
    assert len(data) <= MAX_CONTROL_MESSAGE_SIZE
    assert decode_control(data) == hb


def test_heartbeat_encodes_as_the_documented_map() -> None:
    hb = Heartbeat(3, Coords(0.5, 1.0), 0.25)
    assert msgpack.unpackb(encode_control(hb)) == {"t": "hb", "seq": 3, "coords": [0.5, 1.0], "load": 0.25}
    assert list(msgpack.unpackb(encode_control(hb))) == ["t", "seq", "coords", "load"]
    assert encode_control(hb) == bytes.fromhex(  # the example in docs/PROTOCOL.md §2.4.2
        "84a174a26862a373657103a6636f6f72647392cb3fe0000000000000cb3ff0000000000000a46c6f6164cb3fd0000000000000"
    )


def test_heartbeat_from_another_encoder_with_float32_and_any_key_order_decodes() -> None:
    other = msgpack.packb({"load": 0.5, "coords": [0.25, 3.0], "seq": 0, "t": "hb"}, use_single_float=True)
    assert decode_control(other) == Heartbeat(0, Coords(0.25, 3.0), 0.5)


def test_heartbeat_theta_outside_zero_two_pi_is_normalised() -> None:
    hb = decode_control(pack(heartbeat_map(coords=[0.5, 999.0])))
    assert hb.coords == Coords(0.5, 999.0 % TAU)
    assert decode_control(pack(heartbeat_map(coords=[0.5, -1.0]))).coords.theta == pytest.approx(TAU - 1.0)


@pytest.mark.parametrize("seq", [0, MAX_HEARTBEAT_SEQ])
@pytest.mark.parametrize("load", [0.0, 1.0])
def test_heartbeat_range_limits_are_inclusive(seq: int, load: float) -> None:
    hb = Heartbeat(seq, Coords(0.0, 0.0), load)
    assert decode_control(encode_control(hb)) == hb


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq": -1},
        {"seq": MAX_HEARTBEAT_SEQ + 1},
        {"seq": True},
        {"seq": 1.0},
        {"load": -0.1},
        {"load": 1.5},
        {"load": math.nan},
        {"load": math.inf},
        {"load": True},
        {"load": "0.5"},
        {"coords": (0.5, 1.0)},
    ],
)
def test_building_an_invalid_heartbeat_locally_is_a_value_error(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"seq": 1, "coords": Coords(0.5, 1.0), "load": 0.5, **kwargs}
    with pytest.raises(ValueError):
        Heartbeat(**fields)


def test_heartbeat_load_given_as_int_is_stored_as_float() -> None:
    assert type(Heartbeat(1, Coords(0.5, 1.0), 1).load) is float


def test_encode_control_refuses_what_is_not_a_control_message() -> None:
    with pytest.raises(ValueError):
        encode_control(HandshakePayload())  # type: ignore[arg-type]


# --- schema rejections --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (heartbeat_map(extra=1), "unknown keys"),
        (heartbeat_map(seq=...), "missing keys"),
        (heartbeat_map(coords=...), "missing keys"),
        (heartbeat_map(load=...), "missing keys"),
        (heartbeat_map(t=...), "type tag"),
        (heartbeat_map(t="zz"), "unknown control message type"),
        (heartbeat_map(t=1), "type tag"),
        (heartbeat_map(t=b"hb"), "type tag"),
        (heartbeat_map(seq=True), "seq"),
        (heartbeat_map(seq=False), "seq"),
        (heartbeat_map(seq=1.0), "seq"),
        (heartbeat_map(seq=-1), "seq"),
        (heartbeat_map(seq=1 << 63), "seq"),
        (heartbeat_map(seq="1"), "seq"),
        (heartbeat_map(seq=None), "seq"),
        (heartbeat_map(load=math.nan), "load"),
        (heartbeat_map(load=math.inf), "load"),
        (heartbeat_map(load=-0.5), "load"),
        (heartbeat_map(load=1.0000001), "load"),
        (heartbeat_map(load=1), "load"),
        (heartbeat_map(load=True), "load"),
        (heartbeat_map(coords=[0.5]), "coords"),
        (heartbeat_map(coords=[0.5, 1.0, 2.0]), "coords"),
        (heartbeat_map(coords=[0, 1.0]), "coords"),
        (heartbeat_map(coords=[True, 1.0]), "coords"),
        (heartbeat_map(coords=["0.5", 1.0]), "coords"),
        (heartbeat_map(coords={"r": 0.5, "theta": 1.0}), "coords"),
        (heartbeat_map(coords=0.5), "coords"),
        ([], "not a map"),
        ("hb", "not a map"),
        (None, "not a map"),
        ({b"t": "hb", "seq": 7, "coords": [0.5, 1.0], "load": 0.25}, "type tag"),
        ({**heartbeat_map(), b"seq": 1}, "unknown keys"),
    ],
)
def test_off_schema_control_message_is_malformed(obj: Any, match: str) -> None:
    with pytest.raises(MalformedPacket, match=match):
        decode_control(pack(obj))


@pytest.mark.parametrize(
    "coords", [[1.5, 0.0], [1.0, 0.0], [-0.1, 0.0], [math.nan, 0.0], [math.inf, 0.0], [0.5, math.nan], [0.5, -math.inf]]
)
def test_coordinates_outside_the_disk_are_invalid_coordinates(coords: list[float]) -> None:
    with pytest.raises(InvalidCoordinates):
        decode_control(pack(heartbeat_map(coords=coords)))
    assert issubclass(InvalidCoordinates, RemoteProtocolError)


def test_repeated_map_key_is_malformed() -> None:
    # {"t": "hb", "seq": 1, "seq": 2, "coords": [...], "load": ...}: which seq would another decoder keep?
    pairs = [("t", "hb"), ("seq", 1), ("seq", 2), ("coords", [0.5, 1.0]), ("load", 0.5)]
    body = b"".join(pack(k) + pack(v) for k, v in pairs)
    with pytest.raises(MalformedPacket, match="repeats a key"):
        decode_control(b"\x85" + body)


@pytest.mark.parametrize(
    "data", [b"\xc7\x00\x05", b"\xc7\x00\xff", b"\xd4\x05\x00", b"\xd6\xff\x00\x00\x00\x00"]
)
def test_msgpack_extension_types_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        unpack_bounded(data, "test")
    with pytest.raises(MalformedPacket):
        decode_control(pack(heartbeat_map())[:-9] + data)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", pack(heartbeat_map()) + b"\x00", pack(heartbeat_map())[:-1], b"\xff" * 10]
)
def test_invalid_msgpack_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_control(data)


def test_control_message_over_the_size_limit_is_malformed_before_parsing() -> None:
    with pytest.raises(MalformedPacket, match="exceeds"):
        decode_control(b"\x00" * (MAX_CONTROL_MESSAGE_SIZE + 1))


# --- hostile lengths: refuse quickly, allocate nothing ---------------------------------------------------
HOSTILE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 2^32-1 items
    b"\xdc\xff\xff",  # array16 of 65535 items
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xde\xff\xff",  # map16
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xda\xff\xff",  # str16
    b"\xd9\xff",  # str8 of 255 bytes (past the 256-byte string limit only with its data; here it is short)
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc5\xff\xff",  # bin16
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xc8\xff\xff\x01",  # ext16
    b"\x91" * MAX_CONTROL_MESSAGE_SIZE,  # nesting deeper than the unpacker's stack
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=lambda h: h[:6].hex())
@pytest.mark.parametrize("where", ["alone", "inside_heartbeat"])
def test_huge_declared_lengths_raise_quickly_without_allocating(header: bytes, where: str) -> None:
    if where == "alone":
        data = header
    else:  # a valid heartbeat prefix whose "coords" value is the hostile header
        prefix = pack(heartbeat_map())
        data = prefix[: prefix.index(b"\xa6coords") + 7] + header
        data = data[:MAX_CONTROL_MESSAGE_SIZE]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MalformedPacket):
            decode_control(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20, f"decoding {data[:8].hex()} allocated {peak} bytes"


@pytest.mark.parametrize(
    "obj",
    [
        heartbeat_map(coords=[0.5] * 300),  # array longer than MAX_CONTROL_ARRAY_LEN
        heartbeat_map(t="x" * 300),  # string longer than MAX_CONTROL_STR_LEN
        heartbeat_map(load=b"x" * 2000),  # bytes longer than MAX_CONTROL_BIN_LEN
        {**heartbeat_map(), **{f"k{i}": i for i in range(40)}},  # map with more than MAX_CONTROL_MAP_LEN keys
    ],
)
def test_containers_over_the_bounds_are_malformed(obj: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket, match="bounded msgpack"):
        decode_control(pack(obj))


# --- handshake payload (kept as it was) ---------------------------------------------------------------
capability = st.text(min_size=1, max_size=8).filter(lambda s: 0 < len(s) <= MAX_CAPABILITY_LEN)


@settings(max_examples=200, deadline=None)
@given(caps=st.lists(capability, max_size=MAX_CAPABILITIES))
def test_handshake_payload_roundtrip(caps: list[str]) -> None:
    payload = HandshakePayload(PROTOCOL_VERSION, tuple(caps))
    assert decode_handshake_payload(payload.encode()) == payload


@pytest.mark.parametrize(
    "obj",
    [
        {"v": PROTOCOL_VERSION + 1, "caps": []},
        {"v": True, "caps": []},
        {"caps": []},
        {"v": PROTOCOL_VERSION, "caps": [""]},
        {"v": PROTOCOL_VERSION, "caps": ["x" * (MAX_CAPABILITY_LEN + 1)]},
        {"v": PROTOCOL_VERSION, "caps": ["a"] * (MAX_CAPABILITIES + 1)},
        {"v": PROTOCOL_VERSION, "caps": "a"},
        {"v": PROTOCOL_VERSION, "extra": 1},
        [PROTOCOL_VERSION],
    ],
)
def test_off_schema_handshake_payload_is_malformed(obj: Any) -> None:
    with pytest.raises(MalformedPacket):
        decode_handshake_payload(pack(obj))


def test_handshake_payload_without_caps_decodes() -> None:
    assert decode_handshake_payload(pack({"v": PROTOCOL_VERSION})) == HandshakePayload()


# --- fuzzing ---------------------------------------------------------------------------------------------
@settings(max_examples=FUZZ_INPUTS, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_only_decode_or_raise_protocol_errors(data: bytes) -> None:
    hb = decode_or_none(data)
    if hb is not None:
        assert decode_control(encode_control(hb)) == hb
    try:
        decode_handshake_payload(data)
    except MalformedPacket:
        pass


def mutated_heartbeat(rng: random.Random) -> bytes:
    """A valid heartbeat encoding with a few random byte edits, insertions or a truncation."""
    hb = Heartbeat(rng.getrandbits(63), Coords(rng.random() * 0.999, rng.random() * 6.28), rng.random())
    data = bytearray(encode_control(hb))
    for _ in range(rng.choice([1, 1, 2, 4])):
        pos = rng.randrange(len(data))
        action = rng.random()
        if action < 0.6:
            data[pos] = rng.randrange(256)
        elif action < 0.8:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 6))
        else:
            del data[pos]
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def test_mutated_heartbeats_only_decode_or_raise_protocol_errors() -> None:
    seed = int(os.environ.get("AXIOMNET_FUZZ_SEED", "0")) or int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)
    for i in range(FUZZ_INPUTS):
        data = mutated_heartbeat(rng)
        try:
            decode_or_none(data)
        except Exception as exc:  # report the seed so the failure can be replayed with AXIOMNET_FUZZ_SEED
            raise AssertionError(f"input #{i} of seed {seed} ({data.hex()}) raised {exc!r}") from exc


def test_handshake_payload_with_map_keys_of_mixed_types_is_malformed() -> None:
    """Found by tools/fuzz.py handshake_payload: unknown keys of mixed types (str and bytes) made the error
    message's sort raise TypeError, which a peer could send inside Noise message 3 to crash the peer manager."""
    with pytest.raises(MalformedPacket, match="unknown keys"):
        decode_handshake_payload(bytes.fromhex("82a11c00c60000000000"))  # {"\x1c": 0, b"": ...}
    with pytest.raises(MalformedPacket, match="unknown keys"):
        decode_handshake_payload(msgpack.packb({"v": 1, "x": 1, b"y": 2}, use_bin_type=True))

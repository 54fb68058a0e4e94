"""The handshake payload and bounded msgpack: roundtrips, strict schema, bounded decoding of hostile input."""

from __future__ import annotations

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
    HandshakePayload,
    decode_handshake_payload,
    unpack_bounded,
)
from axiomnet.errors import MalformedPacket

FUZZ_INPUTS = 10_000


# --- helpers --------------------------------------------------------------------------------------------
def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


PAYLOAD_MAP = {"v": PROTOCOL_VERSION, "caps": ["tun"]}


# --- bounded decoding --------------------------------------------------------------------------------
def test_repeated_map_key_is_malformed() -> None:
    # {"v": 1, "v": 2, "caps": []}: which version would another decoder keep?
    pairs = [("v", 1), ("v", 2), ("caps", [])]
    body = b"".join(pack(k) + pack(v) for k, v in pairs)
    with pytest.raises(MalformedPacket, match="repeats a key"):
        decode_handshake_payload(b"\x83" + body)


@pytest.mark.parametrize(
    "data", [b"\xc7\x00\x05", b"\xc7\x00\xff", b"\xd4\x05\x00", b"\xd6\xff\x00\x00\x00\x00"]
)
def test_msgpack_extension_types_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        unpack_bounded(data, "test")
    with pytest.raises(MalformedPacket):
        decode_handshake_payload(pack(PAYLOAD_MAP)[:-4] + data)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", pack(PAYLOAD_MAP) + b"\x00", pack(PAYLOAD_MAP)[:-1], b"\xff" * 10]
)
def test_invalid_msgpack_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_handshake_payload(data)


def test_msgpack_over_the_size_limit_is_malformed_before_parsing() -> None:
    with pytest.raises(MalformedPacket, match="exceeds"):
        unpack_bounded(b"\x00" * (MAX_CONTROL_MESSAGE_SIZE + 1), "test")


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
@pytest.mark.parametrize("where", ["alone", "inside_payload"])
def test_huge_declared_lengths_raise_quickly_without_allocating(header: bytes, where: str) -> None:
    if where == "alone":
        data = header
    else:  # a valid handshake payload prefix whose "caps" value is the hostile header
        prefix = pack(PAYLOAD_MAP)
        data = prefix[: prefix.index(b"\xa4caps") + 5] + header
        data = data[:MAX_CONTROL_MESSAGE_SIZE]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MalformedPacket):
            decode_handshake_payload(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20, f"decoding {data[:8].hex()} allocated {peak} bytes"


@pytest.mark.parametrize(
    "obj",
    [
        {"v": 1, "caps": ["a"] * 300},  # array longer than MAX_CONTROL_ARRAY_LEN
        {"v": 1, "caps": ["x" * 300]},  # string longer than MAX_CONTROL_STR_LEN
        {"v": 1, "caps": b"x" * 2000},  # bytes longer than MAX_CONTROL_BIN_LEN
        {"v": 1, **{f"k{i}": i for i in range(40)}},  # map with more than MAX_CONTROL_MAP_LEN keys
    ],
)
def test_containers_over_the_bounds_are_malformed(obj: dict[str, Any]) -> None:
    with pytest.raises(MalformedPacket, match="bounded msgpack"):
        decode_handshake_payload(pack(obj))


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
@pytest.mark.slow
@settings(max_examples=FUZZ_INPUTS, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_only_decode_or_raise_protocol_errors(data: bytes) -> None:
    try:
        payload = decode_handshake_payload(data)
    except MalformedPacket:
        return
    assert decode_handshake_payload(payload.encode()) == payload


def test_handshake_payload_with_map_keys_of_mixed_types_is_malformed() -> None:
    """Found by tools/fuzz.py handshake_payload: unknown keys of mixed types (str and bytes) made the error
    message's sort raise TypeError, which a peer could send inside Noise message 3 to crash the peer manager."""
    with pytest.raises(MalformedPacket, match="unknown keys"):
        decode_handshake_payload(bytes.fromhex("82a11c00c60000000000"))  # {"\x1c": 0, b"": ...}
    with pytest.raises(MalformedPacket, match="unknown keys"):
        decode_handshake_payload(msgpack.packb({"v": 1, "x": 1, b"y": 2}, use_bin_type=True))

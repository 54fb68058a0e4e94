"""Schema-checked msgpack messages: handshake payloads and link control messages.

Decoding is bounded before it allocates (msgpack's ``max_*_len`` limits, ``strict_map_key``, no
extension types, no duplicate map keys) and every field is type- and range-checked afterwards; anything
else raises :class:`MalformedPacket`. Coordinates that are well-typed but not a point inside the disk
raise :class:`InvalidCoordinates` (also a :class:`RemoteProtocolError`).
docs/PROTOCOL.md §2.4 is the normative description of the schemas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from axiomnet.constants import (
    MAX_CONTROL_ARRAY_LEN,
    MAX_CONTROL_BIN_LEN,
    MAX_CONTROL_MAP_LEN,
    MAX_CONTROL_MESSAGE_SIZE,
    MAX_CONTROL_STR_LEN,
    PROTOCOL_VERSION,
)
from axiomnet.errors import MalformedPacket
from axiomnet.geometry import Coords


def _map_without_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # msgpack lets a map repeat a key and keeps the last; two decoders could then disagree on a message.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedPacket("msgpack map repeats a key")
    return result


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still admits zero-length extension objects; no AxiomNet message uses extensions.
    raise MalformedPacket(f"msgpack extension type {code} is not allowed")


def unpack_bounded(data: bytes, what: str) -> Any:
    """msgpack-decode ``data`` with every length bounded; MalformedPacket on anything off."""
    if len(data) > MAX_CONTROL_MESSAGE_SIZE:
        raise MalformedPacket(f"{what} of {len(data)} bytes exceeds {MAX_CONTROL_MESSAGE_SIZE}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=MAX_CONTROL_STR_LEN,
            max_bin_len=MAX_CONTROL_BIN_LEN,
            max_array_len=MAX_CONTROL_ARRAY_LEN,
            max_map_len=MAX_CONTROL_MAP_LEN,
            max_ext_len=0,
            object_pairs_hook=_map_without_duplicates,
            ext_hook=_refuse_ext,
        )
    except MalformedPacket:
        raise
    except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, ValueError, TypeError...
        raise MalformedPacket(f"{what} is not valid bounded msgpack: {type(exc).__name__}") from None


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- handshake payload ------------------------------------------------------------------------------
MAX_CAPABILITIES = 16
MAX_CAPABILITY_LEN = 32


@dataclass(frozen=True)
class HandshakePayload:
    """What a node tells a peer inside Noise messages 2 and 3 (encrypted there)."""

    version: int = PROTOCOL_VERSION
    capabilities: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """msgpack map ``{"v": int, "caps": [str, ...]}``."""
        return _pack({"v": self.version, "caps": list(self.capabilities)})


def decode_handshake_payload(data: bytes) -> HandshakePayload:
    """Schema-checked HandshakePayload; MalformedPacket if off-schema or of another protocol version."""
    obj = unpack_bounded(data, "handshake payload")
    if not isinstance(obj, dict):
        raise MalformedPacket("handshake payload is not a map")
    unknown = set(obj) - {"v", "caps"}
    if unknown:
        # repr, not the keys: a peer may mix key types (str, bytes, int), which do not sort together.
        raise MalformedPacket(f"handshake payload has unknown keys {sorted(repr(k)[:40] for k in unknown)}")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise MalformedPacket(f"handshake payload version {version!r} (expected {PROTOCOL_VERSION})")
    caps = obj.get("caps", [])
    if not isinstance(caps, list) or len(caps) > MAX_CAPABILITIES:
        raise MalformedPacket("handshake payload capabilities must be a list of at most 16 strings")
    for cap in caps:
        if not isinstance(cap, str) or not 0 < len(cap) <= MAX_CAPABILITY_LEN:
            raise MalformedPacket("handshake payload capability must be a non-empty short string")
    return HandshakePayload(version, tuple(caps))


# --- link control messages ----------------------------------------------------------------------------
MAX_HEARTBEAT_SEQ: Final = (1 << 63) - 1


@dataclass(frozen=True)
class Heartbeat:
    """Sent to each peer every HEARTBEAT_INTERVAL: a sequence number, our coordinates and our load.

    Constructing one with out-of-range values raises ValueError (a local bug); :func:`decode_control`
    checks untrusted input before it gets here and raises MalformedPacket / InvalidCoordinates instead.
    """

    seq: int
    coords: Coords
    load: float

    def __post_init__(self) -> None:
        if type(self.seq) is not int or not 0 <= self.seq <= MAX_HEARTBEAT_SEQ:
            raise ValueError(f"heartbeat seq {self.seq!r} is not an int in 0..2^63-1")
        if not isinstance(self.coords, Coords):
            raise ValueError(f"heartbeat coords must be Coords, got {type(self.coords).__name__}")
        load = self.load
        if isinstance(load, bool) or not isinstance(load, (int, float)):
            raise ValueError(f"heartbeat load must be a float, got {type(load).__name__}")
        load = float(load)
        if not (math.isfinite(load) and 0.0 <= load <= 1.0):
            raise ValueError(f"heartbeat load {load!r} is not a finite number in [0, 1]")
        object.__setattr__(self, "load", load)


ControlMessage = Heartbeat  # grows into a Union as message types are added


@dataclass(frozen=True)
class _ControlType:
    """How one control message type maps to and from its msgpack map (every key except "t")."""

    tag: str
    cls: type
    keys: frozenset[str]
    to_fields: Callable[[Any], dict[str, Any]]
    from_fields: Callable[[dict[str, Any]], Any]


def _heartbeat_fields(msg: Heartbeat) -> dict[str, Any]:
    return {"seq": msg.seq, "coords": [msg.coords.r, msg.coords.theta], "load": msg.load}


def _heartbeat_from_fields(fields: dict[str, Any]) -> Heartbeat:
    seq = fields["seq"]
    if type(seq) is not int or not 0 <= seq <= MAX_HEARTBEAT_SEQ:
        raise MalformedPacket(f"heartbeat seq must be an int in 0..2^63-1, got {_describe(seq)}")
    coords = fields["coords"]
    if type(coords) is not list or len(coords) != 2 or not all(type(x) is float for x in coords):
        raise MalformedPacket(f"heartbeat coords must be an array of two floats, got {_describe(coords)}")
    load = fields["load"]
    if type(load) is not float or not (math.isfinite(load) and 0.0 <= load <= 1.0):
        raise MalformedPacket(f"heartbeat load must be a finite float in [0, 1], got {_describe(load)}")
    # InvalidCoordinates (a RemoteProtocolError) propagates unwrapped: callers may count it separately.
    return Heartbeat(seq, Coords.validated(coords[0], coords[1]), load)


def _describe(value: Any) -> str:
    # Never echo a long or hostile value into a log line: its type, and the value only if it is short.
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


_CONTROL_TYPES: Final[tuple[_ControlType, ...]] = (
    _ControlType("hb", Heartbeat, frozenset({"seq", "coords", "load"}), _heartbeat_fields, _heartbeat_from_fields),
)
_BY_TAG: Final[dict[str, _ControlType]] = {spec.tag: spec for spec in _CONTROL_TYPES}
_BY_CLASS: Final[dict[type, _ControlType]] = {spec.cls: spec for spec in _CONTROL_TYPES}


def encode_control(msg: ControlMessage) -> bytes:
    """msgpack map ``{"t": tag, ...fields}`` of a control message (ValueError if it is not one)."""
    spec = _BY_CLASS.get(type(msg))
    if spec is None:
        raise ValueError(f"{type(msg).__name__} is not a control message")
    data = _pack({"t": spec.tag, **spec.to_fields(msg)})
    if len(data) > MAX_CONTROL_MESSAGE_SIZE:
        raise ValueError(f"control message of {len(data)} bytes exceeds {MAX_CONTROL_MESSAGE_SIZE}")
    return data


def decode_control(data: bytes) -> ControlMessage:
    """The control message in ``data``; MalformedPacket if off-schema, InvalidCoordinates for bad coords.

    The map must hold a known string tag under "t" and exactly that type's keys, each of its exact
    msgpack type and in range.
    """
    obj = unpack_bounded(data, "control message")
    if type(obj) is not dict:
        raise MalformedPacket(f"control message is {type(obj).__name__}, not a map")
    tag = obj.get("t")
    if type(tag) is not str:
        raise MalformedPacket("control message has no string type tag 't'")
    spec = _BY_TAG.get(tag)
    if spec is None:
        raise MalformedPacket(f"unknown control message type {_describe(tag)}")
    keys = set(obj)
    keys.discard("t")
    if keys != spec.keys:
        missing = sorted(spec.keys - keys)
        unknown = sorted(repr(k)[:40] for k in keys - spec.keys)
        raise MalformedPacket(f"control message {tag!r}: missing keys {missing}, unknown keys {unknown}")
    msg: ControlMessage = spec.from_fields(obj)
    return msg

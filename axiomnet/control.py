"""Schema-checked msgpack: the handshake payload, decoded with every length bounded (pure, no I/O).

Decoding is bounded before it allocates (msgpack's ``max_*_len`` limits, ``strict_map_key``, no
extension types, no duplicate map keys) and every field is type- and range-checked afterwards; anything
else raises :class:`MalformedPacket`. docs/PROTOCOL.md §2.4 is the normative description of the schema.
Link control messages (tree announcements) are a binary format of their own: axiomnet/announce.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

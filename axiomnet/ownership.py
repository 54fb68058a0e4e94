"""Address ownership: an overlay address is the hash of a key, so only that key may use it as a source (no I/O).

Two checks, independent of how the packet travelled (a direct link session today, an end-to-end session
tomorrow: the caller passes the key the session authenticated, whatever the link):

* **inbound** — :func:`source_owned_by`: a packet delivered to our TUN must carry, as IPv6 source, the address
  derived from the static key its session authenticated (docs/PROTOCOL.md §1); anything else is a neighbour
  speaking for somebody else, dropped and counted (``rx_dropped_spoofed_source``).
* **outbound** — :func:`source_is`: a packet read from our own TUN goes into the overlay only if its source is
  our own address (``tx_dropped_foreign_source`` otherwise): this node never originates packets for others.

A relay cannot check the source of what it forwards (it holds no key for it); the one thing it knows for
certain is that a neighbour never legitimately sends a packet whose source is *our* address
(``source_is(packet, our_address)`` on a received packet is always a spoof).
"""

from __future__ import annotations

from functools import lru_cache

from axiomnet.identity import derive_address

# Where an IPv6 packet keeps its addresses: the one place these offsets are written (e2e, offload, the actors use
# them; tests/unit/test_ownership.py checks them against the ipaddress module's view of a real header).
IPV6_HEADER_SIZE = 40  # the fixed header
IPV6_SOURCE = slice(8, 24)  # source address, bytes 8..24 of the fixed header
IPV6_DESTINATION = slice(24, 40)  # destination address, bytes 24..40
IPV6_ADDRESSES = slice(8, 40)  # both, source first (what the TCP/UDP pseudo-header sums)


def is_ipv6(packet: bytes) -> bool:
    """True if ``packet`` holds at least a fixed IPv6 header (version 6)."""
    return len(packet) >= IPV6_HEADER_SIZE and packet[0] >> 4 == 6


@lru_cache(maxsize=4096)
def address_of(public_key: bytes) -> bytes:
    """The 16-byte overlay address a static public key owns (cached: sessions ask per packet batch)."""
    return derive_address(public_key).packed


def source_is(packet: bytes, address: bytes) -> bool:
    """True if ``packet`` is IPv6 with source ``address`` (16 bytes)."""
    return is_ipv6(packet) and packet[IPV6_SOURCE] == address


def source_owned_by(packet: bytes, public_key: bytes) -> bool:
    """True if ``packet`` is IPv6 and its source is the address ``public_key`` owns."""
    return source_is(packet, address_of(public_key))


def destined_to(packet: bytes, address: bytes) -> bool:
    """True if ``packet`` is long enough to be IPv6 and its destination is ``address``."""
    return len(packet) >= IPV6_HEADER_SIZE and packet[IPV6_DESTINATION] == address

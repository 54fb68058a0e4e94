"""The relay fast path: forwarding decisions the router publishes, applied where a routed packet is decrypted.

A relayed TRAFFIC packet needs only what the router decided for its header (kind, root tag, addresses, paths:
everything but the hop limit and the watermark), and the packets of one flow share that header. The router
publishes its decisions as a :class:`RelayTable`, a new immutable object per change, and the link sessions that
decrypt routed packets apply it themselves (:func:`split`): a packet whose header is in the table goes straight
to the next hop's session, with its own hop limit and watermark checked exactly as the router would
(axiomnet/forward.py ``Forwarder.receive``); everything else (ours, lookups, replies, a header not decided yet,
a check that fails) goes to the router, which counts and handles it as always.

A table is only as good as the tree it was decided in: the router replaces it with an empty one when a
coordinate changes (``version``) and at every heartbeat, so a decision lives at most one heartbeat, as the
forwarder's own cache does. The link values are opaque here (the actors use session refs).

The two ends of a relayed path skip the router the same way. At the origin, the router publishes an
:class:`OriginTable`: per destination address, the next hop's link and the routed header ``Forwarder.send`` would put
in front of end-to-end datagrams for it (``Forwarder.origin``), so the e2e actor hands a sealed batch straight to that
session. At the destination, TRAFFIC for our own address needs no decision at all (the router only ever delivers
it): the session that decrypted it hands the payloads to the e2e actor (:func:`deliverable`), after the same header
checks the router makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from axiomnet.constants import MAX_CACHED_PORTS
from axiomnet.errors import RemoteProtocolError
from axiomnet.routed import DESTINATION, FIXED_SIZE, SOURCE, Kind, decode_routed, forwarded, header_end, hop_limit_and_watermark

MAX_RELAY_ENTRIES = 4096  # headers (flows) one table holds; past it the next table starts afresh
MAX_ORIGIN_ENTRIES = 1024  # destinations one origin table holds; past it the next table starts afresh
# A header whose two paths hold more ports than this stays with the router (its next-hop cache is bounded in ports),
# so a table holds at most MAX_CACHED_PORTS ports whatever the tree's depth (protocol 4: up to 16,036 a path).
MAX_RELAY_KEY_PORTS = MAX_CACHED_PORTS // MAX_RELAY_ENTRIES
_KEY_FIXED = FIXED_SIZE - 8  # a key is the header from byte 8 on, the paths included
_TRAFFIC = int(Kind.TRAFFIC)
_SOURCE_ROUTED = int(Kind.SOURCE_ROUTED)
_RELAYED_KINDS = (_TRAFFIC, _SOURCE_ROUTED)

# What the router decided for a header: for TRAFFIC (the next hop's link, our tree distance to the destination,
# whether the destination is that neighbour itself: then there is no watermark to check and the distance is 0); for
# SOURCE_ROUTED (the link its route names at our index, that index, None): a packet is relayed here only if its
# watermark is that index (the router reads the port at the watermark; the next hop reads the one after it).
Decision = tuple[Any, int, bool | None]


@dataclass(frozen=True)
class RelayTable:
    """Relay decisions keyed by a TRAFFIC or SOURCE_ROUTED packet's header (bytes 8 to the end of its paths), for
    one tree version."""

    version: int = -1
    hops: Mapping[bytes, Decision] = field(default_factory=lambda: MappingProxyType({}))

    def __len__(self) -> int:
        return len(self.hops)


EMPTY = RelayTable()


def header_key(data: bytes) -> bytes | None:
    """The part of a TRAFFIC or SOURCE_ROUTED packet's routed header a relay decision depends on (the kind is in
    the decision's check, not in the key); None for anything else."""
    n = len(data)
    if n < FIXED_SIZE or data[0] not in _RELAYED_KINDS or data[1] != 0:  # a reserved byte set: the router refuses it
        return None
    end = header_end(data)
    return data[8:end] if end <= n else None  # bytes 2..7 are the hop limit and the watermark (PROTOCOL §6.1)


def learn(table: RelayTable, packets: Iterable[bytes], decide: Callable[[bytes], Decision | None],
          version: int) -> RelayTable | None:
    """A new table with ``decide``'s answer for every TRAFFIC header in ``packets`` not yet in ``table`` (which is
    dropped first if it was built for another tree ``version``); None when nothing was added. ``decide`` returns
    None for what must keep going through the router (ours, no route, another root); it is asked once per header."""
    current: Mapping[bytes, Decision] = table.hops if table.version == version else {}
    base: dict[bytes, Decision] | None = None  # copied from current at the first decision added
    asked: set[bytes] = set()
    for data in packets:
        key = header_key(data)
        if key is None or len(key) > _KEY_FIXED + 2 * MAX_RELAY_KEY_PORTS or key in asked \
                or key in (current if base is None else base):
            continue
        asked.add(key)
        decision = decide(data)
        if decision is None:
            continue
        if base is None:
            base = dict(current)
        if len(base) >= MAX_RELAY_ENTRIES:
            base = {}
        base[key] = decision
    return None if base is None else RelayTable(version, MappingProxyType(base))


def split(table: RelayTable, packets: list[bytes]) -> tuple[dict[Any, list[bytes]], list[bytes]]:
    """(packets to relay, per next-hop link, already forwarded: hop limit down by one, the watermark ours; the
    packets the router must see). A packet is relayed here only if its header is in ``table`` for its kind and its
    hop limit is above 1; TRAFFIC, unless the next hop is its destination, only if our distance is below its
    watermark; SOURCE_ROUTED only if its watermark is the route index decided (it leaves with the next index)."""
    hops = table.hops
    if not hops:
        return {}, packets
    out: dict[Any, list[bytes]] = {}
    rest: list[bytes] = []
    for data in packets:
        key = header_key(data)
        decision = hops.get(key) if key is not None else None
        if decision is not None:
            link, distance, direct = decision
            hop_limit, watermark = hop_limit_and_watermark(data)
            if direct is None:  # a source route's decision (the key leaves out the kind: checked here)
                ok, next_mark = data[0] == _SOURCE_ROUTED and hop_limit > 1 and watermark == distance, distance + 1
            else:
                ok, next_mark = data[0] == _TRAFFIC and hop_limit > 1 and (direct or distance < watermark), distance
            if ok:
                packet = forwarded(data, hop_limit - 1, next_mark)
                group = out.get(link)
                if group is None:
                    out[link] = [packet]
                else:
                    group.append(packet)
                continue
        rest.append(data)
    return out, rest


# What the router decided for datagrams we originate to one destination: (the next hop's link, the routed header to
# put in front of each, whether the destination is a looked-up one whose dead-path clock runs: Pathfinder.sent).
Origin = tuple[Any, bytes, bool]


@dataclass(frozen=True)
class OriginTable:
    """Origin decisions keyed by destination address (immutable: the router publishes a new one per change)."""

    routes: Mapping[bytes, Origin] = field(default_factory=lambda: MappingProxyType({}))

    def __len__(self) -> int:
        return len(self.routes)


NO_ORIGINS = OriginTable()


def deliverable(packets: list[bytes], me: bytes) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """(the (source address, payload) pairs of the TRAFFIC and SOURCE_ROUTED packets for ``me``, as
    ``Forwarder.receive`` delivers them;
    every other packet, in order, for the router). The full header check (``decode_routed``) is made once per header
    in the batch, as the router's own fast path does; a header it refuses goes to the router, which counts it."""
    out: list[tuple[bytes, bytes]] = []
    rest: list[bytes] = []
    checked: dict[bytes, bool] = {}
    for data in packets:
        n = len(data)
        if n >= FIXED_SIZE and data[0] in _RELAYED_KINDS and data[DESTINATION] == me:
            end = header_end(data)
            if end <= n:
                key = data[8:end]
                ok = checked.get(key)
                if ok is None:
                    try:
                        header = decode_routed(data)
                        ok = header.dst == me
                    except RemoteProtocolError:
                        ok = False
                    checked[key] = ok
                if ok:
                    out.append((data[SOURCE], data[end:]))
                    continue
        rest.append(data)
    return out, rest

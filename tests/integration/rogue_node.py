"""A rogue AxiomNet node for tests/integration/test_rogue.py: the real daemon (it reuses the core and the
actors, as an attacker with the source would), except that its router black-holes every routed packet it is
sent: TRAFFIC and SOURCE_ROUTED it should relay, LOOKUPs and ring searches it should pass on or answer, replies.
It still takes part in the tree, so with a key below every honest one it becomes everyone's root.

    python tests/integration/rogue_node.py [--burst | --burst-future-once] daemon --listen ... --peer ... --data-dir DIR ...

The identity in DIR is the ground key the test wrote there; the test flaps root claims by restarting the rogue
under another ground key, and runs several rogues in one namespace (one machine, several ground keys: a Sybil).

With ``--burst`` the rogue also attacks the control plane every heartbeat (:class:`BurstRouter`): it replays the
announcements its neighbours sent it, to every neighbour and many times over; sends announcements with forged
signatures, with chains it does not hold and with a root number far in the future (forged under an honest root,
validly signed under its own key, to one neighbour at a time); and floods each neighbour above the receiver's
rate limit. The messages are built with the core's own encoding (axiomnet/announce.py), so they follow the
protocol as it is, byte for byte: each announcement in ANNOUNCE_PARTs under the rogue's own numbers (protocol 4),
so every forgery reaches the receiver's checks rather than its part decoder.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import deque
from dataclasses import replace
from typing import Any

from axiomnet.actors import messages as m
from axiomnet.actors import node
from axiomnet.actors.base import bounded_tell
from axiomnet.actors.router import RouterActor
from axiomnet.announce import (
    ANNOUNCE_PART,
    NO_SIGNATURE,
    Announcement,
    Hop,
    PartAssembler,
    decode_announcement,
    encode_announcement,
    hop_statement,
    root_statement,
    sign,
)
from axiomnet.identity import Identity

FUTURE_SEQ = 1 << 62  # a root number no honest root reaches (they count milliseconds since 1970)
CAPTURED = 32  # honest announcements kept for replay
REPLAYED = 8  # of them, replayed to each neighbour every heartbeat ...
REPLAY_COPIES = 3  # ... this many times each
FLOOD = 12  # copies of our last valid announcement per neighbour per heartbeat, well inside MIN_ANNOUNCE_INTERVAL
FUTURE_EVERY = 4  # heartbeats between validly signed far-future root numbers (one neighbour each time, in turn)


class BlackHoleRouter(RouterActor):
    """Announces like an honest router; every routed packet that arrives is dropped (counted rogue_dropped)."""

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.RoutedFromLink):
            self._seen(message.peer_key, time.monotonic())  # the link stays alive, and so does its place in the tree
            self.counters["rogue_dropped"] += len(message.packets)
            return None
        return super().handle(message)


class BurstRouter(BlackHoleRouter):
    """A black hole that also replays, forges and floods announcements every heartbeat (counted rogue_*)."""

    once = False  # the far-future root number to one neighbour, once (BurstOnceRouter), or to each in turn

    def __init__(self, supervisor: Any, refs: dict[str, Any], identity: Identity, *args: Any, **kwargs: Any) -> None:
        super().__init__(supervisor, refs, identity, *args, **kwargs)
        self._identity = identity
        self._captured: deque[bytes] = deque(maxlen=CAPTURED)
        self._capture = PartAssembler()  # our own copy of the parts layer, to keep whole announcements for replay
        self._ticks = 0

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Announce) and message.data[:1] == bytes([ANNOUNCE_PART]):
            try:
                whole = self._capture.receive(message.peer_key, message.data, time.monotonic())
            except Exception:  # noqa: BLE001 - whatever honest peers send decodes; a rogue does not crash on it
                whole = None
            if whole is not None:
                self._captured.append(whole)  # what honest neighbours told us, to be replayed later
        return super().handle(message)

    def _tick(self, now: float) -> None:
        self._ticks += 1
        for turn, (key, ref) in enumerate(sorted(self.sessions.items(), key=lambda item: item[0])):
            nb = self.tree.neighbours.get(key)
            if nb is None or nb.key is None:
                continue
            burst = self._forgeries(nb.key)
            replays = list(self._captured)[:REPLAYED]  # the oldest kept: replayed late, to everyone
            burst += [data for data in replays for _ in range(REPLAY_COPIES)]
            self.counters["rogue_replayed"] += len(replays) * REPLAY_COPIES
            if self.tree.is_root and self._future_due(turn):
                valid = self._future(nb.key, nb.port)  # accepted: a root may count as it likes; only this neighbour sees it
                self.counters["rogue_future_valid"] += 1
            else:
                valid = encode_announcement(self.tree._announcement_for(nb, now))
            burst += [valid] * FLOOD  # the first may pass; the rest arrive faster than the receiver's rate limit
            self.counters["rogue_flooded"] += FLOOD
            for data in burst:
                for part in self.parts.split(data):
                    if not bounded_tell(ref, m.SendControl(part)):
                        self.counters["rogue_not_queued"] += 1
        super()._tick(now)

    def _future_due(self, turn: int) -> bool:
        """Whether the neighbour ``turn`` (in key order) gets our root at a far-future number this heartbeat:
        in turn every FUTURE_EVERY heartbeats, or (``once``) the first neighbour alone, once, when both links are up."""
        if self.once:
            if self.counters["rogue_future_valid"] or turn != 0 or len(self.sessions) < 2 or self._ticks < FUTURE_EVERY:
                return False
            return all(nb.key is not None for nb in self.tree.neighbours.values())  # both know us as root by now
        return self._ticks % FUTURE_EVERY == 0 and turn == (self._ticks // FUTURE_EVERY) % len(self.sessions)

    def _forgeries(self, receiver: bytes) -> list[bytes]:
        """Announcements no honest node may accept: forged signatures, a chain we do not hold, a future seq under
        an honest root. Each is what a node would send from our key (so it gets past the sender check)."""
        me, out = self._identity.signing_key, []
        junk = hashlib.sha512(b"forged %d" % self._ticks).digest()  # 64 bytes that are no signature
        # 1. Our own root claim, a seq ahead, with a signature we did not make.
        out.append(encode_announcement(Announcement(root=me, seq=self.tree.seq + 1000, root_sig=junk, chain=(), cert_port=0,
                                                   cert_issued=0, cert_sig=NO_SIGNATURE)))
        for data in list(self._captured)[-2:]:
            try:
                honest = decode_announcement(data)
            except Exception:  # noqa: BLE001 - whatever honest peers send decodes; a rogue does not crash on it
                continue
            # 2. A chain we do not hold: the root's direct child, port 1, with the root's signature made up.
            out.append(encode_announcement(replace(honest, chain=(Hop(me, 1, honest.seq, junk),), cert_port=0, cert_issued=0,
                                                   cert_sig=NO_SIGNATURE,
                                                   bloom=None)))
            # 3. The honest root's number far in the future, its old signature reused, us below it.
            out.append(encode_announcement(replace(honest, seq=FUTURE_SEQ + self._ticks, chain=(*honest.chain, Hop(me, 1, FUTURE_SEQ, junk)),
                                                   cert_port=0, cert_issued=0, cert_sig=NO_SIGNATURE, bloom=None)))
            # 4. A certificate for the receiver that we signed over a chain we forged onto the honest one.
            chain = (*honest.chain, Hop(me, 2, honest.seq, junk))
            cert = sign(self._identity.signing_secret, hop_statement(honest.root, honest.seq, me, receiver, 1))
            out.append(encode_announcement(replace(honest, chain=chain, cert_port=1, cert_issued=honest.seq, cert_sig=cert,
                                                   bloom=None)))
        self.counters["rogue_forged"] += len(out)
        return out

    def _future(self, receiver: bytes, port: int) -> bytes:
        """Our own root claim at a number far in the future, validly signed; with a certificate for ``receiver``,
        except once (``once``): then the receiver records the number but cannot follow it, so it never passes it on."""
        me, secret, seq = self._identity.signing_key, self._identity.signing_secret, FUTURE_SEQ + self._ticks
        if self.once:
            port, issued, cert = 0, 0, NO_SIGNATURE
        else:
            issued, cert = seq, sign(secret, hop_statement(me, seq, me, receiver, port))
        return encode_announcement(Announcement(root=me, seq=seq, root_sig=sign(secret, root_statement(me, seq)), chain=(),
                                                cert_port=port, cert_issued=issued, cert_sig=cert))


class BurstOnceRouter(BurstRouter):
    """The burst, but the far-future root number goes to one neighbour only, once, without a certificate: that
    neighbour records the number but does not take it on (it follows only what it is certified under), so it alone
    sees the root's number stall, and the rest of the line never sees it jump."""

    once = True


ROUTERS = {"--burst": BurstRouter, "--burst-future-once": BurstOnceRouter}

if __name__ == "__main__":
    argv = sys.argv[1:]
    router = ROUTERS.get(argv[0]) if argv else None
    node.RouterActor = router or BlackHoleRouter  # type: ignore[misc]  # the node builds its router from this name
    from axiomnet.ops.cli import main

    sys.exit(main(argv[1:] if router else argv))

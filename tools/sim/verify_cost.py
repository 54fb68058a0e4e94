"""What checking an announcement costs at depth: the micro-benchmark behind docs/ROUTING.md "Any depth".

    python -m tools.sim.verify_cost [--depths 100 606 2000 6202] [--json]

For each depth d it builds a truly signed chain of d hops (axiomnet.announce, PyNaCl) and times, on the core's own
Verifier (axiomnet/announce.py):

* ``cold``: a whole announcement checked by a node that has verified none of it: what each node does with its
  parent's chain in a refresh wave, where every hop has been renewed (d + 1 signature checks);
* ``sibling``: a sibling's announcement (the same d − 1 ancestors, one hop of its own) checked right after the
  parent's: what the verified-signature cache (MAX_VERIFIED_SIGNATURES, an LRU) saves. Past its capacity a chain
  read in order evicts its own first hops before it comes back to them, so every check misses again;
* ``skip own``: the same sibling checked as the tree does (Verifier.verify's ``known``: the hops that repeat the
  node's own verified chain are not checked again), whatever the depth;

and the split and reassembly of the announcement into ANNOUNCE_PARTs. From the cold time per hop it gives what a
whole-chain refresh wave costs: the wave reaches depth d after every node on the way has checked its parent's
chain, t x (1 + 2 + .. + d), against a certificate lifetime of CERT_LIFETIME heartbeats. Figures are CPU time of
one process; on a shared host compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import time

import nacl.bindings

from axiomnet.announce import (
    Announcement,
    Hop,
    PartAssembler,
    Verifier,
    encode_announcement,
    hop_statement,
    root_statement,
    sign,
)
from axiomnet.constants import CERT_LIFETIME, CERT_REFRESH, HEARTBEAT_INTERVAL, MAX_VERIFIED_SIGNATURES

SEQ = 1_000


def keys(n: int) -> list[tuple[bytes, bytes]]:
    """n (public, secret) Ed25519 key pairs from fixed seeds."""
    return [nacl.bindings.crypto_sign_seed_keypair(i.to_bytes(32, "big")) for i in range(1, n + 1)]


def chain_announcement(pairs: list[tuple[bytes, bytes]], depth: int, receiver: bytes) -> Announcement:
    """A truly signed announcement of ``depth`` hops under pairs[0] as root, sent by pairs[depth] to ``receiver``."""
    root, root_secret = pairs[0]
    hops, parent, parent_secret = [], root, root_secret
    for child, child_secret in pairs[1:depth + 1]:
        port = 1 + len(hops) % 3
        hops.append(Hop(child, port, SEQ, sign(parent_secret, hop_statement(root, SEQ, parent, child, port))))
        parent, parent_secret = child, child_secret
    cert = sign(parent_secret, hop_statement(root, SEQ, parent, receiver, 1))
    return Announcement(root, SEQ, sign(root_secret, root_statement(root, SEQ)), tuple(hops), 1, SEQ, cert)


def measure(depth: int, pairs: list[tuple[bytes, bytes]], me: bytes, sib: tuple[bytes, bytes]) -> dict[str, float]:
    parent = chain_announcement(pairs, depth, me)
    # The sibling hangs off the same parent (pairs[depth - 1]): the same d - 1 ancestors, its own last hop.
    (up, up_secret), (sibling_key, sibling_secret) = pairs[depth - 1], sib
    own = Hop(sibling_key, 9, SEQ, sign(up_secret, hop_statement(parent.root, SEQ, up, sibling_key, 9)))
    sibling = Announcement(parent.root, SEQ, parent.root_sig, parent.chain[:-1] + (own,), 1, SEQ,
                           sign(sibling_secret, hop_statement(parent.root, SEQ, sibling_key, me, 1)))
    verifier = Verifier()
    t0 = time.process_time()
    verifier.verify(parent, me)
    cold = time.process_time() - t0
    cold_checks = verifier.verifications
    t0 = time.process_time()
    verifier.verify(sibling, me)
    warm = time.process_time() - t0
    warm_checks = verifier.verifications - cold_checks
    # The same, now that the node skips what repeats its own (verified) chain: the parent's chain and its certificate.
    ours = parent.chain + (Hop(me, parent.cert_port, parent.cert_issued, parent.cert_sig),)
    fresh = Verifier()
    fresh.verify(parent, me)
    before = fresh.verifications
    t0 = time.process_time()
    fresh.verify(sibling, me, known=ours)
    known = time.process_time() - t0
    known_checks = fresh.verifications - before
    data = encode_announcement(parent)
    t0 = time.process_time()
    parts = PartAssembler(1).split(data)
    assembler = PartAssembler()
    whole = [w for w in (assembler.receive(b"n", p, 0.0) for p in parts) if w is not None]
    parts_time = time.process_time() - t0
    assert whole == [data]
    per_hop = cold / cold_checks
    return {"depth": depth, "bytes": len(data), "parts": len(parts), "cold_s": round(cold, 4),
            "cold_checks": cold_checks, "per_check_us": round(per_hop * 1e6, 1),
            "sibling_s": round(warm, 4), "sibling_checks": warm_checks,
            "sibling_known_s": round(known, 4), "sibling_known_checks": known_checks,
            "parts_split_and_join_ms": round(parts_time * 1e3, 2),
            "whole_chain_wave_s": round(per_hop * depth * (depth + 1) / 2, 4),
            "delta_wave_cpu_per_node_s": round(per_hop * depth, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[100, 606, 2000, 6202])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pairs = keys(max(args.depths) + 3)
    me, sib = pairs[-1][0], pairs[-2]
    rows = [measure(d, pairs[:d + 1], me, sib) for d in args.depths]
    budget = (CERT_LIFETIME - CERT_REFRESH) * HEARTBEAT_INTERVAL  # a renewed chain must land before the old expires
    if args.json:
        print(json.dumps({"rows": rows, "wave_budget_s": budget, "cache": MAX_VERIFIED_SIGNATURES}, indent=1))
        return 0
    print(f"{'depth':>6} {'bytes':>9} {'parts':>5} {'cold s':>8} {'checks':>6} {'us/check':>8} {'sibling s':>9} "
          f"{'checks':>6} {'skip own s':>10} {'checks':>6} {'parts ms':>8} {'whole-chain wave s':>18} {'delta wave CPU/node s':>21}")
    for r in rows:
        print(f"{r['depth']:>6} {r['bytes']:>9} {r['parts']:>5} {r['cold_s']:>8} {r['cold_checks']:>6} "
              f"{r['per_check_us']:>8} {r['sibling_s']:>9} {r['sibling_checks']:>6} {r['sibling_known_s']:>10} "
              f"{r['sibling_known_checks']:>6} {r['parts_split_and_join_ms']:>8} "
              f"{r['whole_chain_wave_s']:>18} {r['delta_wave_cpu_per_node_s']:>21}")
    print(f"a refresh wave must reach every node within {budget:.0f} s (CERT_LIFETIME - CERT_REFRESH heartbeats); "
          f"the verified-signature cache holds {MAX_VERIFIED_SIGNATURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

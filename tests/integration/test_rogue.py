"""Issue 15 on real daemons: hostile nodes against honest lines, each test asserting the issue's figures (every
honest pair joined by an honest path keeps >= 99% of its pings after at most 5 s; honest nodes never stay
partitioned).

* a rogue that grinds a key below every honest one, joins A-B-C-D at B and C, becomes everyone's root,
  black-holes every routed packet and lookup it gets, and flaps its root claim between two ground keys;
* a Sybil machine: three such identities at once in one namespace, at different points of A-B-C-D-E and linked
  to each other, their root claims flapping in turn; every pair pings, and after they leave one honest tree;
* announcement bursts on top of a rogue root: replays, forgeries, far-future root numbers, floods; the honest
  trees must not split across an intact link, and the drop counters must show the attack arrived;
* a private network (trusted_roots): a stranger's lower key changes no root.

The rogues are tests/integration/rogue_node.py: the real daemon whose router drops every routed packet (and with
--burst, attacks the control plane). Run as root (CI is); namespaces and processes are the run's own and are
removed whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from axiomnet.constants import DEFAULT_UDP_PORT, SHUTDOWN_DEADLINE
from axiomnet.identity import Identity, encode_identity
from axiomnet.lab import daemons, namespaces, processes, traffic
from axiomnet.ops.identity_store import IDENTITY_FILENAME, load_identity

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROGUE = Path(__file__).with_name("rogue_node.py")
REACH_TIMEOUT = 40.0  # a cold line of four: start-up, handshakes, tree, lookups
TAKEOVER_TIMEOUT = 30.0  # the rogue's sessions up and its root claim spread to A (issue 15 measured 1.5 s)
GRACE_PINGS = 50  # 5 s at 0.1 s: what the attack may cost before the fallback has found the honest line
PINGS = 200
LINE = [(0, 1), (1, 2), (2, 3)]
# How long two honest neighbours may be under different roots while the rogue bursts: a root change takes a few
# heartbeats to cross the line (the tree's own repair bound is 3 + 2 x depth heartbeats); the split lasted
# as long as the attacker stayed.
SPLIT_LIMIT = 10.0


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def ground_keys(below: bytes, count: int) -> list[Identity]:
    """``count`` identities whose Ed25519 keys sort below ``below`` (grinding seeds, as the attacker does),
    lowest first."""
    found, i = [], 0
    while len(found) < count:
        ident = Identity.from_seed(hashlib.sha256(b"rogue %d" % i).digest())
        if ident.signing_key < below:
            found.append(ident)
        i += 1
        assert i < 1_000_000, "grinding took too long"
    return sorted(found, key=lambda x: x.signing_key)


def start_rogue(ns: namespaces.Namespace, identity: Identity, peers: list[str], workdir: Path,
                name: str, *, port: int = DEFAULT_UDP_PORT, burst: str | None = None) -> daemons.DaemonProcess:
    """A rogue daemon (rogue_node.py) in ``ns`` under ``identity``, dialing ``peers``; ``burst`` (--burst or
    --burst-future-once): it also replays, forges and floods announcements. Several rogues share one namespace on different ports (a Sybil machine)."""
    data_dir = workdir / name
    data_dir.mkdir(mode=0o700)
    key_file = data_dir / IDENTITY_FILENAME
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(encode_identity(identity))
    admin = workdir / f"{name}.sock"
    log = workdir / f"{name}.log"
    args = [sys.executable, str(ROGUE), *([burst] if burst else []), "daemon", "--listen", f"[::]:{port}",
            "--no-tun", "--data-dir", str(data_dir), "--admin-socket", str(admin), "--log-level", "INFO"]
    for peer in peers:
        args += ["--peer", peer]
    with open(log, "ab") as out:
        popen = ns.popen(args, stdout=out, stderr=subprocess.STDOUT, env=daemons._python_env())
    return daemons.DaemonProcess(ns, name, popen, address=str(identity.address), listen=f"[::]:{port}",
                                 data_dir=data_dir, admin_socket=admin, tun=None, log_path=log)


def attach(lab: namespaces.NetnsLab, ds: list[daemons.DaemonProcess], at: list[int]) -> tuple[namespaces.Namespace, dict[int, str]]:
    """The rogue machine: one namespace with a veth to each honest node in ``at``; the endpoint of each."""
    rns = lab.add_namespace("rogue")
    endpoints = {}
    for k, i in enumerate(at):
        link = lab.connect(rns, ds[i].ns, ipv4_subnet=f"198.18.{20 + k}.0/24", ipv6_subnet=f"2001:2:0:{20 + k}::/64")
        endpoints[i] = daemons.format_endpoint(link.ipv4_b, DEFAULT_UDP_PORT)
    return rns, endpoints


def logs(ds: list[daemons.DaemonProcess]) -> str:
    return "\n".join(f"--- {d.name}\n{d.log_tail(25)}" for d in ds)


def state_of(d: daemons.DaemonProcess) -> dict[str, Any] | None:
    """The daemon's admin document (in process: an inspect subprocess per poll costs a second of CPU)."""
    try:
        return d.admin({"cmd": "state"}, timeout=5.0)
    except (OSError, ValueError):  # a daemon busy re-forming its tree may miss one admin deadline
        return None


def root_of(d: daemons.DaemonProcess) -> str | None:
    state = state_of(d)
    return None if state is None else state["tree"]["root"]


def roots(ds: list[daemons.DaemonProcess]) -> list[str | None]:
    return [root_of(x) for x in ds]


def ping_pairs(ds: list[daemons.DaemonProcess], count: int) -> dict[tuple[int, int], traffic.PingResult]:
    """Every honest pair pings (the lower index the higher) at once, ``count`` pings 0.1 s apart."""
    results: dict[tuple[int, int], traffic.PingResult] = {}

    def one(i: int, j: int) -> None:
        results[(i, j)] = traffic.ping(ds[i].ns, ds[j].address, count=count, interval=0.1, timeout=count * 0.1 + 5)

    threads = [threading.Thread(target=one, args=pair) for pair in combinations(range(len(ds)), 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(count * 0.1 + 15)
    return results


def stop_rogue(rogue: daemons.DaemonProcess, tally: dict[str, int]) -> None:
    """Stop a rogue, adding what it did (its rogue_* router counters) to ``tally`` first."""
    state = state_of(rogue)
    for key, value in (state["counters"]["router"].items() if state else ()):
        if key.startswith("rogue_"):
            tally[key] = tally.get(key, 0) + int(value)
    rogue.stop()


def kept(result: traffic.PingResult, count: int) -> bool:
    """At least 99% of the pings came back: of ``count`` asked for and of those sent (ping with a deadline sends
    more than ``count`` when some are lost, until ``count`` replies or the deadline)."""
    return result.received >= 0.99 * max(result.sent, count)


def short(results: dict[tuple[int, int], traffic.PingResult]) -> str:
    return " ".join(f"{i}-{j}:{r.received}/{r.sent}" for (i, j), r in sorted(results.items()))


def test_a_rogue_root_that_black_holes_and_flaps_cannot_cut_an_honest_line(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 4, LINE, workdir)
        a, b, c, d = ds
        # The honest tree first (one root everywhere), and no traffic yet: A's first lookup of D will be made
        # under the rogue's root, so it is the tree lookup the rogue drops that the fallback must replace.
        assert processes.wait_until(lambda: len({root_of(x) for x in ds}) == 1 and root_of(a) is not None,
                                REACH_TIMEOUT, interval=0.2), logs(ds)
        honest = [load_identity(workdir / f"node-{i}" / IDENTITY_FILENAME) for i in range(4)]
        keys = ground_keys(min(h.signing_key for h in honest), 2)
        rns, endpoints = attach(lab, ds, [1, 2])
        peers = list(endpoints.values())

        rogue = start_rogue(rns, keys[1], peers, workdir, "rogue-0")
        assert processes.wait_until(lambda: all(root_of(x) == keys[1].signing_key.hex() for x in ds),
                                TAKEOVER_TIMEOUT, interval=0.2), logs([*ds, rogue])
        # The attack is in force: everyone's root is the rogue, which drops every lookup crossing it.
        grace = traffic.ping(a.ns, d.address, count=GRACE_PINGS, interval=0.1, timeout=GRACE_PINGS * 0.1 + 3)
        steady = traffic.ping(a.ns, d.address, count=PINGS, interval=0.1, timeout=PINGS * 0.1 + 5)
        print(f"rogue root: {grace.received}/{GRACE_PINGS} pings in the first 5 s, then {steady.received}/{PINGS}")
        assert kept(steady, PINGS), steady.output + logs([*ds, rogue])
        assert root_of(a) == keys[1].signing_key.hex()  # still under the rogue's root all along
        looked, bad = state_of(a), state_of(rogue)
        if looked is not None and bad is not None:
            print("A's lookups:", {k: v for k, v in looked["lookups"].items() if k not in ("cache", "pending")},
                  "the rogue dropped", bad["counters"]["router"].get("rogue_dropped", 0), "routed packets")
        # How the fallback came in depends on the tree the RTTs built under the rogue: its tree lookup unanswered,
        # or answered and then the greedy data path found dead (both seen here); the mechanisms themselves are
        # asserted with the real core in tests/unit/test_ring.py. What this test holds the daemons to is the
        # issue's figure above, and below while the rogue flaps.

        # Flapping: the rogue leaves and comes back under the other ground key, again and again, while A pings.
        pings: list[traffic.PingResult] = []
        pinger = threading.Thread(target=lambda: pings.append(
            traffic.ping(a.ns, d.address, count=PINGS, interval=0.1, timeout=PINGS * 0.1 + 5)))
        pinger.start()
        current = rogue
        for flap in range(1, 4):
            current.stop()
            key = keys[(flap + 1) % 2]
            current = start_rogue(rns, key, peers, workdir, f"rogue-{flap}")
            assert processes.wait_until(lambda k=key: root_of(b) == k.signing_key.hex(), TAKEOVER_TIMEOUT,
                                    interval=0.2), logs([*ds, current])
        pinger.join(PINGS * 0.1 + 15)
        assert pings, "the pinger did not finish"
        print(f"flapping rogue root: {pings[0].received}/{PINGS} pings")
        assert kept(pings[0], PINGS), pings[0].output + logs([*ds, current])
        for node in ds:
            assert node.running(), f"{node.name} exited\n{node.log_tail(40)}"
            assert "Traceback" not in node.log(), f"{node.name} logged a traceback\n{node.log_tail(60)}"


SYBIL_LINE = [(0, 1), (1, 2), (2, 3), (3, 4)]  # honest A-B-C-D-E
ROUND_PINGS = 100  # pings per pair per round while the Sybil's identities flap (10 s at 0.1 s)
MAX_ROUNDS = 12  # bounds the flapping phase: three flaps within TAKEOVER_TIMEOUT each fit in far fewer
SYBIL_AT = [(0, 2), (1, 3), (2, 4)]  # where each of the machine's identities joins the line (A and C, B and D, C and E)
CONVERGE_TIMEOUT = 40.0  # after the attack: the rogue roots found dead (ROOT_TIMEOUT) and one honest tree again
AFTER_PINGS = 20


FALLBACK_STATS = ("lookups_sent", "dropped_no_tree", "queue_expired", "queue_wait_max_ms", "routes_lost", "dead_paths",
                  "ring_searches", "ring_limited", "routes_learned", "path_broken")


def fallback_of(ds: list[daemons.DaemonProcess]) -> str:
    """Each honest node's lookup and fallback counters, for a failure's message: what lost its pings (a lookup that
    died, packets past the queue bound, a route found dead, a ring search rate-limited)."""
    rows = []
    for i, d in enumerate(ds):
        state = state_of(d)
        if state is None:
            rows.append(f"{i}: no answer")
            continue
        counters = {**state["lookups"], **{k[4:]: v for k, v in state["counters"]["router"].items() if k.startswith("fwd_")}}
        rows.append(f"{i}: " + " ".join(f"{k}={counters[k]}" for k in FALLBACK_STATS if counters.get(k)))
    return "\n".join(rows)


def honest_tree(ds: list[daemons.DaemonProcess], honest_keys: set[str]) -> bool:
    """Every honest node answers and all are in one tree whose root is an honest key."""
    seen = set(roots(ds))
    return len(seen) == 1 and next(iter(seen)) in honest_keys


def test_a_sybil_machine_with_three_ground_keys_flapping_in_turn_cannot_cut_any_honest_pair(workdir):
    """One machine (one namespace) runs three rogue daemons at once, each under a key ground below every honest
    one, each joined to the honest line at two points and to the others over loopback (the machine is one hostile
    node with a shortcut of its own). All black-hole; the lowest holds the root. Then, in turn, each identity
    leaves and comes back under a still lower key: the root claim moves from one point of the line to another.
    Every honest pair (all of them have an honest path) must keep >= 99% of its pings after 5 s, and once the
    machine leaves, every honest node must be in one honest tree again and every pair reach the other."""
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 5, SYBIL_LINE, workdir)
        assert processes.wait_until(lambda: len(set(roots(ds))) == 1 and root_of(ds[0]) is not None,
                                    REACH_TIMEOUT, interval=0.2), logs(ds)
        honest = [load_identity(workdir / f"node-{i}" / IDENTITY_FILENAME) for i in range(5)]
        honest_keys = {h.signing_key.hex() for h in honest}
        pool = ground_keys(min(h.signing_key for h in honest), 6)  # lowest first: pool[0] < ... < pool[5]
        rns, endpoints = attach(lab, ds, [0, 1, 2, 3, 4])
        ports = [DEFAULT_UDP_PORT + 1 + slot for slot in range(len(SYBIL_AT))]

        def peers_of(slot: int) -> list[str]:
            others = [f"127.0.0.1:{ports[s]}" for s in range(len(SYBIL_AT)) if s < slot]  # each pair dials once
            return [endpoints[i] for i in SYBIL_AT[slot]] + others

        rogues = [start_rogue(rns, pool[3 + slot], peers_of(slot), workdir, f"sybil-{slot}", port=ports[slot])
                  for slot in range(len(SYBIL_AT))]
        root = pool[3].signing_key.hex()
        assert processes.wait_until(lambda: all(r == root for r in roots(ds)), TAKEOVER_TIMEOUT,
                                    interval=0.2), logs([*ds, *rogues])
        grace = ping_pairs(ds, GRACE_PINGS)
        print(f"\nsybil root (3 identities): first 5 s {short(grace)}")

        # The claims flap in turn while every pair pings: identity r-1 leaves, returns under a lower key (pool[3-r]).
        # The pairs ping in rounds of ROUND_PINGS until the last flap has taken over (a flap is a daemon start and
        # a takeover: 5-20 s each, by the machine's load), so every flap falls inside the pings.
        flaps: list[float] = []
        failed: list[str] = []
        did: dict[str, int] = {}
        started = time.monotonic()

        def flap_in_turn() -> None:
            for flap in range(1, len(SYBIL_AT) + 1):
                slot, key = flap - 1, pool[3 - flap]
                stop_rogue(rogues[slot], did)
                rogues[slot] = start_rogue(rns, key, peers_of(slot), workdir, f"sybil-{slot}-{flap}", port=ports[slot])
                if not processes.wait_until(lambda k=key.signing_key.hex(): all(r == k for r in roots(ds)),
                                            TAKEOVER_TIMEOUT, interval=0.2):
                    failed.append(f"flap {flap}: roots {roots(ds)}")
                    return
                flaps.append(round(time.monotonic() - started, 1))

        flapper = threading.Thread(target=flap_in_turn)
        flapper.start()
        steady: dict[tuple[int, int], list[int]] = {}  # pair -> [sent, received]
        for _ in range(MAX_ROUNDS):
            for pair, result in ping_pairs(ds, ROUND_PINGS).items():
                tally = steady.setdefault(pair, [0, 0])
                tally[0] += result.sent
                tally[1] += result.received
            if not flapper.is_alive():
                break
        flapper.join(TAKEOVER_TIMEOUT + SHUTDOWN_DEADLINE + 10)
        assert not flapper.is_alive() and not failed, failed + [logs([*ds, *rogues])]
        table = " ".join(f"{i}-{j}:{r}/{s}" for (i, j), (s, r) in sorted(steady.items()))
        print(f"flapping in turn (new root at {flaps} s of {time.monotonic() - started:.0f} s of pings): {table}")
        assert len(steady) == 10
        for pair, (sent, received) in steady.items():
            assert received >= 0.99 * sent and sent >= ROUND_PINGS, f"{pair}: {table}\n{fallback_of(ds)}\n" + logs([*ds, *rogues])

        # The machine leaves: one honest tree again, and every pair reaches the other.
        fallback = [state_of(x) for x in ds]
        for r in rogues:
            stop_rogue(r, did)
        left = time.monotonic()
        used = {k: sum(int(f["lookups"].get(k, 0)) for f in fallback if f)
                for k in ("ring_searches", "dead_paths", "routes_learned", "path_broken")}
        print(f"the machine dropped {did.get('rogue_dropped', 0)} routed packets; the honest fallback: {used}")
        # Not vacuous: the machine's shortcuts (A-sybil0-sybil2-E is shorter than the line) drew honest traffic.
        assert did.get("rogue_dropped", 0) > 0, did
        assert processes.wait_until(lambda: honest_tree(ds, honest_keys), CONVERGE_TIMEOUT, interval=0.5), \
            f"honest roots {roots(ds)}\n" + logs(ds)
        converged = time.monotonic() - left
        after = ping_pairs(ds, AFTER_PINGS)
        print(f"after the machine left: one honest tree in {converged:.1f} s, {short(after)}")
        for pair, result in after.items():
            assert result.received >= AFTER_PINGS - 1 and result.received >= result.sent - 1, f"{pair}: {result.output}\n" + logs(ds)
        for node in ds:
            assert node.running(), f"{node.name} exited\n{node.log_tail(40)}"
            assert "Traceback" not in node.log(), f"{node.name} logged a traceback\n{node.log_tail(60)}"


DROP_COUNTERS = ("rejected", "rate_limited")  # the honest trees' (axiomnet/tree.py stats)


def drops(ds: list[daemons.DaemonProcess]) -> dict[str, int]:
    """What the honest nodes refused, summed: tree rejected / rate_limited, router announce_* (by error)."""
    total: dict[str, int] = {}
    for d in ds:
        state = state_of(d)
        assert state is not None, f"{d.name} did not answer its admin socket"
        for key in DROP_COUNTERS:
            total[key] = total.get(key, 0) + int(state["tree"].get(key, 0))
        for key, value in state["counters"]["router"].items():
            if key.startswith("announce_"):
                total[key] = total.get(key, 0) + int(value)
    return total


@pytest.mark.parametrize("burst", ["--burst", "--burst-future-once"])
def test_replayed_forged_and_flooded_announcements_on_top_of_a_rogue_root_split_no_honest_link(workdir, burst):
    """The line A-B-C-D with a rogue root at B and C (the issue's finding: after a burst of forged and replayed
    announcements the honest nodes split into two trees across the intact B-C link). This rogue black-holes and,
    every heartbeat, sends each neighbour replays of what the others told it, forged signatures, chains it does
    not hold, honest roots at numbers far in the future, its own root validly signed far in the future (to one
    neighbour at a time), and floods above the rate limit. The honest nodes must stay one tree (no two honest
    neighbours under different roots for long), every pair keep >= 99% of its pings after 5 s, and the drop
    counters must show the attack arrived.

    ``--burst-future-once`` is the partition itself: the rogue root's number far in the future, validly signed,
    shown once to B alone without a certificate. Under protocol 2 B's highest-seen number for the root then
    stalled, ROOT_TIMEOUT later B marked the root dead up to it and refused everything under it while C kept the
    rogue: A and B under A, C and D under the rogue across the intact B-C link, 19.5 and 20.3 s of 20 s (this
    test, xfail then). Under protocol 3 a root is alive while its beats come down from our parent (§5.6), so a
    number seen once from a neighbour we do not follow stalls nothing: 0 of 77 samples apart."""
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 4, LINE, workdir)
        assert processes.wait_until(lambda: len(set(roots(ds))) == 1 and root_of(ds[0]) is not None,
                                    REACH_TIMEOUT, interval=0.2), logs(ds)
        honest = [load_identity(workdir / f"node-{i}" / IDENTITY_FILENAME) for i in range(4)]
        key = ground_keys(min(h.signing_key for h in honest), 1)[0]
        before = drops(ds)
        rns, endpoints = attach(lab, ds, [1, 2])
        rogue = start_rogue(rns, key, list(endpoints.values()), workdir, "burst", burst=burst)
        assert processes.wait_until(lambda: key.signing_key.hex() in roots(ds), TAKEOVER_TIMEOUT,
                                    interval=0.2), logs([*ds, rogue])
        grace = ping_pairs(ds, GRACE_PINGS)
        # While every pair pings, watch the honest trees: two neighbours under different roots is a split.
        pinged: list[dict[tuple[int, int], traffic.PingResult]] = []
        pinger = threading.Thread(target=lambda: pinged.append(ping_pairs(ds, PINGS)))
        pinger.start()
        samples, split, longest, since, last_split = 0, 0, 0.0, None, []
        while pinger.is_alive():
            seen = roots(ds)
            samples += 1
            apart = any(seen[i] != seen[j] for i, j in LINE)
            now = time.monotonic()
            if apart:
                names = {key.signing_key.hex(): "rogue", **{h.signing_key.hex(): "ABCD"[i] for i, h in enumerate(honest)}}
                last_split = [names.get(r, r) for r in seen]  # each honest node's root, by name
                split += 1
                since = now if since is None else since
                longest = max(longest, now - since)
            else:
                since = None
            pinger.join(0.25)  # the sampling period: until the pingers end
        pinger.join(5)
        assert pinged, "the pingers did not finish"
        steady = pinged[0]
        after = drops(ds)
        moved = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        bad = state_of(rogue)
        sent = {k: v for k, v in bad["counters"]["router"].items() if k.startswith("rogue_")} if bad else {}
        print(f"\nburst rogue: first 5 s {short(grace)}; then {short(steady)}; honest trees apart in {split} of "
              f"{samples} samples, at most {longest:.1f} s in a row; the rogue sent {sent}; honest drops {moved}")
        for pair, result in steady.items():
            assert kept(result, PINGS), f"{pair}: {result.output}\n{short(steady)}\n" + logs([*ds, rogue])
        assert longest <= SPLIT_LIMIT, f"honest neighbours under different roots for {longest:.1f} s (roots of A-D: {last_split})\n" + logs(ds)
        # Not vacuous: the forgeries and replays were refused, the floods rate-limited.
        assert sent.get("rogue_forged", 0) > 0 and sent.get("rogue_replayed", 0) > 0 and sent.get("rogue_flooded", 0) > 0
        assert moved["rejected"] > 0, moved
        assert moved["rate_limited"] > 0, moved
        assert moved.get("announce_InvalidAnnouncement", 0) > 0, moved
        # And once it leaves, one honest tree.
        rogue.stop()
        honest_keys = {h.signing_key.hex() for h in honest}
        assert processes.wait_until(lambda: honest_tree(ds, honest_keys), CONVERGE_TIMEOUT, interval=0.5), \
            f"honest roots {roots(ds)}\n" + logs(ds)
        for node in ds:
            assert node.running(), f"{node.name} exited\n{node.log_tail(40)}"
            assert "Traceback" not in node.log(), f"{node.name} logged a traceback\n{node.log_tail(60)}"


def test_on_a_private_network_a_rogue_with_a_lower_key_changes_no_root(workdir, monkeypatch):
    """issue 15 part 2 on real daemons: the honest line trusts C as its only root (AXIOMNET_TRUSTED_ROOTS, C's
    public key; C's key is not the lowest, so the setting is what elects it). A rogue with a key ground below
    every honest one joins at B and C and black-holes: no honest root moves, its claim is counted as untrusted,
    and A -> D keeps every ping."""
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        infos = [daemons.identity_info(workdir / f"node-{i}") for i in range(4)]  # start_overlay keeps these
        honest = [load_identity(workdir / f"node-{i}" / IDENTITY_FILENAME) for i in range(4)]
        trusted = sorted(range(4), key=lambda i: honest[i].signing_key)[-1]  # the highest key: only trust elects it
        monkeypatch.setenv("AXIOMNET_TRUSTED_ROOTS", infos[trusted]["public_key"])
        ds = daemons.start_overlay(lab, 4, LINE, workdir)
        monkeypatch.delenv("AXIOMNET_TRUSTED_ROOTS")  # the rogue trusts nobody in particular
        root = honest[trusted].signing_key.hex()
        assert processes.wait_until(lambda: all(r == root for r in roots(ds)), REACH_TIMEOUT, interval=0.2), logs(ds)
        # A -> D's route and end-to-end session exist before the stranger comes, so the pings below measure what
        # it changes, not the route forming (a packet queued over 1 s behind a forming route is dropped: in a
        # loaded CI run the cold pings lost 2 of 102 that way, max RTT 1.0 s).
        assert daemons.wait_overlay_reachable(ds[0], ds[3], timeout=REACH_TIMEOUT) is not None, logs(ds)
        key = ground_keys(min(h.signing_key for h in honest), 1)[0]
        rns, endpoints = attach(lab, ds, [1, 2])
        rogue = start_rogue(rns, key, list(endpoints.values()), workdir, "stranger")

        def refused() -> bool:  # B and C have heard the stranger's root claim and refused it
            states = [state_of(ds[i]) for i in (1, 2)]
            return all(s is not None and s["tree"].get("untrusted_root", 0) > 0 for s in states)

        assert processes.wait_until(refused, TAKEOVER_TIMEOUT, interval=0.2), logs([*ds, rogue])
        result = traffic.ping(ds[0].ns, ds[3].address, count=PINGS // 2, interval=0.1, timeout=PINGS * 0.05 + 5)
        seen = roots(ds)
        print(f"\nprivate network with a stranger below every key: roots {[r == root for r in seen]}, "
              f"A -> D {result.received}/{result.sent}")
        assert all(r == root for r in seen), seen
        assert kept(result, PINGS // 2), result.output + logs([*ds, rogue])
        assert rogue.running(), rogue.log_tail(40)

"""Issue 15 on real daemons: a rogue node that grinds a key below every honest one, joins the honest line
A-B-C-D at B and C, becomes everyone's root, black-holes every routed packet and lookup it gets, and flaps its
root claim between two ground keys. A -> D must keep >= 99% of its pings after at most 5 s of that.

The rogue is tests/integration/rogue_node.py: the real daemon whose router drops every routed packet. Run as
root (CI is); namespaces and processes are the run's own and are removed whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from axiomnet.constants import DEFAULT_UDP_PORT
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
                name: str) -> daemons.DaemonProcess:
    data_dir = workdir / name
    data_dir.mkdir(mode=0o700)
    key_file = data_dir / IDENTITY_FILENAME
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(encode_identity(identity))
    admin = workdir / f"{name}.sock"
    log = workdir / f"{name}.log"
    args = [sys.executable, str(ROGUE), "daemon", "--listen", f"[::]:{DEFAULT_UDP_PORT}", "--no-tun",
            "--data-dir", str(data_dir), "--admin-socket", str(admin), "--log-level", "INFO"]
    for peer in peers:
        args += ["--peer", peer]
    with open(log, "ab") as out:
        popen = ns.popen(args, stdout=out, stderr=subprocess.STDOUT, env=daemons._python_env())
    return daemons.DaemonProcess(ns, name, popen, address=str(identity.address), listen=f"[::]:{DEFAULT_UDP_PORT}",
                                 data_dir=data_dir, admin_socket=admin, tun=None, log_path=log)


def logs(ds: list[daemons.DaemonProcess]) -> str:
    return "\n".join(f"--- {d.name}\n{d.log_tail(25)}" for d in ds)


def root_of(d: daemons.DaemonProcess) -> str | None:
    try:
        return d.inspect()["tree"]["root"]
    except Exception:  # noqa: BLE001 - a daemon busy re-forming its tree may miss one admin deadline
        return None


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
        rns = lab.add_namespace("rogue")
        to_b = lab.connect(rns, b.ns, ipv4_subnet="198.18.20.0/24", ipv6_subnet="2001:2:0:20::/64")
        to_c = lab.connect(rns, c.ns, ipv4_subnet="198.18.21.0/24", ipv6_subnet="2001:2:0:21::/64")
        peers = [daemons.format_endpoint(link.ipv4_b, DEFAULT_UDP_PORT) for link in (to_b, to_c)]

        rogue = start_rogue(rns, keys[1], peers, workdir, "rogue-0")
        assert processes.wait_until(lambda: all(root_of(x) == keys[1].signing_key.hex() for x in ds),
                                TAKEOVER_TIMEOUT, interval=0.2), logs([*ds, rogue])
        # The attack is in force: everyone's root is the rogue, which drops every lookup crossing it.
        grace = traffic.ping(a.ns, d.address, count=GRACE_PINGS, interval=0.1, timeout=GRACE_PINGS * 0.1 + 3)
        steady = traffic.ping(a.ns, d.address, count=PINGS, interval=0.1, timeout=PINGS * 0.1 + 5)
        print(f"rogue root: {grace.received}/{GRACE_PINGS} pings in the first 5 s, then {steady.received}/{PINGS}")
        assert steady.received >= 0.99 * PINGS, steady.output + logs([*ds, rogue])
        assert root_of(a) == keys[1].signing_key.hex()  # still under the rogue's root all along
        looked = a.inspect()["lookups"]
        print("A's lookups:", {k: v for k, v in looked.items() if k not in ("cache", "pending")},
              "the rogue dropped", rogue.inspect()["counters"]["router"].get("rogue_dropped", 0), "routed packets")
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
        assert pings[0].received >= 0.99 * PINGS, pings[0].output + logs([*ds, current])
        for node in ds:
            assert node.running(), f"{node.name} exited\n{node.log_tail(40)}"
            assert "Traceback" not in node.log(), f"{node.name} logged a traceback\n{node.log_tail(60)}"

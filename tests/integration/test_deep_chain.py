"""Issue 15 item 5 on real daemons: a chain of 40 daemons in namespaces delivers end to end.

Forty namespaces in a line (one veth per link); only the two ends have a TUN device, the 38 between them are
relay-only daemons (``--no-tun``), the cheap kind a deep community mesh is made of. The ends ping each other
across 38 relays, and every relay must have carried some of it (the line is the only path, so a delivery that
skipped a relay would be a bug in the counting, not a shortcut), and the chain must settle in one tree. The test
prints what the chain cost: the time from start to the first reply, and the daemons' resident memory and CPU.
Announcements this deep span several ANNOUNCE_PARTs (protocol 4, docs/PROTOCOL.md §5.7: 1,200 bytes each; a
chain of 20 hops is 2,302 bytes before its lookup filter), and the deep half of the chain must have taken them so.

Run as root (CI is); namespaces and daemons are the run's own and are removed whatever happens.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from axiomnet.lab import daemons, namespaces, processes, topology, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NODES = 40
# Cold start of 40 daemons on a 2-core machine: 40 interpreters importing the stack (~1 s of CPU each), then
# handshakes, the tree spreading 39 hops (announcements go out at once on a change) and a lookup climbing it.
REACH_TIMEOUT = 150.0
PINGS = 20
TREE_TIMEOUT = 60.0  # the root's announcements crossing 39 hops, each sent at once on a change (ROUTING.md §2)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def state(d: daemons.DaemonProcess) -> dict | None:
    """The daemon's admin document (the in-process client: 40 inspect subprocesses would cost a minute of CPU)."""
    try:
        return d.admin({"cmd": "state"}, timeout=10.0)
    except (OSError, ValueError):
        return None


def test_a_chain_of_40_relay_only_daemons_delivers_end_to_end(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        start = time.monotonic()
        ds = daemons.start_overlay(lab, NODES, topology.chain(NODES), workdir, tun_nodes={0, NODES - 1})
        first, last = ds[0], ds[-1]
        started = time.monotonic() - start
        took = daemons.wait_overlay_reachable(first, last, timeout=REACH_TIMEOUT)
        logs = "\n".join(f"--- {d.name}\n{d.log_tail(15)}" for d in ds if not d.running() or d in (first, last))
        assert took is not None, f"no reply across {NODES - 2} relays after {REACH_TIMEOUT:g} s\n{logs}"
        result = traffic.ping(first.ns, last.address, count=PINGS, interval=0.2, timeout=PINGS * 0.2 + 5)
        assert result.received >= PINGS - 1, result.output + logs

        # Delivery does not wait for one tree (a search over the links finds the chain too), but the chain must
        # settle in one: on a machine loaded 37 deep, 6 roots were still seen just after the pings.
        views: list[dict | None] = []

        def one_tree() -> bool:
            views[:] = [state(d) for d in ds]
            return all(v is not None for v in views) and len({v["tree"]["root"] for v in views}) == 1  # type: ignore[index]

        settle = time.monotonic()
        assert processes.wait_until(one_tree, TREE_TIMEOUT, interval=1.0), \
            f"the chain holds {len({v['tree']['root'] for v in views if v})} trees after {TREE_TIMEOUT:g} s"
        settled = time.monotonic() - settle
        depths = [v["tree"]["depth"] for v in views]  # type: ignore[index]
        idle = [i for i, v in enumerate(views[1:-1], 1) if daemons.relayed_packets(v) == 0]  # type: ignore[arg-type]
        assert not idle, f"relays {idle} carried nothing: the pings did not cross the chain"
        # The neighbours of a node 20 deep are at least 19 deep once the chain has settled: their announcements came
        # in two parts or more (while the chain formed, shallower ones came in one).
        deep = [v["tree"] for v in views if v["tree"]["depth"] >= 20]  # type: ignore[index]
        assert deep, f"no daemon 20 deep (depths {depths})"
        counts = [{k: t[k] for k in ("depth", "parts_received", "announcements_assembled", "partials_malformed")}
                  for t in deep]
        assert all(t["parts_received"] > t["announcements_assembled"] > 0 and t["partials_malformed"] == 0
                   for t in deep), counts
        parts_per = max(t["parts_received"] / t["announcements_assembled"] for t in deep)
        rss = [d.memory_kib()["VmRSS"] / 1024 for d in ds]
        cpu = [d.cpu_seconds() for d in ds]
        print(f"\n{NODES}-daemon chain: started in {started:.1f} s, first reply {took:.1f} s later, "
              f"{result.received}/{PINGS} pings (rtt avg {result.rtt_avg} ms), one tree {settled:.1f} s after them, "
              f"depth max {max(depths)}, up to {parts_per:.1f} parts per announcement received; "
              f"RSS {sum(rss):.0f} MiB in all ({min(rss):.0f}-{max(rss):.0f} per daemon), "
              f"CPU {sum(cpu):.1f} s in all ({max(cpu):.1f} s the most)")
        for d in ds:
            assert d.running(), f"{d.name} exited\n{d.log_tail(40)}"

"""Live floods against a running daemon from a separate attacker namespace (not the peer's address).

The attacker ``x`` sits on a link of its own to node A (198.18.1.0/24) and reaches A's peer-facing address
through A. Throughout each flood the legitimate peer B pings A over the overlay; afterwards A is up, every
actor alive, its memory under the bound below and back near where it started, and it logged nothing per
packet above DEBUG. A longer soak: tools/chaos.py (its flood scenario) with --rounds.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from axiomnet.actors.node import MALLOC_TRIM_INTERVAL
from axiomnet.constants import MAX_QUEUED_BATCHES, READER_BATCH_MAX, REFUSALS_BEFORE_LOAD
from axiomnet.identity import Identity
from axiomnet.lab import daemons, namespaces, processes, traffic
from tests.integration.test_daemon import assert_reachable

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Memory a flood may add while it runs: one data-path mailbox full of ~1 KB datagrams
# (MAX_QUEUED_BATCHES x READER_BATCH_MAX x 1 KiB = 16 MiB), the half-open handshake table and the rate-limit
# buckets (about 3 MiB at their bounds), and allocator slack. Measured: +5 to +9 MiB (docs/RELIABILITY.md).
FLOOD_PEAK_GROWTH_MIB = MAX_QUEUED_BATCHES * READER_BATCH_MAX // 1024 + 8
# What may stay after the flood: CPython keeps freed memory in its arenas and glibc's heap, so RSS settles
# near, not at, the baseline. Measured: +5 to +9 MiB after one flood; repeated floods plateau (docs).
FLOOD_RESIDUE_MIB = 16
PING_INTERVAL = 0.1


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


class Arena:
    """Daemons A and B on the pair, the attacker namespace on A, and real datagrams captured from the link."""

    def __init__(self, pair: namespaces.NetnsPair, workdir: Path) -> None:
        self.pair = pair
        self.attacker, self.attacker_link = pair.add_attacker(pair.a, extra_addresses=8)
        self.sources = [self.attacker_link.ipv4_b] + [f"198.18.1.{10 + i}" for i in range(8)]
        self.a, self.b = daemons.start_daemon_pair(pair, workdir)
        assert_reachable(self.b, self.a)
        capture = traffic.Capture(pair.a, pair.link.ifname_a, 7443)
        assert traffic.ping(self.b.ns, self.a.address, count=5, interval=0.05).received == 5
        self.captured = [c.data for c in capture.stop()]
        assert len(self.captured) >= 10  # handshake, data and keepalive datagrams of the real session
        self.baseline_kib = self.settled_rss_kib()
        self.log_lines = len(self.a.log().splitlines())

    def settled_rss_kib(self) -> int:
        """A's RSS once start-up allocation has settled: two samples 0.5 s apart within 256 KiB."""
        samples = [self.a.memory_kib()["VmRSS"]]

        def settled() -> bool:
            samples.append(self.a.memory_kib()["VmRSS"])
            return abs(samples[-1] - samples[-2]) < 256

        assert processes.wait_until(settled, 20.0, interval=0.5), samples
        return samples[-1]

    def ping_during(self, seconds: float) -> subprocess.Popen[str]:
        count = int(seconds / PING_INTERVAL)
        return self.b.ns.popen(["ping", "-6", "-n", "-q", "-i", str(PING_INTERVAL), "-c", str(count), "-W", "1",
                                self.a.address], stdout=subprocess.PIPE, text=True)

    def new_log(self) -> list[str]:
        return self.a.log().splitlines()[self.log_lines:]

    def rss_mib_above_baseline(self) -> float:
        return (self.a.memory_kib()["VmRSS"] - self.baseline_kib) / 1024


def finish_ping(proc: subprocess.Popen[str]) -> traffic.PingResult:
    out, _ = proc.communicate(timeout=120)
    return traffic.parse_ping_output(out)


def assert_healthy_after(arena: Arena, ping: traffic.PingResult, peak_kib: int) -> None:
    a = arena.a
    assert a.running(), a.log_tail(30)
    # The peer's ping kept working through the flood (a few late replies are tolerated on a loaded box).
    assert ping.sent > 0 and ping.received >= 0.9 * ping.sent, ping.output
    state = a.inspect()
    assert all(row["alive"] and row["restarts"] == 0 for row in state["actors"]), state["actors"]
    assert [s["state"] for s in state["sessions"]] == ["established"]
    growth = (peak_kib - arena.baseline_kib) / 1024
    assert growth < FLOOD_PEAK_GROWTH_MIB, f"RSS grew {growth:.1f} MiB during the flood"
    # The daemon hands freed heap pages back every MALLOC_TRIM_INTERVAL (30 s): the residue is read after one.
    assert processes.wait_until(lambda: arena.rss_mib_above_baseline() < FLOOD_RESIDUE_MIB, MALLOC_TRIM_INTERVAL + 5.0), \
        f"RSS stayed {arena.rss_mib_above_baseline():.1f} MiB above the baseline"
    # Nothing per packet above DEBUG: the log grew by a handful of lines at most, none a traceback.
    new = arena.new_log()
    assert len(new) < 10, "\n".join(new[:20])
    assert not any("Traceback" in line or "ERROR" in line or "CRITICAL" in line for line in new)
    print(f"flood: baseline {arena.baseline_kib / 1024:.1f} MiB, peak +{growth:.1f} MiB, "
          f"after +{arena.rss_mib_above_baseline():.1f} MiB, ping {ping.received}/{ping.sent}")


def test_chaos_send_malformed_packets_flood_of_10000_random_and_mutated_datagrams_from_an_attacker(pair, workdir):
    """>= 10,000 datagrams of every hostile kind: random, truncated headers, every version/type nibble, huge
    fields and 64 KB datagrams, valid headers with live receiver indices and garbage ciphertext, and replays
    of captured datagrams (verbatim and with forged counters)."""
    arena = Arena(pair, workdir)
    pinger = arena.ping_during(8.0)
    with processes.PeakMemory(arena.a.pid) as peak:
        report = traffic.flood(arena.attacker, pair.ip_a, 7443, mix=traffic.ALL_HOSTILE_KINDS, count=30_000,
                               seconds=30.0, seed=11, captured=arena.captured, ports=64)
    ping = finish_ping(pinger)
    assert report.total >= 10_000 and all(report.sent[kind] > 0 for kind in traffic.ALL_HOSTILE_KINDS), report
    assert_healthy_after(arena, ping, peak.peak)

    def accounted() -> bool:  # the reader has handed over what the kernel queued (waiting for a quiet socket
        # instead never ends on a loaded box: the peer's announcements and keepalives keep arriving)
        rx = arena.a.inspect()["counters"]["socket"]["rx_datagrams"]
        return rx + traffic.udp_receive_buffer_errors(pair.a) >= 0.99 * report.total

    processes.wait_until(accounted, 20.0, interval=0.5)  # the assertion below says what was missing
    counters = arena.a.inspect()["counters"]
    # Every datagram is accounted for: read and counted by the daemon, or dropped by the kernel with the socket's
    # receive buffer full (RcvbufErrors; seen: 7 of 30,000 in a 1.1 s flood), where no program can see it.
    kernel_dropped = traffic.udp_receive_buffer_errors(pair.a)
    # (1% slack for drops earlier in the kernel, e.g. a full veth backlog, which no counter here sees.)
    assert counters["socket"]["rx_datagrams"] + kernel_dropped >= 0.99 * report.total, (counters["socket"], kernel_dropped)
    refused = sum(v for k, v in counters["peers"].items() if k.startswith("rx_"))
    assert refused > report.total // 4  # counted per error class, not silently dropped
    assert_reachable(arena.b, arena.a)


def test_flood_of_50000_handshake_initiations_from_many_source_ports(pair, workdir):
    """>= 50,000 HANDSHAKE_INITs from 256 source ports on 9 source addresses, half well-formed by an attacker
    that knows the node's key (a real X25519 ephemeral, a valid mac1), half random: the random half is dropped
    before any Diffie-Hellman (bad mac1), the front door asks the rest for cookies once under load, keeps its
    half-open table bounded, and the peer's session and ping are untouched."""
    arena = Arena(pair, workdir)
    key = bytes.fromhex(arena.a.inspect()["self"]["public_key"])
    pinger = arena.ping_during(10.0)
    with processes.PeakMemory(arena.a.pid) as peak:
        report = traffic.flood(arena.attacker, pair.ip_a, 7443, mix={"init": 1}, count=50_000, seconds=60.0, seed=5,
                               ports=256, sources=arena.sources, well_formed=0.5, target_key=key)
    ping = finish_ping(pinger)
    assert report.total >= 50_000 and report.ports == 256, report
    assert_healthy_after(arena, ping, peak.peak)
    state = arena.a.inspect()
    peers, responder = state["counters"]["peers"], state["snapshots"]["peers"]["responder"]
    shed = state["counters"]["socket"].get("rx_dropped_backpressure", 0) + peers.get("rx_dropped_backpressure", 0)
    assert responder["inits"] + shed >= 0.9 * report.total  # each one answered, refused or shed: counted
    assert responder["bad_mac1"] > 0.3 * report.total  # the random half: no reply, no Diffie-Hellman, counted
    assert responder["cookie_replies"] > 0  # under load the mac1-valid half is asked for cookies, statelessly
    assert state["snapshots"]["peers"]["pending_handshakes"] <= 1024
    assert responder["responses_sent"] < 0.05 * report.total  # the expensive path stayed rare


KEY_FLOOD_RATE = 2000  # fresh-key INITs a second from one host (issue 17's target)
KEY_FLOOD_SECONDS = 8.0


def test_a_one_host_fresh_key_handshake_flood_is_refused_then_asked_for_cookies_and_a_pinned_peer_connects(
        pair, workdir):
    """Issue 17: refused handshakes were not load, so one host completing handshakes with fresh keys cost the
    node a Diffie-Hellman each, forever. From the attacker's single address, 2,000 INITs a second for 8 s, each a
    real initiator that completes when answered and echoes cookies: the node admits a burst of its keys, refuses
    the rest, and after a few refusals answers that source only with cookies and then its rate limit. Meanwhile
    a peer from another host that pinned the node's key connects (measured; docs/SECURITY.md has the figure) and
    the existing peer's ping keeps working. Past its rate limit the source is boxed: the socket's reader drops its
    INITs until its bucket refills, before any actor sees them (counted `rx_dropped_penalty_box`). The node's CPU
    over the flood after its first second is printed, not asserted (a shared CI box makes CPU time a benchmark,
    not a test), with a control measured right after on the same node: the same flood from another address
    with a mac1 under a wrong key (dropped by the front door after one keyed hash, never boxed)."""
    arena = Arena(pair, workdir)
    key = bytes.fromhex(arena.a.inspect()["self"]["public_key"])
    pinger = arena.ping_during(KEY_FLOOD_SECONDS + 2.0)
    proc = traffic.start_key_flood(arena.attacker, pair.ip_a, 7443, target_key=key, source=arena.sources[0],
                                   rate=KEY_FLOOD_RATE, seconds=KEY_FLOOD_SECONDS)
    started = time.monotonic()
    assert processes.wait_until(lambda: time.monotonic() - started >= 1.0, 5.0, interval=0.05)
    cpu_from, at_from = arena.a.cpu_seconds(), time.monotonic()
    assert processes.wait_until(lambda: time.monotonic() - started >= 3.0, 5.0, interval=0.05)
    pinned = traffic.connect_seconds(pair.b, pair.ip_a, 7443, key, timeout=10.0)
    report = traffic.finish_key_flood(proc, timeout=KEY_FLOOD_SECONDS + 120.0)
    cpu_to, at_to = arena.a.cpu_seconds(), time.monotonic()
    ping = finish_ping(pinger)
    cpu_percent = 100.0 * (cpu_to - cpu_from) / (at_to - at_from)
    state = arena.a.inspect()
    peers, responder = state["counters"]["peers"], state["snapshots"]["peers"]["responder"]
    print(f"key flood: {report['inits']} INITs in {report['seconds']:.1f} s "
          f"({report['inits'] / report['seconds']:.0f}/s), {report['resps']} RESPs, {report['cookie_replies']} cookie "
          f"replies, {report['finals']} FINALs; node CPU after the first second {cpu_percent:.1f}% of a core; "
          f"pinned peer connected in {pinned['seconds']} s; peers {dict(peers)}; responder {responder}")
    assert arena.a.running(), arena.a.log_tail(30)
    b_key = arena.b.inspect()["self"]["public_key"]
    assert any(s["peer"] == b_key and s["state"] == "established" for s in state["sessions"])  # not pushed out
    assert pinned["seconds"] is not None, "a peer that pinned the node's key could not connect during the flood"
    assert peers.get("refused_source_rate", 0) > 0  # the host's keys past its burst were refused ...
    assert responder["refusals"] >= REFUSALS_BEFORE_LOAD  # ... which is load: its INITs need cookies ...
    assert responder["cookie_replies"] > 0 and responder["rate_limited"] > 0  # ... and meet its rate limit
    assert report["resps"] < 0.1 * report["inits"]  # the expensive answer stayed rare
    assert ping.sent > 0 and ping.received >= 0.9 * ping.sent, ping.output
    boxed = state["counters"]["socket"].get("rx_dropped_penalty_box", 0)
    assert boxed > 0.5 * report["inits"], state["counters"]["socket"]  # most never reached the peer manager
    control = flood_cpu_percent(arena, traffic.start_key_flood(
        arena.attacker, pair.ip_a, 7443, target_key=Identity.generate().public_key, source=arena.sources[1],
        rate=KEY_FLOOD_RATE, seconds=KEY_FLOOD_SECONDS))
    bad_mac1 = arena.a.inspect()["snapshots"]["peers"]["responder"]["bad_mac1"]
    print(f"key flood: {boxed} INITs dropped in the penalty box; control, the same flood with a bad mac1: "
          f"{bad_mac1} bad_mac1, node CPU after the first second {control:.1f}% of a core "
          f"(ratio key flood / control {cpu_percent / control:.2f})")
    assert bad_mac1 >= 0.9 * KEY_FLOOD_RATE * KEY_FLOOD_SECONDS


def flood_cpu_percent(arena: Arena, proc: subprocess.Popen[str]) -> float:
    """A's CPU (% of a core) from 1 s into a key flood until it ends."""
    started = time.monotonic()
    assert processes.wait_until(lambda: time.monotonic() - started >= 1.0, 5.0, interval=0.05)
    cpu_from, at_from = arena.a.cpu_seconds(), time.monotonic()
    traffic.finish_key_flood(proc, timeout=KEY_FLOOD_SECONDS + 120.0)
    return 100.0 * (arena.a.cpu_seconds() - cpu_from) / (time.monotonic() - at_from)


def test_twenty_nodes_behind_one_address_all_get_sessions(pair, workdir):
    """Issue 17: 8 strangers per address was a hard cap even with the table empty, so ten nodes behind one NAT
    could not all peer with a public node. Twenty fresh keys from the attacker namespace's one address, one after
    the other (each pinning the node's key), all connect; the existing peer keeps its session."""
    arena = Arena(pair, workdir)
    key = bytes.fromhex(arena.a.inspect()["self"]["public_key"])
    for n in range(20):
        got = traffic.connect_seconds(arena.attacker, pair.ip_a, 7443, key, timeout=10.0)
        assert got["seconds"] is not None, f"node {n} behind the address could not connect"
    state = arena.a.inspect()
    assert sum(s["state"] == "established" for s in state["sessions"]) == 21, state["sessions"]
    assert not any(k.startswith("refused_") for k in state["counters"]["peers"]), state["counters"]["peers"]
    assert_reachable(arena.b, arena.a)



def test_a_daemon_sigtermed_during_a_flood_exits_0_within_the_shutdown_deadline(pair, workdir):
    """Soaks saw a daemon SIGTERM'd under load overrun SHUTDOWN_DEADLINE (killed, the run failed): the stop request
    queued behind the peer manager's full data lane (> 1 s), and the shutdown then gave up on the remaining actors,
    the supervisor among them, whose thread held the exit for ever. The stop now jumps the queue (actors/base.py:
    TwoLaneInbox) and the shutdown asks every actor under one deadline (actors/node.py: _shutdown). A at DEBUG
    makes its front door slow enough for the flood to fill the peer manager's mailbox on any box (without the fix:
    "peers did not stop" 2 of 2 tries, one daemon not gone in 15 s)."""
    a, b = daemons.start_daemon_pair(pair, workdir, log_level="DEBUG")
    assert_reachable(b, a)
    proc = traffic.start_flood(pair.b, pair.ip_a, 7443, mix={"random": 1}, count=2_000_000, seconds=30.0, seed=11)
    try:
        # The flood is reaching the daemon's socket before the signal.
        assert processes.wait_until(lambda: a.inspect()["counters"]["socket"].get("rx_datagrams", 0) > 20_000,
                                    20.0, interval=0.2)
        code = a.stop()  # SIGTERM, SHUTDOWN_DEADLINE (5 s), then SIGKILL
    finally:
        processes.terminate_processes([proc], grace=1.0)
    log = a.log()
    assert not a.killed, f"not gone {a.stop_seconds:.1f} s after SIGTERM\n{a.log_tail(30)}"
    assert code == 0, a.log_tail(30)
    assert "did not stop" not in log and "stopped cleanly" in log, a.log_tail(30)

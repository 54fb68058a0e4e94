"""The first packet over 5 relays (issue 15 item 8) and a one-way flow, on real daemons in network namespaces.

A line of 7 daemons (5 relays) settles its tree; then one echo request, alone, must be answered: the very first
packet waits behind the lookup (both ways) and the end-to-end handshake and is delivered, not dropped, and no
packet waited past its bound (QUEUE_MAX_WAIT) in the end-to-end or the lookup queue. Then a one-way UDP stream
(the receiver sends nothing) must cost no dead path and no ring search: the receiver's end-to-end passive keepalive
answers it. How fast the first packet is, is a benchmark figure (tools/bench.py --only first_packet), not asserted.
Run as root (CI is).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from axiomnet.constants import DEAD_PATH_AFTER, QUEUE_MAX_WAIT
from axiomnet.lab import daemons, namespaces, processes, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NODES = 7
SETTLE_TIMEOUT = 60.0  # cold start of 7 daemons on a loaded 2-core machine, links and tree
STREAM_SECONDS = 6.0  # three times DEAD_PATH_AFTER: unanswered, the source would find the path dead twice
UDP_PORT = 9191

_RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
print("ready", flush=True)
deadline, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < deadline:
    s.settimeout(max(0.05, min(2.0 if n else 30.0, deadline - time.monotonic())))  # 2 s of silence: over
    try:
        s.recv(2048)
        n += 1
    except TimeoutError:
        break
print(n, flush=True)
"""
_SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < end and n < 1000:
    s.sendto(b"x" * 200, (sys.argv[1], int(sys.argv[2])))
    n += 1
    time.sleep(0.1)
print(n, flush=True)
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def root_of(d: daemons.DaemonProcess) -> str | None:
    try:
        return ((d.inspect().get("self") or {}).get("coords") or {}).get("root")
    except processes.HarnessError:
        return None


def lookups(state: dict[str, Any]) -> dict[str, Any]:
    return state.get("lookups") or {}


def test_the_first_packet_over_five_relays_arrives_and_a_one_way_flow_costs_no_search(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, NODES, [(i, i + 1) for i in range(NODES - 1)], workdir)
        src, dst = ds[0], ds[-1]
        logs = lambda: "\n".join(f"--- {d.name}\n{d.log_tail(25)}" for d in ds)  # noqa: E731

        # Settled: every node under one root, three checks in a row (a second apart), so the lookup filters
        # carry every address.
        streak = []

        def settled() -> bool:
            roots = {root_of(d) for d in ds}
            streak.append(len(roots) == 1 and None not in roots)
            return len(streak) >= 3 and all(streak[-3:])

        assert processes.wait_until(settled, SETTLE_TIMEOUT, interval=1.0), logs()

        # One echo request, alone: it must be the packet that arrives (nothing retries it).
        first = traffic.ping(src.ns, dst.address, count=1, interval=0.2, timeout=5.0)
        assert first.received == 1, f"{first.output}\n{logs()}"
        for d in (src, dst):
            state = d.inspect()
            e2e = state["counters"]["e2e"]
            found = lookups(state)
            assert e2e.get("queue_expired", 0) == 0 and found.get("queue_expired", 0) == 0, (e2e, found)
            assert e2e.get("queue_wait_max_ms", 0) <= QUEUE_MAX_WAIT * 1000, e2e
            assert found.get("queue_wait_max_ms", 0) <= QUEUE_MAX_WAIT * 1000, found
        assert lookups(src.inspect())["lookups_sent"] >= 1  # it was a cold first packet: looked up

        # A one-way UDP stream src -> dst; dst's application sends nothing back.
        before = {d.name: lookups(d.inspect()) for d in (src, dst)}
        receiver = dst.ns.popen([sys.executable, "-c", _RECEIVER, str(UDP_PORT), str(STREAM_SECONDS + 10)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
            sent = src.ns.exec([sys.executable, "-c", _SENDER, dst.address, str(UDP_PORT), str(STREAM_SECONDS)],
                               timeout=STREAM_SECONDS + 10)
            assert int(sent.stdout.strip()) > 0, sent.stderr

            def searched() -> bool:
                now = {d.name: lookups(d.inspect()) for d in (src, dst)}
                return any(now[n][k] > before[n][k] for n in now for k in ("dead_paths", "ring_searches"))

            # Nothing found dead, during the stream (checked above by its end) nor DEAD_PATH_AFTER after it.
            assert not processes.wait_until(searched, DEAD_PATH_AFTER + 1.5, interval=0.5), (
                {d.name: lookups(d.inspect()) for d in (src, dst)})
            out, _ = receiver.communicate(timeout=STREAM_SECONDS + 15)
        finally:
            if receiver.poll() is None:
                processes.signal_process(receiver.pid, 9)
                receiver.wait(5)
        received = int(out.strip().splitlines()[-1])
        assert received >= int(sent.stdout.strip()) * 0.9, (received, sent.stdout)
        for d in ds:
            assert d.running(), f"{d.name} exited\n{d.log_tail(40)}"

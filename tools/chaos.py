#!/usr/bin/env python3
"""Chaos soak: the safety analysis' fault scenarios, round after round, against two real daemons.

    sudo python tools/chaos.py                     # 3 rounds (about 2 minutes)
    sudo python tools/chaos.py --rounds 50 --seconds 3600 --seed 7

Each round runs, in a seeded random order: a network partition (veth down, then up), a flood of hostile
datagrams, a crash injected into a session actor, a crash injected into the router, a restart of one daemon,
and a 5 MB transfer checked by SHA-256; after each scenario the overlay must answer again. At the end both
daemons must stop with exit 0 within 5 s and the surviving daemon's memory must not have grown by more than
--max-rss-growth-mib. Everything runs in namespaces the run creates (198.18.0.0/15 addresses, no default
route) and is removed afterwards. Bounded: at most --rounds rounds and --seconds seconds; stops by itself.
Exit status: 0 all passed, 1 a scenario failed, 2 cannot run here (not root, tools missing).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axiomnet.lab import daemons, netns, traffic  # noqa: E402

REACH = 20.0
FAULTS = ["--fault-injection"]  # with AXIOMNET_FAULT_INJECTION=1 (set in main): the daemons accept inject-fault
RESTART_SPACING = 8.0  # seconds between injected crashes, so a soak never trips the restart-intensity limit


class Soak:
    def __init__(self, pair: netns.NetnsPair, workdir: Path, rng: random.Random) -> None:
        self.pair = pair
        self.workdir = workdir
        self.rng = rng
        self.a, self.b = daemons.start_daemon_pair(pair, workdir, log_level="WARNING", extra_args=FAULTS)
        self.last_crash = 0.0

    def reachable(self) -> None:
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            if daemons.wait_overlay_reachable(src, dst, timeout=REACH) is None:
                raise AssertionError(f"{dst.address} unreachable from {src.name}\n{src.log_tail(15)}\n{dst.log_tail(15)}")

    def partition(self) -> str:
        ifname = self.pair.link.ifname_a
        self.pair.a.ip("link", "set", "dev", ifname, "down")
        try:
            if not netns.wait_until(lambda: not self.a.inspect()["peers"][0]["alive"], 15.0, interval=0.5):
                raise AssertionError("partition not detected within 15 s")
        finally:
            self.pair.a.ip("link", "set", "dev", ifname, "up")
        self.reachable()
        return "detected and healed"

    def flood(self) -> str:
        sent = traffic.flood_hostile_datagrams(self.pair.b, self.pair.ip_a, 7443, count=20000, seconds=10.0,
                                             seed=self.rng.randrange(1 << 30))
        self.reachable()
        return f"{sent} hostile datagrams"

    def _crash(self, actor: str) -> str:
        wait = RESTART_SPACING - (time.monotonic() - self.last_crash)
        if wait > 0:
            time.sleep(wait)
        reply = self.a.admin({"cmd": "inject-fault", "actor": actor})
        if reply.get("ok") is not True:
            raise AssertionError(f"inject-fault {actor}: {reply}")
        self.last_crash = time.monotonic()
        time.sleep(0.5)
        self.reachable()
        return "restarted"

    def crash_session(self) -> str:
        return self._crash("session")

    def crash_router(self) -> str:
        return self._crash("router")

    def restart_b(self) -> str:
        old = self.b
        address = old.address
        code = old.stop()
        if code != 0:
            raise AssertionError(f"daemon b exited {code} on SIGTERM")
        self.b = daemons.start_daemon(self.pair.b, name="node-b", listen=old.listen, peers=[f"{self.pair.ip_a}:7443"],
                                    data_dir=old.data_dir, admin_socket=old.admin_socket, tun=old.tun,
                                    log_level="WARNING", extra_args=FAULTS)
        if self.b.address != address:
            raise AssertionError("address changed across a restart")
        self.reachable()
        return "same address, traffic resumed"

    def transfer(self) -> str:
        result = traffic.tcp_transfer(self.pair.b, self.pair.a, self.b.address, 5 * 1024 * 1024, timeout=60.0)
        if not result.ok:
            raise AssertionError(f"transfer failed: {result.error}")
        return f"5 MB intact, {result.mbit_per_s:.0f} Mbit/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all scenarios (default 3)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop starting rounds after this (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="order of scenarios and flood contents")
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0, help="allowed growth of daemon A's RSS")
    args = parser.parse_args(argv)
    reason = netns.netns_unavailable_reason()
    if reason is not None:
        print(f"chaos: cannot run here: {reason}", file=sys.stderr)
        return 2
    os.environ["AXIOMNET_FAULT_INJECTION"] = "1"  # the daemons this run starts accept inject-fault
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    failures = 0
    netns.cleanup_leftovers()
    with netns.NetnsPair(stop_grace=5.0) as pair, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        soak = Soak(pair, Path(tmp), rng)
        soak.reachable()
        rss_start = soak.a.memory_kib()["VmRSS"]
        scenarios: list[tuple[str, Callable[[], str]]] = [
            ("partition", soak.partition), ("flood", soak.flood), ("crash session", soak.crash_session),
            ("crash router", soak.crash_router), ("restart b", soak.restart_b), ("transfer", soak.transfer),
        ]
        for round_no in range(1, args.rounds + 1):
            if time.monotonic() > deadline:
                print(f"chaos: time limit reached after {round_no - 1} rounds")
                break
            rng.shuffle(scenarios)
            for name, run in scenarios:
                started = time.monotonic()
                try:
                    detail = run()
                    print(f"round {round_no:3d}  PASS  {name:14s} {time.monotonic() - started:5.1f} s  {detail}")
                except Exception as exc:  # report every failure, keep the soak going where it can
                    failures += 1
                    print(f"round {round_no:3d}  FAIL  {name:14s} {exc}")
                    if not (soak.a.running() and soak.b.running()):
                        print("chaos: a daemon died; stopping")
                        break
            else:
                continue
            break
        rss_end = soak.a.memory_kib()["VmRSS"]
        growth = (rss_end - rss_start) / 1024
        print(f"daemon A RSS: {rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB ({growth:+.1f} MiB)")
        if growth > args.max_rss_growth_mib:
            failures += 1
            print(f"FAIL  memory grew by more than {args.max_rss_growth_mib} MiB")
        for d in (soak.a, soak.b):
            code = d.stop()
            ok = code == 0 and d.stop_seconds is not None and d.stop_seconds < 5.0
            failures += 0 if ok else 1
            print(f"{'PASS' if ok else 'FAIL'}  {d.name} stopped: exit {code} in {d.stop_seconds or 0:.2f} s")
    print("chaos: RESULT", "PASS" if failures == 0 else f"FAIL ({failures})")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

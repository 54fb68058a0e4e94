#!/usr/bin/env python3
"""Chaos soak: the safety analysis' fault scenarios, round after round, against two real daemons.

    sudo python tools/chaos.py                     # 3 rounds (about 2 minutes)
    sudo python tools/chaos.py --rounds 50 --seconds 3600 --seed 7
    sudo python tools/chaos.py --rounds 0 --kills 1000 --traffic-kills 100   # the kill loops alone, long

Each round runs, in a seeded random order: a network partition (veth down, then up), a flood of hostile
datagrams, a crash injected into a session actor, a crash injected into the router, a restart of one daemon,
and a 5 MB transfer checked by SHA-256; after each scenario the overlay must answer again. At the end both
daemons must stop with exit 0 within 5 s and the surviving daemon's memory must not have grown by more than
--max-rss-growth-mib. Everything runs in namespaces the run creates (198.18.0.0/15 addresses, no default
route) and is removed afterwards. Bounded: at most --rounds rounds and --seconds seconds; stops by itself.

Kill loops (--kills, --traffic-kills): the daemon is SIGKILLed (its whole process group, as a service
manager does) at random moments of its start-up, half of the time with a fresh data directory (the kill
lands in key creation) and half with the same one (it must keep its identity), every 20th survivor
started for real; then, with a peer, during handshakes and traffic. After every kill the key files are
valid or absent, never partial, and the restarted daemon has the same identity and carries traffic.
Exit status: 0 all passed, 1 a scenario failed, 2 cannot run here (not root, tools missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


import signal  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from axiomnet.constants import PEER_DEAD_AFTER  # noqa: E402
from axiomnet.errors import CorruptIdentity  # noqa: E402
from axiomnet.ops.identity_store import IDENTITY_BACKUP_FILENAME, IDENTITY_FILENAME, TEMP_MARKER, load_identity  # noqa: E402
from axiomnet.lab import daemons, namespaces, processes, traffic  # noqa: E402

REACH = 20.0
FAULTS = ["--fault-injection"]  # with AXIOMNET_FAULT_INJECTION=1 (set in main): the daemons accept inject-fault
RESTART_SPACING = 8.0  # seconds between injected crashes, so a soak never trips the restart-intensity limit


class Soak:
    def __init__(self, pair: namespaces.NetnsPair, workdir: Path, rng: random.Random) -> None:
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
            # An idle link is kept alive by keepalives (protocol 3): silent for PEER_DEAD_AFTER (25 s) is dead.
            limit = PEER_DEAD_AFTER + 15.0
            if not processes.wait_until(lambda: not self.a.inspect()["peers"][0]["alive"], limit, interval=0.5):
                raise AssertionError(f"partition not detected within {limit:g} s")
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


# --- kill loops ------------------------------------------------------------------------------------------
@dataclass
class KillStats:
    """What a kill loop did: kills per phase, where they landed, restarts checked, peak memory (KiB)."""

    kills: int = 0
    landed: dict[str, int] = field(default_factory=dict)
    full_restarts: int = 0
    traffic_kills: int = 0
    peak_rss_kib: int = 0

    def note(self, state: str) -> None:
        self.landed[state] = self.landed.get(state, 0) + 1


def key_state(data_dir: Path) -> tuple[str, object]:
    """Check the identity files a killed daemon left: each present key file valid, primary == backup.
    Returns (where the kill landed, the identity or None); raises AssertionError on a partial/corrupt key."""
    if not data_dir.exists():
        return "before-directory", None
    names = set(os.listdir(data_dir))
    keys = {}
    for name in (IDENTITY_FILENAME, IDENTITY_BACKUP_FILENAME):
        if name in names:
            try:
                keys[name] = load_identity(data_dir / name)
            except CorruptIdentity as exc:
                raise AssertionError(f"a kill left a damaged key: {exc}") from exc
    if len(set(keys.values())) > 1:
        raise AssertionError(f"{data_dir}: key and backup differ after a kill")
    temp = any(TEMP_MARKER in n for n in names)
    if len(keys) == 2:
        return ("complete+temp" if temp else "complete"), keys[IDENTITY_FILENAME]
    if keys:
        return "one-file", next(iter(keys.values()))
    return ("temp-only" if temp else "no-key"), None


# A warm process that has imported the daemon once and forks one daemon per request (`axiomnet daemon ...` via
# axiomnet.ops.cli.main, in its own session, output to a log file): a kill during start-up then costs a fork and
# the daemon's own start, not an interpreter start and its imports. Commands on stdin: "start JSON" -> PID,
# "status PID" -> exit code as JSON, or null while it runs.
_FORK_SERVER = r"""
import json, os, sys
import axiomnet.ops.cli, axiomnet.actors.node  # the daemon's whole import graph, once
print("ready", flush=True)
for line in sys.stdin:
    command, _, arg = line.rstrip("\n").partition(" ")
    if command == "start":
        spec = json.loads(arg)
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.setsid()
                out = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                code = axiomnet.ops.cli.main(spec["args"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        print(pid, flush=True)
    elif command == "status":
        try:
            done, status = os.waitpid(int(arg), os.WNOHANG)
            print(json.dumps(None if done == 0 else os.waitstatus_to_exitcode(status)), flush=True)
        except ChildProcessError:
            print(json.dumps(-1), flush=True)
"""


class ForkServer:
    """The warm forking process above, running in namespace ``ns``."""

    def __init__(self, ns: namespaces.Namespace) -> None:
        self.proc = ns.popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        if self._line(60.0) != "ready":
            raise AssertionError("the daemon fork server did not start")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        import select
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise AssertionError("the daemon fork server stopped answering")
        return self.proc.stdout.readline().strip()

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line(30.0)

    def start(self, args: list[str], log: Path) -> ForkedDaemon:
        return ForkedDaemon(self, int(self._ask("start " + json.dumps({"args": args, "log": str(log)}))))

    def status(self, pid: int) -> int | None:
        code = json.loads(self._ask(f"status {pid}"))
        return None if code is None else int(code)

    def close(self) -> None:
        processes.terminate_processes([self.proc], grace=2.0)


class ForkedDaemon:
    """The part of subprocess.Popen that DaemonProcess and the loops use, for a daemon the fork server made."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.status(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode


FULL_START_EVERY = 20  # every this many kills the survivor is started for real (and must work)


class KillLoop:
    """Kills of a bare daemon (no TUN, no peer) during start-up, in namespace ``ns`` listening on ``host``."""

    def __init__(self, ns: namespaces.Namespace, host: str, workdir: Path, rng: random.Random) -> None:
        self.ns, self.host, self.workdir, self.rng = ns, host, workdir, rng
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.stats = KillStats()
        self.server = ForkServer(ns)
        self.up_seconds = self._time_to_up()

    def close(self) -> None:
        self.server.close()

    def _args(self, data_dir: Path) -> list[str]:
        return ["daemon", "--no-tun", "--listen", f"{self.host}:7443", "--data-dir", str(data_dir),
                "--admin-socket", str(self.workdir / "kill.sock")]

    def _start(self, data_dir: Path, log: Path) -> ForkedDaemon:
        return self.server.start(self._args(data_dir), log)

    def _time_to_up(self) -> float:
        """How long a (forked) start takes here and now: the kills are spread over it."""
        log = self.workdir / "calibrate.log"
        log.write_bytes(b"")
        started = time.monotonic()
        proc = self._start(self.workdir / "calibrate", log)
        if not processes.wait_until(lambda: "node up" in log.read_text(errors="replace") or proc.poll() is not None,
                                60.0, interval=0.01):
            raise AssertionError("calibration daemon did not come up")
        took = time.monotonic() - started
        processes.signal_process(proc.pid, signal.SIGTERM)
        if proc.wait(15.0) != 0:
            raise AssertionError(f"calibration daemon exited {proc.returncode}: {log.read_text()[-1500:]}")
        return took

    def kill_at_random(self, data_dir: Path) -> None:
        """Start, SIGKILL the whole process group at a random moment of its start-up, reap."""
        proc = self._start(data_dir, self.workdir / "kills.log")
        time.sleep(self.rng.uniform(0.0, 1.3 * self.up_seconds))
        processes.signal_process(proc.pid, signal.SIGKILL)  # (it may not have called setsid yet)
        processes.signal_group(proc.pid, signal.SIGKILL)  # the daemon's session: it and its identity child
        if proc.wait(timeout=processes.KILL_WAIT * 3) != -signal.SIGKILL and proc.returncode != 0:
            raise AssertionError(f"a daemon exited {proc.returncode} before its kill:\n"
                                 f"{(self.workdir / 'kills.log').read_text()[-1500:]}")
        self.stats.kills += 1

    def full_start(self, data_dir: Path, expected: object) -> None:
        """Start for real: it must come up with ``expected`` identity (if any), answer, and stop with exit 0."""
        log = self.workdir / "restart.log"
        log.write_bytes(b"")
        proc = self._start(data_dir, log)
        d = daemons.DaemonProcess(self.ns, "restart", proc, address="", listen=f"{self.host}:7443",  # type: ignore[arg-type]
                                  data_dir=data_dir, admin_socket=self.workdir / "kill.sock", tun=None, log_path=log)
        if not processes.wait_until(lambda: "node up" in d.log() or not d.running(), 60.0) or not d.running():
            raise AssertionError(f"daemon did not restart after a kill:\n{d.log_tail(20)}")
        public = d.admin({"cmd": "state"})["self"]["public_key"]
        self.stats.peak_rss_kib = max(self.stats.peak_rss_kib, d.memory_kib()["VmHWM"])
        if expected is not None and public != expected.public_key.hex():  # type: ignore[attr-defined]
            raise AssertionError("the identity changed across a kill")
        if d.stop(timeout=10.0) != 0:
            raise AssertionError(f"restarted daemon did not stop cleanly:\n{d.log_tail(20)}")
        self.stats.full_restarts += 1

    def during_key_creation(self, kills: int) -> None:
        """Kills with a fresh data directory each time: they land before, inside and after key creation."""
        for i in range(kills):
            data_dir = self.workdir / f"fresh{i:05d}"
            self.kill_at_random(data_dir)
            state, identity = key_state(data_dir)
            self.stats.note(state)
            if i % FULL_START_EVERY == FULL_START_EVERY - 1:
                self.full_start(data_dir, identity)
            shutil.rmtree(data_dir, ignore_errors=True)

    def same_identity(self, kills: int) -> None:
        """Kills with one data directory: after every kill the identity is the one created first."""
        data_dir = self.workdir / "persistent"
        first = None
        for i in range(kills):
            self.kill_at_random(data_dir)
            state, identity = key_state(data_dir)
            self.stats.note(state)
            if first is None:
                first = identity
            elif identity is not None and identity != first:
                raise AssertionError("the identity changed across a kill")
            if i % FULL_START_EVERY == FULL_START_EVERY - 1:
                self.full_start(data_dir, first)


def kill_during_traffic(pair: namespaces.NetnsPair, workdir: Path, rng: random.Random, kills: int) -> KillStats:
    """Daemon B is SIGKILLed at random moments while A pings it (handshakes after each restart, then
    traffic) and restarted on the same data directory: same address, overlay back, A unharmed."""
    stats = KillStats()
    a, b = daemons.start_daemon_pair(pair, workdir, log_level="WARNING")
    try:
        address = b.address
        for _ in range(kills):
            if daemons.wait_overlay_reachable(a, b, timeout=REACH) is None:
                raise AssertionError(f"overlay down before a kill:\n{a.log_tail(10)}\n{b.log_tail(10)}")
            pinger = a.ns.popen(["ping", "-6", "-n", "-q", "-i", "0.05", "-c", "60", "-W", "1", b.address])
            time.sleep(rng.uniform(0.0, 2.0))
            processes.signal_group(b.pid, signal.SIGKILL)
            b.popen.wait(timeout=processes.KILL_WAIT * 3)
            processes.terminate_processes([pinger], grace=1.0)
            stats.kills += 1
            stats.traffic_kills += 1
            state, _ = key_state(b.data_dir)
            stats.note(state)
            b = daemons.start_daemon(pair.b, name="node-b", listen=b.listen, peers=[f"{pair.ip_a}:7443"],
                                     data_dir=b.data_dir, admin_socket=b.admin_socket, tun=b.tun, log_level="WARNING")
            if b.address != address:
                raise AssertionError("address changed across a kill")
        if daemons.wait_overlay_reachable(b, a, timeout=REACH) is None:
            raise AssertionError("overlay did not come back after the last kill")
        stats.peak_rss_kib = a.memory_kib()["VmHWM"]
        if not a.running():
            raise AssertionError("the surviving peer died")
    finally:
        for d in (a, b):
            d.stop()
    return stats


def run_kill_loops(kills: int, traffic_kills: int, seed: int) -> int:
    """The kill loops on their own lab; prints a summary line per phase; 0 if every check passed."""
    rng = random.Random(seed)
    failures = 0
    with namespaces.NetnsPair(stop_grace=5.0) as pair, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        loop = KillLoop(pair.a, pair.ip_a, Path(tmp) / "bare", rng)
        try:
            for name, run, count in (("key creation", loop.during_key_creation, kills - kills // 2),
                                     ("same identity", loop.same_identity, kills // 2)):
                started = time.monotonic()
                try:
                    run(count)
                    print(f"kill loop  PASS  {name:14s} {time.monotonic() - started:5.1f} s")
                except AssertionError as exc:
                    failures += 1
                    print(f"kill loop  FAIL  {name:14s} {exc}")
        finally:
            loop.close()
        s = loop.stats
        print(f"kill loop: {s.kills} kills during start-up (start takes {loop.up_seconds:.2f} s here), landed "
              f"{dict(sorted(s.landed.items()))}, {s.full_restarts} full restarts, peak RSS {s.peak_rss_kib / 1024:.1f} MiB")
        if traffic_kills:
            started = time.monotonic()
            try:
                t = kill_during_traffic(pair, Path(tmp) / "traffic", rng, traffic_kills)
                print(f"kill loop  PASS  {'traffic':14s} {time.monotonic() - started:5.1f} s")
                print(f"kill loop: {t.kills} kills during handshakes and traffic, landed {t.landed}, surviving peer "
                      f"peak RSS {t.peak_rss_kib / 1024:.1f} MiB")
            except AssertionError as exc:
                failures += 1
                print(f"kill loop  FAIL  {'traffic':14s} {exc}")
    print("kill loop: RESULT", "PASS" if failures == 0 else f"FAIL ({failures})")
    return 0 if failures == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all scenarios (default 3)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop starting rounds after this (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="order of scenarios and flood contents")
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0, help="allowed growth of daemon A's RSS")
    parser.add_argument("--kills", type=int, default=0, help="kills of a starting daemon (half with a fresh dir)")
    parser.add_argument("--traffic-kills", type=int, default=0, help="kills of a daemon during handshakes/traffic")
    args = parser.parse_args(argv)
    if min(args.rounds, args.kills, args.traffic_kills) < 0:
        parser.error("--rounds, --kills and --traffic-kills must not be negative")
    reason = namespaces.netns_unavailable_reason()
    if reason is not None:
        print(f"chaos: cannot run here: {reason}", file=sys.stderr)
        return 2
    os.environ["AXIOMNET_FAULT_INJECTION"] = "1"  # the daemons this run starts accept inject-fault
    namespaces.cleanup_leftovers()
    if args.kills or args.traffic_kills:
        status = run_kill_loops(args.kills, args.traffic_kills, args.seed)
        if args.rounds == 0 or status != 0:
            return status
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    failures = 0
    with namespaces.NetnsPair(stop_grace=5.0) as pair, tempfile.TemporaryDirectory() as tmp:
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

"""The namespace harness itself, on a raw veth (no daemon): reachability, naming, cleanup, leftovers."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from axiomnet.lab import namespaces, processes, traffic


def _gone(pid: int) -> bool:
    """The process is dead (reaped, or a zombie waiting for a parent that is not us)."""
    return not processes.process_alive(pid)


def _cmdline(pid: int) -> list[str]:
    """The argument vector of ``pid`` (empty if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- pure helpers (no root needed) ------------------------------------------------------------------
def test_process_start_time_is_the_ticks_since_boot_that_run_markers_hold() -> None:
    """Markers written before the lab used psutil hold field 22 of /proc/PID/stat: the same number must come out,
    or cleanup_leftovers would take a live run (another test session's) for a dead one and remove its namespaces."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        for pid in (os.getpid(), proc.pid, 1):
            raw = Path(f"/proc/{pid}/stat").read_text()
            assert processes.process_start_time(pid) == int(raw[raw.rindex(")") + 2 :].split()[19])
        assert processes.process_alive(proc.pid, processes.process_start_time(proc.pid))
        assert not processes.process_alive(proc.pid, processes.process_start_time(proc.pid) - 1)  # PID reused
    finally:
        proc.kill()
        proc.wait()
    assert processes.process_start_time(proc.pid) is None and not processes.process_alive(proc.pid)


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen(["true"])
    assert processes.wait_until(lambda: Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "Z", 10)
    assert not processes.process_alive(proc.pid)  # not reaped yet: a zombie
    proc.wait()


def test_cpu_threads_and_memory_of_a_process() -> None:
    sum(i * i for i in range(200_000))  # some CPU of our own
    assert processes.process_cpu_seconds(os.getpid()) > 0
    assert processes.process_threads(os.getpid()) >= 1
    memory = processes.process_memory_kib(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 1024  # a Python process holds more than 1 MiB
    with pytest.raises(processes.HarnessError):
        processes.process_memory_kib(_dead_pid())
    with pytest.raises(processes.HarnessError):
        processes.process_cpu_seconds(_dead_pid())


def test_ping_summary_is_parsed() -> None:
    out = (
        "--- 198.18.0.2 ping statistics ---\n"
        "20 packets transmitted, 19 received, 5% packet loss, time 960ms\n"
        "rtt min/avg/max/mdev = 0.031/0.052/0.090/0.012 ms\n"
    )
    result = traffic.parse_ping_output(out)
    assert (result.sent, result.received) == (20, 19)
    assert result.rtt_avg == pytest.approx(0.052)
    assert result.loss_percent == pytest.approx(5.0)
    assert result.ok


def test_ping_without_replies_has_no_rtt() -> None:
    result = traffic.parse_ping_output("3 packets transmitted, 0 received, 100% packet loss, time 2030ms\n")
    assert not result.ok and result.rtt_avg is None and result.loss_percent == 100.0


def test_wait_until_gives_up_after_its_timeout() -> None:
    start = time.monotonic()
    assert processes.wait_until(lambda: False, timeout=0.3, interval=0.05) is False
    assert 0.25 <= time.monotonic() - start < 5.0  # it gave up (the upper bound only guards against a hang)
    assert processes.wait_until(lambda: True, timeout=0.0) is True


# --- namespaces (root) ------------------------------------------------------------------------------
@pytest.mark.netns
def test_raw_veth_carries_ipv4_and_ipv6_both_ways(pair: namespaces.NetnsPair) -> None:
    for src, dst in ((pair.a, pair.ip_b), (pair.b, pair.ip_a), (pair.a, pair.ip6_b), (pair.b, pair.ip6_a)):
        assert dst is not None
        result = traffic.ping(src, dst, count=3, interval=0.05)
        assert result.received == 3, result.output
        assert result.rtt_avg is not None and result.rtt_avg < 50.0
    ok, rtt = traffic.ping6(pair.a, pair.ip6_b or "", count=1)
    assert ok and rtt is not None


@pytest.mark.netns
def test_namespaces_reach_nothing_outside(pair: namespaces.NetnsPair) -> None:
    routes = pair.a.exec(["ip", "route", "show", "default"], check=True).stdout
    assert routes.strip() == ""
    result = traffic.ping(pair.a, "198.19.255.254", count=1, timeout=1.0)
    assert result.received == 0


@pytest.mark.netns
def test_tcp_transfer_checks_sha256_on_both_ends(pair: namespaces.NetnsPair) -> None:
    result = traffic.tcp_transfer(pair.b, pair.a, pair.ip_b, 1_000_000, timeout=20.0)
    assert result.ok, result.error
    assert result.sent_sha256 == result.received_sha256 and result.received_bytes == 1_000_000


@pytest.mark.netns
def test_names_are_unique_per_run_and_fit_interface_limits() -> None:
    with namespaces.NetnsPair(stop_grace=1.0) as p1, namespaces.NetnsPair(stop_grace=1.0) as p2:
        assert p1.run_id != p2.run_id
        names = {p1.a.name, p1.b.name, p2.a.name, p2.b.name}
        assert len(names) == 4 and all(n.startswith(namespaces.NETNS_PREFIX) for n in names)
        ifnames = [p1.link.ifname_a, p1.link.ifname_b, p2.link.ifname_a, p2.link.ifname_b,
                   p1.a.tun_name, p1.b.tun_name, p2.a.tun_name]
        assert len(set(ifnames)) == len(ifnames)
        assert all(n.startswith(namespaces.IFNAME_PREFIX) and len(n) <= namespaces.IFNAMSIZ for n in ifnames)
        assert names <= set(namespaces.list_namespaces())
        # Same addresses in both pairs: they live in separate namespaces and do not collide.
        assert traffic.ping(p2.a, p2.ip_b, count=1).received == 1


@pytest.mark.netns
def test_addresses_outside_benchmark_ranges_are_refused() -> None:
    with namespaces.NetnsLab(stop_grace=1.0) as lab:
        a, b = lab.add_namespace("a"), lab.add_namespace("b")
        with pytest.raises(processes.HarnessError):
            lab.connect(a, b, ipv4_subnet="10.0.0.0/24")
        with pytest.raises(processes.HarnessError):
            lab.connect(a, b, ipv6_subnet="fd00::/64")


@pytest.mark.netns
def test_exec_timeout_kills_the_command() -> None:
    with namespaces.NetnsLab(stop_grace=1.0) as lab:
        ns = lab.add_namespace("a")
        start = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            ns.exec(["sleep", "30"], timeout=0.5)
        assert time.monotonic() - start < 5.0
        assert namespaces.namespace_pids(ns.name) == []


@pytest.mark.netns
def test_cleanup_after_an_exception_removes_namespaces_and_processes() -> None:
    stray: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with namespaces.NetnsPair(stop_grace=0.5) as p:
            names = [p.a.name, p.b.name]
            marker = p.marker_path
            polite = p.a.popen(["sleep", "30"])
            # Ignores SIGTERM: must be SIGKILLed after the grace period.
            stubborn = p.b.popen(["sh", "-c", "trap '' TERM; sleep 30 & wait"])
            # Leaves the tracked process group at once: only the namespace sweep can find it. setsid forks (its
            # caller already leads a group) and the parent exits, so wait for the forked `sleep 30` itself: a
            # count of PIDs could be met by the exiting setsid parent, gone by the next look (a race seen under load).
            p.a.popen(["setsid", "sleep", "30"])

            def strays() -> list[int]:
                return [pid for pid in namespaces.namespace_pids(p.a.name)
                        if pid != polite.pid and _cmdline(pid) == ["sleep", "30"]]

            assert processes.wait_until(lambda: bool(strays()), timeout=10.0), namespaces.namespace_pids(p.a.name)
            stray = strays()
            assert marker.exists()
            raise RuntimeError("boom")
    assert not set(names) & set(namespaces.list_namespaces())
    assert polite.returncode is not None and stubborn.returncode is not None  # stopped and reaped
    assert _gone(polite.pid) and _gone(stubborn.pid)
    assert processes.wait_until(lambda: all(_gone(pid) for pid in stray), timeout=3.0)
    assert not marker.exists()
    leftover_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    assert p.run_id not in leftover_links


@pytest.mark.netns
def test_close_is_idempotent() -> None:
    lab = namespaces.NetnsLab(stop_grace=0.5)
    ns = lab.add_namespace("a")
    lab.close()
    lab.close()
    assert not ns.exists()


@pytest.mark.netns
def test_leftover_cleanup_removes_stale_runs_only() -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stale = namespaces.NetnsLab(owner_pid=_dead_pid(), stop_grace=0.5)
    live_self = namespaces.NetnsLab(stop_grace=0.5)
    live_other = namespaces.NetnsLab(owner_pid=sleeper.pid, stop_grace=0.5)
    try:
        stale_ns = stale.add_namespace("s")
        inside = stale_ns.popen(["sleep", "30"])
        self_ns = live_self.add_namespace("l")
        other_ns = live_other.add_namespace("o")
        assert processes.wait_until(lambda: namespaces.namespace_pids(stale_ns.name) != [], timeout=5.0)

        removed = namespaces.cleanup_leftovers()

        assert stale_ns.name in removed
        assert self_ns.name not in removed and other_ns.name not in removed
        present = set(namespaces.list_namespaces())
        assert stale_ns.name not in present and {self_ns.name, other_ns.name} <= present
        assert inside.wait(timeout=5.0) == -9  # SIGKILLed by PID by the sweep
        assert not stale.marker_path.exists() and live_self.marker_path.exists()

        # Once its owner dies, the other run is stale too.
        sleeper.kill()
        sleeper.wait(timeout=5.0)
        assert other_ns.name in namespaces.cleanup_leftovers()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=5.0)
        for lab in (stale, live_self, live_other):
            lab.close()
    assert not {stale_ns.name, self_ns.name, other_ns.name} & set(namespaces.list_namespaces())


@pytest.mark.netns
def test_leftover_cleanup_removes_a_namespace_without_marker() -> None:
    name = f"{namespaces.NETNS_PREFIX}{namespaces.new_run_id()}-x"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        assert name in namespaces.cleanup_leftovers()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    assert name not in namespaces.list_namespaces()


@pytest.mark.netns
def test_foreign_namespaces_are_never_touched() -> None:
    with pytest.raises(processes.HarnessError):
        namespaces.destroy_namespace("somebody-elses")
    assert all(re.match(r"^axnt-[0-9a-f]{6}-", n) for n in namespaces.cleanup_leftovers())

"""Traffic across the lab: ping, a bounded TCP transfer checked by SHA-256, and a hostile-datagram flood.

Every helper runs its program inside a namespace of the lab (lab/netns.py), bounded in count and in time.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import select
import shutil
import subprocess
import sys
from typing import IO



from axiomnet.lab.netns import CLI_TIMEOUT, IP_TIMEOUT, HarnessError, Namespace, terminate_processes

_PING_COUNTS_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT_RE = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/mdev|/stddev)? = ([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))?")


@dataclasses.dataclass(frozen=True)
class PingResult:
    """What one `ping` run reported: counts, loss and RTT figures (ms, None without replies)."""

    sent: int
    received: int
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    rtt_mdev: float | None
    output: str

    @property
    def loss_percent(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0

    @property
    def ok(self) -> bool:
        """At least one reply came back."""
        return self.received > 0


def parse_ping_output(output: str) -> PingResult:
    """Parse the summary of iputils (or BusyBox) ping; missing figures become 0 / None."""
    counts = _PING_COUNTS_RE.search(output)
    rtt = _PING_RTT_RE.search(output)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
    figures: list[float | None] = [None, None, None, None]
    if rtt:
        figures = [float(g) if g is not None else None for g in rtt.groups()]
    return PingResult(sent, received, figures[0], figures[1], figures[2], figures[3], output)


def ping(ns: Namespace, addr: str, *, count: int = 3, interval: float = 0.2, timeout: float | None = None) -> PingResult:
    """Ping ``addr`` from inside ``ns`` (``count`` echo requests, ``interval`` s apart), bounded in time.

    ``timeout`` (default: count * interval + 2 s) is both ping's own deadline and the process bound.
    """
    if shutil.which("ping") is None:
        raise HarnessError("`ping` is missing (install the iputils-ping package)")
    if count < 1 or interval <= 0:
        raise ValueError("count must be >= 1 and interval > 0")
    family = "-6" if ipaddress.ip_address(addr).version == 6 else "-4"
    deadline = timeout if timeout is not None else count * interval + 2.0
    args = ["ping", family, "-n", "-q", "-c", str(count), "-i", f"{interval:g}", "-W", "1", "-w", f"{max(1, round(deadline))}", addr]
    try:
        proc = ns.exec(args, timeout=deadline + 5.0, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired as exc:
        return parse_ping_output(exc.output or "")
    return parse_ping_output(proc.stdout + proc.stderr)


def ping6(ns: Namespace, addr: str, count: int = 3, timeout: float = 5.0) -> tuple[bool, float | None]:
    """Ping (IPv6 or IPv4 by address) from ``ns``: (at least one reply?, average RTT in ms or None)."""
    result = ping(ns, addr, count=count, interval=0.2, timeout=timeout)
    return result.ok, result.rtt_avg


def tcp_listening(ns: Namespace, port: int) -> bool:
    """True if something in ``ns`` listens on TCP ``port`` (checked with `ss`)."""
    proc = ns.exec(["ss", "-H", "-l", "-t", "-n", f"sport = :{port}"], timeout=IP_TIMEOUT)
    return proc.returncode == 0 and bool(proc.stdout.strip())


# --- a bounded TCP transfer with checksums ----------------------------------------------------------
_TRANSFER_SERVER = r"""
import hashlib, json, socket, sys, time
host, port, expect, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + timeout
family = socket.AF_INET6 if ":" in host else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(1)
print("listening", flush=True)
srv.settimeout(max(0.1, deadline - time.monotonic()))
conn, _ = srv.accept()
digest, received = hashlib.sha256(), 0
while received < expect:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        break
    conn.settimeout(remaining)
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    digest.update(chunk)
    received += len(chunk)
report = {"bytes": received, "sha256": digest.hexdigest()}
conn.settimeout(max(0.1, deadline - time.monotonic()))
conn.sendall(json.dumps(report).encode() + b"\n")
conn.close()
print(json.dumps(report), flush=True)
"""

_TRANSFER_CLIENT = r"""
import hashlib, json, os, socket, sys, time
host, port, size, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + timeout
data = os.urandom(size)
sent_sha = hashlib.sha256(data).hexdigest()
family = socket.AF_INET6 if ":" in host else socket.AF_INET
while True:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
    try:
        sock.connect((host, port))
        break
    except (ConnectionRefusedError, socket.timeout, OSError):
        sock.close()
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
start = time.monotonic()
sock.settimeout(max(0.1, deadline - time.monotonic()))
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
reply = b""
while not reply.endswith(b"\n"):
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    chunk = sock.recv(4096)
    if not chunk:
        break
    reply += chunk
seconds = time.monotonic() - start
sock.close()
print(json.dumps({"bytes": size, "sha256": sent_sha, "seconds": seconds, "server": json.loads(reply or b"null")}))
"""


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """Outcome of :func:`tcp_transfer`: sizes and SHA-256 on both ends, duration, throughput, error text."""

    size: int
    sent_sha256: str | None
    received_bytes: int
    received_sha256: str | None
    seconds: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.received_bytes == self.size and self.sent_sha256 == self.received_sha256

    @property
    def mbit_per_s(self) -> float | None:
        return self.size * 8 / self.seconds / 1e6 if self.seconds else None


def _readline_with_timeout(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def tcp_transfer(
    server_ns: Namespace, client_ns: Namespace, server_addr: str, size: int, *, port: int = 5301, timeout: float = 60.0
) -> TransferResult:
    """Send ``size`` random bytes over TCP from ``client_ns`` to a one-shot server on ``server_addr`` in
    ``server_ns``; both ends hash what they saw. Bounded by ``timeout`` seconds; never raises for a
    failed transfer (see ``error``)."""
    py = sys.executable
    server = server_ns.popen(
        [py, "-c", _TRANSFER_SERVER, server_addr, str(port), str(size), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stderr is not None
        first = _readline_with_timeout(server.stdout, min(timeout, CLI_TIMEOUT))
        if first.strip() != "listening":
            terminate_processes([server], grace=1.0)
            err = server.stderr.read().strip().splitlines()
            return TransferResult(size, None, 0, None, None, f"server did not start: {err[-1] if err else first!r}")
        try:
            client = client_ns.exec(
                [py, "-c", _TRANSFER_CLIENT, server_addr, str(port), str(size), str(timeout)], timeout=timeout + 10.0
            )
        except subprocess.TimeoutExpired:
            return TransferResult(size, None, 0, None, None, f"client timed out after {timeout + 10.0:.0f} s")
        if client.returncode != 0:
            lines = client.stderr.strip().splitlines()
            return TransferResult(size, None, 0, None, None, f"client failed: {lines[-1] if lines else client.returncode}")
        report = json.loads(client.stdout)
        server_report = report.get("server") or {}
        received = int(server_report.get("bytes", 0))
        received_sha = server_report.get("sha256")
        error = None
        if received != size:
            error = f"server received {received} of {size} bytes"
        elif received_sha != report["sha256"]:
            error = "sha256 differs between sender and receiver"
        return TransferResult(size, report["sha256"], received, received_sha, float(report["seconds"]), error)
    finally:
        terminate_processes([server], grace=2.0)


# A seeded generator of hostile datagrams, run inside a namespace: random bytes, well-formed handshake
# initiations from ever-new initiators (they would cost state if the front door were unguarded), and transport
# headers with random receiver indices, huge counters and garbage. Bounded in count and in time.
_FLOOD_SCRIPT = r"""
import os, random, socket, struct, sys, time
host, port, count, seconds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.monotonic() + seconds
sent = 0
while sent < count and time.monotonic() < deadline:
    kind = rng.random()
    if kind < 0.3:       # random bytes of random length
        data = os.urandom(rng.randrange(0, 1500))
    elif kind < 0.6:     # a well-formed handshake initiation from a 'new' initiator (costs state if unguarded)
        data = struct.pack(">IIQ", 0, (1 << 28) | (1 << 24), 0) + struct.pack(">I", rng.randrange(1, 1 << 24)) \
            + bytes(16) + os.urandom(32)
    else:                # transport header with a random receiver index, a huge counter and garbage
        data = struct.pack(">IIQ", 0, (1 << 28) | (5 << 24) | rng.randrange(1, 1 << 24), rng.randrange(1 << 63)) \
            + os.urandom(rng.randrange(16, 1400))
    try:
        s.sendto(data, (host, port))
    except OSError:
        pass
    sent += 1
print(sent)
"""


def flood_hostile_datagrams(ns: Namespace, host: str, port: int, *, count: int, seconds: float, seed: int) -> int:
    """Send up to ``count`` hostile datagrams to ``host:port`` from ``ns`` within ``seconds``; return how many."""
    proc = ns.exec([sys.executable, "-c", _FLOOD_SCRIPT, host, str(port), str(count), str(seconds), str(seed)],
                   timeout=seconds + 30.0)
    if proc.returncode != 0:
        raise HarnessError(f"flood generator failed: {proc.stderr.strip()[-500:]}")
    return int(proc.stdout)


# --- a UDP canary and a packet capture (end-to-end encryption checks) -----------------------------------
_UDP_RECEIVER = r"""
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((host, port))
print("listening", flush=True)
s.settimeout(timeout)
try:
    data, addr = s.recvfrom(65535)
    print(addr[0], data.hex(), flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""

_UDP_SENDER = r"""
import socket, sys, time
host, port, payload, count = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(payload, (host, port))
    time.sleep(0.2)
"""

_CAPTURE = r"""
import socket, sys, time, select
seconds, limit = float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))  # every frame on every interface
print("capturing", flush=True)
deadline = time.monotonic() + seconds
frames = 0
while frames < limit and time.monotonic() < deadline:
    if select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
        frame = s.recv(65535)
        print(frame.hex(), flush=True)
        frames += 1
"""


@dataclasses.dataclass(frozen=True)
class UdpCanary:
    """What a one-shot UDP receiver saw: the sender's address and the payload, or nothing."""

    source: str | None
    payload: bytes | None


def udp_canary(server_ns: Namespace, client_ns: Namespace, server_addr: str, payload: bytes, *,
               port: int = 5302, sends: int = 5, timeout: float = 15.0) -> UdpCanary:
    """Send ``payload`` over UDP (``sends`` times, 0.2 s apart) from ``client_ns`` to a one-shot receiver on
    ``server_addr`` in ``server_ns``; return what the receiver got first. Bounded by ``timeout``."""
    receiver = server_ns.popen([sys.executable, "-c", _UDP_RECEIVER, server_addr, str(port), str(timeout)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        if _readline_with_timeout(receiver.stdout, min(timeout, CLI_TIMEOUT)).strip() != "listening":
            raise HarnessError("UDP receiver did not start")
        client_ns.exec([sys.executable, "-c", _UDP_SENDER, server_addr, str(port), payload.hex(), str(sends)],
                       timeout=sends * 0.2 + 10.0)
        line = _readline_with_timeout(receiver.stdout, timeout).split()
        if len(line) == 2:
            return UdpCanary(line[0], bytes.fromhex(line[1]))
        return UdpCanary(None, None)
    finally:
        terminate_processes([receiver], grace=1.0)


class Capture:
    """Every frame seen on every interface of a namespace while it runs (AF_PACKET), bounded in time and count."""

    def __init__(self, ns: Namespace, seconds: float, limit: int = 20_000) -> None:
        self.proc = ns.popen([sys.executable, "-c", _CAPTURE, str(seconds), str(limit)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seconds = seconds
        assert self.proc.stdout is not None
        if _readline_with_timeout(self.proc.stdout, CLI_TIMEOUT).strip() != "capturing":
            terminate_processes([self.proc], grace=1.0)
            raise HarnessError("packet capture did not start")

    def frames(self) -> list[bytes]:
        """Wait for the capture to end (its time or its count) and return the frames."""
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 10.0)
        except subprocess.TimeoutExpired:
            terminate_processes([self.proc], grace=1.0)
            out, _ = self.proc.communicate()
        return [bytes.fromhex(line) for line in out.split() if line]

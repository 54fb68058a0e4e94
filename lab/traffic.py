"""Traffic across the lab: ping, a bounded TCP transfer checked by SHA-256, and a hostile-datagram flood.

Every helper runs its program inside a namespace of the lab (lab/namespaces.py), bounded in count and in time.
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
from typing import IO, Any



from axiomnet.constants import PROTOCOL_VERSION
from axiomnet.lab.namespaces import IP_TIMEOUT, Namespace
from axiomnet.lab.processes import CLI_TIMEOUT, HarnessError, terminate_processes

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


# --- capturing the underlay ----------------------------------------------------------------------------
# Reads every frame on one interface of a namespace (AF_PACKET) and prints the UDP datagrams to or from one
# port as JSON lines, with the kernel's receive time; stops after `seconds` or `limit` datagrams, or SIGTERM.
_CAPTURE_SCRIPT = r"""
import json, signal, socket, struct, sys, time
ifname, port, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
stopping = []
signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))  # drain what is queued, then exit
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind((ifname, 0))
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)  # Linux; Python does not always export it
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
s.settimeout(0.2)
print(json.dumps({"ready": True}), flush=True)
deadline, count = time.monotonic() + seconds, 0
while count < limit and time.monotonic() < deadline:
    if stopping:
        s.settimeout(0.0)
    try:
        frame, anc, _, _ = s.recvmsg(65600, socket.CMSG_SPACE(16))
    except (socket.timeout, BlockingIOError):
        if stopping:
            break
        continue
    except InterruptedError:
        continue
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        continue
    ihl = (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from(">HH", frame, 14 + ihl)
    if port not in (sport, dport):
        continue
    ts = time.time()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
            sec, usec = struct.unpack("qq", data[:16])
            ts = sec + usec / 1e6
    payload = frame[14 + ihl + 8 : 14 + struct.unpack_from(">H", frame, 16)[0]]
    print(json.dumps({"ts": ts, "src": socket.inet_ntoa(frame[26:30]), "sport": sport,
                      "dst": socket.inet_ntoa(frame[30:34]), "dport": dport, "data": payload.hex()}), flush=True)
    count += 1
"""


@dataclasses.dataclass(frozen=True)
class CapturedDatagram:
    """One UDP datagram seen on the wire: kernel receive time (wall clock), endpoints, payload."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes

    @property
    def ptype(self) -> int | None:
        """The AxiomNet packet type nibble of the payload (None if too short for a header)."""
        return self.data[4] & 0x0F if len(self.data) >= 16 else None


class Capture:
    """A running capture of UDP ``port`` on ``ifname`` in ``ns`` (IPv4): ``stop()`` returns what it saw."""

    def __init__(self, ns: Namespace, ifname: str, port: int, *, seconds: float = 60.0, limit: int = 100_000) -> None:
        self.proc = ns.popen([sys.executable, "-c", _CAPTURE_SCRIPT, ifname, str(port), str(seconds), str(limit)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self._seen: list[CapturedDatagram] = []
        first = _readline_with_timeout(self.proc.stdout, CLI_TIMEOUT)
        if '"ready"' not in first:
            terminate_processes([self.proc], grace=1.0)
            raise HarnessError(f"capture on {ifname} did not start: {first!r}")

    def _parse(self, lines: list[str]) -> None:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                self._seen.append(CapturedDatagram(row["ts"], row["src"], row["sport"], row["dst"], row["dport"],
                                                   bytes.fromhex(row["data"])))

    def seen(self) -> list[CapturedDatagram]:
        """The datagrams captured so far (the capture keeps running)."""
        assert self.proc.stdout is not None
        while select.select([self.proc.stdout], [], [], 0)[0]:
            line = self.proc.stdout.readline()
            if not line:
                break
            self._parse([line])
        return list(self._seen)

    def stop(self) -> list[CapturedDatagram]:
        """End the capture (SIGTERM: it drains the frames already queued first) and return every datagram."""
        terminate_processes([self.proc], grace=2.0)
        assert self.proc.stdout is not None
        self._parse(self.proc.stdout.read().splitlines())
        return list(self._seen)


# --- hostile floods --------------------------------------------------------------------------------------
# Every kind of hostile datagram, seeded, bounded in count and time, from many source ports (and, if the
# namespace has several, source addresses). Kinds (the first argument's "mix" gives their weights):
#   random     random bytes of random length
#   truncated  a valid header or handshake datagram cut short (0..len-1 bytes)
#   nibbles    every version/type nibble in turn (0..15) with random receiver, counter and body
#   huge       oversized fields: 64 KB datagrams, oversized handshake bodies, sender index 0xffffffff
#   garbage    a valid transport header with a live receiver index (from `captured`) and garbage ciphertext
#   replay     a captured datagram replayed verbatim, or with its counter bumped (a forgery)
#   init       a handshake initiation: random ephemeral and macs, or (well_formed) a real X25519 one built by
#              well_formed_init() below, whose mac1 is valid when the target's public key is given
_FLOOD_SCRIPT = r"""
import json, os, random, socket, struct, sys, time
cfg = json.loads(sys.argv[1])
rng = random.Random(cfg["seed"])
host, port = cfg["host"], cfg["port"]
captured = [bytes.fromhex(h) for h in cfg.get("captured", [])]
live = sorted({struct.unpack_from(">I", d, 4)[0] & 0xFFFFFF for d in captured if len(d) >= 16 and d[4] & 0xF in (5, 6, 7)})
try:
    from nacl.public import PrivateKey
except ImportError:
    PrivateKey = None

def header(ptype, receiver, counter=0, version=cfg["version"], label=0):
    return struct.pack(">IIQ", label, (version << 28) | (ptype << 24) | (receiver & 0xFFFFFF), counter & (2**64 - 1))

import hashlib
target_key = bytes.fromhex(cfg["target_key"]) if cfg.get("target_key") else None
mac1_key = hashlib.blake2s(b"mac1----" + target_key).digest() if target_key else None

def well_formed_init():
    # HANDSHAKE_INIT (docs/PROTOCOL.md 2.2.1): header, sender, a real X25519 ephemeral, mac1, mac2 (no cookie).
    # With the target's public key (an attacker that knows it) mac1 is valid and the INIT reaches the Noise
    # handshake; without it mac1 is random and the front door drops it before any Diffie-Hellman.
    eph = bytes(PrivateKey.generate().public_key) if PrivateKey else os.urandom(32)
    # Padded to 256 bytes (HANDSHAKE_INIT_SIZE): a responder does not answer an INIT smaller than its RESP.
    head = header(1, 0) + struct.pack(">I", rng.randrange(1, 1 << 24)) + eph + bytes(172)
    mac1 = hashlib.blake2s(head, key=mac1_key, digest_size=16).digest() if mac1_key else os.urandom(16)
    return head + mac1 + bytes(16)

def random_init():
    return header(1, 0) + struct.pack(">I", rng.randrange(1, 1 << 24)) + os.urandom(32) + bytes(172) + os.urandom(32)

nibble = [0]
def make(kind):
    if kind == "random":
        return os.urandom(rng.randrange(0, 1500))
    if kind == "truncated":
        full = rng.choice([random_init(), header(2, rng.randrange(1, 1 << 24)) + os.urandom(100),
                           header(5, rng.randrange(1, 1 << 24), rng.getrandbits(64)) + os.urandom(40)])
        return full[: rng.randrange(0, len(full))]
    if kind == "nibbles":
        nibble[0] += 1
        version, ptype = (nibble[0] // 16) % 16, nibble[0] % 16
        return header(ptype, rng.randrange(0, 1 << 24), rng.getrandbits(64), version=version) + os.urandom(rng.randrange(0, 200))
    if kind == "huge":
        return rng.choice([
            lambda: header(5, rng.randrange(1, 1 << 24), rng.getrandbits(64)) + os.urandom(65000),
            lambda: header(5, rng.choice(live) if live else 1, rng.getrandbits(64)) + os.urandom(65000),
            lambda: header(1, 0) + b"\xff\xff\xff\xff" + os.urandom(16 + 32 + 2000),
            lambda: header(2, rng.randrange(1, 1 << 24)) + b"\xff\xff\xff\xff" + os.urandom(4000),
            lambda: header(6, rng.randrange(1, 1 << 24), 2**64 - 1) + b"\xdf\xff\xff\xff\xff" + os.urandom(60),
        ])()
    if kind == "garbage":
        receiver = rng.choice(live) if live else rng.randrange(1, 1 << 24)
        return header(rng.choice([5, 6, 7]), receiver, rng.getrandbits(64)) + os.urandom(rng.randrange(16, 1400))
    if kind == "replay":
        if not captured:
            return os.urandom(64)
        d = bytearray(rng.choice(captured))
        if rng.random() < 0.5 and len(d) >= 16:
            struct.pack_into(">Q", d, 8, (struct.unpack_from(">Q", d, 8)[0] + rng.randrange(1, 1 << 20)) % 2**64)
        return bytes(d)
    if kind == "init":
        return well_formed_init() if rng.random() < cfg.get("well_formed", 0.5) else random_init()
    raise SystemExit("unknown kind " + kind)

family = socket.AF_INET6 if ":" in host else socket.AF_INET
socks = []
for i in range(cfg.get("ports", 64)):
    s = socket.socket(family, socket.SOCK_DGRAM)
    sources = cfg.get("sources") or [""]
    s.bind((sources[i % len(sources)], 0))
    s.setblocking(False)
    socks.append(s)
kinds = sorted(cfg["mix"])
weights = [cfg["mix"][k] for k in kinds]
deadline = time.monotonic() + cfg["seconds"]
sent = {k: 0 for k in kinds}
errors = 0
pace = cfg.get("pace", 0)  # datagrams per second at most (0: as fast as we can)
started = time.monotonic()
total = 0
while total < cfg["count"] and time.monotonic() < deadline:
    kind = rng.choices(kinds, weights)[0]
    data = make(kind)
    try:
        socks[total % len(socks)].sendto(data, (host, port))
    except (BlockingIOError, OSError):
        errors += 1
    sent[kind] += 1
    total += 1
    if pace and total % 64 == 0:
        ahead = total / pace - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
print(json.dumps({"sent": sent, "total": total, "send_errors": errors, "seconds": time.monotonic() - started,
                  "ports": len(socks)}))
"""


@dataclasses.dataclass(frozen=True)
class FloodReport:
    """What a flood sent: datagrams per kind, total, local send errors, duration, source ports used."""

    sent: dict[str, int]
    total: int
    send_errors: int
    seconds: float
    ports: int


def start_flood(ns: Namespace, host: str, port: int, *, mix: dict[str, float], count: int, seconds: float, seed: int,
                captured: list[bytes] | None = None, ports: int = 64, sources: list[str] | None = None,
                well_formed: float = 0.5, pace: int = 0, target_key: bytes | None = None) -> subprocess.Popen[str]:
    """Start a flood in the background (see :func:`flood`); :func:`finish_flood` waits for its report."""
    config = {"host": host, "port": port, "mix": mix, "count": count, "seconds": seconds, "seed": seed,
              "version": PROTOCOL_VERSION,  # the daemon's: a flood of another version would stop at the first check
              "captured": [d.hex() for d in (captured or [])][:500], "ports": ports, "sources": sources or [],
              "well_formed": well_formed, "pace": pace, "target_key": target_key.hex() if target_key else None}
    return ns.popen([sys.executable, "-c", _FLOOD_SCRIPT, json.dumps(config)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)


def _last_json_line(proc: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    """Wait (bounded) for ``proc`` to exit; the JSON object on the last line of its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_processes([proc], grace=1.0)
        raise HarnessError(f"{what} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed: {err.strip()[-800:]}")
    return json.loads(out.strip().splitlines()[-1])


def finish_flood(proc: subprocess.Popen[str], timeout: float = 120.0) -> FloodReport:
    """Wait (bounded) for a flood started by :func:`start_flood`; its report."""
    row = _last_json_line(proc, timeout, "flood generator")
    return FloodReport(row["sent"], row["total"], row["send_errors"], row["seconds"], row["ports"])


def flood(ns: Namespace, host: str, port: int, *, mix: dict[str, float], count: int, seconds: float, seed: int,
          captured: list[bytes] | None = None, ports: int = 64, sources: list[str] | None = None,
          well_formed: float = 0.5, pace: int = 0, target_key: bytes | None = None) -> FloodReport:
    """Send up to ``count`` hostile datagrams of the kinds in ``mix`` (kind -> weight, see _FLOOD_SCRIPT) from
    ``ns`` to ``host:port`` within ``seconds``, from ``ports`` source ports (bound to ``sources`` in turn),
    at most ``pace`` per second when given; ``captured`` datagrams feed the replay and garbage kinds;
    ``target_key`` (the target's static public key) makes well-formed initiations carry a valid mac1."""
    proc = start_flood(ns, host, port, mix=mix, count=count, seconds=seconds, seed=seed, captured=captured,
                       ports=ports, sources=sources, well_formed=well_formed, pace=pace, target_key=target_key)
    return finish_flood(proc, timeout=seconds + 60.0)


ALL_HOSTILE_KINDS = {"random": 2, "truncated": 2, "nibbles": 2, "huge": 0.5, "garbage": 2, "replay": 2, "init": 1}


def flood_hostile_datagrams(ns: Namespace, host: str, port: int, *, count: int, seconds: float, seed: int) -> int:
    """Send up to ``count`` hostile datagrams of every kind to ``host:port`` from ``ns`` within ``seconds``;
    return how many were sent."""
    return flood(ns, host, port, mix=ALL_HOSTILE_KINDS, count=count, seconds=seconds, seed=seed).total


# A host minting keys (issue 17): HANDSHAKE_INITs from fresh keys at `rate` a second from `ports` source ports of
# one address, each a real initiator (the core's Session) that completes its handshake when answered, and that
# echoes cookies (a cookie for a port is put as mac2 on every later INIT from that port): the strongest such
# attacker, whose refused handshakes cost the target Diffie-Hellman unless refusals count as load. The sessions
# are built before the flood (a Session costs ~0.6 ms of Python), then it prints "ready" and floods for
# `seconds`, and finally one JSON line: INITs sent, RESPs, cookie replies, FINALs sent, the seconds it took.
_KEY_FLOOD_SCRIPT = r"""
import json, os, socket, sys, time
from nacl.public import PrivateKey
from axiomnet.control import HandshakePayload
from axiomnet.cookie import add_macs, cookie_key, mac1_key, open_cookie
from axiomnet.errors import RemoteProtocolError
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_datagram, decode_header, peek_receiver
cfg = json.loads(sys.argv[1])
target = bytes.fromhex(cfg["target_key"])
dest = (cfg["host"], cfg["port"])
payload = HandshakePayload(capabilities=("relay",))
total = int(cfg["rate"] * cfg["seconds"])
pool = []
for _ in range(total):
    key = PrivateKey.generate()
    session = Session(bytes(key), bytes(key.public_key), local_payload=payload, expected_remote_key=target)
    init = session.initiate(0.0)[0]
    pool.append((session, init))
socks = []
for i in range(cfg["ports"]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((cfg["source"], 0))
    s.setblocking(False)
    socks.append(s)
cookies = {}
by_index = {}
k1, ck = mac1_key(target), cookie_key(target)
counts = {"inits": 0, "resps": 0, "cookie_replies": 0, "finals": 0, "send_errors": 0}
print("ready", flush=True)
started = time.monotonic()
for n, (session, init) in enumerate(pool):
    sock = socks[n % len(socks)]
    cookie = cookies.get(sock)
    if cookie is not None:
        init = add_macs(init, k1, cookie)[0]
    by_index[decode_datagram(init)[1].sender] = (session, init)
    try:
        sock.sendto(init, dest)
    except OSError:
        counts["send_errors"] += 1
    counts["inits"] += 1
    if n % 16 == 0:
        for s in socks:
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                entry = by_index.get(peek_receiver(data))
                if entry is None:
                    continue
                try:
                    header, body = decode_datagram(data)
                except RemoteProtocolError:
                    continue
                if header.ptype is PacketType.COOKIE_REPLY:
                    counts["cookie_replies"] += 1
                    got = open_cookie(ck, body.nonce, body.sealed, decode_datagram(entry[1])[1].mac1)
                    if got is not None:
                        cookies[s] = got
                elif header.ptype is PacketType.HANDSHAKE_RESP:
                    counts["resps"] += 1
                    try:
                        final = entry[0].receive(decode_header(data), data, time.monotonic()).replies
                    except RemoteProtocolError:
                        continue
                    for d in final[:1]:
                        s.sendto(d, dest)
                        counts["finals"] += 1
        ahead = (n + 1) / cfg["rate"] - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
counts["seconds"] = time.monotonic() - started
print(json.dumps(counts), flush=True)
"""


def start_key_flood(ns: Namespace, host: str, port: int, *, target_key: bytes, source: str, rate: int,
                    seconds: float, ports: int = 16) -> subprocess.Popen[str]:
    """Start a fresh-key handshake flood (see _KEY_FLOOD_SCRIPT) from ``source`` in ``ns`` to ``host:port``:
    ``rate`` INITs a second for ``seconds`` (bounded: rate x seconds INITs in all). Returns once its sessions are
    built and it starts sending; :func:`finish_key_flood` waits for its counts."""
    if rate * seconds > 50_000:
        raise HarnessError("a key flood is bounded to 50,000 INITs")
    config = {"host": host, "port": port, "target_key": target_key.hex(), "source": source, "rate": rate,
              "seconds": seconds, "ports": ports}
    proc = ns.popen([sys.executable, "-c", _KEY_FLOOD_SCRIPT, json.dumps(config)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = _readline_with_timeout(proc.stdout, 120.0).strip()
    if first != "ready":
        terminate_processes([proc], grace=1.0)
        raise HarnessError(f"key flood did not start: {first!r} {proc.stderr.read()[-800:] if proc.stderr else ''}")
    return proc


def finish_key_flood(proc: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, float]:
    """Wait (bounded) for a key flood; its counts (inits, resps, cookie_replies, finals, send_errors, seconds)."""
    return _last_json_line(proc, timeout, "key flood")


# A peer that pinned the target's key (HOST:PORT#KEY) dials it once with a fresh key and reports how long until
# the target holds its keys (the target's key confirmation arrived), echoing a cookie if asked for one.
_CONNECT_SCRIPT = r"""
import json, socket, sys, time
from nacl.public import PrivateKey
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header
host, port, target, timeout = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
key = PrivateKey.generate()
session = Session(bytes(key), bytes(key.public_key), local_payload=HandshakePayload(capabilities=("relay",)),
                  expected_remote_key=target)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.02)
started = time.monotonic()
out = session.initiate(started)
confirmed = None
while confirmed is None and time.monotonic() - started < timeout:
    for d in out:
        sock.sendto(d, (host, port))
    out = []
    try:
        data = sock.recv(2048)
    except socket.timeout:
        out = session.tick(time.monotonic())
        continue
    try:
        got = session.receive(decode_header(data), data, time.monotonic())
    except RemoteProtocolError:
        continue
    out = got.replies
    if got.authenticated and got.ptype is PacketType.KEEPALIVE:
        confirmed = time.monotonic() - started
print(json.dumps({"seconds": confirmed, "cookies": session.stats["cookies_received"]}))
"""


def connect_seconds(ns: Namespace, host: str, port: int, target_key: bytes, timeout: float = 10.0) -> dict[str, float | None]:
    """From ``ns``, one handshake with a fresh key pinning ``target_key``: seconds until the target confirmed it
    holds the keys (None: not within ``timeout``), and cookies it had to echo."""
    proc = ns.exec([sys.executable, "-c", _CONNECT_SCRIPT, host, str(port), target_key.hex(), str(timeout)],
                  timeout=timeout + 30.0)
    if proc.returncode != 0:
        raise HarnessError(f"connect probe failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def udp_receive_buffer_errors(ns: Namespace) -> int:
    """Datagrams the kernel of ``ns`` dropped because a UDP socket's receive buffer was full (RcvbufErrors of
    /proc/net/snmp): losses no daemon can see or count itself."""
    proc = ns.exec(["cat", "/proc/net/snmp"], timeout=IP_TIMEOUT)
    rows = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        raise HarnessError(f"no Udp counters in /proc/net/snmp of {ns.name}")
    return int(dict(zip(rows[0], rows[1]))["RcvbufErrors"])


# --- a UDP canary (end-to-end encryption checks; see Capture above for the wire) ---------------------------
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

"""A hostile neighbour against a real daemon: written from the core alone (as the issue's independent client
was), it discovers the daemon's key, completes a link and an end-to-end handshake, then sends packets whose
source it does not own; the daemon's end-to-end layer drops and counts them."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from axiomnet.lab import daemons, processes

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LISTEN_PORT = 40123
LISTEN_SECONDS = 20.0

# Runs in the rogue's namespace: a trust-on-first-use initiator (KEY_PROBE first) built from axiomnet's core.
_ROGUE = r"""
import json, os, socket, struct, sys, time
from nacl.public import PrivateKey
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.identity import derive_address
from axiomnet.routed import Kind, decode_routed, encode_routed
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header

host, port, me_ip, target_hex, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
target = bytes.fromhex(target_hex)
key = PrivateKey.generate()
mine = derive_address(bytes(key.public_key)).packed
link = Session(bytes(key), bytes(key.public_key), local_payload=HandshakePayload(capabilities=("relay",)))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((me_ip, 7443))
sock.settimeout(0.1)
e2e = None
confirmed = False
deadline = time.monotonic() + 20
out = link.initiate(time.monotonic())

mode = sys.argv[6] if len(sys.argv) > 6 else "spoof"

def routed(datagrams, src=None):
    # End-to-end datagrams in routed TRAFFIC for the daemon (our neighbour: no path needed), over the link.
    packets = [encode_routed(Kind.TRAFFIC, root_tag=0, dst=target, src=src or mine, dst_path=(), src_path=(),
                             payload=d, watermark=0) for d in datagrams]
    return link.send_batch(PacketType.DATA, packets, time.monotonic()) if packets else []

while not confirmed and time.monotonic() < deadline:
    for d in out:
        sock.sendto(d, (host, port))
    out = []
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        out = link.tick(time.monotonic()) + (routed(e2e.tick(time.monotonic())) if e2e else [])
        continue
    try:
        got = link.receive(decode_header(data), data, time.monotonic())
    except RemoteProtocolError:
        continue
    out = got.replies
    if e2e is None and link.is_established:
        # The link is up: open the end-to-end session to the daemon's key, as any node would.
        e2e = Session(bytes(key), bytes(key.public_key), local_payload=HandshakePayload(capabilities=("e2e",)),
                      expected_remote_key=link.remote_static)
        out += routed(e2e.initiate(time.monotonic()))
    if got.ptype is PacketType.DATA and e2e is not None:
        try:
            inner = got.payload[decode_routed(got.payload).offset:]
            reply = e2e.receive(decode_header(inner), inner, time.monotonic())
        except RemoteProtocolError:
            continue
        out += routed(reply.replies)
        confirmed = reply.authenticated and reply.ptype is PacketType.KEEPALIVE  # the daemon holds our e2e keys

def udp6(src, dst, payload):
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack(">IxxxB", length, 17)
    header = struct.pack(">HHHH", 40000, dport, length, 0)
    total = 0
    data = pseudo + header + payload + (b"\0" if len(payload) % 2 else b"")
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum = (~total & 0xFFFF) or 0xFFFF
    udp = struct.pack(">HHHH", 40000, dport, length, checksum) + payload
    return bytes([0x60, 0, 0, 0]) + struct.pack(">HBB", len(udp), 17, 64) + src + dst + udp

third = bytes([0xFC]) + os.urandom(15)
packets = [
    udp6(bytes([0xFC]) + os.urandom(15), target, b"forged source"),  # somebody else's address
    udp6(target, target, b"your own address"),  # the daemon's own address, from outside
    udp6(target, third, b"through you as you"),  # to a third node, as the daemon
    udp6(mine, target, b"legit"),  # the address our key owns
]
if confirmed and mode == "rewrite":
    # As a relay that rewrites the routed source: our own session's packets, from the routed address of a third.
    packets = [udp6(mine, target, b"rewritten %d" % i) for i in range(3)]
    for d in routed(e2e.send_batch(PacketType.DATA, packets, time.monotonic()), src=third):
        sock.sendto(d, (host, port))
elif confirmed:
    for d in routed(e2e.send_batch(PacketType.DATA, packets, time.monotonic())):
        sock.sendto(d, (host, port))
print(json.dumps({"confirmed": confirmed, "address": mine.hex()}))
"""

# Runs in the daemon's namespace: a UDP service bound to :: (what the README warns overlay traffic reaches).
# It reports the first datagram it receives and exits (bounded by a deadline). The rogue sends its forged
# packets first on one path, so had any been delivered, it would be that first datagram.
_LISTENER = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    data, addr = s.recvfrom(2048)
    print(json.dumps([data.decode(), addr[0]]), flush=True)
except socket.timeout:
    print(json.dumps(None), flush=True)
"""


def test_a_neighbour_cannot_deliver_packets_from_addresses_it_does_not_own(pair, tmp_path: Path) -> None:
    node = daemons.start_daemon(pair.a, name="node", listen=f"{pair.ip_a}:7443", peers=[], data_dir=tmp_path / "a",
                                admin_socket=tmp_path / "a.sock", tun=pair.a.tun_name)
    try:
        assert processes.wait_until(lambda: pair.a.link_exists(pair.a.tun_name), 15.0), node.log_tail(30)
        listener = pair.a.popen([sys.executable, "-c", _LISTENER, str(LISTEN_PORT), str(LISTEN_SECONDS)],
                                stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"  # bound
        target = ipaddress.IPv6Address(node.address).packed.hex()
        rogue = pair.b.exec([sys.executable, "-c", _ROGUE, pair.ip_a, "7443", pair.ip_b, target, str(LISTEN_PORT)],
                            timeout=30.0)
        assert rogue.returncode == 0, rogue.stderr[-2000:]
        report = json.loads(rogue.stdout)
        assert report["confirmed"], node.log_tail(30)

        def dropped() -> tuple[int, int]:
            e2e = node.inspect()["counters"]["e2e"]
            return e2e.get("rx_dropped_spoofed_source", 0), e2e.get("rx_dropped_not_for_us", 0)

        assert processes.wait_until(lambda: dropped() == (2, 1), 10.0), node.inspect()["counters"]
        out, _ = listener.communicate(timeout=LISTEN_SECONDS + 10)
        rogue_address = str(ipaddress.IPv6Address(bytes.fromhex(report["address"])))
        assert json.loads(out) == ["legit", rogue_address]  # nothing forged reached the service
        assert "Traceback" not in node.log()
    finally:
        node.stop()


def test_a_packet_whose_routed_source_was_rewritten_is_dropped_counted_and_draws_nothing(pair, tmp_path: Path) -> None:
    """Issue 17: a relay rewrote the routed source of A's end-to-end packets, and B answered the rewritten
    address. Here the rogue neighbour sends its own session's packets under a third node's routed source, as such
    a relay would: the daemon drops and counts them, delivers none, and starts nothing towards that address."""
    node = daemons.start_daemon(pair.a, name="node", listen=f"{pair.ip_a}:7443", peers=[], data_dir=tmp_path / "a",
                                admin_socket=tmp_path / "a.sock", tun=pair.a.tun_name)
    try:
        assert processes.wait_until(lambda: pair.a.link_exists(pair.a.tun_name), 15.0), node.log_tail(30)
        listener = pair.a.popen([sys.executable, "-c", _LISTENER, str(LISTEN_PORT), "5"],
                                stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        target = ipaddress.IPv6Address(node.address).packed.hex()
        rogue = pair.b.exec([sys.executable, "-c", _ROGUE, pair.ip_a, "7443", pair.ip_b, target, str(LISTEN_PORT),
                             "rewrite"], timeout=30.0)
        assert rogue.returncode == 0, rogue.stderr[-2000:]
        assert json.loads(rogue.stdout)["confirmed"], node.log_tail(30)

        def e2e() -> dict[str, int]:
            return node.inspect()["counters"]["e2e"]

        assert processes.wait_until(lambda: e2e().get("rx_dropped_wrong_source", 0) == 3, 10.0), e2e()
        out, _ = listener.communicate(timeout=20)
        assert json.loads(out) is None  # nothing rewritten reached the service
        counters = e2e()
        assert counters.get("nudges", 0) == 0 and counters.get("rx_dropped_unknown_index", 0) == 0, counters
        assert counters.get("sessions_created", 0) == 1  # the rogue's own session; none for the third address
        assert "Traceback" not in node.log()
    finally:
        node.stop()

"""The lab's NAT (lab/nat.py): a router namespace masquerading a private host behind its public address.

A UDP echo server on the public side answers each datagram with the source address and port it saw; run from
behind the NAT, the client must see the router's public address (never its own private one), get the replies
back through conntrack, and, for the default masquerade, keep one mapping whatever the destination, while the
fully random one maps each destination to another port (a symmetric NAT).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from axiomnet.lab import nat, processes

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_PORTS = (7601, 7602, 7603)
# Echoes "host port" of each datagram's source, on every port given, until 10 s of silence (bounded).
ECHO_SERVER = """
import select, socket, sys
socks = []
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(port)))
    socks.append(s)
print("ready", flush=True)
while True:
    readable, _, _ = select.select(socks, [], [], 10.0)
    if not readable:
        break
    for s in readable:
        data, addr = s.recvfrom(512)
        s.sendto(f"{addr[0]} {addr[1]}".encode(), addr)
"""
# From one socket, one datagram to each server port; prints what each reply says it saw, as JSON.
ECHO_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(3.0)
seen = []
for port in sys.argv[2:]:
    for _ in range(3):
        s.sendto(b"who am i", (sys.argv[1], int(port)))
        try:
            seen.append(s.recvfrom(512)[0].decode())
            break
        except socket.timeout:
            continue
    else:
        seen.append(None)
print(json.dumps({"local": s.getsockname(), "seen": seen}))
"""


def echo_from_inside(n: nat.Nat) -> dict:
    server = n.outside.popen([sys.executable, "-c", ECHO_SERVER, n.outside_ip, *map(str, SERVER_PORTS)],
                             stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    proc = n.inside.exec([sys.executable, "-c", ECHO_CLIENT, n.outside_ip, *map(str, SERVER_PORTS)], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_host_behind_the_nat_is_seen_at_the_routers_public_address(nat_lab):
    inside, outside = nat_lab.add_namespace("in"), nat_lab.add_namespace("out")
    n = nat.add_nat(nat_lab, inside, outside)
    result = echo_from_inside(n)
    assert None not in result["seen"], f"no reply through the NAT\n{n.mappings()}"
    hosts = {seen.split()[0] for seen in result["seen"]}
    ports = {int(seen.split()[1]) for seen in result["seen"]}
    assert hosts == {n.router_public_ip} and n.inside_ip not in hosts
    # One mapping for every destination (endpoint-independent): what hole punching relies on.
    assert len(ports) == 1, result
    # The private side is unreachable from outside: the public host has no route to it.
    assert outside.exec(["ping", "-c", "1", "-W", "1", n.inside_ip], timeout=10).returncode != 0


def test_a_fully_random_nat_maps_each_destination_to_another_port(nat_lab):
    inside, outside = nat_lab.add_namespace("in"), nat_lab.add_namespace("out")
    n = nat.add_nat(nat_lab, inside, outside, fully_random=True)
    result = echo_from_inside(n)
    assert None not in result["seen"], f"no reply through the NAT\n{n.mappings()}"
    assert {seen.split()[0] for seen in result["seen"]} == {n.router_public_ip}
    ports = [int(seen.split()[1]) for seen in result["seen"]]
    assert len(set(ports)) > 1, ports  # three destinations, three random ports: equal by chance ~1 in 10^9


def reported(node) -> list[dict]:
    try:
        return node.inspect(timeout=5.0)["snapshots"]["peers"]["reflexive"]["reported"]
    except (processes.HarnessError, KeyError):
        return []


def test_a_node_behind_the_nat_learns_the_endpoint_its_public_peer_sees(nat_lab, tmp_path):
    """The reflexive address (docs/PROTOCOL.md §8.1): the node behind the NAT is told the router's public address
    and the port the NAT mapped it to; the public node is told the address the other dialled."""
    from axiomnet.lab import daemons

    tmp_path.chmod(0o700)
    inside, outside = nat_lab.add_namespace("in"), nat_lab.add_namespace("out")
    n = nat.add_nat(nat_lab, inside, outside)
    public = daemons.start_daemon(outside, name="public", listen=f"{n.outside_ip}:7443", peers=[],
                                  data_dir=tmp_path / "public", admin_socket=tmp_path / "public.sock",
                                  tun=outside.tun_name)
    private = daemons.start_daemon(inside, name="private", listen="0.0.0.0:7443", peers=[f"{n.outside_ip}:7443"],
                                   data_dir=tmp_path / "private", admin_socket=tmp_path / "private.sock",
                                   tun=inside.tun_name)
    assert processes.wait_until(lambda: reported(private) and reported(public), 20.0, interval=0.2), \
        f"{private.log_tail(20)}\n{public.log_tail(20)}"
    [seen] = reported(private)
    host, port = seen["endpoint"].rsplit(":", 1)
    assert host == n.router_public_ip and seen["neighbours"] == 1, seen  # not its private address
    assert int(port) == 7443  # masquerade keeps a free source port: the mapping is 7443 -> router:7443
    assert reported(public) == [{"endpoint": f"{n.outside_ip}:7443", "neighbours": 1}]
    assert "seen at" in private.inspect_text()
    assert daemons.wait_overlay_reachable(private, public, timeout=15.0) is not None

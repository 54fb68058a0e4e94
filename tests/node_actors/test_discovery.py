"""LAN discovery in the actors: the discovery actor tells the peer manager what it hears (and only from the
interfaces it beacons on, IPv6 only from link-local sources); the peer manager dials a discovered neighbour once,
labels it, bounds the dials, and forgets it when its beacons stop. No real interface is touched (the interface
scan and the sends are replaced; the real ones run in tests/integration/test_discovery.py)."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from axiomnet.beacon import Heard, encode_beacon, group_key
from axiomnet.errors import ConfigError
from axiomnet.identity import Identity
from axiomnet.ops.config import Config
from axiomnet.actors import messages as m
from axiomnet.actors.discovery import (Discovered, DiscoveredLive, DiscoveryActor, Interface, _Received,
                                       chosen_interfaces, compile_patterns, load_discover_secret)
from axiomnet.actors.peers import MAX_DISCOVERED_DIALS, PeerManagerActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for

SECRET = b"group one"
ETH = Interface("eth9", 9, "fe80::9", None, ipaddress.IPv4Network("198.18.200.0/24"))


class FakeLinkDiscovery(DiscoveryActor):
    """The discovery actor on one made-up interface; beacons recorded instead of sent."""

    def _scan(self) -> None:
        self.interfaces = {ETH.index: ETH}

    def _send_beacons(self) -> None:
        self.counters["beacons_sent"] += len(self.interfaces)


def start_discovery(recorder, secret=SECRET, interval=0.2):
    me = Identity.generate()
    peers = recorder()
    ref = FakeLinkDiscovery.start(None, {"peers": peers}, public_key=me.public_key, port=7443,
                                  patterns=("axnt-matches-nothing",), secret=secret, interval=interval,
                                  beacon_port=0)
    return ref, peers


def counters(ref) -> dict:
    return ref.ask(m.Snapshot())["counters"]


def told(peers, kind):
    return [o for o in peers.ask(GetOther()) if isinstance(o, kind)]


def test_a_beacon_of_our_group_is_told_to_the_peer_manager_once(recorder):
    ref, peers = start_discovery(recorder)
    other = Identity.generate().public_key
    beacon = encode_beacon(other, 7443, group_key(SECRET))
    for _ in range(3):
        ref.tell(_Received(((beacon, "fe80::2", ETH.index, 6),)))
        time.sleep(0.12)  # past the per-source gap: each one is looked at
    assert wait_for(lambda: len(told(peers, Discovered)) == 1)
    heard = told(peers, Discovered)[0].heard
    assert heard == Heard(other, ("fe80::2%eth9", 7443), "eth9")  # dialled over the interface it came in on
    assert wait_for(lambda: any(other in live.keys for live in told(peers, DiscoveredLive)))
    assert wait_for(lambda: counters(ref).get("beacons_accepted") == 3)
    snap = ref.ask(m.Snapshot())
    assert snap["counters"]["beacons_new"] == 1 and snap["group_secret"] is True
    assert snap["interfaces"] == [{"name": "eth9", "via": "ipv6 multicast"}] and snap["counters"]["beacons_sent"] >= 1


def test_a_restarted_peer_manager_is_told_every_neighbour_still_heard(recorder):
    ref, peers = start_discovery(recorder)
    other = Identity.generate().public_key
    ref.tell(_Received(((encode_beacon(other, 7443, group_key(SECRET)), "fe80::2", ETH.index, 6),)))
    assert wait_for(lambda: len(told(peers, Discovered)) == 1)
    restarted = recorder()
    ref.tell(m.Rewire("peers", restarted))  # what the supervisor tells after restarting the peer manager
    assert wait_for(lambda: [d.heard.public_key for d in told(restarted, Discovered)] == [other])


def test_other_groups_other_interfaces_and_routable_sources_are_counted_not_told(recorder):
    ref, peers = start_discovery(recorder)
    other = Identity.generate().public_key
    items = ((encode_beacon(other, 7443, group_key(b"group two")), "fe80::3", ETH.index, 6),
             (encode_beacon(other, 7443, group_key(None)), "fe80::4", ETH.index, 6),
             (encode_beacon(other, 7443, group_key(SECRET)), "fe80::5", 77, 6),
             (encode_beacon(other, 7443, group_key(SECRET)), "2001:db8::5", ETH.index, 6))
    ref.tell(_Received(items))
    # Snapshots ride the control lane, datagrams the data lane: wait on the count, not on the order.
    assert wait_for(lambda: counters(ref).get("beacons_not_link_local") == 1)
    snap = counters(ref)
    assert snap["beacons_other_group"] == 2
    assert snap["beacons_other_interface"] == 1 and snap["beacons_not_link_local"] == 1
    assert told(peers, Discovered) == []


def test_ipv4_beacons_dial_the_source_address(recorder):
    ref, peers = start_discovery(recorder, secret=None)
    other = Identity.generate().public_key
    ref.tell(_Received(((encode_beacon(other, 7555, group_key(None)), "198.18.200.2", ETH.index, 4),)))
    assert wait_for(lambda: len(told(peers, Discovered)) == 1)
    assert told(peers, Discovered)[0].heard.endpoint == ("198.18.200.2", 7555)
    ref.tell(_Received(((encode_beacon(other, 7555, group_key(None)), "192.0.2.66", ETH.index, 4),)))
    assert wait_for(lambda: counters(ref).get("beacons_off_subnet") == 1)


def test_loopback_and_unmatched_interfaces_are_never_chosen():
    assert [i.name for i in chosen_interfaces(compile_patterns((".*",)))].count("lo") == 0
    assert chosen_interfaces(compile_patterns(("axnt-matches-nothing",))) == []


def test_the_secret_file_wins_and_an_unreadable_one_is_an_error(tmp_path: Path):
    secret = tmp_path / "group.secret"
    secret.write_text("  from the file\n")
    config = Config(data_dir=tmp_path, discover=(".*",), discover_secret="inline", discover_secret_file=secret)
    assert load_discover_secret(config) == b"from the file"
    assert load_discover_secret(Config(data_dir=tmp_path, discover_secret="inline")) == b"inline"
    assert load_discover_secret(Config(data_dir=tmp_path)) is None
    with pytest.raises(ConfigError, match="missing.secret"):
        load_discover_secret(Config(data_dir=tmp_path, discover_secret_file=tmp_path / "missing.secret"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_discover_secret(Config(data_dir=tmp_path, discover_secret_file=tmp_path / "empty"))


# --- the peer manager's side ---------------------------------------------------------------------------
def start_manager(recorder, allowed_keys=None):
    me = Identity.generate()
    sock, router = recorder(), recorder()
    mgr = PeerManagerActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed, static_peers=(),
                                 allowed_keys=allowed_keys)
    return mgr, sock


def heard(n: int = 1) -> Heard:
    return Heard(Identity.generate().public_key, (f"fe80::{n:x}%lo", 7443), "lo")


def test_a_discovered_peer_is_dialled_once_and_labelled(recorder):
    mgr, sock = start_manager(recorder)
    neighbour = heard()
    mgr.tell(Discovered(neighbour))
    assert wait_for(lambda: any(addr == neighbour.endpoint for _, addr in sock.ask(GetSent())))
    mgr.tell(Discovered(neighbour))  # told again (its entry expired and came back): still one session
    snap = mgr.ask(m.Snapshot())
    assert snap["sessions"] == 1 and snap["discovered_dialled"] == 1 and snap["discovered_known"] == 1
    assert snap["found"] == {neighbour.public_key.hex(): "discovered"}
    assert snap["unnamed_sessions"] == 1  # a beacon names no one: admission counts it as a stranger


def test_a_key_not_allowed_is_not_dialled(recorder):
    mgr, sock = start_manager(recorder, allowed_keys=frozenset({bytes(32)}))
    mgr.tell(Discovered(heard()))
    snap = mgr.ask(m.Snapshot())
    assert snap["sessions"] == 0 and snap["discovered_not_allowed"] == 1


def test_unanswered_discovered_dials_are_bounded(recorder):
    mgr, _ = start_manager(recorder)
    for n in range(MAX_DISCOVERED_DIALS + 5):
        mgr.tell(Discovered(heard(n + 1)))
    snap = mgr.ask(m.Snapshot())
    assert snap["sessions"] == MAX_DISCOVERED_DIALS and snap["discovered_over_limit"] == 5


def test_a_neighbour_whose_beacons_stopped_is_no_longer_dialled(recorder):
    mgr, sock = start_manager(recorder)
    stays, leaves = heard(1), heard(2)
    mgr.tell(Discovered(stays))
    mgr.tell(Discovered(leaves))
    refs = mgr.ask(m.ListSessions())
    mgr.tell(DiscoveredLive(frozenset({stays.public_key})))
    snap = mgr.ask(m.Snapshot())
    assert snap["sessions"] == 1 and snap["discovered_forgotten"] == 1
    assert set(snap["found"]) == {stays.public_key.hex()}
    assert wait_for(lambda: sum(not r.is_alive() for r in refs) == 1)
    assert wait_for(lambda: any(isinstance(o, m.ReleaseOwner) for o in sock.ask(GetOther())))


def test_static_and_runtime_peers_are_labelled(recorder):
    mgr, _ = start_manager(recorder)
    key_r, key_s = bytes(range(32)), bytes(range(1, 33))
    mgr.ask(m.AddPeer("192.0.2.9", 7443, key_r))
    mgr.ask(m.AddPeer("192.0.2.10", 7443, key_s, origin="static"))
    assert mgr.ask(m.Snapshot())["found"] == {key_r.hex(): "runtime", key_s.hex(): "static"}


# --- the daemon's part (actors/node.py) ------------------------------------------------------------------
def test_the_discovery_actor_starts_only_with_patterns_and_warns_about_a_fixed_listen_address(tmp_path: Path):
    from loguru import logger

    from axiomnet.actors.node import build_specs

    me = Identity.generate()
    off = build_specs(Config(data_dir=tmp_path), me, False, 0.0, ())
    assert "discovery" not in [spec.role for spec in off]
    lines: list[str] = []
    sink = logger.add(lambda msg: lines.append(str(msg)), level="WARNING")
    try:
        on = build_specs(Config(data_dir=tmp_path, discover=("eth.*",)), me, False, 0.0, ())
        assert not lines  # the default listen, [::]: no warning
        fixed = build_specs(Config(data_dir=tmp_path, discover=("eth.*",), listen_host="198.18.0.1"), me, False,
                            0.0, ())
    finally:
        logger.remove(sink)
    roles = [spec.role for spec in on]
    assert roles.index("peers") < roles.index("discovery") < roles.index("heartbeat")
    assert "discovery" in [spec.role for spec in fixed]
    assert any("listens on 198.18.0.1 only" in line for line in lines)


def test_a_neighbour_that_dialled_us_first_is_labelled_discovered_once_heard(recorder):
    from tests.node_actors.test_peer_manager import dial, established_sessions
    from tests.node_actors.test_peer_manager import start_manager as start_front_door

    mgr = start_front_door(recorder)
    neighbour, where = Identity.generate(), ("198.18.200.2", 7443)
    dial(mgr, where, peer=neighbour)  # it heard our beacon first and dialled
    assert wait_for(lambda: established_sessions(mgr) == 1)
    assert mgr.ref.ask(m.Snapshot())["found"] == {neighbour.public_key.hex(): "inbound"}
    mgr.ref.tell(Discovered(Heard(neighbour.public_key, where, "eth9")))  # then we heard its beacon
    snap = mgr.ref.ask(m.Snapshot())
    assert snap["found"] == {neighbour.public_key.hex(): "discovered"} and snap["sessions"] == 1

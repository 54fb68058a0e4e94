"""Start-up helpers of the daemon that need no root: peer name resolution, capability checks."""

import pytest

from axiomnet.config import PeerSpec
from axiomnet.errors import ConfigError
from axiomnet.actors import node


def test_literal_peer_addresses_are_kept_as_they_are():
    peers = (PeerSpec("198.18.0.2", 7443, None), PeerSpec("::1", 9, b"\x01" * 32))
    assert node.resolve_peers(peers) == peers


def test_peer_host_name_is_resolved_at_start():
    (peer,) = node.resolve_peers((PeerSpec("localhost", 7443, b"\x02" * 32),))
    assert peer.host in ("127.0.0.1", "::1")
    assert (peer.port, peer.public_key) == (7443, b"\x02" * 32)


def test_unresolvable_peer_is_a_config_error_naming_it(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("no such host")

    monkeypatch.setattr(node.socket, "getaddrinfo", fail)
    with pytest.raises(ConfigError, match="nowhere.invalid"):
        node.resolve_peers((PeerSpec("nowhere.invalid", 7443, None),))


def test_hanging_resolver_is_bounded(monkeypatch):
    import threading
    block = threading.Event()
    monkeypatch.setattr(node.socket, "getaddrinfo", lambda *a, **k: block.wait(30))
    try:
        with pytest.raises(ConfigError, match="longer than"):
            node.resolve_peers((PeerSpec("slow.example", 7443, None),), timeout=0.2)
    finally:
        block.set()


def test_no_tun_flag_makes_a_relay_only_node():
    from axiomnet.config import Config
    reason = node.tun_available(Config(tun_enabled=False))
    assert reason == "--no-tun given"

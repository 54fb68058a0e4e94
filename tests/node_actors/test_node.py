"""Start-up helpers of the daemon that need no root: peer name resolution, capability checks."""

import pytest

from axiomnet.ops.config import PeerSpec
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
    from axiomnet.ops.config import Config
    reason = node.tun_available(Config(tun_enabled=False))
    assert reason == "--no-tun given"


# --- operations: IPv4 fallback, systemd notification, fault injection gate, SIGHUP ------------------------
import errno
import os
import socket as socket_mod
from pathlib import Path

import pykka
from loguru import logger

from axiomnet.ops.config import Config, load_config
from axiomnet.actors import messages as m


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


def test_default_listen_falls_back_to_ipv4_where_the_kernel_has_no_ipv6(monkeypatch, log_lines):
    real_socket = socket_mod.socket

    def no_ipv6(family=socket_mod.AF_INET, *args, **kwargs):
        if family == socket_mod.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)

    monkeypatch.setattr(node.socket, "socket", no_ipv6)
    assert node.usable_listen_host("::") == "0.0.0.0"
    assert node.usable_listen_host("192.0.2.1") == "192.0.2.1"
    warnings = [line for line in log_lines if "IPv6 is not available" in line]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


def test_default_listen_stays_dual_stack_where_ipv6_works():
    assert node.usable_listen_host("::") == "::"


def test_ipv6_disabled_by_sysctl_is_detected(tmp_path: Path):
    for scope, value in (("all", "0"), ("default", "1")):
        (tmp_path / scope).mkdir()
        (tmp_path / scope / "disable_ipv6").write_text(value + "\n")
    assert node.ipv6_disabled(str(tmp_path))
    (tmp_path / "default" / "disable_ipv6").write_text("0\n")
    assert not node.ipv6_disabled(str(tmp_path))


def test_sd_notify_sends_one_datagram_to_notify_socket(tmp_path: Path):
    path = tmp_path / "notify"
    with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        assert node.sd_notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": str(path)})
        assert listener.recv(4096) == b"READY=1\nSTATUS=up"
    assert not node.sd_notify("READY=1", {})  # not under systemd: nothing to do
    assert not node.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})  # logged, never raised


def test_sd_notify_abstract_socket():
    name = f"axiomnet-test-{os.getpid()}"
    with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        assert node.sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert listener.recv(4096) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert node.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert node.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert node.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert node.watchdog_interval({"WATCHDOG_USEC": "100"}) == 1.0  # never more often than once a second
    assert node.watchdog_interval({}) is None


def test_fault_injection_needs_the_flag_and_the_environment(log_lines):
    on, off = Config(fault_injection=True), Config()
    assert node.fault_injection_enabled(on, {"AXIOMNET_FAULT_INJECTION": "1"})
    assert not node.fault_injection_enabled(off, {"AXIOMNET_FAULT_INJECTION": "1"})  # the old way: not enough
    assert not node.fault_injection_enabled(on, {})
    text = "\n".join(log_lines)
    assert "fault injection is ENABLED" in text and "fault injection stays off" in text
    assert "--fault-injection ignored" in text


class FakePeers(pykka.ThreadingActor):
    def __init__(self, peers):
        super().__init__()
        self.peers = [str(p) for p in peers]
        self.seen = []

    def on_receive(self, message):
        self.seen.append(message)
        if isinstance(message, m.AddPeer):
            self.peers.append(str(PeerSpec(message.host, message.port, message.public_key)))
        elif isinstance(message, m.RemovePeer):
            self.peers = [p for p in self.peers if not p.startswith(f"{message.host}:{message.port}")]
        return {"peers": list(self.peers)}


def running_from(path: Path, text: str):
    """The Config of ``text`` written to ``path``, its PeerBook, and a peer manager that has those peers."""
    path.write_text(text)
    running = load_config(config_file=path, env={})
    return running, node.PeerBook(running.peers), FakePeers.start(running.peers)


def test_sighup_applies_the_peers_of_a_changed_file(tmp_path: Path, log_lines):
    path = tmp_path / "node.toml"
    running, book, peers = running_from(path, 'peers = ["192.0.2.1:7443", "192.0.2.2:7443"]\nmtu = 1400\n')
    path.write_text(f'peers = ["192.0.2.2:7443", "192.0.2.3:7443#{"ab" * 32}"]\nmtu = 1300\n')
    new = node.reload_config(lambda: load_config(config_file=path, env={}), running, peers, book)
    assert [str(p) for p in new.peers] == ["192.0.2.2:7443", f"192.0.2.3:7443#{'ab' * 32}"]
    assert [str(p) for p in book.current()] == ["192.0.2.2:7443", f"192.0.2.3:7443#{'ab' * 32}"]
    seen = peers.proxy().seen.get()
    assert seen == [m.RemovePeer("192.0.2.1", 7443), m.AddPeer("192.0.2.3", 7443, bytes.fromhex("ab" * 32), origin="static")]
    assert any("mtu changed; it takes effect at the next restart" in line for line in log_lines)


def test_sighup_applies_a_changed_allowed_keys_after_the_peers(tmp_path: Path, log_lines):
    path = tmp_path / "node.toml"
    running, book, peers = running_from(path, f'allowed_keys = ["{"ab" * 32}"]\n')
    path.write_text(f'peers = ["192.0.2.3:7443#{"cd" * 32}"]\nallowed_keys = ["{"cd" * 32}"]\n')
    new = node.reload_config(lambda: load_config(config_file=path, env={}), running, peers, book)
    assert new.allowed_keys == frozenset({bytes.fromhex("cd" * 32)})
    # The new pinned peer first, so its key is allowed by the time the new list is checked.
    assert peers.proxy().seen.get() == [m.AddPeer("192.0.2.3", 7443, bytes.fromhex("cd" * 32), origin="static"),
                                        m.SetAllowedKeys(frozenset({bytes.fromhex("cd" * 32)}))]
    assert any("SIGHUP: allowed_keys now 1 key(s) and the pinned peers" in line for line in log_lines)
    path.write_text(f'peers = ["192.0.2.3:7443#{"cd" * 32}"]\n')  # allowed_keys gone: any key again
    node.reload_config(lambda: load_config(config_file=path, env={}), new, peers, book)
    assert peers.proxy().seen.get()[-1] == m.SetAllowedKeys(None)
    assert not any("at the next restart" in line for line in log_lines)


def test_sighup_with_a_broken_file_keeps_the_running_settings(tmp_path: Path, log_lines):
    path = tmp_path / "node.toml"
    running, book, peers = running_from(path, 'peers = ["192.0.2.1:7443"]\n')
    path.write_text('peers = ["192.0.2.1:7443"\n')  # broken TOML
    assert node.reload_config(lambda: load_config(config_file=path, env={}), running, peers, book) is running
    assert [str(p) for p in book.current()] == ["192.0.2.1:7443"] and peers.proxy().seen.get() == []
    assert any("SIGHUP: configuration refused, the running settings stay" in line and "not valid TOML" in line
               for line in log_lines)


def test_peer_book_replaces_atomically():
    book = node.PeerBook([PeerSpec("192.0.2.1", 1)])
    book.replace(["192.0.2.2:2", PeerSpec("192.0.2.3", 3)])
    assert [str(p) for p in book.current()] == ["192.0.2.2:2", "192.0.2.3:3"]


# --- a stop signal during start-up ------------------------------------------------------------------------
_SIGTERM_DURING_START = """
import os, signal, sys
from pathlib import Path
from axiomnet.actors import node
from axiomnet.ops.config import Config
from axiomnet.identity import Identity

def slow_identity(data_dir, timeout=None):  # the stop signal lands while the identity is being made
    os.kill(os.getpid(), signal.SIGTERM)
    return Identity.generate(), True

node.load_or_create_identity_isolated = slow_identity
config = Config(tun_enabled=False, listen_host="127.0.0.1", listen_port=7443, data_dir=Path(sys.argv[1]),
                admin_socket=Path(sys.argv[1]) / "admin.sock")
sys.exit(node.run_daemon(config))
"""


@pytest.mark.slow
def test_a_stop_signal_during_start_up_ends_it_cleanly(tmp_path: Path):
    # CI saw a daemon SIGTERMed right after it wrote its identity die of the signal (-15): the handlers were
    # installed only after the identity, the peers and the listen address were ready. They come first now.
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_START, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "SIGTERM received: shutting down" in proc.stderr and "stopped before start-up finished" in proc.stderr
    assert "node up" not in proc.stderr  # no actor was started

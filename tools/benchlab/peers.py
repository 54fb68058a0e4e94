"""Overlay daemons side by side in the lab: AxiomNet, wireguard-go + wireguard-tools, Nebula and Yggdrasil.

Each kind is an :class:`Overlay`: ``prepare`` makes keys, certificates and config files for the two ends of a
:class:`~axiomnet.lab.namespaces.NetnsPair` (namespace ``a`` and ``b``), ``start(side)`` starts one end's daemon in
its namespace and returns an :class:`OverlayNode` (PIDs for CPU and memory, the overlay address to reach it,
the TUN device). Every daemon listens on its veth address only and its overlay addresses come from the
benchmarking ranges (198.18.0.0/15, 2001:2::/48) or its own key-derived range (AxiomNet fc00::/8, Yggdrasil
200::/7), so nothing leaves the namespaces. Processes are the lab's: stopped by process group and reaped
when the lab closes, or earlier with :meth:`OverlayNode.stop`.

Settings, chosen to be comparable (docs/PERFORMANCE.md lists them): TUN MTU 1420 unless the caller asks for
another; one static peer each way; logging at warning level; no discovery (no multicast, no lighthouse).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from axiomnet.lab import daemons
from axiomnet.lab.namespaces import Namespace, NetnsPair
from axiomnet.lab.processes import (
    CLI_TIMEOUT,
    HarnessError,
    process_cpu_seconds,
    process_memory_kib,
    run_bounded,
    terminate_processes,
    wait_until,
)

READY_TIMEOUT = 15.0  # a daemon's TUN device (or control socket) must appear within this after its start
COMPARABLE_MTU = 1420  # the TUN MTU every overlay is measured at unless the caller asks for another

# Debian package -> the commands the bench needs from it.
PACKAGES: dict[str, tuple[str, ...]] = {
    "wireguard-go": ("wireguard-go",),
    "wireguard-tools": ("wg",),
    "nebula": ("nebula", "nebula-cert"),
    "yggdrasil": ("yggdrasil", "yggdrasilctl"),
    "nftables": ("nft",),
    "iperf3": ("iperf3",),
    "iputils-ping": ("ping",),
    "iproute2": ("ip", "ss"),
}


def missing_packages(packages: Sequence[str]) -> list[str]:
    """The Debian packages among ``packages`` whose commands are not on PATH."""
    return [pkg for pkg in packages if any(shutil.which(cmd) is None for cmd in PACKAGES[pkg])]


def apt_install(packages: Sequence[str], timeout: float = 600.0) -> str | None:
    """`apt-get update` then `apt-get install --no-install-recommends` ``packages``; None, or why it failed."""
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        try:
            proc = run_bounded(args, timeout=timeout, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(args[:2])}: {exc}"
        if proc.returncode != 0:
            return f"{' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return None


def package_version(package: str) -> str:
    """The installed Debian version of ``package`` (dpkg-query), or "?"."""
    try:
        proc = run_bounded(["dpkg-query", "-W", "-f", "${Version}", package], timeout=10.0)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "?"


def link_mtu(ns: Namespace, ifname: str) -> int | None:
    """The MTU of ``ifname`` in ``ns`` as the kernel reports it (None if the device is not there)."""
    proc = ns.exec(["ip", "-j", "link", "show", "dev", ifname], timeout=10.0)
    if proc.returncode != 0:
        return None
    try:
        return int(json.loads(proc.stdout)[0]["mtu"])
    except (ValueError, LookupError, TypeError):
        return None


@dataclasses.dataclass
class OverlayNode:
    """One running overlay daemon: its namespace, processes, overlay address and TUN device."""

    ns: Namespace
    name: str
    procs: list[subprocess.Popen[Any]]
    address: str
    tun: str
    log_path: Path
    leftovers: list[Path] = dataclasses.field(default_factory=list)  # files to remove once it is stopped

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def running(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the daemon's processes so far."""
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    def rss_kib(self) -> int:
        """Current resident set (VmRSS) of the daemon's processes, KiB."""
        return sum(process_memory_kib(pid).get("VmRSS", 0) for pid in self.pids)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the daemon's process groups, SIGKILL after ``grace``, reap; remove its leftover files."""
        stop_nodes([self], grace)


def stop_nodes(nodes: Sequence[OverlayNode], grace: float = 5.0) -> None:
    """Stop several overlay daemons at once (SIGTERM to all, then wait), and remove their leftover files."""
    terminate_processes([proc for node in nodes for proc in node.procs], grace=grace)
    for node in nodes:
        for path in node.leftovers:
            path.unlink(missing_ok=True)


def _wait_ready(node: OverlayNode, check: Callable[[], bool], what: str) -> None:
    def ready() -> bool:
        if not node.running():
            raise HarnessError(f"{node.name} exited before {what}:\n{node.log_tail()}")
        return check()

    if not wait_until(ready, READY_TIMEOUT, interval=0.02):
        raise HarnessError(f"{node.name}: {what} did not happen within {READY_TIMEOUT:g} s:\n{node.log_tail()}")


class Overlay(abc.ABC):
    """One kind of overlay daemon, configured for the two ends ``a`` and ``b`` of a NetnsPair."""

    key = ""  # figure-key prefix, e.g. "wireguard_go"
    label = ""  # name in tables
    packages: tuple[str, ...] = ()  # Debian packages it needs
    address_family = 6  # of the overlay addresses (ping -4 / -6, iperf3 picks it from the address)

    def __init__(self, pair: NetnsPair, workdir: Path, *, mtu: int | None = COMPARABLE_MTU, port: int = 0) -> None:
        self.pair = pair
        self.workdir = workdir
        self.mtu = mtu  # None: the daemon's own default
        self.port = port or self.default_port
        self.addresses: dict[str, str] = {}

    default_port = 0

    def ns(self, side: str) -> Namespace:
        return self.pair.a if side == "a" else self.pair.b

    def veth_ip(self, side: str) -> str:
        return self.pair.ip_a if side == "a" else self.pair.ip_b

    def other(self, side: str) -> str:
        return "b" if side == "a" else "a"

    def tun_name(self, side: str) -> str:
        return self.ns(side).tun_name

    def version(self) -> str:
        return " + ".join(f"{pkg} {package_version(pkg)}" for pkg in self.packages)

    @abc.abstractmethod
    def settings(self) -> str:
        """One line: what this overlay is configured with (for the docs)."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Keys, certificates, config files for both sides; fills ``self.addresses``."""

    @abc.abstractmethod
    def start(self, side: str) -> OverlayNode:
        """Start the daemon of ``side`` and return once its process runs (and is configured, if that is a
        separate step); the overlay may not carry traffic yet."""

    def _popen(self, side: str, args: Sequence[str], tag: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[Any], Path]:
        log_path = self.workdir / f"{self.key}-{tag}-{side}.log"
        with open(log_path, "ab") as out:
            proc = self.ns(side).popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        return proc, log_path


# --- AxiomNet ---------------------------------------------------------------------------------------------
class AxiomNetOverlay(Overlay):
    """``python -m axiomnet daemon`` (lab/daemons.py), one pinned static peer each way."""

    key = "axiomnet"
    label = "AxiomNet"
    default_port = 7443

    def __init__(self, pair: NetnsPair, workdir: Path, *, mtu: int | None = COMPARABLE_MTU, port: int = 0,
                 extra_args: Sequence[str] = (), tag: str = "") -> None:
        super().__init__(pair, workdir, mtu=mtu, port=port)
        self.extra_args = list(extra_args)
        self.tag = tag or "run"
        self.keys: dict[str, str] = {}

    def version(self) -> str:
        from axiomnet import __version__

        return f"axiomnet {__version__} (this tree)"

    def settings(self) -> str:
        mtu = f"--mtu {self.mtu}" if self.mtu is not None else "default MTU"
        extra = f" {' '.join(self.extra_args)}" if self.extra_args else ""
        return f"UDP {self.port}, {mtu}{extra}, peer pinned by key, log WARNING"

    def data_dir(self, side: str) -> Path:
        return self.workdir / f"axiomnet-{self.tag}-{side}"

    def prepare(self) -> None:
        for side in ("a", "b"):
            info = daemons.identity_info(self.data_dir(side))
            self.addresses[side] = info["address"]
            self.keys[side] = info["public_key"]

    def start(self, side: str) -> OverlayNode:
        other = self.other(side)
        args = list(self.extra_args)
        if self.mtu is not None:
            args += ["--mtu", str(self.mtu)]
        peer = f"{daemons.format_endpoint(self.veth_ip(other), self.port)}#{self.keys[other]}"
        proc = daemons.start_daemon(
            self.ns(side),
            name=f"axiomnet-{self.tag}-{side}",
            listen=daemons.format_endpoint(self.veth_ip(side), self.port),
            peers=[peer],
            data_dir=self.data_dir(side),
            admin_socket=self.workdir / f"axiomnet-{self.tag}-{side}.sock",
            tun=self.tun_name(side),
            extra_args=args,
            log_level="WARNING",
            address=self.addresses[side],
        )
        node = OverlayNode(self.ns(side), proc.name, [proc.popen], proc.address, self.tun_name(side), proc.log_path)
        _wait_ready(node, lambda: self.ns(side).link_exists(node.tun), "TUN device up")
        return node


# --- wireguard-go + wg ------------------------------------------------------------------------------------
WG_SOCKET_DIR = Path("/var/run/wireguard")  # wireguard-go's UAPI sockets (global: names are unique per run)
WG_OVERLAY6 = "2001:2:0:ff::"  # overlay addresses ::1 (a) and ::2 (b), /64, inside the benchmarking range


class WireguardGoOverlay(Overlay):
    """wireguard-go in the foreground, configured with `wg setconf`; IPv6 overlay addresses."""

    key = "wireguard_go"
    label = "wireguard-go"
    packages = ("wireguard-go", "wireguard-tools")
    default_port = 51820

    def settings(self) -> str:
        return f"UDP {self.port}, TUN MTU {self.mtu or 1420}, one peer with Endpoint and AllowedIPs /128, no keepalive"

    def prepare(self) -> None:
        keys: dict[str, tuple[str, str]] = {}
        for side in ("a", "b"):
            private = run_bounded(["wg", "genkey"], timeout=CLI_TIMEOUT, check=True).stdout.strip()
            public = run_bounded(["wg", "pubkey"], timeout=CLI_TIMEOUT, input=private + "\n", check=True).stdout.strip()
            keys[side] = (private, public)
            self.addresses[side] = f"{WG_OVERLAY6}{1 if side == 'a' else 2}"
        for side in ("a", "b"):
            other = self.other(side)
            conf = (
                f"[Interface]\nPrivateKey = {keys[side][0]}\nListenPort = {self.port}\n\n"
                f"[Peer]\nPublicKey = {keys[other][1]}\nAllowedIPs = {self.addresses[other]}/128\n"
                f"Endpoint = {daemons.format_endpoint(self.veth_ip(other), self.port)}\n"
            )
            path = self.workdir / f"wg-{side}.conf"
            path.write_text(conf)
            path.chmod(0o600)

    def start(self, side: str) -> OverlayNode:
        ns, tun = self.ns(side), self.tun_name(side)
        # Foreground (-f) so the process we track is the daemon; the variable also silences the
        # "use the kernel module instead" banner, which is only printed for a daemonising start.
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        proc, log_path = self._popen(side, ["wireguard-go", "-f", tun], "daemon", env=env)
        sock = WG_SOCKET_DIR / f"{tun}.sock"  # removed by wireguard-go on SIGTERM, left behind on SIGKILL
        node = OverlayNode(ns, f"wireguard-go-{side}", [proc], self.addresses[side], tun, log_path, [sock])
        _wait_ready(node, sock.exists, "its control socket appeared")
        ns.exec(["wg", "setconf", tun, str(self.workdir / f"wg-{side}.conf")], timeout=CLI_TIMEOUT, check=True)
        ns.ip("addr", "add", f"{self.addresses[side]}/64", "dev", tun, "nodad")
        ns.ip("link", "set", "dev", tun, "mtu", str(self.mtu or 1420), "up")
        return node


# --- Nebula -------------------------------------------------------------------------------------------------
NEBULA_OVERLAY4 = "198.19.0."  # overlay addresses .1 (a) and .2 (b), /24, inside the benchmarking range


class NebulaOverlay(Overlay):
    """nebula with a CA and two host certificates (nebula-cert), a static host map, no lighthouse."""

    key = "nebula"
    label = "Nebula"
    packages = ("nebula",)
    default_port = 4242
    address_family = 4  # Nebula 1.6 carries IPv4 only

    def settings(self) -> str:
        return (f"UDP {self.port}, TUN MTU {self.mtu or 1300}, IPv4 overlay (Nebula 1.6 has no IPv6 inside), "
                "static_host_map, no lighthouse, no punching, firewall any/any")

    def prepare(self) -> None:
        ca_crt, ca_key = self.workdir / "nebula-ca.crt", self.workdir / "nebula-ca.key"
        run_bounded(["nebula-cert", "ca", "-name", "axiomnet-bench", "-duration", "24h",
                     "-out-crt", str(ca_crt), "-out-key", str(ca_key)], timeout=CLI_TIMEOUT, check=True)
        for side in ("a", "b"):
            self.addresses[side] = f"{NEBULA_OVERLAY4}{1 if side == 'a' else 2}"
            run_bounded(["nebula-cert", "sign", "-ca-crt", str(ca_crt), "-ca-key", str(ca_key), "-name", f"node-{side}",
                         "-ip", f"{self.addresses[side]}/24", "-out-crt", str(self.workdir / f"nebula-{side}.crt"),
                         "-out-key", str(self.workdir / f"nebula-{side}.key")], timeout=CLI_TIMEOUT, check=True)
        for side in ("a", "b"):
            other = self.other(side)
            tun: dict[str, Any] = {"disabled": False, "dev": self.tun_name(side), "drop_local_broadcast": False,
                                   "drop_multicast": False, "tx_queue": 500}
            if self.mtu is not None:
                tun["mtu"] = self.mtu
            any_rule = [{"port": "any", "proto": "any", "host": "any"}]
            config = {
                "pki": {"ca": str(ca_crt), "cert": str(self.workdir / f"nebula-{side}.crt"),
                        "key": str(self.workdir / f"nebula-{side}.key")},
                "static_host_map": {self.addresses[other]: [f"{self.veth_ip(other)}:{self.port}"]},
                "lighthouse": {"am_lighthouse": False, "interval": 60, "hosts": []},
                "listen": {"host": self.veth_ip(side), "port": self.port},
                "punchy": {"punch": False},
                "relay": {"am_relay": False, "use_relays": False},
                "tun": tun,
                "logging": {"level": "warning", "format": "text"},
                "firewall": {"outbound": any_rule, "inbound": any_rule},
            }
            # JSON is YAML: no YAML writer needed.
            (self.workdir / f"nebula-{side}.yml").write_text(json.dumps(config, indent=1))

    def start(self, side: str) -> OverlayNode:
        ns, tun = self.ns(side), self.tun_name(side)
        proc, log_path = self._popen(side, ["nebula", "-config", str(self.workdir / f"nebula-{side}.yml")], "daemon")
        node = OverlayNode(ns, f"nebula-{side}", [proc], self.addresses[side], tun, log_path)
        _wait_ready(node, lambda: ns.link_exists(tun), "TUN device up")
        return node


# --- Yggdrasil ----------------------------------------------------------------------------------------------
def yggdrasil_config(path: Path, *, listen: str, peers: Sequence[str], tun: str | None, mtu: int | None,
                     admin_socket: Path) -> str:
    """Write a generated yggdrasil config (TCP peers, no multicast, admin socket ``admin_socket``, no TUN when
    ``tun`` is None, its default IfMTU when ``mtu`` is None) to ``path``; return the node's address."""
    proc = run_bounded(["yggdrasil", "-genconf", "-json"], timeout=CLI_TIMEOUT, check=True)
    config = json.loads(proc.stdout)
    config.update(
        Peers=list(peers),
        Listen=[listen],
        AdminListen=f"unix://{admin_socket}",
        MulticastInterfaces=[],
        IfName=tun if tun is not None else "none",
        NodeInfoPrivacy=True,
    )
    if mtu is not None:
        config["IfMTU"] = mtu
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
    return str(run_bounded(["yggdrasil", "-useconffile", str(path), "-address"], timeout=CLI_TIMEOUT,
                           check=True).stdout.strip())


def start_yggdrasil(ns: Namespace, config: Path, log_path: Path) -> subprocess.Popen[Any]:
    """Start yggdrasil with ``config`` in ``ns`` (tracked by the lab), output to ``log_path``."""
    with open(log_path, "ab") as out:
        return ns.popen(["yggdrasil", "-useconffile", str(config), "-loglevel", "warn"], stdout=out,
                        stderr=subprocess.STDOUT)


def yggdrasil_peer_count(ns: Namespace, admin_socket: Path) -> int:
    """How many peers a yggdrasil node reports up (`yggdrasilctl getPeers` on its admin socket; 0 if unsure)."""
    proc = ns.exec(["yggdrasilctl", "-json", "-endpoint", f"unix://{admin_socket}", "getPeers"], timeout=CLI_TIMEOUT)
    if proc.returncode != 0:
        return 0
    try:
        return len(json.loads(proc.stdout).get("peers", {}))
    except (ValueError, AttributeError):
        return 0


class YggdrasilOverlay(Overlay):
    """yggdrasil with a generated config: TCP link on the veth both ways, no multicast, admin socket in workdir."""

    key = "yggdrasil"
    label = "Yggdrasil"
    packages = ("yggdrasil",)
    default_port = 9001

    def settings(self) -> str:
        mtu = f"IfMTU {self.mtu}" if self.mtu is not None else "its default IfMTU (65535)"
        return f"TCP {self.port} peering on the veth both ways, {mtu}, no multicast discovery"

    def _name(self, side: str) -> str:
        return f"ygg-{self.mtu or 'def'}-{side}"

    def prepare(self) -> None:
        for side in ("a", "b"):
            other, name = self.other(side), self._name(side)
            self.addresses[side] = yggdrasil_config(
                self.workdir / f"{name}.conf",
                listen=f"tcp://{daemons.format_endpoint(self.veth_ip(side), self.port)}",
                peers=[f"tcp://{daemons.format_endpoint(self.veth_ip(other), self.port)}"],
                tun=self.tun_name(side),
                mtu=self.mtu,
                admin_socket=self.workdir / f"{name}.sock",
            )

    def start(self, side: str) -> OverlayNode:
        ns, tun, name = self.ns(side), self.tun_name(side), self._name(side)
        log_path = self.workdir / f"{name}.log"
        proc = start_yggdrasil(ns, self.workdir / f"{name}.conf", log_path)
        node = OverlayNode(ns, f"yggdrasil-{side}", [proc], self.addresses[side], tun, log_path)
        _wait_ready(node, lambda: ns.link_exists(tun), "TUN device up")
        return node


OVERLAYS: tuple[type[Overlay], ...] = (AxiomNetOverlay, WireguardGoOverlay, NebulaOverlay, YggdrasilOverlay)

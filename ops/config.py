"""The node's typed configuration: defaults < TOML file < AXIOMNET_* environment < command-line overrides.

Every value is validated where it is read, and a bad one raises :class:`ConfigError` naming where it came
from (``mtu in /etc/axiomnet.toml``, ``AXIOMNET_MTU``, ``--mtu``) and what is wrong with it. Nothing here
resolves names or touches the network; the only file read is the TOML file named by the caller.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axiomnet.constants import DEFAULT_MTU, DEFAULT_TUN_NAME, DEFAULT_UDP_PORT, MAX_SESSIONS
from axiomnet.errors import ConfigError

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")  # loguru's built-in levels
MIN_MTU = 1280  # IPv6 minimum link MTU: the overlay carries IPv6
MAX_MTU = 65535
MAX_TUN_NAME = 15  # Linux IFNAMSIZ (16) minus the terminating NUL
MAX_UNIX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) (108) minus the terminating NUL
MAX_SESSIONS_LIMIT = 65535  # link sessions: the tree numbers a node's neighbours with 16-bit ports
MAX_CONFIG_FILE_SIZE = 1 << 20  # a larger "config file" is a mistake, not a config
ROOT_DATA_DIR = Path("/var/lib/axiomnet")
ROOT_ADMIN_SOCKET = Path("/run/axiomnet/admin.sock")

TOML_KEYS: tuple[str, ...] = ("listen", "peers", "tun", "mtu", "data_dir", "admin_socket", "log_level", "log_json",
                              "allowed_keys", "discoverable")
ENV_PREFIX = "AXIOMNET_"
ENV_KEYS: tuple[str, ...] = ("LISTEN", "PEERS", "TUN", "NO_TUN", "MTU", "DATA_DIR", "ADMIN_SOCKET", "LOG_LEVEL",
                             "LOG_JSON", "ALLOWED_KEYS", "DISCOVERABLE")
# Data plane (issue 11): offloads. Issue 19: how many link sessions a hub holds.
TOML_KEYS += ("offload", "max_sessions")
ENV_KEYS += ("OFFLOAD", "MAX_SESSIONS")
# Operations settings (issue 10): metrics listener, admin socket group, fault injection (tests only).
TOML_KEYS += ("metrics_listen", "admin_group", "fault_injection")
# Routing v2 (issue 15): a private network's roots.
TOML_KEYS += ("trusted_roots",)
ENV_KEYS += ("TRUSTED_ROOTS",)
ENV_KEYS += ("METRICS_LISTEN", "ADMIN_GROUP")  # fault_injection has no variable: it is the flag half of a two-part gate
# LAN discovery (issue 18): interface patterns, group secret (inline or a file), beacon interval.
TOML_KEYS += ("discover", "discover_secret", "discover_secret_file", "discover_interval")
ENV_KEYS += ("DISCOVER", "DISCOVER_SECRET", "DISCOVER_SECRET_FILE", "DISCOVER_INTERVAL")
OVERRIDE_KEYS = TOML_KEYS + ("no_discover", "listen_host", "listen_port", "tun_enabled", "tun_name", "no_tun")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_PORT = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_GROUP_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10}")  # POSIX-ish group name, or a numeric gid


def _bad(key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r}: {problem}")


# --- single values ------------------------------------------------------------------------------------
def _check_port(value: object, key: str) -> int:
    if isinstance(value, str) and _PORT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _bad(key, value, "the port must be an integer from 1 to 65535")
    return value


def _check_ip_literal(host: str, key: str, original: object) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _bad(key, original, "the host must be a literal IPv4 or IPv6 address (for example 0.0.0.0 or ::)") \
            from None
    return host


def _check_peer_host(host: str, key: str, original: object) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise _bad(key, original, "the host must be an IPv4 address, an IPv6 address in brackets or a DNS name")
    return host


def split_host_port(text: str, key: str, original: object = None) -> tuple[str, int]:
    """Split "HOST:PORT" or "[IPV6]:PORT" (no name resolution); the host is returned without brackets."""
    shown = text if original is None else original
    if not isinstance(text, str):
        raise _bad(key, shown, 'expected a string "HOST:PORT"')
    stripped = text.strip()
    if stripped.startswith("["):
        host, sep, rest = stripped[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _bad(key, shown, 'expected "[IPV6]:PORT"')
        if not isinstance(_ip_or_none(host), ipaddress.IPv6Address):
            raise _bad(key, shown, "only an IPv6 address may stand in brackets")
        port_text = rest[1:]
    else:
        host, sep, port_text = stripped.rpartition(":")
        if not sep:
            raise _bad(key, shown, 'expected "HOST:PORT" (IPv6: "[ADDR]:PORT")')
        if ":" in host:
            raise _bad(key, shown, 'an IPv6 address needs brackets: "[ADDR]:PORT"')
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _bad(key, shown, "the port must be an integer from 1 to 65535")
    return host, int(port_text)


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_listen(text: str, key: str = "listen") -> tuple[str, int]:
    """"HOST:PORT" with a literal IP host ("::" when the host is empty, as in ":7443")."""
    host, port = split_host_port(text, key)
    if not host:
        host = "::"
    return _check_ip_literal(host, key, text), port


def _check_tun_name(value: object, key: str) -> str:
    # The kernel's dev_valid_name(), restricted to printable ASCII.
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_TUN_NAME
        or value in (".", "..")
        or any(not "!" <= ch <= "~" or ch in "/:" for ch in value)
    ):
        raise _bad(key, value, f"a Linux interface name is 1 to {MAX_TUN_NAME} printable ASCII characters "
                               "without '/', ':' or spaces")
    return value


def _check_mtu(value: object, key: str) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MTU <= value <= MAX_MTU:
        raise _bad(key, value, f"the MTU must be an integer from {MIN_MTU} to {MAX_MTU} (the overlay carries IPv6)")
    return value


def _check_max_sessions(value: object, key: str) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SESSIONS_LIMIT:
        raise _bad(key, value, f"the session limit must be an integer from 1 to {MAX_SESSIONS_LIMIT}")
    return value


def _check_log_level(value: object, key: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in LOG_LEVELS:
        raise _bad(key, value, "the log level must be one of " + ", ".join(LOG_LEVELS))
    return value.strip().upper()


def _check_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad(key, value, "expected a boolean (true/false, 1/0, yes/no, on/off)")


def _check_path(value: object, key: str, base: Path | None = None) -> Path:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _bad(key, value, "expected a non-empty path")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.normpath(path))


def _check_socket_path(value: object, key: str, base: Path | None = None) -> Path:
    path = _check_path(value, key, base)
    if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH:
        raise _bad(key, str(path), f"a Unix socket path may be at most {MAX_UNIX_SOCKET_PATH} bytes long")
    return path


def parse_metrics_listen(value: object, key: str = "metrics_listen") -> tuple[str, int] | None:
    """"HOST:PORT", "[V6]:PORT" or a bare "PORT" (host 127.0.0.1: loopback unless said otherwise); ""/"off" is None."""
    if value is None or value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, tuple) and len(value) == 2:
        return _check_ip_literal(str(value[0]), key, value), _check_port(value[1], key)
    if not isinstance(value, str):
        raise _bad(key, value, 'expected "HOST:PORT", a port number, or "off"')
    text = value.strip()
    if text.lower() in ("", "off", "false", "no"):
        return None
    if _PORT.fullmatch(text):
        return "127.0.0.1", _check_port(text, key)
    host, port = split_host_port(text, key)
    return _check_ip_literal(host or "127.0.0.1", key, value), port


def _check_group(value: object, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _GROUP_NAME.fullmatch(value.strip()):
        raise _bad(key, value, "expected a group name (e.g. axiomnet) or a numeric gid")
    return value.strip() or None


# --- LAN discovery ------------------------------------------------------------------------------------
MIN_DISCOVER_INTERVAL, MAX_DISCOVER_INTERVAL = 0.2, 60.0  # axiomnet/beacon.py's bounds
MAX_DISCOVER_PATTERNS = 32
MAX_DISCOVER_SECRET = 4096


def _parse_discover(value: object, key: str) -> tuple[str, ...]:
    """Interface name patterns (Python regular expressions, matched against the whole name); [] is off. From the
    environment: one comma-separated string."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or len(value) > MAX_DISCOVER_PATTERNS:
        raise _bad(key, value, f"expected a list of at most {MAX_DISCOVER_PATTERNS} interface name patterns")
    patterns = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 256:
            raise _bad(key, item, "an interface pattern is a non-empty string of at most 256 characters")
        try:
            re.compile(item)
        except re.error as exc:
            raise _bad(key, item, f"not a regular expression: {exc}") from None
        patterns.append(item)
    return tuple(patterns)


def _check_secret(value: object, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_DISCOVER_SECRET or "\0" in value:
        raise _bad(key, "<secret>", f"expected a non-empty string of at most {MAX_DISCOVER_SECRET} bytes")
    return value


def _check_interval(value: object, key: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _bad(key, value, "expected a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not MIN_DISCOVER_INTERVAL <= value <= MAX_DISCOVER_INTERVAL:
        raise _bad(key, value, f"expected seconds from {MIN_DISCOVER_INTERVAL:g} to {MAX_DISCOVER_INTERVAL:g}")
    return float(value)


# --- peers ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerSpec:
    """A static peer: where to dial it and, optionally, the public key it must prove (pinning)."""

    host: str
    port: int
    public_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise _bad("peer host", self.host, "expected a string")
        _check_peer_host(self.host, "peer host", self.host)
        _check_port(self.port, "peer port")
        if self.public_key is not None and (not isinstance(self.public_key, bytes) or len(self.public_key) != 32):
            raise _bad("peer public_key", self.public_key, "a public key is 32 bytes")

    @classmethod
    def parse(cls, text: str, key: str = "peer") -> PeerSpec:
        """Parse "HOST:PORT", "[IPV6]:PORT" or either followed by "#PUBKEYHEX" (64 hex characters)."""
        if not isinstance(text, str):
            raise _bad(key, text, 'expected a string "HOST:PORT[#PUBKEYHEX]"')
        endpoint, sep, key_hex = text.strip().partition("#")
        public_key = None
        if sep:
            if not _HEX_KEY.fullmatch(key_hex):
                raise _bad(key, text, "the public key after '#' must be 64 hexadecimal characters")
            public_key = bytes.fromhex(key_hex)
        host, port = split_host_port(endpoint, key, text)
        if not host:
            raise _bad(key, text, "the peer host is missing")
        return cls(_check_peer_host(host, key, text), port, public_key)

    @property
    def endpoint(self) -> str:
        """"host:port", with brackets around an IPv6 host."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.endpoint + (f"#{self.public_key.hex()}" if self.public_key else "")


def _parse_peers(value: object, key: str, where: str = "") -> tuple[PeerSpec, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _bad(key + where, value, 'expected a list of "HOST:PORT[#PUBKEYHEX]" strings')
    peers = []
    for index, item in enumerate(value):
        peers.append(item if isinstance(item, PeerSpec) else PeerSpec.parse(item, f"{key}[{index}]{where}"))
    _check_unique_peers(tuple(peers), key, where)
    return tuple(peers)


def _parse_allowed_keys(value: object, key: str, where: str = "") -> frozenset[bytes]:
    """A list of 64-hex-character public keys (or, from the environment, one comma-separated string)."""
    if isinstance(value, (frozenset, set)) and all(isinstance(k, bytes) and len(k) == 32 for k in value):
        return frozenset(value)
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, Iterable):
        raise _bad(key + where, value, "expected a list of public keys (64 hexadecimal characters each)")
    keys = set()
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _HEX_KEY.fullmatch(item.strip()):
            raise _bad(f"{key}[{index}]{where}", item, "a public key is 64 hexadecimal characters")
        keys.add(bytes.fromhex(item.strip()))
    return frozenset(keys)


def _parse_trusted_roots(value: object, key: str, where: str = "") -> frozenset[bytes]:
    """Like allowed_keys (public keys, 64 hex characters each), but an empty list would let no node be root,
    not even this one: refused."""
    keys = _parse_allowed_keys(value, key, where)
    if not keys:
        raise _bad(key + where, value, "list at least one root's public key (or leave trusted_roots unset)")
    return keys


def _check_unique_peers(peers: tuple[PeerSpec, ...], key: str, where: str = "") -> None:
    seen: dict[tuple[str, int], int] = {}
    for index, peer in enumerate(peers):
        ident = (peer.host.lower(), peer.port)
        if ident in seen:
            raise _bad(f"{key}[{index}]{where}", str(peer), f"duplicates {key}[{seen[ident]}]")
        seen[ident] = index


# --- defaults -------------------------------------------------------------------------------------------
def _is_root(euid: int | None) -> bool:
    return (os.geteuid() if euid is None else euid) == 0


def default_data_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """/var/lib/axiomnet for root, else $XDG_DATA_HOME/axiomnet or ~/.local/share/axiomnet."""
    env = os.environ if env is None else env
    if _is_root(euid):
        return ROOT_DATA_DIR
    xdg = env.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "axiomnet"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "share" / "axiomnet"


def default_admin_socket(data_dir: Path, env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """/run/axiomnet/admin.sock for root, else $XDG_RUNTIME_DIR/axiomnet/admin.sock, else data_dir/admin.sock."""
    env = os.environ if env is None else env
    if _is_root(euid):
        return ROOT_ADMIN_SOCKET
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "axiomnet" / "admin.sock"
    return Path(data_dir) / "admin.sock"


# --- the config -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """Everything a node needs to start, validated. Build it with :func:`load_config`."""

    listen_host: str = "::"
    listen_port: int = DEFAULT_UDP_PORT
    peers: tuple[PeerSpec, ...] = ()
    tun_enabled: bool = True
    tun_name: str = DEFAULT_TUN_NAME
    mtu: int = DEFAULT_MTU
    data_dir: Path = field(default_factory=default_data_dir)
    admin_socket: Path = None  # type: ignore[assignment]  # None: derived from data_dir in __post_init__
    log_level: str = "INFO"
    log_json: bool = False
    # None: any key may complete a handshake (trust on first use); a set: only these keys and pinned static peers.
    allowed_keys: frozenset[bytes] | None = None
    discoverable: bool = True  # answer KEY_PROBE with our public key (peers configured without our key need it)
    offload: bool = True  # TUN offloads (TSO, checksums) and UDP GSO/GRO where the kernel grants them
    max_sessions: int = MAX_SESSIONS  # live link sessions; a new peer past this is refused (logged, counted)
    # Operations settings (issue 10).
    metrics_listen: tuple[str, int] | None = None  # the Prometheus HTTP listener; None: off
    admin_group: str | None = None  # members may use the admin socket too (mode 0660); None: root and our uid only
    fault_injection: bool = False  # inject-fault accepted only with this AND AXIOMNET_FAULT_INJECTION=1
    # LAN discovery (issue 18; docs/CONFIG.md "LAN discovery"): off unless interface patterns are given.
    discover: tuple[str, ...] = ()
    discover_secret: str | None = None  # the group secret; never printed (genconf shows that it is set)
    discover_secret_file: Path | None = None  # the secret read from this file at start (wins over discover_secret)
    discover_interval: float = 1.0  # seconds between two beacons on one interface
    # None: the lowest key anywhere is the root (an open network); a set of public keys: only these may be root.
    trusted_roots: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.listen_host, str):
            raise _bad("listen_host", self.listen_host, "expected a string")
        put("listen_host", _check_ip_literal(self.listen_host.strip("[]"), "listen_host", self.listen_host))
        put("listen_port", _check_port(self.listen_port, "listen_port"))
        put("peers", _parse_peers(self.peers, "peers"))
        put("tun_enabled", _check_bool(self.tun_enabled, "tun_enabled"))
        put("tun_name", _check_tun_name(self.tun_name, "tun_name"))
        put("mtu", _check_mtu(self.mtu, "mtu"))
        put("data_dir", _check_path(self.data_dir, "data_dir"))
        if self.admin_socket is None:
            put("admin_socket", default_admin_socket(self.data_dir))
        put("admin_socket", _check_socket_path(self.admin_socket, "admin_socket"))
        put("log_level", _check_log_level(self.log_level, "log_level"))
        put("log_json", _check_bool(self.log_json, "log_json"))
        if self.allowed_keys is not None:
            put("allowed_keys", _parse_allowed_keys(self.allowed_keys, "allowed_keys"))
        put("discoverable", _check_bool(self.discoverable, "discoverable"))
        put("offload", _check_bool(self.offload, "offload"))
        put("max_sessions", _check_max_sessions(self.max_sessions, "max_sessions"))
        put("metrics_listen", parse_metrics_listen(self.metrics_listen, "metrics_listen"))
        put("admin_group", _check_group(self.admin_group, "admin_group"))
        put("fault_injection", _check_bool(self.fault_injection, "fault_injection"))
        put("discover", _parse_discover(self.discover, "discover"))
        put("discover_secret", _check_secret(self.discover_secret, "discover_secret"))
        if self.discover_secret_file is not None:
            put("discover_secret_file", _check_path(self.discover_secret_file, "discover_secret_file"))
        put("discover_interval", _check_interval(self.discover_interval, "discover_interval"))
        if self.trusted_roots is not None:
            put("trusted_roots", _parse_trusted_roots(self.trusted_roots, "trusted_roots"))

    @property
    def listen(self) -> str:
        """"host:port" to bind, with brackets around an IPv6 host."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


# --- the layers -------------------------------------------------------------------------------------------
def _apply(values: dict[str, Any], name: str, value: object, key: str, base: Path | None = None,
           where: str = "") -> None:
    """Validate one setting (TOML/override naming) into Config field values; errors name ``key + where``."""
    if name == "peers":
        values["peers"] = _parse_peers(value, key, where)
        return
    if name == "allowed_keys":
        values["allowed_keys"] = _parse_allowed_keys(value, key, where)
        return
    if name == "trusted_roots":
        values["trusted_roots"] = _parse_trusted_roots(value, key, where)
        return
    key += where
    if name == "listen":
        values["listen_host"], values["listen_port"] = parse_listen(value, key)  # type: ignore[arg-type]
    elif name == "listen_host":
        if not isinstance(value, str):
            raise _bad(key, value, "expected a string")
        values["listen_host"] = _check_ip_literal(value.strip("[]"), key, value)
    elif name == "listen_port":
        values["listen_port"] = _check_port(value, key)
    elif name == "tun":
        if isinstance(value, bool):
            values["tun_enabled"] = value
        else:
            values["tun_name"] = _check_tun_name(value, key)
            values["tun_enabled"] = True
    elif name == "tun_enabled":
        values["tun_enabled"] = _check_bool(value, key)
    elif name == "no_tun":
        if _check_bool(value, key):
            values["tun_enabled"] = False
    elif name == "tun_name":
        values["tun_name"] = _check_tun_name(value, key)
    elif name == "mtu":
        values["mtu"] = _check_mtu(value, key)
    elif name == "data_dir":
        values["data_dir"] = _check_path(value, key, base)
    elif name == "admin_socket":
        values["admin_socket"] = _check_socket_path(value, key, base)
    elif name == "log_level":
        values["log_level"] = _check_log_level(value, key)
    elif name == "log_json":
        values["log_json"] = _check_bool(value, key)
    elif name == "discoverable":
        values["discoverable"] = _check_bool(value, key)
    elif name == "offload":
        values["offload"] = _check_bool(value, key)
    elif name == "max_sessions":
        values["max_sessions"] = _check_max_sessions(value, key)
    elif name == "metrics_listen":
        values["metrics_listen"] = parse_metrics_listen(value, key)
    elif name == "admin_group":
        values["admin_group"] = _check_group(value, key)
    elif name == "fault_injection":
        values["fault_injection"] = _check_bool(value, key)
    elif name == "discover":
        values["discover"] = _parse_discover(value, key)
    elif name == "no_discover":
        if _check_bool(value, key):
            values["discover"] = ()
    elif name == "discover_secret":
        values["discover_secret"] = _check_secret(value, key)
    elif name == "discover_secret_file":
        values["discover_secret_file"] = _check_path(value, key, base)
    elif name == "discover_interval":
        values["discover_interval"] = _check_interval(value, key)
    else:  # pragma: no cover - callers filter unknown keys first
        raise ConfigError(f"unknown setting {key!r}")


def _toml_layer(path: Path, values: dict[str, Any]) -> None:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_FILE_SIZE + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_FILE_SIZE:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_FILE_SIZE} bytes")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for name, value in document.items():
        if name not in TOML_KEYS:
            raise ConfigError(f"config file {path}: unknown key {name!r} (known keys: {', '.join(TOML_KEYS)})")
        where = f" (in {path})"
        key = name + where
        if name == "tun" and value is True:
            values["tun_enabled"] = True
            continue
        if name in ("log_json", "discoverable", "offload", "fault_injection") and not isinstance(value, bool):
            raise _bad(key, value, "expected true or false")
        if name in ("allowed_keys", "trusted_roots") and not isinstance(value, list):
            raise _bad(key, value, 'expected an array of public keys ("64 hexadecimal characters")')
        if name in ("mtu", "max_sessions") and not isinstance(value, int):
            raise _bad(key, value, "expected an integer")
        if name in ("listen", "data_dir", "admin_socket", "log_level") and not isinstance(value, str):
            raise _bad(key, value, "expected a string")
        if name == "discover" and not isinstance(value, list):
            raise _bad(key, value, 'expected an array of interface name patterns, e.g. [".*"] or ["eth0", "wlan.*"]')
        if name == "peers" and not isinstance(value, list):
            raise _bad(key, value, 'expected an array of "HOST:PORT[#PUBKEYHEX]" strings')
        if name == "tun" and not isinstance(value, (str, bool)):
            raise _bad(key, value, 'expected an interface name or false')
        _apply(values, name, value, name, base=path.absolute().parent, where=where)


def _env_layer(env: Mapping[str, str], values: dict[str, Any]) -> None:
    def get(name: str) -> str | None:
        return env.get(ENV_PREFIX + name)

    if (text := get("LISTEN")) is not None:
        _apply(values, "listen", text, "AXIOMNET_LISTEN")
    if (text := get("PEERS")) is not None:
        items = [item.strip() for item in text.split(",") if item.strip()]
        _apply(values, "peers", items, "AXIOMNET_PEERS")
    no_tun = get("NO_TUN")
    if no_tun is not None and _check_bool(no_tun, "AXIOMNET_NO_TUN"):
        if get("TUN"):
            raise ConfigError("AXIOMNET_TUN and AXIOMNET_NO_TUN=1 are both set; choose one")
        values["tun_enabled"] = False
    elif (text := get("TUN")) is not None:
        _apply(values, "tun", text, "AXIOMNET_TUN")
    for name in ("MTU", "DATA_DIR", "ADMIN_SOCKET", "LOG_LEVEL", "LOG_JSON", "DISCOVERABLE", "OFFLOAD", "METRICS_LISTEN",
                 "ADMIN_GROUP", "DISCOVER", "DISCOVER_SECRET", "DISCOVER_SECRET_FILE", "DISCOVER_INTERVAL",
                 "MAX_SESSIONS"):
        if (text := get(name)) is not None:
            _apply(values, name.lower(), text, ENV_PREFIX + name)
    if (text := get("ALLOWED_KEYS")) is not None and text.strip():  # empty: not set
        _apply(values, "allowed_keys", text, "AXIOMNET_ALLOWED_KEYS")
    if (text := get("TRUSTED_ROOTS")) is not None and text.strip():  # empty: not set
        _apply(values, "trusted_roots", text, "AXIOMNET_TRUSTED_ROOTS")


def _override_layer(overrides: Mapping[str, object], values: dict[str, Any]) -> None:
    for name, value in overrides.items():
        if name not in OVERRIDE_KEYS:
            raise ConfigError(f"unknown override {name!r} (known: {', '.join(OVERRIDE_KEYS)})")
        if value is None:  # argparse leaves unset options as None
            continue
        _apply(values, name, value, "--" + name.replace("_", "-"))
    if overrides.get("no_tun") and overrides.get("tun") not in (None, False):
        raise ConfigError("--tun and --no-tun cannot be used together")


def load_config(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """defaults < TOML ``config_file`` < AXIOMNET_* in ``env`` (os.environ if None) < ``overrides``.

    ``overrides`` takes the TOML keys (listen, peers, tun, ...) or Config field names (listen_host,
    tun_name, ...) plus ``no_tun``; None values are ignored. Lists (peers) replace, they do not merge.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        _toml_layer(Path(config_file), values)
    _env_layer(env, values)
    _override_layer(overrides or {}, values)
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(env)
    if "admin_socket" not in values:
        values["admin_socket"] = default_admin_socket(values["data_dir"], env)
    return Config(**values)

"""Configuration as text: the commented default file (`axiomnet genconf`) and the effective settings
(`axiomnet config check`), both TOML that `load_config` reads back to the same Config (pure)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from axiomnet.ops.config import ROOT_ADMIN_SOCKET, ROOT_DATA_DIR, Config
from axiomnet.constants import DEFAULT_METRICS_PORT, DEFAULT_MTU, DEFAULT_TUN_NAME, DEFAULT_UDP_PORT, MAX_SESSIONS

# Config fields that two TOML keys' worth of fields express (listen = host + port, tun = enabled + name).
_COMBINED = {"listen_host": "listen", "listen_port": "listen", "tun_enabled": "tun", "tun_name": "tun"}


def toml_value(value: object) -> str | None:
    """``value`` as a TOML value, or None when TOML cannot say it (None: the setting is off/unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (tuple, list, set, frozenset)):
        items = [toml_value(item) for item in value]
        return "[" + ", ".join(item for item in items if item is not None) + "]"
    return json.dumps(str(value))


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def effective_config_text(config: Config) -> str:
    """Every setting of ``config`` as TOML (unset optional settings as comments), in the Config's field order."""
    lines = []
    done: set[str] = set()
    for field in dataclasses.fields(config):
        key = _COMBINED.get(field.name, field.name)
        if key in done:
            continue
        done.add(key)
        if key == "listen":
            text: str | None = json.dumps(config.listen)
        elif key == "tun":
            text = json.dumps(config.tun_name) if config.tun_enabled else "false"
        elif key == "peers":
            text = "[" + ", ".join(json.dumps(str(peer)) for peer in config.peers) + "]"
        elif key == "discover_secret":  # a secret is never printed
            text = None
            if config.discover_secret is not None:
                lines.append("# discover_secret is set (not shown)")
                continue
        elif key == "metrics_listen":
            text = json.dumps(_endpoint(*config.metrics_listen)) if config.metrics_listen else None
        else:
            text = toml_value(getattr(config, field.name))
        lines.append(f"{key} = {text}" if text is not None else f"# {key} is not set")
    return "\n".join(lines) + "\n"


def default_config_text() -> str:
    """The commented default configuration (as `yggdrasil -genconf`); it passes `axiomnet config check`."""
    return f"""\
# AxiomNet configuration (TOML), written by `axiomnet genconf`.
# Check it with:  axiomnet config check --config FILE
# Precedence: built-in defaults < this file < AXIOMNET_* environment variables < command-line flags.
# SIGHUP (systemctl reload axiomnet) re-reads `peers`; other settings take effect at the next restart.

# UDP address to listen on: a literal IP and a port. "[::]" is dual stack; where the kernel has no IPv6
# the daemon falls back to 0.0.0.0 and says so in one log line.
listen = "[::]:{DEFAULT_UDP_PORT}"

# Static peers to dial and keep dialling: "HOST:PORT" or "[IPV6]:PORT", a host name is resolved at start.
# Append "#" and the peer's 64-hex-character public key to pin it (a handshake with another key is refused).
# Example: peers = ["192.0.2.7:{DEFAULT_UDP_PORT}#<64 hex characters>", "peer.example.org:{DEFAULT_UDP_PORT}"]
peers = []

# TUN interface carrying this node's overlay traffic, or false for a relay-only node (no CAP_NET_ADMIN needed).
tun = "{DEFAULT_TUN_NAME}"

# MTU of the TUN interface, 1280..65535 (the overlay carries IPv6).
mtu = {DEFAULT_MTU}

# Where identity.key lives (it is this node's address: back it up).
# Default: {ROOT_DATA_DIR} for root, else $XDG_DATA_HOME/axiomnet or ~/.local/share/axiomnet.
# data_dir = "{ROOT_DATA_DIR}"

# The admin Unix socket used by axiomnet-inspect and `axiomnet peers` (0600, in a 0700 directory).
# Default: {ROOT_ADMIN_SOCKET} for root, else $XDG_RUNTIME_DIR/axiomnet/admin.sock.
# admin_socket = "{ROOT_ADMIN_SOCKET}"

# Members of this group may use the admin socket too (it becomes 0660); root and the daemon's user always may.
# admin_group = "axiomnet"

# Log level: TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL; log_json = true for one JSON object a line.
log_level = "INFO"
log_json = false

# Prometheus metrics over HTTP at /metrics: off unless set. A bare port listens on 127.0.0.1.
# metrics_listen = "127.0.0.1:{DEFAULT_METRICS_PORT}"

# TUN offloads (TCP segmentation, checksums) and UDP GSO/GRO where the kernel grants them (the wire format is
# the same either way); false: one packet per system call.
# offload = true

# LAN discovery: beacons on the interfaces whose names match these regular expressions, and a session with every
# node heard on them. Off by default: with allowed_keys unset, any node on the link may then peer with you (on a
# cafe's Wi-Fi, strangers). Set a group secret so only your own nodes peer by beacon (docs/CONFIG.md).
# discover = [".*"]
# discover_secret_file = "/etc/axiomnet/discover.secret"
# discover_interval = 1.0
# A private network: only these nodes (public keys, 64 hex characters each) may be the routing tree's root, so a
# stranger with a lower key changes nothing. Unset: the lowest key anywhere is the root (an open network).
# trusted_roots = ["<64 hex characters>"]
# Live link sessions held at once; a new peer past this is refused (logged, counted). Each costs memory and, today,
# one thread.
# max_sessions = {MAX_SESSIONS}
"""

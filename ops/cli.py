"""The ``axiomnet`` and ``axiomnet-inspect`` command-line entry points.

This module sits above the core: it reads the environment, configures logging and may import ``actors``
(lazily, so ``axiomnet identity show`` and ``--help`` work without the actor layer loaded).
``axiomnet`` exits 0 on success, 1 on a runtime failure (identity, no daemon, bad reply), 2 on a usage or
configuration error. ``axiomnet-inspect`` exits 0 when it printed what was asked (``health``: healthy),
1 when ``health`` is degraded, 2 when the daemon cannot be asked (not running, permission, no or bad
reply), when ``health`` is unhealthy, or on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json as jsonlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from axiomnet import __version__
from axiomnet.ops import admin_client
from axiomnet.ops.admin_client import AdminError
from axiomnet.ops.bounded import CallTimedOut, call_bounded
from axiomnet.ops.config import LOG_LEVELS, Config, PeerSpec, load_config
from axiomnet.constants import ADMIN_CLIENT_TIMEOUT, DEFAULT_METRICS_PORT, DEFAULT_UDP_PORT, FILE_IO_TIMEOUT
from axiomnet.errors import ConfigError, IdentityError, IOTimeout, LocalError
from axiomnet.identity import Identity
from axiomnet.ops.identity_store import IDENTITY_BACKUP_FILENAME, IDENTITY_FILENAME, load_identity, load_or_create_identity

PROG = "axiomnet"
INSPECT_PROG = "axiomnet-inspect"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DEGRADED = 1  # axiomnet-inspect health
EXIT_UNREACHABLE = 2  # axiomnet-inspect: the daemon cannot be asked (also: health unhealthy)
DEMO_TOPOLOGIES = ("line", "ring", "star", "mesh", "nat")  # nat: NAT traversal (lab/demo.py _run_nat_steps)
DEMO_MAX_NODES = 10
PEERS_TIMEOUT = 10.0  # `axiomnet peers add` may resolve a host name in the daemon (bounded at 5 s) first

_log_handler_id: int | None = None


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Send loguru records at ``level`` and above to stderr, as text or one JSON object per line.

    Replaces loguru's default handler and any handler an earlier call installed; other sinks stay.
    ``diagnose`` is off so a traceback never prints local variables (private keys live in some).
    """
    global _log_handler_id
    for handler_id in (0, _log_handler_id):
        if handler_id is None:
            continue
        try:
            logger.remove(handler_id)
        except ValueError:
            pass  # already removed
    # A function sink looks sys.stderr up at write time, so a replaced stderr (tests, daemons) is honoured.
    def write_to_current_stderr(message: Any) -> None:
        sys.stderr.write(message)

    _log_handler_id = logger.add(
        write_to_current_stderr,
        level=level.upper(),
        serialize=json,
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}",
        backtrace=False,
        diagnose=False,
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer > 0")
    return value


def _node_count(text: str) -> int:
    value = _positive_int(text)
    if not 2 <= value <= DEMO_MAX_NODES:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 2 to {DEMO_MAX_NODES}")
    return value


# --- axiomnet ------------------------------------------------------------------------------------------
_MAIN_EPILOG = f"""\
examples:
  axiomnet daemon --listen [::]:{DEFAULT_UDP_PORT} --peer 192.0.2.7:{DEFAULT_UDP_PORT}#<64 hex chars of its key>
  axiomnet daemon --config /etc/axiomnet.toml --no-tun --log-level DEBUG
  axiomnet genconf > /etc/axiomnet.toml && axiomnet config check --config /etc/axiomnet.toml
  axiomnet identity create --data-dir /var/lib/axiomnet && axiomnet identity show --json
  axiomnet peers add 192.0.2.9:{DEFAULT_UDP_PORT}      # at runtime, through the admin socket
  axiomnet demo --nodes 4 --topology line --seconds 5
  axiomnet-inspect                      # state of the running daemon (axiomnet-inspect --help)

configuration precedence: built-in defaults < TOML file (--config) < AXIOMNET_* environment < flags.
"""

_DAEMON_EPILOG = f"""\
examples:
  axiomnet daemon
  axiomnet daemon --listen 0.0.0.0:{DEFAULT_UDP_PORT} --peer [2001:db8::1]:{DEFAULT_UDP_PORT} --peer 192.0.2.7:9000
  axiomnet daemon --config node.toml --tun axn1 --mtu 1400 --log-json --metrics-listen {DEFAULT_METRICS_PORT}

environment: AXIOMNET_LISTEN, AXIOMNET_PEERS (comma separated), AXIOMNET_TUN, AXIOMNET_NO_TUN=1, AXIOMNET_MTU,
AXIOMNET_DATA_DIR, AXIOMNET_ADMIN_SOCKET, AXIOMNET_LOG_LEVEL, AXIOMNET_LOG_JSON, AXIOMNET_ALLOWED_KEYS (comma
separated), AXIOMNET_TRUSTED_ROOTS (comma separated), AXIOMNET_DISCOVERABLE, AXIOMNET_METRICS_LISTEN, AXIOMNET_ADMIN_GROUP; flags win over them.
signals: SIGTERM/SIGINT stop (exit 0 within 5 s); SIGHUP re-reads the static peers from --config.
"""

_IDENTITY_EPILOG = f"""\
The identity ({IDENTITY_FILENAME}, backed up as {IDENTITY_BACKUP_FILENAME}) is this node's address: the
address is derived from the public key, so it never changes while the file lives. `show` only reads;
`create` makes one when the data directory holds none (the daemon also does at its first start).

examples:
  axiomnet identity create --data-dir ./node1
  axiomnet identity show
  axiomnet identity show --data-dir ./node1 --json
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``axiomnet`` argument parser (exposed for tests and for generating documentation)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="AxiomNet: a Layer-3 overlay network daemon (Noise XX over UDP, TUN, greedy hyperbolic routing).",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    daemon = commands.add_parser(
        "daemon", help="run the overlay node", description="Run the overlay node until SIGTERM/SIGINT.",
        epilog=_DAEMON_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    daemon.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (re-read on SIGHUP)")
    daemon.add_argument("--listen", metavar="HOST:PORT",
                        help=f"UDP address to listen on, a literal IP (default [::]:{DEFAULT_UDP_PORT}, dual stack; "
                             "0.0.0.0 where the kernel has no IPv6)")
    daemon.add_argument("--peer", action="append", metavar="HOST:PORT[#PUBKEYHEX]",
                        help="static peer to dial; repeat for more; '#KEY' pins its public key "
                             "(replaces peers from the file/environment)")
    tun = daemon.add_mutually_exclusive_group()
    tun.add_argument("--tun", metavar="NAME", help="TUN interface name (default axn0)")
    tun.add_argument("--no-tun", action="store_true", default=None,
                     help="run without a TUN device (routing and forwarding only)")
    daemon.add_argument("--mtu", metavar="N", help="TUN MTU, 1280..65535 (default 1400)")
    _add_data_dir(daemon)
    daemon.add_argument("--admin-socket", metavar="PATH", help="admin Unix socket path")
    daemon.add_argument("--admin-group", metavar="GROUP",
                        help="members of GROUP may use the admin socket too (it becomes 0660)")
    daemon.add_argument("--metrics-listen", metavar="[HOST:]PORT",
                        help="serve Prometheus metrics over HTTP at /metrics (off by default; a bare port "
                             "listens on 127.0.0.1)")
    daemon.add_argument("--log-level", metavar="LEVEL", help="one of " + ", ".join(LOG_LEVELS) + " (default INFO)")
    daemon.add_argument("--log-json", action="store_true", default=None, help="log one JSON object per line")
    daemon.add_argument("--allowed-key", action="append", metavar="PUBKEYHEX",
                        help="accept handshakes only from this key (repeat for more; pinned --peer keys are always "
                             "accepted); without it any key may connect (trust on first use)")
    daemon.add_argument("--trusted-root", action="append", metavar="PUBKEYHEX",
                        help="a private network: accept only this node as the tree's root (repeat for more); "
                             "without it the lowest key anywhere is the root")
    daemon.add_argument("--no-discoverable", action="store_true", default=None,
                        help="do not tell our public key to peers that probe for it (only peers that already "
                             "know it can connect)")
    daemon.add_argument("--discover", action="append", metavar="PATTERN",
                        help="find peers on the local network: beacons on the interfaces whose names match this "
                             "regular expression (repeat for more; '.*' for all); off by default")
    daemon.add_argument("--no-discover", action="store_true", default=None,
                        help="no LAN discovery, whatever the config file says")
    daemon.add_argument("--discover-secret", metavar="SECRET",
                        help="group secret of LAN discovery: only nodes with the same secret peer by beacon (prefer "
                             "--discover-secret-file or AXIOMNET_DISCOVER_SECRET: arguments are visible in ps)")
    daemon.add_argument("--discover-secret-file", metavar="FILE", help="read the discovery group secret from FILE")
    daemon.add_argument("--discover-interval", metavar="S", help="seconds between beacons (default 1)")
    daemon.add_argument("--no-offload", action="store_true", default=None,
                        help="read and write the TUN device and the UDP socket one packet at a time (no TSO, "
                             "checksum offload, UDP GSO/GRO); the wire format is the same either way")
    daemon.add_argument("--fault-injection", action="store_true", default=None,
                        help="accept inject-fault on the admin socket (chaos tests only; also needs "
                             "AXIOMNET_FAULT_INJECTION=1 in the environment)")

    identity = commands.add_parser(
        "identity", help="show or create this node's identity", description="Identity commands.",
        epilog=_IDENTITY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    identity_commands = identity.add_subparsers(dest="identity_command", metavar="ACTION")
    for action, text in (("show", "print the public key and overlay address (never creates one)"),
                         ("create", "create the identity if there is none, then print it")):
        sub = identity_commands.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".",
                                           epilog=_IDENTITY_EPILOG,
                                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_data_dir(sub)
        sub.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (for data_dir)")
        sub.add_argument("--json", action="store_true",
                         help='print {"public_key", "address", "path", "created"} as JSON')

    config = commands.add_parser(
        "config", help="check a configuration", description="Configuration commands.",
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    check = config_commands.add_parser(
        "check", help="validate a configuration and print the effective settings (exit 2 on a fault)",
        description="Validate the configuration (file and AXIOMNET_* environment) and print the effective "
                    "settings as TOML; exit 0 when it is valid, 2 with the reason when it is not.",
        epilog="examples:\n  axiomnet config check --config /etc/axiomnet.toml\n"
               "  axiomnet genconf > node.toml && axiomnet config check --config node.toml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")

    commands.add_parser("genconf", help="print a commented default configuration",
                        description="Print a commented default TOML configuration (it passes `config check`).")

    peers = commands.add_parser(
        "peers", help="list, add or remove static peers of the running daemon",
        description="Change the running daemon's static peers through its admin socket (root, the daemon's "
                    "user or its admin_group). Changes last until the next restart or SIGHUP: put them in the "
                    "config file to keep them.",
        epilog=f"examples:\n  axiomnet peers list\n  axiomnet peers add 192.0.2.9:{DEFAULT_UDP_PORT}#<64 hex>\n"
               f"  axiomnet peers remove 192.0.2.9:{DEFAULT_UDP_PORT}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    peers_commands = peers.add_subparsers(dest="peers_command", metavar="ACTION")
    peers_list = peers_commands.add_parser("list", help="print the static peers")
    peers_add = peers_commands.add_parser("add", help="dial a new static peer")
    peers_add.add_argument("peer", metavar="HOST:PORT[#PUBKEYHEX]")
    peers_remove = peers_commands.add_parser("remove", help="forget a static peer and close its session")
    peers_remove.add_argument("peer", metavar="HOST:PORT")
    for sub in (peers_list, peers_add, peers_remove):
        _add_client_options(sub, PEERS_TIMEOUT)

    demo = commands.add_parser(
        "demo", help="run a self-contained multi-node demo (root)",
        description="Start N nodes in network namespaces linked as a topology, each peering only with its "
                    "neighbours; ping every pair, send a TCP transfer across the longest path, show a live "
                    "table, then clean everything up.",
    )
    demo.add_argument("--nodes", type=_node_count, default=2, metavar="N",
                      help=f"number of nodes, 2..{DEMO_MAX_NODES} (default 2)")
    demo.add_argument("--topology", choices=DEMO_TOPOLOGIES, default="line",
                      help="how the nodes are linked and peered (default line)")
    demo.add_argument("--seconds", "--duration", dest="seconds", type=_positive_float, default=3.0,
                      metavar="S", help="how long to ping each pair (default 3)")
    demo.add_argument("--size-mb", type=_positive_int, default=5, metavar="N",
                      help="megabytes to transfer across the longest path (default 5)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary files and logs afterwards")
    return parser


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory holding identity.key (default /var/lib/axiomnet for root, "
                             "else $XDG_DATA_HOME/axiomnet or ~/.local/share/axiomnet)")


def _add_client_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--admin-socket", metavar="PATH", help="the daemon's admin Unix socket "
                        "(default: from --config / AXIOMNET_ADMIN_SOCKET / this user's default, then root's)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (for admin_socket)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--timeout", type=_positive_float, default=timeout, metavar="S",
                        help=f"give up after this many seconds (default {timeout:g})")


def _error(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _daemon_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "listen": args.listen,
        "peers": args.peer,
        "tun": args.tun,
        "no_tun": args.no_tun,
        "mtu": args.mtu,
        "data_dir": args.data_dir,
        "admin_socket": args.admin_socket,
        "admin_group": args.admin_group,
        "metrics_listen": args.metrics_listen,
        "log_level": args.log_level,
        "log_json": args.log_json,
        "allowed_keys": args.allowed_key,
        "trusted_roots": args.trusted_root,
        "discoverable": False if args.no_discoverable else None,
        "offload": False if args.no_offload else None,
        "fault_injection": args.fault_injection,
        "discover": args.discover,
        "no_discover": args.no_discover,
        "discover_secret": args.discover_secret,
        "discover_secret_file": args.discover_secret_file,
        "discover_interval": args.discover_interval,
    }


def _run_daemon(args: argparse.Namespace) -> int:
    overrides = _daemon_overrides(args)
    config = load_config(config_file=args.config, env=os.environ, overrides=overrides)
    configure_logging(config.log_level, config.log_json)
    from axiomnet.actors.node import run_daemon  # lazily: the actor layer is only needed to run a node

    def reload() -> Config:
        return load_config(config_file=args.config, env=os.environ, overrides=overrides)

    code = run_daemon(config, reload if args.config is not None else None)
    return EXIT_OK if code is None else int(code)


def _identity(args: argparse.Namespace) -> int:
    config = load_config(config_file=args.config, env=os.environ, overrides={"data_dir": args.data_dir})
    # Recovery warnings and errors must reach the operator; routine INFO lines would repeat our own note.
    quiet = config.log_level if config.log_level in ("ERROR", "CRITICAL") else "WARNING"
    configure_logging(quiet, config.log_json)
    path = config.data_dir / IDENTITY_FILENAME
    identity: Identity
    if args.identity_command == "create":
        identity, created = load_or_create_identity(config.data_dir, timeout=FILE_IO_TIMEOUT)
        if created:
            _error(PROG, f"created a new identity at {path} (back it up: it is this node's address)")
    else:
        created = False
        try:
            identity = call_bounded(lambda: load_identity(path), FILE_IO_TIMEOUT, "axiomnet-identity-io")
        except CallTimedOut:
            raise IOTimeout(f"reading {path} did not finish within {FILE_IO_TIMEOUT:g} s: the disk or file "
                            "system is hung or very slow") from None
        except IdentityError:
            if path.exists() or path.is_symlink():
                raise
            backup = config.data_dir / IDENTITY_BACKUP_FILENAME
            hint = f" ({backup.name} exists: `axiomnet identity create` restores it)" if backup.exists() else ""
            raise IdentityError(f"no identity at {path}{hint}; create one with `axiomnet identity create"
                                f"{' --data-dir ' + str(config.data_dir) if args.data_dir else ''}` "
                                "(the daemon also creates it at its first start)") from None
    if args.json:
        print(jsonlib.dumps({"public_key": identity.public_hex, "address": str(identity.address),
                             "path": str(path), "created": created}))
    else:
        print(f"public key: {identity.public_hex}")
        print(f"address:    {identity.address}")
        print(f"path:       {path}")
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    from axiomnet.ops.genconf import effective_config_text

    config = load_config(config_file=args.config, env=os.environ, overrides={})
    if args.json:
        settings = {f.name: _json_value(getattr(config, f.name)) for f in dataclasses.fields(config)}
        if settings.get("discover_secret") is not None:
            settings["discover_secret"] = "<set, not shown>"  # a secret is never printed
        print(jsonlib.dumps(settings, indent=2))
    else:
        source = f"built-in defaults < {args.config} < AXIOMNET_* environment" if args.config else \
            "built-in defaults < AXIOMNET_* environment (no --config given)"
        print(f"# effective settings ({source})")
        print(effective_config_text(config), end="")
    for peer in config.peers:
        if peer.public_key is None:
            _error(PROG, f"note: peer {peer} is not pinned (append #<its public key> to refuse impostors)")
    _error(PROG, "configuration OK")
    return EXIT_OK


def _json_value(value: object) -> object:
    """A Config value as JSON: peers and paths as their text, keys as hex, tuples as lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_json_value(item) for item in value]
    return str(value)


def _client_paths(args: argparse.Namespace) -> list[Path]:
    config = load_config(config_file=args.config, env=os.environ, overrides={"admin_socket": args.admin_socket})
    explicit = args.admin_socket is not None or "AXIOMNET_ADMIN_SOCKET" in os.environ
    return admin_client.socket_candidates(config, os.environ, explicit)


def _peers(args: argparse.Namespace) -> int:
    if args.peers_command is None:
        _error(PROG, "peers: choose an action (list, add, remove)")
        return EXIT_USAGE
    if args.peers_command == "list":
        message: dict[str, Any] = {"cmd": "peers"}
    else:
        spec = PeerSpec.parse(args.peer, key="peer")  # a ConfigError here is a usage error (exit 2)
        message = {"cmd": "peer-" + args.peers_command, "peer": str(spec)}
    try:
        _path, reply = admin_client.request_first(_client_paths(args), message, args.timeout)
    except AdminError as exc:
        _error(PROG, str(exc))
        return EXIT_FAILURE
    if args.json:
        print(jsonlib.dumps(reply, indent=2))
        return EXIT_OK
    peers = reply.get("peers") or []
    if args.peers_command == "add":
        print(f"added {args.peer}" if reply.get("added") else f"{args.peer} was already a static peer")
    elif args.peers_command == "remove":
        if not reply.get("removed"):
            print(f"{args.peer} was not a static peer")
        else:
            print(f"removed {args.peer} ({reply.get('sessions_closed', 0)} session(s) closed)")
    if args.peers_command == "list" or peers:
        print(f"static peers ({len(peers)}):")
        for peer in peers:
            print(f"  {peer}")
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from axiomnet.lab.demo import run_demo  # lazily: the demo drives the actor layer

    code = run_demo(args)
    return EXIT_OK if code is None else int(code)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has printed already
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``axiomnet``; returns the process exit code."""
    parser = build_parser()
    parsed = _parse(parser, argv)
    if isinstance(parsed, int):
        return parsed
    args = parsed
    try:
        if args.command == "daemon":
            if argv is None:  # the program itself, not a caller in-process: restart once with malloc tuned
                from axiomnet.actors.malloc_env import reexec_with_malloc_tuned
                reexec_with_malloc_tuned()
            return _run_daemon(args)
        if args.command == "identity" and args.identity_command in ("show", "create"):
            return _identity(args)
        if args.command == "config" and args.config_command == "check":
            return _config_check(args)
        if args.command == "genconf":
            from axiomnet.ops.genconf import default_config_text

            print(default_config_text(), end="")
            return EXIT_OK
        if args.command == "peers":
            return _peers(args)
        if args.command == "demo":
            return _run_demo(args)
    except ConfigError as exc:
        _error(PROG, f"config error: {exc}")
        return EXIT_USAGE
    except (IdentityError, IOTimeout) as exc:
        _error(PROG, f"identity error: {exc}")
        return EXIT_FAILURE
    except LocalError as exc:
        _error(PROG, f"error: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    if args.command == "identity":
        _error(PROG, "identity: choose an action (show, create)")
    elif args.command == "config":
        _error(PROG, "config: choose an action (check)")
    else:
        parser.print_help(sys.stderr)
    return EXIT_USAGE


# --- axiomnet-inspect ----------------------------------------------------------------------------------
_INSPECT_EPILOG = """\
sections: self, peers, sessions, tree, routes, lookups, actors, health, metrics, all (the default: every
section but metrics). A section the daemon does not report prints a one-line empty state.
map: an SVG picture of what the node knows on the Poincare disk (itself, its chain to the root, its peers,
the destinations it looked up), written to -o FILE (default ./axiomnet-map-<key>.svg; "-" for stdout).

exit codes: 0 printed (health: healthy); 1 health degraded; 2 the daemon cannot be asked (not running,
permission, no or bad reply), health unhealthy, or a usage/config error. With --liveness, health exits 0
unless unhealthy or unreachable, then 1 (for a container HEALTHCHECK or a Kubernetes liveness probe).

examples:
  axiomnet-inspect
  axiomnet-inspect peers
  axiomnet-inspect --json sessions
  axiomnet-inspect health || echo "not healthy: $?"
  axiomnet-inspect metrics                  # the Prometheus text exposition
  axiomnet-inspect --admin-socket /run/axiomnet/admin.sock --json all
  axiomnet-inspect map                      # writes ./axiomnet-map-<key>.svg and prints its path
  axiomnet-inspect map -o - > node.svg
"""


def build_inspect_parser() -> argparse.ArgumentParser:
    """The ``axiomnet-inspect`` argument parser."""
    from axiomnet.ops.inspect import COMMANDS

    parser = argparse.ArgumentParser(
        prog=INSPECT_PROG,
        description="Print the state of a running AxiomNet daemon: tables by default, JSON for scripts.",
        epilog=_INSPECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = (*COMMANDS, "map")
    parser.add_argument("section", nargs="?", default="all", choices=commands, metavar="SECTION",
                        help="one of " + ", ".join(commands) + " (default all)")
    _add_client_options(parser, ADMIN_CLIENT_TIMEOUT)
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="map: where to write the SVG (default ./axiomnet-map-<key>.svg; - for stdout)")
    parser.add_argument("--liveness", action="store_true",
                        help="health: exit 0 unless unhealthy or unreachable (then 1)")
    return parser


def _print_health(args: argparse.Namespace, health: dict[str, Any]) -> int:
    status = str(health.get("status"))
    from axiomnet.ops.health import EXIT_CODES

    code = EXIT_CODES.get(status, EXIT_UNREACHABLE)
    if args.json:
        print(jsonlib.dumps({**health, "code": code}))
    else:
        print(status)
        for reason in health.get("reasons") or []:
            print(f"  - {reason}")
    if args.liveness:
        return EXIT_OK if code < EXIT_UNREACHABLE else EXIT_FAILURE
    return code


def _metrics_json(text: str) -> list[dict[str, Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [{"name": family.name, "type": family.type, "help": family.documentation,
             "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]}
            for family in text_string_to_metric_families(text)]


def _write_map(state: dict[str, Any], output: str | None) -> int:
    """``axiomnet-inspect map``: the node's view as SVG, to ``output`` (``-``: stdout) or ./axiomnet-map-<key>.svg."""
    from axiomnet.ops import netmap

    try:
        svg = netmap.render_svg(netmap.view_of(state))
    except netmap.MapError as exc:
        _error(INSPECT_PROG, f"cannot draw the map: {exc}")
        return EXIT_UNREACHABLE
    if output == "-":
        sys.stdout.write(svg)
        return EXIT_OK
    key = str((state.get("self") or {}).get("public_key") or "node")[:8]
    try:
        path = netmap.write_file(Path(output) if output else Path.cwd() / f"axiomnet-map-{key}.svg", svg)
    except OSError as exc:
        _error(INSPECT_PROG, f"cannot write the map to {output or Path.cwd()}: {exc.strerror or exc}")
        return EXIT_FAILURE
    print(path)
    return EXIT_OK


def inspect_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``axiomnet-inspect``; returns the process exit code."""
    from axiomnet.ops import inspect

    parsed = _parse(build_inspect_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args = parsed
    try:
        paths = _client_paths(args)
    except ConfigError as exc:
        _error(INSPECT_PROG, f"config error: {exc}")
        return EXIT_USAGE
    section = args.section
    if args.output is not None and section != "map":
        _error(INSPECT_PROG, "-o/--output is for the map only (axiomnet-inspect map -o FILE)")
        return EXIT_USAGE
    message = {"cmd": "metrics" if section == "metrics" else "state"}
    try:
        _path, reply = admin_client.request_first(paths, message, args.timeout)
        if section == "map":
            return _write_map(reply, args.output)
        if section == "health":
            health = reply.get("health")
            if not isinstance(health, dict):
                from axiomnet.ops.health import evaluate

                health = evaluate(reply).as_dict()
            return _print_health(args, health)
        if section == "metrics":
            text = reply.get("metrics")
            if not isinstance(text, str):
                raise AdminError("bad reply: no metrics in the daemon's answer")
            output = jsonlib.dumps(_metrics_json(text), indent=2) if args.json else text.rstrip("\n")
        elif args.json:
            output = jsonlib.dumps(inspect.section_json(reply, section), indent=2)
        else:
            output = inspect.render(reply, inspect.SECTIONS if section == "all" else (section,))
    except AdminError as exc:
        if section == "health":
            if args.json:
                print(jsonlib.dumps({"status": "unreachable", "code": EXIT_UNREACHABLE, "reasons": [str(exc)]}))
            _error(INSPECT_PROG, str(exc))
            return EXIT_FAILURE if args.liveness else EXIT_UNREACHABLE
        _error(INSPECT_PROG, str(exc))
        return EXIT_UNREACHABLE
    except inspect.BadReply as exc:
        _error(INSPECT_PROG, f"bad reply: {exc}")
        return EXIT_UNREACHABLE
    print(output)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

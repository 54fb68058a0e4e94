"""The ``axiomnet`` and ``axiomnet-inspect`` command-line entry points.

This module sits above the core: it reads the environment, configures logging and may import ``actors``
(lazily, so ``axiomnet identity show`` and ``--help`` work without the actor layer loaded).
Exit codes: 0 success, 1 runtime failure (identity, no daemon, bad reply), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json as jsonlib
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from axiomnet import __version__
from axiomnet.config import LOG_LEVELS, load_config
from axiomnet.constants import ADMIN_REPLY_MAX, ADMIN_TIMEOUT, DEFAULT_UDP_PORT, FILE_IO_TIMEOUT
from axiomnet.errors import ConfigError, IdentityError, IOTimeout, LocalError
from axiomnet.identity import IDENTITY_BACKUP_FILENAME, IDENTITY_FILENAME, load_or_create_identity

PROG = "axiomnet"
INSPECT_PROG = "axiomnet-inspect"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

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


# --- axiomnet ------------------------------------------------------------------------------------------
_MAIN_EPILOG = f"""\
examples:
  axiomnet daemon --listen [::]:{DEFAULT_UDP_PORT} --peer 192.0.2.7:{DEFAULT_UDP_PORT}#<64 hex chars of its key>
  axiomnet daemon --config /etc/axiomnet.toml --no-tun --log-level DEBUG
  axiomnet identity show --data-dir /var/lib/axiomnet --json
  axiomnet demo --duration 5 --size-mb 10
  axiomnet-inspect                      # state of the running daemon

configuration precedence: built-in defaults < TOML file (--config) < AXIOMNET_* environment < flags.
"""

_DAEMON_EPILOG = f"""\
examples:
  axiomnet daemon
  axiomnet daemon --listen 0.0.0.0:{DEFAULT_UDP_PORT} --peer [2001:db8::1]:{DEFAULT_UDP_PORT} --peer 192.0.2.7:9000
  axiomnet daemon --config node.toml --tun axn1 --mtu 1400 --log-json

environment: AXIOMNET_LISTEN, AXIOMNET_PEERS (comma separated), AXIOMNET_TUN, AXIOMNET_NO_TUN=1, AXIOMNET_MTU,
AXIOMNET_DATA_DIR, AXIOMNET_ADMIN_SOCKET, AXIOMNET_LOG_LEVEL, AXIOMNET_LOG_JSON, AXIOMNET_ALLOWED_KEYS (comma
separated), AXIOMNET_DISCOVERABLE; flags win over them.
"""

_IDENTITY_EPILOG = f"""\
The identity ({IDENTITY_FILENAME}, backed up as {IDENTITY_BACKUP_FILENAME}) is created when the data
directory holds none; the address is derived from the public key, so it never changes while the file lives.

examples:
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
    daemon.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    daemon.add_argument("--listen", metavar="HOST:PORT",
                        help=f"UDP address to listen on, a literal IP (default [::]:{DEFAULT_UDP_PORT}, dual stack)")
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
    daemon.add_argument("--log-level", metavar="LEVEL", help="one of " + ", ".join(LOG_LEVELS) + " (default INFO)")
    daemon.add_argument("--log-json", action="store_true", default=None, help="log one JSON object per line")
    daemon.add_argument("--allowed-key", action="append", metavar="PUBKEYHEX",
                        help="accept handshakes only from this key (repeat for more; pinned --peer keys are always "
                             "accepted); without it any key may connect (trust on first use)")
    daemon.add_argument("--no-discoverable", action="store_true", default=None,
                        help="do not tell our public key to peers that probe for it (only peers that already "
                             "know it can connect)")
    daemon.add_argument("--no-offload", action="store_true", default=None,
                        help="read and write the TUN device and the UDP socket one packet at a time (no TSO, "
                             "checksum offload, UDP GSO/GRO); the wire format is the same either way")

    identity = commands.add_parser(
        "identity", help="show this node's identity", description="Identity commands.",
        epilog=_IDENTITY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    identity_commands = identity.add_subparsers(dest="identity_command", metavar="ACTION")
    show = identity_commands.add_parser(
        "show", help="print the public key and overlay address (creating the identity if there is none)",
        description="Print the public key and overlay address, creating the identity if there is none.",
        epilog=_IDENTITY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_dir(show)
    show.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (for data_dir)")
    show.add_argument("--json", action="store_true",
                      help='print {"public_key", "address", "path", "created"} as JSON')

    demo = commands.add_parser(
        "demo", help="run a self-contained two-node demo",
        description="Start two nodes locally, connect them and push traffic through the overlay.",
    )
    demo.add_argument("--duration", type=_positive_float, default=3.0, metavar="SECONDS",
                      help="how long to run traffic (default 3)")
    demo.add_argument("--size-mb", type=_positive_int, default=5, metavar="N",
                      help="megabytes to transfer (default 5)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary files and logs afterwards")
    return parser


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory holding identity.key (default /var/lib/axiomnet for root, "
                             "else $XDG_DATA_HOME/axiomnet or ~/.local/share/axiomnet)")


def _error(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _run_daemon(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {
        "listen": args.listen,
        "peers": args.peer,
        "tun": args.tun,
        "no_tun": args.no_tun,
        "mtu": args.mtu,
        "data_dir": args.data_dir,
        "admin_socket": args.admin_socket,
        "log_level": args.log_level,
        "log_json": args.log_json,
        "allowed_keys": args.allowed_key,
        "discoverable": False if args.no_discoverable else None,
        "offload": False if args.no_offload else None,
    }
    config = load_config(config_file=args.config, env=os.environ, overrides=overrides)
    configure_logging(config.log_level, config.log_json)
    from axiomnet.actors.node import run_daemon  # lazily: the actor layer is only needed to run a node

    code = run_daemon(config)
    return EXIT_OK if code is None else int(code)


def _show_identity(args: argparse.Namespace) -> int:
    config = load_config(config_file=args.config, env=os.environ, overrides={"data_dir": args.data_dir})
    # Recovery warnings and errors must reach the operator; routine INFO lines would repeat our own note.
    quiet = config.log_level if config.log_level in ("ERROR", "CRITICAL") else "WARNING"
    configure_logging(quiet, config.log_json)
    identity, created = load_or_create_identity(config.data_dir, timeout=FILE_IO_TIMEOUT)
    path = config.data_dir / IDENTITY_FILENAME
    if created:
        _error(PROG, f"created a new identity at {path} (back it up: it is this node's address)")
    if args.json:
        print(jsonlib.dumps({"public_key": identity.public_hex, "address": str(identity.address),
                             "path": str(path), "created": created}))
    else:
        print(f"public key: {identity.public_hex}")
        print(f"address:    {identity.address}")
        print(f"path:       {path}")
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
            return _run_daemon(args)
        if args.command == "identity" and args.identity_command == "show":
            return _show_identity(args)
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
        _error(PROG, "identity: choose an action (show)")
    else:
        parser.print_help(sys.stderr)
    return EXIT_USAGE


# --- axiomnet-inspect ----------------------------------------------------------------------------------
class InspectError(Exception):
    """The admin socket could not be asked or did not answer usefully; the message is for the operator."""


def fetch_state(path: Path, timeout: float = ADMIN_TIMEOUT) -> dict[str, Any]:
    """Ask the daemon at ``path`` for its state: one request line out, one JSON line (bounded) back."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise InspectError(f"no daemon running at {path} (start one with `axiomnet daemon`)") from None
        except PermissionError:
            raise InspectError(f"permission denied connecting to {path} (run as the daemon's user or root)") \
                from None
        except TimeoutError:
            raise InspectError(f"the daemon at {path} did not accept the connection within {timeout:g} s") \
                from None
        reply = bytearray()
        try:
            sock.sendall(b'{"cmd": "state"}\n')
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                newline = chunk.find(b"\n")
                reply += chunk if newline < 0 else chunk[:newline]
                if len(reply) > ADMIN_REPLY_MAX:
                    raise InspectError(f"bad reply from the daemon at {path}: longer than {ADMIN_REPLY_MAX} bytes")
                if newline >= 0:
                    break
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise InspectError(f"the daemon at {path} did not answer within {timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise InspectError(f"the daemon at {path} closed the connection before answering") from None
    except OSError as exc:
        raise InspectError(f"cannot talk to the daemon at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not reply.strip():
        raise InspectError(f"the daemon at {path} closed the connection without a reply")
    try:
        state = jsonlib.loads(reply)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InspectError(f"bad reply from the daemon at {path}: not JSON ({exc})") from None
    if not isinstance(state, dict):
        raise InspectError(f"bad reply from the daemon at {path}: expected a JSON object")
    if "error" in state and "self" not in state:
        raise InspectError(f"the daemon at {path} answered with an error: {state['error']}")
    return state


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "/" + "/".join(str(v) for v in value)  # a tree path: the ports from the root ("/" is the root)
    if isinstance(value, dict) and "path" in value:
        return f"{_cell(value.get('path'))} under root {_short_key(value.get('root'))}"
    return str(value)


def _short_key(value: object) -> str:
    return value[:16] if isinstance(value, str) and len(value) > 16 else _cell(value)


def _seconds(value: object) -> str:
    return f"{value:.1f}s" if isinstance(value, (int, float)) and not isinstance(value, bool) else _cell(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def _records(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = state.get(name) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InspectError(f"bad reply: {name!r} is not a list of objects")
    return items


def render_state(state: dict[str, Any]) -> str:
    """Human-readable tables for an admin "state" reply (self / peers / tree / lookups / sessions / actors)."""
    me = state.get("self") or {}
    if not isinstance(me, dict):
        raise InspectError("bad reply: 'self' is not an object")
    lines = ["SELF"]
    for label, value in (
        ("address", _cell(me.get("address"))),
        ("public key", _cell(me.get("public_key"))),
        ("coords", _cell(me.get("coords"))),
        ("listen", _cell(me.get("listen"))),
        ("tun", _cell(me.get("tun"))),
        ("uptime", _seconds(me.get("uptime"))),
    ):
        lines.append(f"  {label:<11} {value}")

    peers = _records(state, "peers")
    lines += ["", f"PEERS ({len(peers)})"]
    lines += _table(
        ("PUBLIC KEY", "ADDRESS", "ENDPOINT", "PORT", "COORDS", "TREE LINK", "RTT MS", "LAST SEEN", "ALIVE"),
        [(_short_key(p.get("public_key")), _cell(p.get("address")), _cell(p.get("endpoint")), _cell(p.get("port")),
          _cell(p.get("coords")), _cell(p.get("tree_link")), _cell(p.get("rtt_ms")), _seconds(p.get("last_seen")),
          _cell(p.get("alive")))
         for p in peers],
    )

    tree = state.get("tree")
    lines += ["", "TREE"]
    if isinstance(tree, dict):
        for label, value in (
            ("root", _short_key(tree.get("root"))),
            ("root seq", _cell(tree.get("root_seq"))),
            ("this is root", _cell(tree.get("is_root"))),
            ("parent", _short_key(tree.get("parent"))),
            ("depth", _cell(tree.get("depth"))),
            ("coords", _cell(tree.get("coords"))),
        ):
            lines.append(f"  {label:<12} {value}")
    else:
        lines.append("  no tree yet")

    raw_lookups = state.get("lookups")
    lookups: dict[str, Any] = raw_lookups if isinstance(raw_lookups, dict) else {}
    cache = _records(lookups, "cache")
    pending = _records(lookups, "pending")
    lines += ["", f"LOOKUPS ({len(cache)} cached, {len(pending)} pending)"]
    lines += _table(
        ("ADDRESS", "ROOT", "COORDS", "EXPIRES IN"),
        [(_cell(r.get("address")), _cell(r.get("root")), _cell(r.get("coords")), _seconds(r.get("expires_in")))
         for r in cache] + [(_cell(p.get("address")), "-", "(looking up)", "-") for p in pending],
    )

    sessions = _records(state, "sessions")
    lines += ["", f"SESSIONS ({len(sessions)})"]
    lines += _table(
        ("PEER", "ENDPOINT", "STATE", "ROLE", "AGE", "RX PKTS", "TX PKTS", "RX BYTES", "TX BYTES", "DROPPED"),
        [(_short_key(s.get("peer")), _cell(s.get("endpoint")), _cell(s.get("state")),
          {True: "initiator", False: "responder"}.get(s.get("initiator"), "-"),  # type: ignore[arg-type]
          _seconds(s.get("age")), _cell(s.get("rx_packets")), _cell(s.get("tx_packets")),
          _cell(s.get("rx_bytes")), _cell(s.get("tx_bytes")), _cell(s.get("dropped")))
         for s in sessions],
    )

    actors = _records(state, "actors")
    lines += ["", f"ACTORS ({len(actors)})"]
    lines += _table(
        ("NAME", "ALIVE", "RESTARTS", "MAILBOX"),
        [(_cell(a.get("name")), _cell(a.get("alive")), _cell(a.get("restarts")), _cell(a.get("mailbox")))
         for a in actors],
    )
    return "\n".join(lines)


def build_inspect_parser() -> argparse.ArgumentParser:
    """The ``axiomnet-inspect`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=INSPECT_PROG,
        description="Print the state of a running AxiomNet daemon (self, peers, sessions, actors).",
        epilog="examples:\n  axiomnet-inspect\n  axiomnet-inspect --admin-socket /run/axiomnet/admin.sock --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--admin-socket", metavar="PATH", help="the daemon's admin Unix socket "
                        "(default: from --config / AXIOMNET_ADMIN_SOCKET / the built-in default)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (for admin_socket)")
    parser.add_argument("--json", action="store_true", help="print the daemon's raw JSON reply")
    parser.add_argument("--timeout", type=_positive_float, default=ADMIN_TIMEOUT, metavar="S",
                        help=f"give up after this many seconds (default {ADMIN_TIMEOUT:g})")
    return parser


def inspect_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``axiomnet-inspect``; returns the process exit code."""
    parsed = _parse(build_inspect_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args = parsed
    try:
        config = load_config(config_file=args.config, env=os.environ,
                             overrides={"admin_socket": args.admin_socket})
    except ConfigError as exc:
        _error(INSPECT_PROG, f"config error: {exc}")
        return EXIT_USAGE
    try:
        state = fetch_state(config.admin_socket, args.timeout)
        output = jsonlib.dumps(state, indent=2) if args.json else render_state(state)
    except InspectError as exc:
        _error(INSPECT_PROG, str(exc))
        return EXIT_FAILURE
    print(output)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fuzz target for the wire, announcement and routed-header decoders: only a RemoteProtocolError may come out.

With atheris installed this is a coverage-guided libFuzzer target; without it, a bounded random loop over
raw bytes and near-valid datagrams / announcements / routed packets (seeded, so a failure can be replayed)::

    python tools/fuzz_wire.py -atheris_runs=200000            # atheris if importable, else the loop
    python tools/fuzz_wire.py --runs 100000 --seconds 60       # the loop's bounds (also caps atheris)
    python tools/fuzz_wire.py --seed 1234                      # replay a loop run

Every run is bounded: by ``--runs`` (default 100000, or ``-atheris_runs=N``) and by ``--seconds`` (default
300). Any other exception, or a decoded message that does not re-encode to itself, is printed with the
input in hex and exits 1. Exit 0 means every input decoded or was refused with RemoteProtocolError.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's axiomnet, not an installed one

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:
    atheris = None  # type: ignore[assignment]

if atheris is not None:
    with atheris.instrument_imports():
        from axiomnet import announce, routed, wire
else:
    from axiomnet import announce, routed, wire

from axiomnet.constants import AEAD_TAG_SIZE, COOKIE_SIZE, HEADER_SIZE, MAX_RECEIVER_INDEX, PROTOCOL_VERSION
from axiomnet.errors import RemoteProtocolError

DEFAULT_RUNS = 100_000
DEFAULT_SECONDS = 300.0


class InvariantBroken(AssertionError):
    """A decoder accepted input that does not re-encode to the same message."""


def check_datagram(data: bytes) -> bool:
    """Decode ``data`` as a datagram; True if accepted. Raises anything but RemoteProtocolError as a bug."""
    try:
        header, body = wire.decode_datagram(data)
    except RemoteProtocolError:
        return False
    rebuilt = wire.encode_header(header.ptype, header.receiver, header.counter, header.route_label)
    if isinstance(body, wire.HandshakeInit):
        rebuilt += wire.encode_handshake_init(body.sender, body.cookie, body.noise)[HEADER_SIZE:]
    elif isinstance(body, wire.HandshakeResp):
        rebuilt += wire.encode_handshake_resp(header.receiver, body.sender, body.noise)[HEADER_SIZE:]
    elif isinstance(body, bytes):
        rebuilt += body
    else:
        raise InvariantBroken(f"decode_datagram returned a {type(body).__name__} body")
    if rebuilt != data:
        raise InvariantBroken("accepted datagram does not re-encode to the same bytes")
    return True


def check_control(data: bytes) -> bool:
    """Decode ``data`` as a tree announcement; True if accepted. Raises anything but RemoteProtocolError."""
    try:
        ann = announce.decode_announcement(data)
    except RemoteProtocolError:
        return False
    if announce.decode_announcement(announce.encode_announcement(ann)) != ann:
        raise InvariantBroken("accepted announcement does not survive a re-encode")
    return True


def check_routed(data: bytes) -> bool:
    """Decode ``data`` as a routed header; True if accepted. Raises anything but RemoteProtocolError."""
    try:
        header = routed.decode_routed(data)
    except RemoteProtocolError:
        return False
    rebuilt = routed.encode_routed(header.kind, root_tag=header.root_tag, dst=header.dst, src=header.src,
                                   dst_path=header.dst_path, src_path=header.src_path,
                                   payload=data[header.offset:], hop_limit=header.hop_limit,
                                   watermark=header.watermark)
    if rebuilt != data:
        raise InvariantBroken("accepted routed packet does not re-encode to the same bytes")
    return True


def test_one_input(data: bytes) -> None:
    """The fuzz target: every decoder on the same bytes (and the inner decoders on a datagram's body)."""
    check_datagram(data)
    check_control(data)
    check_routed(data)
    if len(data) > HEADER_SIZE:
        check_control(data[HEADER_SIZE:])
        check_routed(data[HEADER_SIZE:])


# --- fallback: seeded random inputs near the valid space ------------------------------------------------
def _raw(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([rng.randrange(0, 40), rng.randrange(0, 1500)]))


def _datagram(rng: random.Random) -> bytes:
    ptype = rng.choice([*range(1, 8), *range(1, 8), 0, rng.randrange(8, 16)])
    version = PROTOCOL_VERSION if rng.random() < 0.9 else rng.randrange(16)
    receiver = 0 if ptype == 1 else rng.choice([1, rng.randrange(MAX_RECEIVER_INDEX + 1)])
    if rng.random() < 0.1:
        receiver = rng.choice([0, 1, MAX_RECEIVER_INDEX])
    sizes = {1: 52, 2: 100, 3: 64, 4: COOKIE_SIZE}.get(ptype, AEAD_TAG_SIZE)
    size = max(0, rng.choice([sizes - 1, sizes, sizes + 1, rng.randrange(0, 1200)]))
    body = bytearray(rng.randbytes(size))
    if size >= 4 and rng.random() < 0.7:
        body[0:4] = struct.pack(">I", rng.choice([1, MAX_RECEIVER_INDEX, 0, MAX_RECEIVER_INDEX + 1]))
    header = struct.pack(">IIQ", rng.getrandbits(32), (version << 28) | (ptype << 24) | receiver, rng.getrandbits(64))
    return _mutate(rng, header + bytes(body))


def _control(rng: random.Random) -> bytes:
    hops = tuple(announce.Hop(rng.randbytes(32), rng.randrange(1, 1 << 16), rng.randbytes(64))
                 for _ in range(rng.choice([0, 1, 3, rng.randrange(0, 20)])))
    ann = announce.Announcement(rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(32), rng.randbytes(32),
                                rng.getrandbits(64), rng.randbytes(64), hops, rng.randrange(1 << 16),
                                rng.randbytes(64), None)
    return _mutate(rng, announce.encode_announcement(ann))


def _routed(rng: random.Random) -> bytes:
    def path() -> tuple[int, ...]:
        return tuple(rng.randrange(1, 1 << 16) for _ in range(rng.choice([0, 1, 4, rng.randrange(0, 40)])))

    data = routed.encode_routed(routed.Kind(rng.randrange(1, 5)), root_tag=rng.getrandbits(32),
                                dst=rng.randbytes(16), src=rng.randbytes(16), dst_path=path(), src_path=path(),
                                payload=rng.randbytes(rng.randrange(0, 100)))
    return _mutate(rng, data)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([0, 1, 1, 2, 4])):
        if not buf:
            break
        pos = rng.randrange(len(buf))
        action = rng.random()
        if action < 0.6:
            buf[pos] = rng.randrange(256)
        elif action < 0.8:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 6))
        else:
            del buf[pos]
    if rng.random() < 0.1:
        del buf[rng.randrange(len(buf) + 1) :]
    return bytes(buf)


GENERATORS: tuple[Callable[[random.Random], bytes], ...] = (_raw, _datagram, _datagram, _control, _control,
                                                             _routed, _routed)


def run_random_loop(runs: int, seconds: float, seed: int) -> int:
    """Feed ``runs`` seeded inputs to the target, stopping early after ``seconds``; return an exit status."""
    rng = random.Random(seed)
    started = time.monotonic()
    done = 0
    for done in range(1, runs + 1):
        data = rng.choice(GENERATORS)(rng)
        try:
            test_one_input(data)
        except Exception:
            print(f"fuzz_wire: input #{done} (seed {seed}) crashed the decoders: {data.hex()}", file=sys.stderr)
            traceback.print_exc()
            return 1
        if done % 1024 == 0 and time.monotonic() - started > seconds:
            break
    elapsed = time.monotonic() - started
    print(f"fuzz_wire: {done} inputs in {elapsed:.1f}s (seed {seed}), no crash")
    return 0


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help=f"inputs to try (default {DEFAULT_RUNS})")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="wall-clock cap in seconds")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random loop (default: random)")
    parser.add_argument("--no-atheris", action="store_true", help="use the random loop even if atheris is installed")
    args, rest = parser.parse_known_args(argv)
    for item in list(rest):  # libFuzzer-style -atheris_runs=N / -runs=N also bound the random loop
        if item.startswith(("-atheris_runs=", "-runs=")) and args.runs is None:
            args.runs = int(item.split("=", 1)[1])
    if args.runs is None:
        args.runs = DEFAULT_RUNS
    if args.runs < 1 or args.seconds <= 0:
        parser.error("--runs and --seconds must be positive")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; 0 if nothing but RemoteProtocolError came out, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    args, rest = parse_args(argv)
    if atheris is None or args.no_atheris:
        unknown = [a for a in rest if not a.startswith(("-atheris_runs=", "-runs="))]
        if unknown:
            print(f"fuzz_wire: ignoring libFuzzer options without atheris: {unknown}", file=sys.stderr)
        seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "big")
        return run_random_loop(args.runs, args.seconds, seed)
    libfuzzer = [sys.argv[0], *rest]
    if not any(a.startswith(("-atheris_runs=", "-runs=")) for a in rest):
        libfuzzer.append(f"-atheris_runs={args.runs}")
    if not any(a.startswith("-max_total_time=") for a in rest):
        libfuzzer.append(f"-max_total_time={max(1, int(args.seconds))}")
    atheris.Setup(libfuzzer, test_one_input)
    atheris.Fuzz()  # exits the process: libFuzzer reports a crash with the reproducer file
    return 0


if __name__ == "__main__":
    sys.exit(main())

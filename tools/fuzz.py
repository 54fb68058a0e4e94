#!/usr/bin/env python3
"""Coverage-guided fuzzing of AxiomNet's parsers and state machines (atheris / libFuzzer).

    python tools/fuzz.py --list                                   # the targets (tools/fuzz_targets.py)
    python tools/fuzz.py wire --seconds 3600 --corpus fuzz/wire   # an hour; the corpus grows in fuzz/wire
    python tools/fuzz.py session_receive --runs 200000            # bounded by inputs instead
    python tools/fuzz.py admin_request --replay crash-1234        # re-run saved inputs, print the failure
    python tools/fuzz.py wire --no-atheris --seed 7               # seeded random mutation (no atheris)
    python tools/fuzz.py admin_request -- -max_len=8192           # after --: options for libFuzzer

Every run is bounded by --seconds (default 60) and --runs. The corpus directory (default: a temporary one)
is seeded with the target's valid inputs; libFuzzer adds every input that reaches new code and writes a
crashing input as ``crash-<sha1>`` into --artifacts (default: the corpus directory), which --replay re-runs.
Exit status: 0 no failure, 1 the target failed (the input is printed in hex and saved), 2 bad usage.
Without atheris (or with --no-atheris) the inputs are the seeds mutated at random by a seeded generator.
A final line ``fuzz: TARGET: N inputs in S s, no failure`` reports the work done (parsed by the CI test).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:
    atheris = None

DEFAULT_SECONDS = 60.0


def load_targets(instrument: bool) -> ModuleType:
    """Import tools/fuzz_targets.py (and the axiomnet modules it uses), under coverage instrumentation."""
    if instrument and atheris is not None:
        with atheris.instrument_imports(include=["axiomnet", "fuzz_targets"]):
            import fuzz_targets
    else:
        import fuzz_targets
    return fuzz_targets


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte flips, insertions, deletions, truncations or splices (the fallback's mutator)."""
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        action = rng.random()
        pos = rng.randrange(len(buf) + 1)
        if action < 0.45 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif action < 0.6:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        elif action < 0.75 and buf:
            del buf[pos : pos + rng.randrange(1, 9)]
        elif action < 0.85:
            del buf[pos:]
        elif action < 0.95 and buf:
            value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF])
            buf[pos : pos + 4] = value.to_bytes(4, "big")
        else:
            buf = bytearray(rng.randbytes(rng.randrange(0, 200)))
    return bytes(buf)


def _save(data: bytes, artifacts: Path) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def run_random(target: object, runs: int, seconds: float, seed: int, artifacts: Path) -> int:
    """The fallback: seeds and seeded mutations of them; 0 if nothing failed."""
    rng = random.Random(seed)
    seeds = target.seeds() or [b""]  # type: ignore[attr-defined]
    started = time.monotonic()
    done = 0
    for done in range(1, runs + 1):
        data = seeds[done - 1] if done <= len(seeds) else mutate(rng, rng.choice(seeds))
        try:
            target.run(data)  # type: ignore[attr-defined]
        except Exception:
            saved = _save(data, artifacts)
            print(f"fuzz: {target.name}: input #{done} (seed {seed}) failed; saved as {saved}\n"  # type: ignore[attr-defined]
                  f"input: {data.hex()}", file=sys.stderr)
            traceback.print_exc()
            return 1
        if done % 256 == 0 and time.monotonic() - started > seconds:
            break
    elapsed = time.monotonic() - started
    print(f"fuzz: {target.name}: {done} inputs in {elapsed:.1f} s, no failure (random mutation, seed {seed})")  # type: ignore[attr-defined]
    return 0


def replay(target: object, paths: list[Path]) -> int:
    """Run the target once on each saved input; 1 if any fails (with its traceback)."""
    status = 0
    for path in paths:
        data = path.read_bytes()
        try:
            target.run(data)  # type: ignore[attr-defined]
            print(f"fuzz: {path}: ok")
        except Exception:
            print(f"fuzz: {path}: FAILED (input {data[:64].hex()}...)", file=sys.stderr)
            traceback.print_exc()
            status = 1
    return status


def run_atheris(target: object, args: argparse.Namespace, corpus: Path, artifacts: Path) -> int:
    """libFuzzer in a child process (atheris.Fuzz() exits the process); parse its final statistics."""
    for i, seed in enumerate(target.seeds()):  # type: ignore[attr-defined]
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, args.target, "--libfuzzer-child", "--", str(corpus),
           f"-max_total_time={max(1, int(args.seconds))}", f"-artifact_prefix={artifacts}/",
           "-print_final_stats=1", f"-timeout={args.input_timeout}", "-rss_limit_mb=2048"]
    if args.runs is not None:
        cmd.append(f"-runs={args.runs}")
    if target.dictionary:  # type: ignore[attr-defined]
        tokens = artifacts / f"{args.target}.dict"
        tokens.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'
                                  for token in target.dictionary))  # type: ignore[attr-defined]
        cmd.append(f"-dict={tokens}")
    cmd += args.libfuzzer_args
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    elapsed = time.monotonic() - started
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    runs = int(match.group(1)) if match else 0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        crashes = sorted(artifacts.glob("crash-*")) + sorted(artifacts.glob("timeout-*")) + sorted(artifacts.glob("oom-*"))
        print(f"fuzz: {args.target}: FAILED after {runs} inputs; reproduce with: python tools/fuzz.py "
              f"{args.target} --replay {' '.join(map(str, crashes)) or '<artifact>'}", file=sys.stderr)
        return 1
    corpus_size = len(list(corpus.iterdir()))
    print(f"fuzz: {args.target}: {runs} inputs in {elapsed:.1f} s, no failure (atheris, corpus {corpus_size} files)")
    return 0


def libfuzzer_child(target: object, libfuzzer_args: list[str]) -> None:
    """Inside the child: hand the instrumented target to libFuzzer (never returns)."""

    def one_input(data: bytes) -> None:
        target.run(data)  # type: ignore[attr-defined]

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", help="a target name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="wall-clock bound (default 60)")
    parser.add_argument("--runs", type=int, default=None, help="stop after this many inputs")
    parser.add_argument("--corpus", type=Path, default=None, help="corpus directory (kept; default: temporary)")
    parser.add_argument("--artifacts", type=Path, default=None, help="where failing inputs are saved")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fallback (default: random)")
    parser.add_argument("--no-atheris", action="store_true", help="use the seeded random fallback")
    parser.add_argument("--input-timeout", type=int, default=10, help="seconds one input may take (libFuzzer)")
    parser.add_argument("--replay", type=Path, nargs="+", default=None, help="re-run saved inputs and exit")
    parser.add_argument("--libfuzzer-child", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    use_atheris = atheris is not None and not args.no_atheris and args.replay is None
    args.libfuzzer_args = extra  # e.g. -- -max_len=8192 -dict=FILE, passed on to libFuzzer
    module = load_targets(instrument=use_atheris and args.libfuzzer_child)
    if args.list or args.target is None:
        for name, t in sorted(module.TARGETS.items()):
            print(f"{name:20s} {t.doc}")
        return 0 if args.list else 2
    target = module.TARGETS.get(args.target)
    if target is None:
        parser.error(f"unknown target {args.target!r}; known: {', '.join(sorted(module.TARGETS))}")
    if args.libfuzzer_child:
        libfuzzer_child(target, extra)
        return 0
    if args.seconds <= 0 or (args.runs is not None and args.runs < 1):
        parser.error("--seconds and --runs must be positive")
    if args.replay is not None:
        return replay(target, args.replay)
    with tempfile.TemporaryDirectory(prefix=f"axn-fuzz-{args.target}-") as tmp:
        corpus = args.corpus or Path(tmp) / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        artifacts = args.artifacts or corpus
        if use_atheris:
            return run_atheris(target, args, corpus, artifacts)
        seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
        return run_random(target, args.runs or 10**12, args.seconds, seed, artifacts)


if __name__ == "__main__":
    sys.exit(main())

"""tools/fuzz.py: a short coverage-guided run of every target (CI), and every saved crash input replayed.

Long runs: ``python tools/fuzz.py TARGET --seconds 3600 --corpus DIR`` (figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tools" / "fuzz.py"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
CI_SECONDS = 3


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(FUZZ.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, FUZZ.parent / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(FUZZ.parent))


TARGETS = load("fuzz_targets").TARGETS


def test_every_untrusted_input_path_has_a_target():
    assert {"wire", "announcement", "tree_receive", "routed", "handshake_payload", "identity", "session_receive",
            "responder_receive", "admin_request", "beacon", "observed_endpoint", "candidates", "announce_parts"} <= set(TARGETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_short_coverage_guided_run_finds_nothing(name, tmp_path):
    """A few seconds of atheris per target (the tool falls back to seeded mutation without atheris)."""
    proc = subprocess.run([sys.executable, str(FUZZ), name, "--seconds", str(CI_SECONDS), "--corpus",
                           str(tmp_path / "corpus")], capture_output=True, text=True, timeout=CI_SECONDS + 120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    match = re.search(rf"fuzz: {name}: (\d+) inputs in [\d.]+ s, no failure", proc.stdout)
    assert match, proc.stdout[-2000:]
    assert int(match.group(1)) >= 100  # it really ran


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_seeds_are_accepted_inputs(name):
    """Every target's seed corpus runs clean (so a failure is the fuzzer's find, not a broken seed)."""
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds
    for seed in seeds:
        target.run(seed)


def _saved_inputs() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", _saved_inputs(), ids=lambda p: f"{p.parent.name}/{p.name[:20]}")
def test_fuzz_crash_regression_input_is_handled(path):
    """Every input a fuzz run ever failed on (tests/fuzz_regressions/TARGET/*) now passes its target."""
    TARGETS[path.parent.name].run(path.read_bytes())


def test_fuzz_tool_reports_a_failing_target_and_saves_the_input(tmp_path, capsys):
    tool = load("fuzz")
    calls = []

    class Broken:
        name = "broken"

        @staticmethod
        def seeds():
            return [b"seed"]

        @staticmethod
        def run(data):
            calls.append(data)
            if len(calls) == 5:
                raise IndexError("simulated parser bug")

    assert tool.run_random(Broken, 100, 30.0, seed=1, artifacts=tmp_path) == 1
    (saved,) = tmp_path.glob("crash-*")
    assert saved.read_bytes() == calls[-1]
    assert "failed" in capsys.readouterr().err
    assert tool.replay(Broken, [saved]) == 0  # the 6th call does not fail: replay runs the input again


@pytest.mark.slow
def test_fuzz_tool_lists_targets_and_refuses_unknown_ones():
    listed = subprocess.run([sys.executable, str(FUZZ), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "session_receive" in listed.stdout
    bad = subprocess.run([sys.executable, str(FUZZ), "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown target" in bad.stderr

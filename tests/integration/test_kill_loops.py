"""Kill loops: the daemon SIGKILLed at random moments, 200 times in CI; it always restarts with the same valid
identity and works. The loops live in tools/chaos.py (long mode: --kills N --traffic-kills M); a kill of a
starting daemon costs a fork (a warm fork server starts each daemon), so most of the 200 are cheap.

Kills of a starting daemon land before its data directory exists, inside key creation, or after; after each
one the key files are valid or absent, never partial; every 20th survivor is started for real and must come
up with the same identity. The rest are kills during handshakes and traffic with a peer.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CHAOS = Path(__file__).resolve().parents[2] / "tools" / "chaos.py"


def load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("axn_chaos_tool", CHAOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


chaos = load_chaos()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


@pytest.fixture
def kill_loop(pair, workdir):
    loop = chaos.KillLoop(pair.a, pair.ip_a, workdir / "bare", random.Random(20261202))
    yield loop
    loop.close()


def test_chaos_kill_process_during_key_write_100_times(kill_loop):
    """Seed chaos 'kill process during key write', 100 times: fresh data directory each time, SIGKILL at a
    random moment of start-up (before, during and after key creation); the key is always loadable or absent."""
    kill_loop.during_key_creation(100)
    stats = kill_loop.stats
    print(f"landed: {stats.landed}, start takes {kill_loop.up_seconds:.2f} s, peak RSS {stats.peak_rss_kib} KiB")
    assert stats.kills == 100 and stats.full_restarts == 100 // chaos.FULL_START_EVERY
    assert sum(stats.landed.values()) == 100
    with_key = sum(n for state, n in stats.landed.items() if state.startswith(("complete", "one-file")))
    assert 0 < with_key < 100 and stats.landed.get("before-directory", 0) < 100  # kills on both sides of it


def test_kill_loop_80_kills_during_start_keep_one_identity(kill_loop):
    """One data directory, 80 kills at random moments of start-up: the identity never changes and every 20th
    survivor, started for real, comes up with it."""
    kill_loop.same_identity(80)
    stats = kill_loop.stats
    print(f"landed: {stats.landed}")
    assert stats.kills == 80 and stats.full_restarts == 80 // chaos.FULL_START_EVERY
    assert stats.landed.get("complete", 0) >= 70  # after the first start the identity is always there


def test_kill_loop_20_kills_during_handshakes_and_traffic(pair, workdir):
    """Daemon B is SIGKILLed 20 times while A pings it, at random moments from its restart's handshake to
    steady traffic; it restarts with the same address each time and the overlay comes back."""
    stats = chaos.kill_during_traffic(pair, workdir, random.Random(7), 20)
    print(f"landed: {stats.landed}, surviving peer peak RSS {stats.peak_rss_kib} KiB")
    assert stats.traffic_kills == 20 and stats.landed == {"complete": 20}


def test_kill_loop_long_mode_of_the_chaos_tool_runs():
    proc = subprocess.run([sys.executable, str(CHAOS), "--rounds", "0", "--kills", "4", "--traffic-kills", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "kill loop: RESULT PASS" in proc.stdout and "4 kills during start-up" in proc.stdout

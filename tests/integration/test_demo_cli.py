"""`axiomnet demo` refuses politely without root (no root needed to test that)."""

from __future__ import annotations

import argparse

import pytest

from axiomnet.lab import demo


def test_demo_without_root_explains_and_returns_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.run_demo(argparse.Namespace(duration=1.0, size_mb=1)) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "sudo" in err


def test_demo_uses_defaults_for_missing_arguments(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.run_demo(argparse.Namespace()) == 2
    assert demo.NOT_ROOT_MESSAGE in capsys.readouterr().err


def test_demo_names_the_package_of_a_missing_ping(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    real_which = demo.shutil.which
    monkeypatch.setattr(demo.shutil, "which", lambda tool: None if tool == "ping" else real_which(tool))
    assert demo.run_demo(argparse.Namespace(duration=1.0, size_mb=1)) == 2
    assert "iputils-ping" in capsys.readouterr().err


def test_demo_refuses_a_ring_of_two(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    assert demo.run_demo(argparse.Namespace(nodes=2, topology="ring")) == 2
    assert "a ring needs at least 3 nodes" in capsys.readouterr().err


# --- the demo for real (root, namespaces) ------------------------------------------------------------------
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from axiomnet.lab import namespaces  # noqa: E402


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # the demo writes its network map to the current directory


def _namespaces_named_in(output: str) -> set[str]:
    return set(re.findall(r"\((axnt-[0-9a-f]{6}-n\d+)\)", output))


@pytest.mark.netns
@pytest.mark.slow
def test_default_demo_passes_and_leaves_nothing_behind(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.run_demo(argparse.Namespace(seconds=1.0, size_mb=1)) == 0
    out = capsys.readouterr().out
    for line in ("PASS  links up", "PASS  ping A -> B", "PASS  TCP 1 MB A -> B", "PASS  daemon node-A stopped",
                 "RESULT: PASS"):
        assert line in out, out[-3000:]
    spaces = _namespaces_named_in(out)
    assert len(spaces) == 2 and not spaces & set(namespaces.list_namespaces())


@pytest.mark.netns
@pytest.mark.slow
def test_a_failed_check_fails_the_demo_and_still_cleans_up(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from axiomnet.lab import traffic

    def broken_transfer(*args, **kwargs):  # type: ignore[no-untyped-def]
        return traffic.TransferResult(1_000_000, None, 0, None, None, "connection reset (simulated)")

    monkeypatch.setattr(demo.traffic, "tcp_transfer", broken_transfer)
    assert demo.run_demo(argparse.Namespace(seconds=1.0, size_mb=1)) == 1
    out = capsys.readouterr().out
    assert "FAIL  TCP 1 MB A -> B          connection reset (simulated)" in out and "RESULT: FAIL" in out
    assert "daemon logs kept in" in out
    spaces = _namespaces_named_in(out)
    assert len(spaces) == 2 and not spaces & set(namespaces.list_namespaces())


@pytest.mark.netns
@pytest.mark.slow
def test_demo_with_4_nodes_in_a_line_in_a_short_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code = demo.run_demo(argparse.Namespace(nodes=4, topology="line", seconds=1.0, size_mb=1))
    out = capsys.readouterr().out
    spaces = _namespaces_named_in(out)
    assert len(spaces) == 4 and not spaces & set(namespaces.list_namespaces())  # cleaned up, whatever the result
    for pair in ("A -> B", "A -> C", "A -> D", "B -> C", "B -> D", "C -> D"):
        assert f"PASS  ping {pair}" in out, out[-3000:]
    assert "PASS  TCP 1 MB A -> D" in out
    assert code == 0 and "RESULT: PASS" in out
    # The network map: every node's view merged, each node once, by its address.
    import xml.etree.ElementTree as ET

    written = Path.cwd() / demo.MAP_FILE
    assert f"network map: {written}" in out
    addresses = re.findall(r"overlay (fc[0-9a-f:]+)", out)
    found = {e.get("data-address") for e in ET.parse(written).getroot().iter() if "node" in (e.get("class") or "")}
    assert len(addresses) == 4 and found == set(addresses)


@pytest.mark.netns
@pytest.mark.slow
def test_ctrl_c_stops_the_demo_and_removes_everything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-m", "axiomnet", "demo", "--nodes", "3", "--seconds", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[3/6]"):
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "interrupted: the demo's namespaces and processes have been removed" in output
    run_ids = set(re.findall(r"tun axn([0-9a-f]{6})t", output))
    assert len(run_ids) == 1, output
    (run_id,) = run_ids
    assert not [name for name in namespaces.list_namespaces() if run_id in name]

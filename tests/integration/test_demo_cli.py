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

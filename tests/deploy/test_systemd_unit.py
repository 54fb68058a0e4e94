"""packaging/axiomnet.service passes `systemd-analyze verify` and asks for what the daemon needs."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "axiomnet.service"
INSTALLED_BINARY = "/opt/axiomnet/bin/axiomnet"  # where the unit's install notes put the daemon


def _settings() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(UNIT)
    return {f"{section}.{key}": value for section in parser.sections() for key, value in parser[section].items()}


def test_unit_asks_for_notify_restart_capability_and_sandbox() -> None:
    settings = _settings()
    expected = {
        "Service.Type": "notify",
        "Service.Restart": "on-failure",
        "Service.AmbientCapabilities": "CAP_NET_ADMIN",
        "Service.ProtectSystem": "strict",
        "Service.StateDirectory": "axiomnet",
        "Service.RuntimeDirectory": "axiomnet",
        "Service.RuntimeDirectoryMode": "0700",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
    }
    assert {key: settings.get(key) for key in expected} == expected
    assert settings["Service.ExecStart"].startswith(INSTALLED_BINARY + " daemon ")


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze is missing (apt-get install systemd) but CI requires this test")
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    daemon = shutil.which("axiomnet")
    assert daemon is not None, "the axiomnet command is not installed (pip install -e .)"
    # verify checks that ExecStart's program exists: point it at this machine's installed command.
    unit = tmp_path / "axiomnet.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY + " ", daemon + " "))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "axiomnet.service" not in proc.stderr, proc.stderr
    # The check has teeth: a misspelt directive in the same unit is reported.
    broken = tmp_path / "broken" / "axiomnet.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-failur"))
    proc = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert "on-failur" in proc.stderr

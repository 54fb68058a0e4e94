"""The core, the operator face, the actors and the lab type-check (mypy), so a wrong type at an interface fails
CI, not a daemon."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# pyproject's package-dir: the folder each installed package comes from
PACKAGE_DIRS = {"axiomnet": "axiomnet", "axiomnet/ops": "ops", "axiomnet/actors": "actors", "axiomnet/lab": "lab"}


@pytest.mark.slow
def test_core_ops_actors_and_lab_type_check(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True).returncode != 0:
        pytest.fail("mypy is part of the test extra: pip install -e '.[test]'")
    # mypy cannot follow setuptools' editable-install finder, so it reads the tree laid out as it installs.
    for target, folder in PACKAGE_DIRS.items():
        shutil.copytree(ROOT / folder, tmp_path / target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mypy", "-p", "axiomnet"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=400)
    report = proc.stdout.replace("axiomnet/ops/", "ops/").replace("axiomnet/actors/", "actors/")
    assert proc.returncode == 0, report.replace("axiomnet/lab/", "lab/") + proc.stderr
    assert "Success" in proc.stdout

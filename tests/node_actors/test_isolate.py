"""The daemon's identity load in a child process: same results and errors; a child stuck on a hung file system
is abandoned on time, so the daemon can exit (the FUSE test in tests/integration/test_faults.py is the real one)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from axiomnet.errors import CorruptIdentity, IdentityError, InsecureIdentityPermissions, IOTimeout
from axiomnet.ops.identity_store import IDENTITY_FILENAME, load_identity
from axiomnet.actors import isolate


def test_isolated_load_creates_then_loads_the_same_identity(tmp_path: Path) -> None:
    first, created = isolate.load_or_create_identity_isolated(tmp_path / "node")
    again, created_again = isolate.load_or_create_identity_isolated(tmp_path / "node")
    assert (created, created_again) == (True, False)
    assert first == again == load_identity(tmp_path / "node" / IDENTITY_FILENAME)


def test_errors_in_the_child_are_raised_in_the_parent_with_their_class(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    os.chmod(data_dir, 0o777)
    with pytest.raises(InsecureIdentityPermissions, match="chmod 700"):
        isolate.load_or_create_identity_isolated(data_dir)


def test_a_child_error_is_raised_as_its_nearest_listed_class_whatever_its_own_name(tmp_path: Path, monkeypatch) -> None:
    class FoundLaterInTheFile(CorruptIdentity):  # a class the parent's table does not list: its parent's type wins
        pass

    def corrupt(data_dir: Path, timeout: float):
        raise FoundLaterInTheFile("checksum mismatch")

    monkeypatch.setattr(isolate, "load_or_create_identity", corrupt)
    with pytest.raises(CorruptIdentity, match="checksum mismatch"):
        isolate.load_or_create_identity_isolated(tmp_path / "node")


def test_a_child_that_never_answers_is_abandoned_within_the_bound(tmp_path: Path, monkeypatch) -> None:
    def stuck(data_dir: Path, timeout: float):  # in the child: ignores its own timeout, like a D-state syscall
        time.sleep(60)

    monkeypatch.setattr(isolate, "load_or_create_identity", stuck)
    started = time.monotonic()
    with pytest.raises(IOTimeout, match="did not finish within 0.5 s"):
        isolate.load_or_create_identity_isolated(tmp_path / "node", timeout=0.5)
    assert time.monotonic() - started < 0.5 + isolate._CHILD_GRACE + 2.0


def test_a_child_that_dies_without_a_reply_is_an_identity_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(isolate, "load_or_create_identity", lambda data_dir, timeout: os._exit(3))
    with pytest.raises(IdentityError, match="died"):
        isolate.load_or_create_identity_isolated(tmp_path / "node", timeout=5.0)


def test_without_a_child_it_still_loads_in_process(tmp_path: Path, monkeypatch) -> None:
    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(isolate.os, "fork", no_fork)
    identity, created = isolate.load_or_create_identity_isolated(tmp_path / "node")
    assert created and identity == load_identity(tmp_path / "node" / IDENTITY_FILENAME)

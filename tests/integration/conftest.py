"""Fixtures for tests that need root and network namespaces (marked ``netns``).

Such tests are skipped, with the reason, where namespaces cannot be used (not root, no `ip netns`), except
when CI=true or AXIOMNET_REQUIRE_NETNS=1: CI runs as root, so there a missing capability fails the test
instead of letting the suite pass without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from axiomnet.lab import namespaces


def _netns_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("AXIOMNET_REQUIRE_NETNS") == "1"


@pytest.fixture(scope="session")
def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None."""
    return namespaces.netns_unavailable_reason()


@pytest.fixture(scope="session", autouse=True)
def _leftover_cleanup(netns_unavailable: str | None) -> Iterator[None]:
    """Remove namespaces left by crashed earlier runs before the session, and by this one after it."""
    if netns_unavailable is None:
        namespaces.cleanup_leftovers()
    yield
    if netns_unavailable is None:
        namespaces.cleanup_leftovers(include_own=True)


@pytest.fixture(autouse=True)
def _needs_netns(request: pytest.FixtureRequest, netns_unavailable: str | None) -> None:
    if request.node.get_closest_marker("netns") is None or netns_unavailable is None:
        return
    if _netns_required():
        pytest.fail(f"network-namespace test cannot run here but CI requires it: {netns_unavailable}")
    pytest.skip(f"network-namespace test skipped: {netns_unavailable}")


@pytest.fixture
def nat_lab() -> Iterator[namespaces.NetnsLab]:
    """A fresh lab for tests that build NATs (lab/nat.py needs nftables): skipped with the reason where `nft` is
    missing, failed instead where CI requires every namespace test to run."""
    from axiomnet.lab import nat

    reason = nat.nat_unavailable_reason()
    if reason is not None:
        if _netns_required():
            pytest.fail(f"NAT test cannot run here but CI requires it: {reason}")
        pytest.skip(reason)
    with namespaces.NetnsLab(stop_grace=2.0) as built:
        yield built


@pytest.fixture
def pair() -> Iterator[namespaces.NetnsPair]:
    """Two fresh namespaces joined by a veth; removed after the test whatever happened."""
    with namespaces.NetnsPair(stop_grace=2.0) as p:
        yield p

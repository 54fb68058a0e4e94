"""Receiver indices: each owner picks its own, the dispatcher only routes by them (no I/O, no blocking call).

A receiver index (24 bits, docs/PROTOCOL.md §3.1.1) names a half-open handshake or a keypair at its node.
As aioquic's connection picks its own connection IDs and reports them (``ConnectionIdIssued`` /
``ConnectionIdRetired``), a Session or the HandshakeResponder picks its indices with an injected random
source through :class:`LocalIndices` and reports them as :class:`IndexIssued` / :class:`IndexRetired`
commands; the owner's actor turns them into BindIndex / ReleaseIndex tells to the socket actor. Nobody asks
anybody for an index, so no actor ever waits on another for one.

Owners pick independently, so two of them can pick the same index. The dispatcher (:class:`IndexTable`,
kept by the socket actor) refuses a bind of an index another owner holds, and the refused owner drops what
it built on that index and picks again (``Session.index_refused``, ``HandshakeResponder.index_refused``).
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from axiomnet.constants import MAX_RECEIVER_INDEX


POOL_WORDS = 256  # 32-bit words drawn from the kernel at once (one 1 KiB os.urandom read)


class PooledRandom(random.SystemRandom):
    """SystemRandom (the kernel's random bytes, no state to predict) whose draws of up to 32 bits come from a pool
    refilled POOL_WORDS words at a time: an index pick was one os.urandom system call, 10% of a 10,000-session
    daemon's peer-manager samples (each rekey picks indices on both sides). Larger draws (challenges, keys) read the
    kernel directly, as SystemRandom does. Safe to share between threads: a word is taken with one deque.popleft
    (atomic), so no two draws ever get the same word; refills that race only add words."""

    def __init__(self) -> None:
        super().__init__()
        self._words: deque[int] = deque()

    def getrandbits(self, k: int) -> int:
        if not 0 < k <= 32:
            return super().getrandbits(k)
        words = self._words
        while True:
            try:
                return words.popleft() >> (32 - k)
            except IndexError:
                block = os.urandom(4 * POOL_WORDS)
                words.extend(int.from_bytes(block[i:i + 4], "little") for i in range(0, len(block), 4))


@dataclass(frozen=True)
class IndexIssued:
    """The owner started using ``index``: route datagrams for it here (before sending anything naming it)."""

    index: int


@dataclass(frozen=True)
class IndexRetired:
    """The owner no longer uses ``index``: stop routing it here."""

    index: int


IndexCommand = IndexIssued | IndexRetired


class LocalIndices:
    """The receiver indices one owner holds: picked at random, never one it already holds, reported as commands.

    ``adopt`` takes an index whose routing another owner moves over (a completed responder handshake) and
    ``hand_over`` gives one away the same way: neither is reported, the mover tells the dispatcher.
    """

    __slots__ = ("_rng", "_live", "_commands")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._live: set[int] = set()
        self._commands: list[IndexCommand] = []

    def __contains__(self, index: int) -> bool:
        return index in self._live

    def __len__(self) -> int:
        return len(self._live)

    def pick(self) -> int:
        """A fresh index in 1..2^24-1 that this owner does not hold; reported as IndexIssued."""
        live = self._live
        randint = self._rng.randint
        while True:
            index = randint(1, MAX_RECEIVER_INDEX)
            if index not in live:
                live.add(index)
                self._commands.append(IndexIssued(index))
                return index

    def release(self, index: int) -> None:
        """Stop using ``index`` (reported as IndexRetired); ValueError if it is not held (a local bug)."""
        if index not in self._live:
            raise ValueError(f"index {index} released but not held")
        self._live.remove(index)
        self._commands.append(IndexRetired(index))

    def forget(self, index: int) -> bool:
        """Drop ``index`` without a report: the dispatcher refused it, so it was never ours. True if held."""
        if index not in self._live:
            return False
        self._live.remove(index)
        self._commands = [c for c in self._commands if c.index != index]
        return True

    def adopt(self, index: int) -> None:
        """Take over ``index`` from another owner (no report: the mover re-routes it)."""
        self._live.add(index)

    def hand_over(self, index: int) -> None:
        """Give ``index`` away to another owner (no report: the mover re-routes it)."""
        self._live.discard(index)

    def take_commands(self) -> list[IndexCommand]:
        """Commands since the last call, oldest first (the order matters: a release may precede a re-issue)."""
        commands, self._commands = self._commands, []
        return commands


Owner = TypeVar("Owner", bound=Hashable)


class IndexTable(Generic[Owner]):
    """The dispatcher's view: which owner each index is routed to; refuses a bind of an index held by another.

    Changed in place, one key at a time, by its one writer (the socket actor). A reader thread routes through
    :meth:`view`, a read-only view of the live table: it only looks single keys up, and a lookup never sees a
    half-made change (one dict operation each, under the interpreter's lock), so a bind is routed from the next
    datagram on. The table used to be copied whole on every change for the reader; at 10,000 sessions a rekey
    every REKEY_AFTER_TIME each binds, moves and releases an index about 250 times a second, each copy O(sessions).
    ``snapshot()`` is an immutable copy, for whoever must iterate (tests, inspection).
    """

    __slots__ = ("_owners", "_view")

    def __init__(self) -> None:
        self._owners: dict[int, Owner] = {}
        self._view: Mapping[int, Owner] = MappingProxyType(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, index: int) -> Owner | None:
        """Who ``index`` is routed to, or None."""
        return self._owners.get(index)

    def view(self) -> Mapping[int, Owner]:
        """The live table, read-only: for lookups of single keys from another thread (never iterate it there)."""
        return self._view

    def snapshot(self) -> Mapping[int, Owner]:
        """An immutable copy of the table as it is now (O(indices): not for a per-datagram path)."""
        return MappingProxyType(dict(self._owners))

    def bind(self, index: int, owner: Owner) -> bool:
        """Route ``index`` to ``owner``; False (nothing changed) if another owner holds it."""
        held = self._owners.get(index)
        if held is not None:
            return held == owner
        self._owners[index] = owner
        return True

    def move(self, index: int, old: Owner, new: Owner) -> bool:
        """Re-route ``index`` from ``old`` (or from nobody) to ``new``; False if a third owner holds it."""
        held = self._owners.get(index)
        if held is not None and held != old and held != new:
            return False
        if held != new:
            self._owners[index] = new
        return True

    def release(self, index: int, owner: Owner) -> bool:
        """Stop routing ``index`` if ``owner`` holds it; False otherwise (a stale release changes nothing)."""
        if index not in self._owners or self._owners[index] != owner:
            return False
        del self._owners[index]
        return True

    def release_owner(self, owner: Owner) -> list[int]:
        """Stop routing every index ``owner`` holds (it crashed or stopped); the indices released."""
        stale = [index for index, held in self._owners.items() if held == owner]
        for index in stale:
            del self._owners[index]
        return stale

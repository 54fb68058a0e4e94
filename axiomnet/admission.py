"""Admission: which completed handshakes get one of the node's session slots (no I/O, time passed in).

A handshake proves a key, not that the key deserves a slot: anyone can mint keys. So a new session is
admitted by class (docs/PROTOCOL.md §3.6):

* **named** — a configured (static) peer, a peer whose key the operator pinned, or a key in ``allowed_keys``:
  always gets a slot; when the table is full, the least recently active *unnamed inbound* session is evicted.
* **unnamed** — any other key (trust on first use): at most ``max_per_source`` sessions per source (IPv4
  address, IPv6 /64: :func:`axiomnet.cookie.source_key`) and ``max_unpinned`` in all, so one host with many
  keys, or many hosts, cannot fill the table; past a bound the newcomer is refused (it never evicts).

The caller (the peer manager) keys sessions by any hashable id and reports activity with :meth:`touch`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

from axiomnet.constants import MAX_SESSIONS, MAX_SESSIONS_PER_SOURCE, MAX_UNPINNED_SESSIONS


@dataclass(frozen=True)
class Admit:
    """Create the session; first evict ``evict`` (a session id) when it is not None."""

    evict: Hashable | None = None


@dataclass(frozen=True)
class Refuse:
    """Create nothing; ``reason`` is the counter to bump (refused_session_limit, ..._source_limit, ..._unpinned_limit)."""

    reason: str


class _Entry:
    __slots__ = ("source", "named", "inbound", "heard")

    def __init__(self, source: bytes, named: bool, inbound: bool, heard: float) -> None:
        self.source = source
        self.named = named
        self.inbound = inbound
        self.heard = heard


class Admission:
    """The session table's occupancy by class, and the admission decision for a newcomer."""

    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        max_unpinned: int = MAX_UNPINNED_SESSIONS,
        max_per_source: int = MAX_SESSIONS_PER_SOURCE,
    ) -> None:
        if max_sessions < 1 or max_unpinned < 0 or max_per_source < 0:
            raise ValueError("session bounds must be positive")
        self.max_sessions = max_sessions
        self.max_unpinned = min(max_unpinned, max_sessions)
        self.max_per_source = max_per_source
        self._entries: dict[Hashable, _Entry] = {}
        self._unnamed_by_source: Counter[bytes] = Counter()
        self._unnamed = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unnamed(self) -> int:
        """Sessions held by keys nobody named."""
        return self._unnamed

    def from_source(self, source: bytes) -> int:
        """Unnamed sessions admitted from ``source``."""
        return self._unnamed_by_source[source]

    def decide(self, *, named: bool, source: bytes) -> Admit | Refuse:
        """Whether a newcomer of this class from ``source`` gets a slot (and whom it evicts); changes nothing."""
        if not named:
            if len(self._entries) >= self.max_sessions:
                return Refuse("refused_session_limit")
            if self._unnamed_by_source[source] >= self.max_per_source:
                return Refuse("refused_source_limit")
            if self._unnamed >= self.max_unpinned:
                return Refuse("refused_unpinned_limit")
            return Admit()
        if len(self._entries) < self.max_sessions:
            return Admit()
        victim = self._least_recently_active_unnamed_inbound()
        return Admit(victim) if victim is not None else Refuse("refused_session_limit")

    def add(self, sid: Hashable, *, named: bool, source: bytes, inbound: bool, now: float) -> None:
        """Record an admitted (or configured) session ``sid``; replaces an entry of the same id."""
        self.remove(sid)
        self._entries[sid] = _Entry(source, named, inbound, now)
        if not named:
            self._unnamed += 1
            self._unnamed_by_source[source] += 1

    def remove(self, sid: Hashable) -> None:
        """Forget session ``sid`` (stopped, expired, evicted); unknown ids are ignored."""
        entry = self._entries.pop(sid, None)
        if entry is not None and not entry.named:
            self._unnamed -= 1
            self._unnamed_by_source[entry.source] -= 1
            if not self._unnamed_by_source[entry.source]:
                del self._unnamed_by_source[entry.source]

    def touch(self, sid: Hashable, heard: float) -> None:
        """Session ``sid`` heard its peer at ``heard``."""
        entry = self._entries.get(sid)
        if entry is not None and heard > entry.heard:
            entry.heard = heard

    def _least_recently_active_unnamed_inbound(self) -> Hashable | None:
        victim: Hashable | None = None
        oldest = float("inf")
        for sid, entry in self._entries.items():
            if not entry.named and entry.inbound and entry.heard < oldest:
                victim, oldest = sid, entry.heard
        return victim

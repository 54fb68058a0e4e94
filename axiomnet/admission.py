"""Admission: which completed handshakes get one of the node's session slots (no I/O, time passed in).

A handshake proves a key, not that the key deserves a slot: anyone can mint keys. So a new session is
admitted by class (docs/PROTOCOL.md §3.6):

* **named** — a configured (static) peer, a peer whose key the operator pinned, or a key in ``allowed_keys``:
  always gets a slot; when the table is full, a stranger is evicted for it (below). Named sessions are never
  evicted.
* **unnamed** — any other key (trust on first use): admitted while the table has room and fewer than
  ``max_unpinned`` unnamed sessions exist, whatever its source holds (ten nodes behind one NAT all get in).
  When there is no room, the newcomer takes the slot of a stranger only from a source (IPv4 address, IPv6 /64:
  :func:`axiomnet.cookie.source_key`) that holds at least two more strangers' slots than its own source does;
  otherwise it is refused. So under pressure slots are shared out by source (max-min fair): a host minting keys
  cannot push out other hosts' peers, whose sources always hold fewer slots than it does, and loses its own slots
  to every newcomer from elsewhere. How fast one source opens strangers' sessions is bounded (a burst, then a
  rate); how many it holds is not.

The stranger evicted is always the least recently active inbound unnamed session (one that dialled us) of the
source holding the most such sessions. The caller (the peer manager) keys sessions by any hashable id and reports
activity with :meth:`touch`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from axiomnet.constants import MAX_SESSIONS, MAX_UNPINNED_SESSIONS, STRANGER_BURST_PER_SOURCE, STRANGER_RATE_PER_SOURCE
from axiomnet.cookie import SourceRateLimiter


@dataclass(frozen=True)
class Admit:
    """Create the session; first evict ``evict`` (a session id) when it is not None."""

    evict: Hashable | None = None


@dataclass(frozen=True)
class Refuse:
    """Create nothing; ``reason`` is the counter to bump (refused_session_limit, refused_unpinned_limit, ...)."""

    reason: str


class _Entry:
    __slots__ = ("source", "named", "inbound", "heard")

    def __init__(self, source: bytes, named: bool, inbound: bool, heard: float) -> None:
        self.source = source
        self.named = named
        self.inbound = inbound
        self.heard = heard


class Admission:
    """The session table's occupancy by class and source, and the admission decision for a newcomer."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_unpinned: int = MAX_UNPINNED_SESSIONS, *,
                 stranger_rate: float = STRANGER_RATE_PER_SOURCE, stranger_burst: float = STRANGER_BURST_PER_SOURCE) -> None:
        if max_sessions < 1 or max_unpinned < 0:
            raise ValueError("session bounds must be positive")
        # How fast one source may open strangers' sessions (not how many it may hold): a key flood from one host
        # is refused past the burst, and a refusal is load at the front door (axiomnet/responder.py).
        self._newcomers = SourceRateLimiter(stranger_rate, stranger_burst)
        self.max_sessions = max_sessions
        self.max_unpinned = min(max_unpinned, max_sessions)
        self._entries: dict[Hashable, _Entry] = {}
        self._strangers: dict[bytes, dict[Hashable, None]] = {}  # source -> its evictable sessions (inbound unnamed)
        self._unnamed = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unnamed(self) -> int:
        """Sessions held by keys nobody named."""
        return self._unnamed

    def from_source(self, source: bytes) -> int:
        """Strangers' sessions (inbound, unnamed) held by ``source``."""
        return len(self._strangers.get(source, ()))

    def decide(self, *, named: bool, source: bytes, now: float) -> Admit | Refuse:
        """Whether a newcomer of this class from ``source`` gets a slot (and whom it evicts). Changes nothing but,
        for a stranger, the source's newcomer bucket (STRANGER_BURST_PER_SOURCE, then STRANGER_RATE_PER_SOURCE a
        second: ``refused_source_rate`` past it)."""
        full = len(self._entries) >= self.max_sessions
        if named:
            if not full:
                return Admit()
            victim = self._victim(floor=0)
            return Admit(victim) if victim is not None else Refuse("refused_session_limit")
        if self._newcomers.level(source, now) < 1.0:
            return Refuse("refused_source_rate")
        decision = self._decide_stranger(source, full)
        if isinstance(decision, Admit):
            self._newcomers.allow(source, now)
        return decision

    def _decide_stranger(self, source: bytes, full: bool) -> Admit | Refuse:
        if not full and self._unnamed < self.max_unpinned:
            return Admit()
        # No room: only a source holding at least two more slots than ours gives one up (a swap of equals would
        # just churn), so a source already holding the most can never take another's slot.
        victim = self._victim(floor=self.from_source(source) + 2)
        if victim is not None:
            return Admit(victim)
        return Refuse("refused_session_limit" if full else "refused_unpinned_limit")

    def add(self, sid: Hashable, *, named: bool, source: bytes, inbound: bool, now: float) -> None:
        """Record an admitted (or configured) session ``sid``; replaces an entry of the same id."""
        self.remove(sid)
        self._entries[sid] = _Entry(source, named, inbound, now)
        if not named:
            self._unnamed += 1
            if inbound:
                self._strangers.setdefault(source, {})[sid] = None

    def remove(self, sid: Hashable) -> None:
        """Forget session ``sid`` (stopped, expired, evicted); unknown ids are ignored."""
        entry = self._entries.pop(sid, None)
        if entry is None or entry.named:
            return
        self._unnamed -= 1
        held = self._strangers.get(entry.source)
        if held is not None and sid in held:
            del held[sid]
            if not held:
                del self._strangers[entry.source]

    def touch(self, sid: Hashable, heard: float) -> None:
        """Session ``sid`` heard its peer at ``heard``."""
        entry = self._entries.get(sid)
        if entry is not None and heard > entry.heard:
            entry.heard = heard

    def _victim(self, floor: int) -> Hashable | None:
        """The least recently active stranger of the source holding the most strangers' slots, if it holds at least
        ``floor`` (and one) of them; None otherwise."""
        if not self._strangers:
            return None
        held = max(self._strangers.values(), key=len)
        if len(held) < max(floor, 1):
            return None
        entries = self._entries
        return min(held, key=lambda sid: entries[sid].heard)

"""Sliding replay window over transport counters (RFC 6479 ring of 64-bit blocks).

The window remembers which of the last ``REPLAY_WINDOW_SIZE`` counters below the highest accepted one were seen.
It is split in two on purpose: :meth:`ReplayWindow.check` runs *before* decryption and never changes state,
:meth:`ReplayWindow.update` runs only *after* the AEAD tag verified. Otherwise a forged datagram carrying a live
receiver index and a huge counter would slide the window forward and make every genuine packet look too old.
"""

from __future__ import annotations

from axiomnet.constants import REPLAY_WINDOW_SIZE

_BLOCK_BITS = 64
_BLOCK_SHIFT = 6  # log2(_BLOCK_BITS)
_BIT_MASK = _BLOCK_BITS - 1
# One block more than the window needs, so the block holding the highest counter never overlaps the block of
# the oldest counter still inside the window (RFC 6479 section 2).
_BLOCKS = REPLAY_WINDOW_SIZE // _BLOCK_BITS + 1


class ReplayWindow:
    """Accepts each counter at most once, and none ``REPLAY_WINDOW_SIZE`` or more below the highest accepted.

    Per-packet cost is a few operations on small ints: a list of 64-bit blocks, never one 8192-bit integer.
    """

    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = -1  # highest accepted counter; -1 before the first (counters start at 0)
        self._ring = [0] * _BLOCKS

    @property
    def highest(self) -> int:
        """Highest counter accepted so far, or -1 if none."""
        return self._last

    def check(self, counter: int) -> bool:
        """True if ``counter`` is new and recent enough to be accepted; changes nothing."""
        last = self._last
        if counter > last:
            return True
        if last - counter >= REPLAY_WINDOW_SIZE:
            return False  # too old: we no longer know whether it was seen
        return not (self._ring[(counter >> _BLOCK_SHIFT) % _BLOCKS] >> (counter & _BIT_MASK)) & 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as seen; call only after check() passed and the packet authenticated."""
        ring = self._ring
        block = counter >> _BLOCK_SHIFT
        last = self._last
        if counter > last:
            current = last >> _BLOCK_SHIFT  # -1 >> 6 == -1, so the first update clears block 0
            # Blocks skipped by the jump hold bits of counters that are now below the window: clear them.
            # At most _BLOCKS iterations however large the jump (a jump past the ring clears all of it).
            for i in range(current + 1, min(block, current + _BLOCKS) + 1):
                ring[i % _BLOCKS] = 0
            self._last = counter
        elif last - counter >= REPLAY_WINDOW_SIZE:
            return  # defensive: never mark a block that already belongs to a newer counter range
        ring[block % _BLOCKS] |= 1 << (counter & _BIT_MASK)

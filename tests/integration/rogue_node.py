"""A rogue AxiomNet node for tests/integration/test_rogue.py: the real daemon (it reuses the core and the
actors, as an attacker with the source would), except that its router black-holes every routed packet it is
sent: TRAFFIC and SOURCE_ROUTED it should relay, LOOKUPs and ring searches it should pass on or answer, replies.
It still takes part in the tree, so with a key below every honest one it becomes everyone's root.

    python tests/integration/rogue_node.py daemon --listen ... --peer ... --data-dir DIR ...   (the daemon's flags)

The identity in DIR is the ground key the test wrote there; the test flaps root claims by restarting the rogue
under another ground key.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from axiomnet.actors import messages as m
from axiomnet.actors import node
from axiomnet.actors.router import RouterActor


class BlackHoleRouter(RouterActor):
    """Announces like an honest router; every routed packet that arrives is dropped (counted rogue_dropped)."""

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.RoutedFromLink):
            self._seen(message.peer_key, time.monotonic())  # the link stays alive, and so does its place in the tree
            self.counters["rogue_dropped"] += len(message.packets)
            return None
        return super().handle(message)


if __name__ == "__main__":
    node.RouterActor = BlackHoleRouter  # type: ignore[misc]  # the node builds its router from this name
    from axiomnet.ops.cli import main

    sys.exit(main(sys.argv[1:]))

"""Fake socket and TUN actors that record what they are told (no real I/O), and a polling helper."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pykka

from axiomnet.actors import messages as m


class RecordingActor(pykka.ThreadingActor):
    """Stands in for the socket or TUN actor: records every message; what a BindIndex carries counts as sent
    (a real socket actor sends it once the index is bound to its owner)."""

    def __init__(self, delay: float = 0.0, recovered: threading.Event | None = None) -> None:
        super().__init__()
        self.delay = delay  # seconds each message takes (a slow collaborator) ...
        self.recovered = recovered or threading.Event()  # ... until this is set
        self.sent: list[tuple[bytes, m.Addr]] = []
        self.written: list[bytes] = []
        self.other: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if self.delay and not isinstance(message, (GetSent, GetWritten, GetOther)):
            self.recovered.wait(self.delay)
        if isinstance(message, m.BindIndex):
            self.sent.extend(message.send)
            self.other.append(message)
        elif isinstance(message, m.SendDatagrams):
            self.sent.extend(message.items)
        elif isinstance(message, m.TunWrite):
            self.written.extend(message.packets)
        elif isinstance(message, GetSent):
            return list(self.sent)
        elif isinstance(message, GetWritten):
            return list(self.written)
        elif isinstance(message, GetOther):
            return list(self.other)
        else:
            self.other.append(message)
        return None


class GetSent:
    pass


class GetWritten:
    pass


class GetOther:
    pass


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()

"""One blocking call bounded in time: it runs in a short-lived helper thread the caller waits on.

For calls that can hang in the kernel and cannot be interrupted from Python (a name lookup, a read on a
hung file system). Like identity.py's file I/O, this is a documented exception to the core's "no threads":
the thread lives only as long as the call, and on timeout it is abandoned (a daemon thread), never joined.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """The call did not return within its bound (it may still finish later, unseen)."""


def call_bounded(work: Callable[[], T], timeout: float, name: str = "axiomnet-bounded") -> T:
    """``work()``'s result, or its exception re-raised; CallTimedOut after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CallTimedOut(f"did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value

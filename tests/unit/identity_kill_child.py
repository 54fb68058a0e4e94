"""Child process of test_atomic_identity_write: create identities in fresh subdirectories until SIGKILLed.

Usage: python identity_kill_child.py BASE_DIR. Prints "ready" once imports are done so the parent's random
kill delay lands in the write loop, not in interpreter start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

from axiomnet.identity import load_or_create_identity


def main() -> None:
    base = Path(sys.argv[1])
    logger.remove()  # the parent reads stdout only for "ready"
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    index = 0
    while True:
        load_or_create_identity(base / f"{index:06d}", timeout=30.0)
        index += 1


if __name__ == "__main__":
    main()

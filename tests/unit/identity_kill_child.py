"""Fork server for test_atomic_identity_write: children that create identities until SIGKILLed.

Usage: python identity_kill_child.py. Imports once, prints "ready", then for every line ``BASE_DIR`` on stdin
forks a child that creates identities in fresh subdirectories of BASE_DIR (000000, 000001, ...) forever and
prints the child's PID; for every line ``reap PID`` it waits for that child and prints its wait status. So a
kill costs a fork (milliseconds), not an interpreter start, and a thousand kills fit in a test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

from axiomnet.ops.identity_store import load_or_create_identity


def write_forever(base: Path) -> None:
    index = 0
    while True:
        load_or_create_identity(base / f"{index:06d}", timeout=30.0)
        index += 1


def main() -> None:
    logger.remove()  # the parent reads stdout for PIDs and statuses only
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "reap":
            _, status = os.waitpid(int(command[1]), 0)
            print(status, flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                write_forever(Path(command[0]))
            finally:
                os._exit(1)  # never reached unless writing failed; the parent sees a non-SIGKILL status
        print(pid, flush=True)


if __name__ == "__main__":
    main()

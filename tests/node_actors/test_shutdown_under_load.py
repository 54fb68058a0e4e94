"""The daemon's shutdown (actors/node.py: _shutdown) with an actor that is busy or stuck: the process ends in time.

Found in soaks (2 of 5 runs): a daemon SIGTERM'd under load sometimes was not gone within SHUTDOWN_DEADLINE and
was killed. Reproduced with a hostile flood at one daemon: the peer manager's stop waited behind its full data lane
(> 1 s), the supervisor moved on, then pykka's ActorRegistry.stop_all gave up at that actor's timeout and never
stopped the supervisor, whose (non-daemon) thread held the interpreter's exit for ever.

Each case runs in its own interpreter, since what is measured is how long the process takes to exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from axiomnet.constants import SHUTDOWN_DEADLINE

_SCRIPT = """
import json, sys, threading, time
from dataclasses import dataclass
from axiomnet.actors import node
from axiomnet.actors.base import SupervisedActor
from axiomnet.actors import messages as m
from axiomnet.actors.supervisor import ChildSpec, StartAll, SupervisorActor

mode = sys.argv[1]
started = threading.Event()

@dataclass(frozen=True)
class Work:  # a data-lane message, as a batch of datagrams is
    seconds: float

class Busy(SupervisedActor):
    role = "busy"
    def handle(self, message):
        if isinstance(message, Work):
            started.set()
            time.sleep(message.seconds)
            return None
        return super().handle(message)

class Idle(SupervisedActor):
    role = "idle"

specs = [ChildSpec("socket", lambda sup, refs: Idle.start(sup, refs)),
         ChildSpec("busy", lambda sup, refs: Busy.start(sup, refs)),
         ChildSpec("admin", lambda sup, refs: Idle.start(sup, refs))]
supervisor = SupervisorActor.start(specs, lambda reason: None)
supervisor.ask(StartAll(), timeout=30)
busy = supervisor.ask(m.GetRef("busy"), timeout=5)
if mode == "backlog":  # a full data lane: 400 messages of 50 ms each, 20 s of work queued
    for _ in range(400):
        busy.tell(Work(0.05))
else:  # "stuck": one handler blocked far beyond the deadline
    busy.tell(Work(60.0))
assert started.wait(10)
t0 = time.time()
late = node._shutdown(supervisor)
print(json.dumps({"t0": t0, "shutdown_s": time.time() - t0, "late": late}), flush=True)
"""


def run_shutdown(mode: str) -> tuple[dict, float, subprocess.CompletedProcess[str]]:
    """Run the script; its report, the seconds from the start of _shutdown to the process's exit, the process."""
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit within 45 s of its start ({mode}): {exc.stderr!r:.2000}")
    exited = time.time()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, exited - report["t0"], proc


def test_an_actor_with_a_full_data_lane_stops_at_once_and_the_process_exits_in_time():
    report, to_exit, proc = run_shutdown("backlog")
    # The stop request jumps the queue: the busy actor ends the message in hand and stops; nothing is late.
    assert report["late"] == [], proc.stderr[-3000:]
    assert "did not stop" not in proc.stderr, proc.stderr[-3000:]
    assert to_exit < SHUTDOWN_DEADLINE, (to_exit, proc.stderr[-3000:])  # a guard against the hang, not a speed target


@pytest.mark.slow
def test_an_actor_stuck_in_a_handler_does_not_hold_the_process_past_the_deadline():
    report, to_exit, proc = run_shutdown("stuck")
    # The stuck actor is named and left; every other actor (the supervisor too) is stopped, and the exit does not
    # wait for the stuck thread.
    assert len(report["late"]) == 1 and "Busy" in report["late"][0], report
    assert report["shutdown_s"] <= SHUTDOWN_DEADLINE - 1.0 + 0.5, report
    # Before: never (the supervisor, never stopped, held the exit). The slack is the interpreter's own exit, which
    # took 1.7-3.2 s here under a load average of 27 (a daemon under systemd has its watchdog: actors/node.py).
    assert to_exit < SHUTDOWN_DEADLINE + 5.0, (to_exit, proc.stderr[-3000:])

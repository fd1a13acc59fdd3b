"""Fault injection for restart-safety tests: die with SIGKILL at a named point; move the clock.

Owns: the named points and reading `OVERNIGHT_AGENT_FAULTS`: comma-separated `name`, `name:N`
(the Nth time the point is reached) or `name:N:hang` (block there forever instead, e.g. to prove
a watchdog notices a stuck main loop); and `OVERNIGHT_AGENT_CLOCK_SKEW_FILE`, a file holding
seconds to add to the wall clock (`timeparse.local_now`), which a test rewrites to make the clock
jump. Must not: do anything when the variables are unset, which is always the case outside the
test suite. SIGKILL, not an exception: the point is to prove that a supervisor killed at that
instant leaves a state the next one can resume.
"""
import os
import signal
import time
from typing import Dict

_counts: Dict[str, int] = {}
SKEW_VAR = "OVERNIGHT_AGENT_CLOCK_SKEW_FILE"


def clock_skew() -> float:
    """Seconds the wall clock is moved by (0 unless a test moves it)."""
    path = os.environ.get(SKEW_VAR)
    if not path:
        return 0.0
    try:
        with open(path) as handle:
            return float(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def point(name: str) -> None:
    spec = os.environ.get("OVERNIGHT_AGENT_FAULTS")
    if not spec:
        return
    _counts[name] = _counts.get(name, 0) + 1
    for item in spec.split(","):
        target, nth, action = (item.strip().split(":") + ["", ""])[:3]
        if target == name and _counts[name] == int(nth or 1):
            if action == "hang":
                while True:
                    time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)

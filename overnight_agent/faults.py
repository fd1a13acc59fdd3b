"""Fault injection for restart-safety tests: die with SIGKILL at a named point.

Owns: the named points and reading `OVERNIGHT_AGENT_FAULTS`: comma-separated `name`, `name:N`
(the Nth time the point is reached) or `name:N:hang` (block there forever instead, e.g. to prove
a watchdog notices a stuck main loop). Must not: do anything when the variable is unset, which
is always the case outside the test suite. SIGKILL, not an exception: the point is to prove that
a supervisor killed at that instant leaves a state the next one can resume.
"""
import os
import signal
import time
from typing import Dict

_counts: Dict[str, int] = {}


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

"""Fault injection for restart-safety tests: die with SIGKILL at a named point.

Owns: the named points and reading `OVERNIGHT_AGENT_FAULTS` (`name` or `name:N` for the Nth
time the point is reached, comma-separated). Must not: do anything when the variable is unset,
which is always the case outside the test suite. SIGKILL, not an exception: the point is to
prove that a supervisor killed at that instant leaves a state the next one can resume.
"""
import os
import signal
from typing import Dict

_counts: Dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("OVERNIGHT_AGENT_FAULTS")
    if not spec:
        return
    _counts[name] = _counts.get(name, 0) + 1
    for item in spec.split(","):
        target, _, nth = item.strip().partition(":")
        if target == name and _counts[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

"""How a stop escalates: SIGINT, then SIGTERM, then SIGKILL to the whole agent tree, one step per
grace, and what a second request to stop does to it.

Owns: the schedule of a stop (which signal is due, and when the next one is), pure: the
supervisor passes the time and sends the signals. Must not: send signals, read processes or
know the night's phase.
"""
import signal
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .agents.base import StopReason

# A stalled attempt gets this long after SIGINT, then after SIGTERM, before SIGKILL: an agent
# that showed no life for its whole limit will not answer a signal any better given ten seconds;
# one that is alive (codex) exits on SIGINT in ~50 ms.
STALL_GRACE = 0.5


@dataclass
class Escalation:
    reason: StopReason
    due: float                                   # when the next step (or the give-up) is due
    kill_grace: float
    steps: List[Tuple[signal.Signals, float]] = field(default_factory=list)

    @classmethod
    def begin(cls, reason: StopReason, now: float, sigint_grace: float, sigterm_grace: float,
              kill_grace: float) -> "Escalation":
        graces = (sigint_grace, sigterm_grace)
        if reason == StopReason.STALL:
            graces = tuple(min(g, STALL_GRACE) for g in graces)
        return cls(reason, now, kill_grace, [(signal.SIGINT, graces[0]), (signal.SIGTERM, graces[1]),
                                             (signal.SIGKILL, kill_grace)])

    def next_signal(self, now: float) -> Optional[signal.Signals]:
        """The signal due at `now`, if one is (the one after it is then scheduled)."""
        if now < self.due or not self.steps:
            return None
        sig, grace = self.steps.pop(0)
        self.due = now + grace
        return sig

    def gave_up(self, now: float) -> bool:
        """SIGKILL went out and its grace passed (a process in uninterruptible sleep): the caller
        says so and goes on rather than hang the night; asked again after another grace."""
        if self.steps or now < self.due:
            return False
        self.due = now + self.kill_grace
        return True

    def asked_again(self, now: float) -> None:
        """A second request to stop: one that ends the night goes straight to the last step; one
        that was to resume the agent (a stall, a wrong thread) now ends the night instead."""
        if self.reason.ends_night:
            self.due = now
            self.steps = self.steps[-1:]
        else:
            self.reason = StopReason.SIGNAL

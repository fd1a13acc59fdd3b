"""Pure decisions of the supervisor: how long to wait, whether to resume or start afresh.

Owns: the backoff rule and the resume-or-fresh rule, as functions of the attempt history.
Must not: read clocks, files or processes; every input is passed in, so each rule is tested
with scripted histories.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

from .agents import base


@dataclass(frozen=True)
class AttemptSummary:
    kind: str               # "start" | "resume"
    duration: float         # seconds the attempt ran
    outcome: str


def backoff_delay(history: Sequence[AttemptSummary], *, initial: float, factor: float,
                  maximum: float, healthy_after: float) -> float:
    """Wait before the next attempt: grows with each quick exit in a row, resets after a
    healthy one (an attempt that ran at least `healthy_after`)."""
    quick_in_a_row = 0
    for attempt in reversed(history):
        if attempt.duration >= healthy_after:
            break
        quick_in_a_row += 1
    if quick_in_a_row == 0:
        return initial
    return min(initial * factor ** (quick_in_a_row - 1), maximum)


@dataclass(frozen=True)
class NextAttempt:
    fresh: bool             # start a new thread instead of resuming
    reason: str


def next_attempt(thread_id: Optional[str], history: Sequence[AttemptSummary], *,
                 resume_failures_before_fresh: int) -> NextAttempt:
    """Resume the known thread unless it is gone or keeps failing to resume."""
    if thread_id is None:
        return NextAttempt(True, "no thread yet")
    if history and history[-1].outcome in (base.UNKNOWN_THREAD, base.THREAD_MISMATCH):
        return NextAttempt(True, f"resume failed: {history[-1].outcome}")
    failed_resumes = 0
    for attempt in reversed(history):
        if attempt.kind != "resume" or attempt.outcome != base.CRASHED_BEFORE_THREAD:
            break
        failed_resumes += 1
    if failed_resumes >= resume_failures_before_fresh:
        return NextAttempt(True, f"{failed_resumes} resumes in a row died before the thread started")
    return NextAttempt(False, "resume the same thread")

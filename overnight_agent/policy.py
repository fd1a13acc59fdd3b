"""Pure decisions of the supervisor: how long to wait, whether to resume or start afresh.

Owns: the backoff rule and the resume-or-fresh rule, as functions of the attempt history.
Must not: read clocks, files or processes; every input is passed in, so each rule is tested
with scripted histories.
"""
import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from .agents import base
from .state import Phase


@dataclass(frozen=True)
class AttemptSummary:
    kind: str               # "start" | "resume"
    duration: float         # seconds the attempt ran
    outcome: str
    announced: bool = True  # the CLI printed the thread it runs (a stall before that: see next_attempt)


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
        if attempt.outcome == base.NOT_STARTED:
            continue   # the binary, not the thread: says nothing about resuming it
        if attempt.kind != "resume" or not _died_before_thread(attempt):
            break
        failed_resumes += 1
    if failed_resumes >= resume_failures_before_fresh:
        return NextAttempt(True, f"{failed_resumes} resumes in a row died or hung before the thread started")
    return NextAttempt(False, "resume the same thread")


def _died_before_thread(attempt: AttemptSummary) -> bool:
    """A resume that never got as far as naming its thread: it crashed, or it sat silent until
    the stall limit (every CLI prints the thread first, so the model or network cannot be why)."""
    return (attempt.outcome == base.CRASHED_BEFORE_THREAD
            or (attempt.outcome == base.STALLED and not attempt.announced))


# --- after an attempt: what next -------------------------------------------------------------------

class Action(str, enum.Enum):
    RESUME = "resume"            # start the next attempt after `wait` seconds
    END_NIGHT = "end_night"      # the night is over before its deadline


RESUME, END_NIGHT = Action.RESUME, Action.END_NIGHT
_TRANSIENT = (base.RATE_LIMITED, base.SERVER_ERROR, base.NETWORK_DOWN, base.AUTH_FAILED)


@dataclass(frozen=True)
class Decision:
    action: Action
    wait: float = 0.0
    reason: str = ""
    final_state: Optional[Phase] = None   # for END_NIGHT: FINISHED or FAILED
    pause: bool = False                   # a deliberate pause (usage limit, restart budget): journaled


@dataclass(frozen=True)
class Budgets:
    initial: float
    factor: float
    maximum: float
    healthy_after: float
    max_per_hour: int
    rate_limit_backoff: float
    usage_limit_margin: float
    max_tokens: int


_RESET_AT = re.compile(r"try again at\s+(?:(?P<date>[A-Z][a-z]{2} \d{1,2}(?:st|nd|rd|th), \d{4})\s+)?"
                       r"(?P<time>\d{1,2}:\d{2}\s*[AP]M)", re.I)


def usage_reset_time(message: str, now: dt.datetime) -> Optional[dt.datetime]:
    """The local time a usage-limit message says to try again, or None when it gives none.

    Codex prints `... try again at 1:57 AM.` (today or tomorrow, whichever comes first) or, for
    another day, `... try again at Sep 11th, 2026 12:26 AM.`; `... try again later.` gives none.
    """
    match = _RESET_AT.search(message or "")
    if not match:
        return None
    clock = dt.datetime.strptime(match.group("time").upper().replace(" ", ""), "%I:%M%p").time()
    if match.group("date"):
        day_text = re.sub(r"(\d)(st|nd|rd|th)", r"\1", match.group("date"))
        day = dt.datetime.strptime(day_text, "%b %d, %Y").date()
        return dt.datetime.combine(day, clock, tzinfo=now.tzinfo)
    candidate = now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    if candidate < now - dt.timedelta(minutes=1):  # the message cuts to the minute
        candidate += dt.timedelta(days=1)
    return candidate


def tokens_used(attempts) -> int:
    """Tokens spent tonight: codex reports usage cumulatively per thread, so take each thread's
    largest total (input + output) and add the threads up."""
    per_thread = {}
    for attempt in attempts:
        usage = getattr(attempt, "usage", None) or {}
        total = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        key = getattr(attempt, "thread_id", None) or f"attempt-{attempt.number}"
        per_thread[key] = max(per_thread.get(key, 0), total)
    return sum(per_thread.values())


def decide(outcome: str, detail: str, history: Sequence[AttemptSummary], starts_last_hour: Sequence[float],
           now_mono: float, now: dt.datetime, deadline: dt.datetime, tokens: int,
           budgets: Budgets) -> Decision:
    """What to do after an attempt ended by itself (not stopped for the deadline or a signal)."""
    if budgets.max_tokens and tokens >= budgets.max_tokens:
        return Decision(END_NIGHT, reason=f"token budget spent: {tokens} of {budgets.max_tokens}",
                        final_state=Phase.FINISHED)
    if outcome == base.REFUSED:   # the same argv would be refused again all night: say so now
        return Decision(END_NIGHT, reason=f"the agent refuses to start: {detail}", final_state=Phase.FAILED)
    if outcome == base.AUTH_FAILED and len(history) >= 2 and history[-2].outcome == base.AUTH_FAILED:
        # Once may be the provider's blip; twice in a row is the key, and it stays wrong all night.
        return Decision(END_NIGHT, final_state=Phase.FAILED,
                        reason=f"the provider refused the credentials twice in a row ({detail}); fix the "
                               "API key (`overnight-agent doctor` checks it), then run again")
    if outcome == base.USAGE_LIMIT:
        reset = usage_reset_time(detail, now)
        if reset is None:
            return Decision(END_NIGHT, reason=f"usage limit reached, no reset time given: {detail}",
                            final_state=Phase.FAILED)
        resume_at = reset + dt.timedelta(seconds=budgets.usage_limit_margin)
        if resume_at >= deadline:
            return Decision(END_NIGHT, final_state=Phase.FAILED,
                            reason=f"usage limit reached; it resets at {reset.isoformat(timespec='minutes')}, "
                                   "after the deadline")
        return Decision(RESUME, wait=max(0.0, (resume_at - now).total_seconds()), pause=True,
                        reason=f"usage limit: sleeping until {resume_at.isoformat(timespec='minutes')}")
    wait = backoff_delay(history, initial=budgets.initial, factor=budgets.factor,
                         maximum=budgets.maximum, healthy_after=budgets.healthy_after)
    reason = f"backoff after {outcome}"
    if outcome in _TRANSIENT:
        in_a_row = 0
        for attempt in reversed(history):
            if attempt.outcome not in _TRANSIENT:
                break
            in_a_row += 1
        wait = max(wait, min(budgets.rate_limit_backoff * 2 ** max(in_a_row - 1, 0), budgets.maximum))
        reason = f"{outcome} ({in_a_row} in a row): waiting before the next try"
    if outcome == base.STALLED:
        # The attempt already waited out its stall limit: resume the thread at once.
        wait, reason = 0.0, "stalled: resuming at once (the stall limit was the wait)"
    recent = sorted(t for t in starts_last_hour if t > now_mono - 3600)
    if len(recent) >= budgets.max_per_hour:
        until = recent[-budgets.max_per_hour] + 3600
        if until - now_mono > wait:
            return Decision(RESUME, wait=until - now_mono, pause=True,
                            reason=(f"restart budget spent ({len(recent)} attempts in the last hour, "
                                    f"limit {budgets.max_per_hour}): pausing"))
    return Decision(RESUME, wait=wait, reason=reason)

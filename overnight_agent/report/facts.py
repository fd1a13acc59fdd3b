"""The facts of one night for the morning report, redacted, and what both pages share.

Owns: gathering a night's facts (`status.collect`, the tokens per attempt, everything refused
or redacted, the events), redacting them, and the small helpers both the Markdown and the HTML
use (the headline, the chronicle, outcome colours and words). Must not: write files.
"""
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import redact, secretguard, state, status, timeparse

# Outcome -> (colour, plain words). Colours hold against white and read apart without hue alone
# (the label and the table say the same).
OUTCOMES = {
    "completed": ("#2e7d32", "turn completed"),
    "running": ("#1565c0", "running"),
    "stopped": ("#607d8b", "stopped by the supervisor"),
    "crashed": ("#c62828", "crashed"),
    "crashed_before_thread": ("#c62828", "crashed before its thread started"),
    "killed": ("#c62828", "killed by a signal"),
    "turn_failed": ("#ef6c00", "turn failed"),
    "usage_limit": ("#ef6c00", "usage limit"),
    "rate_limited": ("#ef6c00", "rate limited"),
    "server_error": ("#ef6c00", "server error"),
    "network_down": ("#ef6c00", "network down"),
    "unknown_thread": ("#6a1b9a", "thread unknown to codex"),
    "thread_busy": ("#6a1b9a", "thread busy"),
    "thread_mismatch": ("#6a1b9a", "resumed the wrong thread"),
    "stalled": ("#f9a825", "stalled: no sign of life"),
    "exited_early": ("#8d6e63", "exited before the turn ended"),
    "supervisor_lost": ("#9e9e9e", "supervisor died meanwhile"),
}
OTHER = ("#78909c", "other")
BRANCH_COLOURS = ("#1565c0", "#2e7d32", "#8e24aa", "#ef6c00", "#00838f", "#6d4c41", "#c2185b", "#455a64")


# --- the facts, redacted ----------------------------------------------------------------------

@dataclasses.dataclass
class Facts:
    view: status.View
    deltas: List[Optional[Dict[str, int]]]
    notices: List[dict]           # refused or redacted: session events, journal events, log lines
    events: List[dict]            # every session event, for the timeline
    redactions: int               # values redacted from this report's own content
    generated_at: dt.datetime


def gather(session_path: Path, run_dir: Optional[Path] = None, *, session: Optional[state.Session] = None,
           codex_home: Optional[Path] = None, now: Optional[dt.datetime] = None) -> Facts:
    view = status.collect(session_path, session=session, run_dir=run_dir, codex_home=codex_home, now=now)
    notices = _notices(view)
    redactor = redact.Redactor(os.environ)
    view = _redacted(view, redactor)
    notices = redactor.data(notices)
    return Facts(view=view, deltas=status.usage_deltas(view.session.attempts), notices=notices,
                 events=list(view.session.events), redactions=redactor.count, generated_at=view.now)


def _redacted(obj, redactor: redact.Redactor):
    """A copy of a dataclass tree with every string redacted (paths and times left alone)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _redacted(getattr(obj, f.name), redactor)
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, (str, list, tuple, dict)):
        if isinstance(obj, list):
            return [_redacted(v, redactor) for v in obj]
        if isinstance(obj, tuple):
            return tuple(_redacted(v, redactor) for v in obj)
        return redactor.data(obj)
    return obj


def _notices(view: status.View) -> List[dict]:
    """Everything refused or redacted during the night, from every place it is recorded."""
    found = [dict(e, source="session") for e in view.session.events
             if any(w in str(e.get("event", "")) for w in ("refus", "redact", "secret"))]
    found += [dict(e, source="journal") for e in secretguard.read_events(view.run_dir)]
    log = state.RunLayout(view.run_dir).supervisor_log
    try:
        with open(log, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if "redact" not in line and "refus" not in line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                name = str(item.get("event", ""))
                if isinstance(item, dict) and any(w in name for w in ("refus", "redact", "secret")):
                    item.setdefault("at", item.pop("timestamp", ""))
                    found.append(dict(item, source="supervisor.log"))
    except OSError:
        pass
    return sorted(found, key=lambda e: str(e.get("at", "")))


# --- shared helpers --------------------------------------------------------------------------------

def _tokens(delta: Optional[Dict[str, int]]) -> int:
    return 0 if not delta else delta.get("input_tokens", 0) + delta.get("output_tokens", 0)


def _num(n: Optional[int]) -> str:
    return "–" if n is None else f"{n:,}"


def _outcome(attempt: state.Attempt) -> Tuple[str, str, str]:
    key = attempt.outcome or "running"
    colour, words = OUTCOMES.get(key, OTHER)
    return key, colour, words


def _night_end(facts: Facts) -> dt.datetime:
    view = facts.view
    return view.now if view.session.state in status.LIVE_STATES else view.window[1] - status.SLACK


def _headline(facts: Facts) -> Dict[str, str]:
    view, s = facts.view, facts.view.session
    outcomes: Dict[str, int] = {}
    for a in s.attempts:
        outcomes[a.outcome or "running"] = outcomes.get(a.outcome or "running", 0) + 1
    total = sum(_tokens(d) for d in facts.deltas)
    checkpoints = sum(1 for c in view.commits if c.checkpoint)
    refused = sum(1 for n in facts.notices if "refus" in str(n.get("event")))
    redacted = sum(int(n.get("count", 1) or 1) for n in facts.notices if "redact" in str(n.get("event")))
    short = (s.deadline_dt - timeparse.parse_iso(s.created_at)).total_seconds() < 3600
    fmt = "%H:%M:%S" if short else "%H:%M"
    return {
        "state": s.state + (" (supervisor alive)" if view.live else ""),
        "window": f"{timeparse.local_clock(s.created_at, '%Y-%m-%d ' + fmt)} → {timeparse.local_clock(_night_end(facts), fmt)}"
                  f" (deadline {timeparse.local_clock(s.deadline, fmt)})",
        "attempts": f"{len(s.attempts)}: " + (", ".join(f"{n} {k}" for k, n in outcomes.items()) or "none"),
        "restarts": f"{s.restarts} supervisor restart{'s' if s.restarts != 1 else ''}, "
                    f"{s.fresh_starts} fresh thread{'s' if s.fresh_starts != 1 else ''}",
        "work": f"{len(view.branches)} branch{'es' if len(view.branches) != 1 else ''}, "
                f"{len(view.commits)} commit{'s' if len(view.commits) != 1 else ''}"
                + (f" ({checkpoints} checkpoint)" if checkpoints else ""),
        "tokens": f"{total:,} (input + output)",
        "life": ("none recorded" if not view.evidence
                 else f"{timeparse.format_duration(view.evidence.age_seconds)} ago ({view.evidence.source})"
                 if view.live else f"at {timeparse.local_clock(view.evidence.at)} ({view.evidence.source})"),
        "questions": f"{len(view.open_questions)} open",
        "validation": _validation_headline(view),
        "secrets": f"{refused} refused, {redacted} redacted in the journal and logs, "
                   f"{facts.redactions} in this report",
    }


def _validation_headline(view: status.View) -> str:
    worked = [b for b in view.branches if b.commits]
    unchecked = [b.name for b in worked if b.needs_review]
    if not worked:
        return "no branch has commits to validate"
    if not unchecked:
        return f"every branch with commits passed on its tip ({len(worked)})"
    return (f"{len(unchecked)} of {len(worked)} branches with commits NOT VALIDATED on their tip: "
            + ", ".join(unchecked))


def _notice_text(n: dict) -> str:
    name = str(n.get("event", ""))
    parts = [name]
    for key in ("what", "file", "files", "kinds", "count", "reason", "where"):
        if key in n and n[key] not in (None, "", []):
            value = n[key]
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            parts.append(f"{key} {value}")
    return f"{'; '.join(parts)} ({n.get('source')})"


def _chronicle(facts: Facts) -> List[Tuple[str, str]]:
    """The night as (time, what) rows, in order."""
    s = facts.view.session
    rows: List[Tuple[str, str]] = [(s.created_at, f"night started; deadline {timeparse.local_clock(s.deadline)}, "
                                                  f"wrap-up from {timeparse.local_clock(s.wrap_up_at)}")]
    for a in s.attempts:
        thread = f" on thread {a.thread_id}" if a.thread_id and a.kind == "resume" else ""
        rows.append((a.started_at, f"attempt {a.number} ({a.kind}) started{thread}"))
        if a.ended_at:
            rows.append((a.ended_at, f"attempt {a.number} ended after {timeparse.span(a.started_at, a.ended_at)}: "
                                     f"{a.outcome}" + (f" ({a.detail})" if a.detail else "")))
    for e in facts.events:
        name = str(e.get("event", ""))
        if name == "night.created":
            continue
        extra = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("event", "at") and v not in (None, ""))
        rows.append((str(e.get("at", "")), name + (f": {extra}" if extra else "")))
    for c in facts.view.commits:
        rows.append((c.at, f"commit {c.sha[:10]}: {c.subject}"))
    for q in facts.view.questions:
        rows.append((q.at, f"question for the operator: {q.text}"))
    for x in facts.view.summaries:
        rows.append((x.at, f"summary: {x.text}"))
    return sorted(rows, key=lambda r: (timeparse.moment(r[0]) or dt.datetime.max.replace(tzinfo=dt.timezone.utc)))



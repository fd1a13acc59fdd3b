"""The morning report: one night on one page, for a person with five minutes.

Owns: `report.md` and `report.html` in the run folder (the HTML is self-contained: inline CSS
and SVG, no script, no font or file from anywhere else, so it opens from disk), and committing
the Markdown to the ops journal. Sections: what needs the operator (open questions), the
branches with their commits and diffstat, a timeline of the night (attempts, restarts, stalls,
commits, journal writes, the deadline), tokens per attempt, the summaries, anything refused or
redacted, the strategy.
Must not: show a secret (every text is redacted before it is rendered), take the lock, or
change git state; facts come from `status.collect`.
"""
import dataclasses
import datetime as dt
import html
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import journal, redact, secretguard, state, status, timeparse

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


# --- writing ------------------------------------------------------------------------------------

def write(session_path: Path, run_dir: Path, *, session: Optional[state.Session] = None,
          codex_home: Optional[Path] = None) -> Tuple[Path, Path]:
    """Write `report.md` and `report.html` into `run_dir`; returns their paths."""
    facts = gather(session_path, run_dir, session=session, codex_home=codex_home)
    layout = state.RunLayout(run_dir)
    md_path, html_path = layout.report_md, layout.report_html
    final = redact.Redactor(os.environ)      # a last pass: nothing slips through a template
    state.write_atomic(md_path, final.text(markdown(facts)))
    state.write_atomic(html_path, final.text(render_html(facts)))
    return md_path, html_path


def commit_markdown(session: state.Session, md_path: Optional[Path] = None) -> Optional[str]:
    """Copy the run's `report.md` to `<reports_dir>/<run_id>_report.md` in the ops-journal worktree
    and commit it there; the new commit, or None when nothing changed. A report that still held a
    secret is refused like any journal commit (`SecretRefused`)."""
    md_path = md_path or state.RunLayout.of_session(session).report_md
    target = Path(session.reports_dir) / f"{session.run_id}_report.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = redact.Redactor(os.environ).text(md_path.read_text(encoding="utf-8"))
    state.write_atomic(target, text)
    return journal.commit(session, [target], f"ops: morning report for run {session.run_id}")


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


# --- Markdown ---------------------------------------------------------------------------------

def _validation_headline(view: status.View) -> str:
    worked = [b for b in view.branches if b.commits]
    unchecked = [b.name for b in worked if b.needs_review]
    if not worked:
        return "no branch has commits to validate"
    if not unchecked:
        return f"every branch with commits passed on its tip ({len(worked)})"
    return (f"{len(unchecked)} of {len(worked)} branches with commits NOT VALIDATED on their tip: "
            + ", ".join(unchecked))


def _md_cell(text) -> str:
    """One line of text the agent wrote, inert in Markdown: no table breaks, links, images or HTML."""
    text = " ".join(str(text).split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("[", "\\["), ("]", "\\]"), ("<", "&lt;")):
        text = text.replace(char, escaped)
    return text


def markdown(facts: Facts) -> str:
    view, s = facts.view, facts.view.session
    head = _headline(facts)
    out = [f"# Night {s.run_id}: {s.state}", "",
           f"Repository `{Path(s.repo_root).name}`, base `{s.base_branch}` at `{s.base_commit[:10]}`, "
           f"agent {s.agent} ({s.model}, reasoning {s.model_reasoning_effort}, sandbox {s.sandbox}). "
           f"Report written {timeparse.local_clock(facts.generated_at, '%Y-%m-%d %H:%M:%S %Z')}.", "",
           "## At a glance", ""]
    labels = {"state": "State", "window": "Night", "attempts": "Attempts", "restarts": "Restarts",
              "work": "Work", "tokens": "Tokens", "questions": "Questions", "secrets": "Secrets",
              "life": "Last sign of life", "validation": "Validation"}
    out += [f"- **{labels[k]}:** {v}" for k, v in head.items()]

    out += ["", "## Questions for the operator", ""]
    out += [f"- [{'x' if q.done else ' '}] {_md_cell(q.text)} ({timeparse.local_clock(q.at, '%H:%M')})"
            for q in view.questions] or ["None."]

    out += ["", "## Branches and commits", ""]
    if view.git_error:
        out.append(f"(git could not be read: {view.git_error})")
    for b in view.branches:
        tags = ["merged into " + s.base_branch if b.merged and b.commits else ""]
        out += [f"### `{b.name}`", "",
                f"{len(b.commits)} commit{'s' if len(b.commits) != 1 else ''} this night; "
                f"{b.shortstat or 'no changes against the base'}"
                + "".join(f"; {t}" for t in tags if t), "",
                f"Validation: {status.validation_line(b)}", ""]
        if b.validations:
            out += ["| validated | result |", "|---|---|"]
            out += [f"| {timeparse.local_clock(v.at)} | {_md_cell(v.describe())} |" for v in b.validations]
            out.append("")
        if b.commits:
            out += ["| commit | time | subject |", "|---|---|---|"]
            out += [f"| `{c.sha[:10]}` | {timeparse.local_clock(c.at)} | {_md_cell(c.subject)} |" for c in b.commits]
            out.append("")
        if b.files:
            out += [f"- `{_md_cell(f.path)}` "
                    + (f"+{_num(f.added)} −{_num(f.deleted)}" if f.added is not None else "(binary)")
                    for f in b.files[:30]]
            if len(b.files) > 30:
                out.append(f"- … and {len(b.files) - 30} more files")
            out.append("")
    if not view.branches:
        out += ["No `overnight/*` branch was made during this night.", ""]

    out += ["## Timeline", "", "| time | what |", "|---|---|"]
    out += [f"| {timeparse.local_clock(at)} | {_md_cell(text)} |" for at, text in _chronicle(facts)]

    out += ["", "## Tokens per attempt", "",
            "Codex reports usage cumulative per thread; these are each attempt's own share.", "",
            "| attempt | kind | outcome | input | cached | output | reasoning | input + output |",
            "|---|---|---|---|---|---|---|---|"]
    for a, d in zip(s.attempts, facts.deltas):
        out.append(f"| {a.number} | {a.kind} | {a.outcome or 'running'} | "
                   + " | ".join(_num(d.get(k)) if d else "–" for k in status.USAGE_KEYS)
                   + f" | {_num(_tokens(d)) if d else '–'} |")
    out.append("| all | | | " + " | ".join(
        _num(sum((d or {}).get(k, 0) for d in facts.deltas)) for k in status.USAGE_KEYS)
        + f" | {_num(sum(_tokens(d) for d in facts.deltas))} |")

    out += ["", "## Summaries", ""]
    out += [f"- {timeparse.local_clock(x.at, '%H:%M')} `{x.branch}` `{x.sha}`: {_md_cell(x.text)}" for x in view.summaries] \
        or ["None."]

    out += ["", "## Refused or redacted", ""]
    out += [f"- {timeparse.local_clock(n.get('at'))} {_notice_text(n)}" for n in facts.notices] \
        or ["Nothing was refused or redacted during the night."]
    out += ["", f"This report: {facts.redactions} value{'s' if facts.redactions != 1 else ''} redacted."]

    if view.strategy:
        out += ["", "## Strategy", ""] + [f"> {line}".rstrip() for line in view.strategy.rstrip().splitlines()]

    out += ["", "## Where things are", "",
            f"- session worktree branch `{s.session_branch}`; ops journal `{s.ops_journal_branch}`",
            f"- logs: `runs/{s.run_id}/` under the run root (codex_start.log, codex_resume.log, "
            "supervisor.log); this report as HTML: `report.html` there", ""]
    return "\n".join(out)


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


# --- HTML ---------------------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


CSS = """
:root { --fg:#1d2327; --muted:#5f6b73; --line:#dfe3e6; --bg:#f6f7f8; --card:#fff; --accent:#1565c0; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.sub { color: var(--muted); margin: 0 0 18px; }
.badge { display:inline-block; padding: 2px 10px; border-radius: 999px; font-size: 13px; font-weight: 600;
  vertical-align: middle; margin-left: 8px; color:#fff; }
.cards { display:grid; grid-template-columns: repeat(4, minmax(0,1fr)); gap: 10px; }
.card { background: var(--card); border:1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card b { display:block; font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
.card span { font-size: 15px; }
.panel { background: var(--card); border:1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.questions li { margin: 4px 0; } .questions .open::marker { content: "☐  "; }
.questions .done::marker { content: "☑  "; } .questions .done { color: var(--muted); }
.attention { border-left: 4px solid #ef6c00; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
.branch { margin: 12px 0; }
.branch header { display:flex; flex-wrap: wrap; gap: 8px; align-items: baseline; margin-bottom: 8px; }
.tag { font-size: 12px; padding: 1px 8px; border-radius: 999px; background: #eceff1; color: #37474f; }
.tag.good { background:#e8f5e9; color:#1b5e20; } .tag.warn { background:#fff3e0; color:#e65100; }
.swatch { display:inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.stat { color: var(--muted); font-size: 13px; }
.add { color:#2e7d32; } .del { color:#c62828; }
table.files { width: auto; } table.files td { padding: 2px 8px; border: 0; }
table.validations { width: auto; margin: 4px 0 8px; } table.validations td { padding: 2px 8px; border: 0; }
tr.validation.good td:last-child { color:#1b5e20; } tr.validation.bad td:last-child { color:#c62828; }
table.files td:first-child { padding-right: 28px; }
.bar { height: 8px; background: var(--accent); border-radius: 4px; min-width: 1px; }
.legend { display:flex; flex-wrap: wrap; gap: 6px 16px; font-size: 13px; color: var(--muted); margin-top: 8px; }
.legend span { white-space: nowrap; }
svg.timeline { width: 100%; height: auto; display:block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
details summary { cursor: pointer; color: var(--accent); }
pre { white-space: pre-wrap; background: #f3f5f6; padding: 10px 12px; border-radius: 6px; font-size: 13px; }
.none { color: var(--muted); }
footer { margin-top: 36px; color: var(--muted); font-size: 13px; }
@media (max-width: 760px) { .cards { grid-template-columns: repeat(2, minmax(0,1fr)); } }
"""

SHOWN_COMMITS = 10
STATE_COLOURS = {"finished": "#2e7d32", "running": "#1565c0", "backoff": "#1565c0", "starting": "#1565c0",
                 "stopping": "#607d8b", "stopped": "#607d8b", "failed": "#c62828"}


def render_html(facts: Facts) -> str:
    view, s = facts.view, facts.view.session
    head = _headline(facts)
    parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Night {_e(s.run_id)}: {_e(s.state)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Night {_e(s.run_id)}<span class="badge"
  style="background:{STATE_COLOURS.get(s.state, '#607d8b')}">{_e(s.state)}</span></h1>
<p class="sub">{_e(Path(s.repo_root).name)} · base <code>{_e(s.base_branch)}</code>
at <code>{_e(s.base_commit[:10])}</code>
· {_e(s.agent)} {_e(s.model)} ({_e(s.model_reasoning_effort)}, {_e(s.sandbox)})
· report written {_e(timeparse.local_clock(facts.generated_at, '%Y-%m-%d %H:%M:%S %Z'))}</p>
<section class="cards" id="glance">"""]
    labels = (("window", "Night"), ("attempts", "Attempts"), ("work", "Work"), ("questions", "Questions"),
              ("validation", "Validation"), ("restarts", "Restarts"), ("tokens", "Tokens"),
              ("secrets", "Secrets"), ("life", "Last sign of life"))
    parts += [f'<div class="card"><b>{_e(label)}</b><span>{_e(head[key])}</span></div>'
              for key, label in labels]
    parts.append("</section>")

    opened = view.open_questions
    parts.append(f'<h2 id="questions">Questions for the operator ({len(opened)} open)</h2>')
    if view.questions:
        parts.append(f'<div class="panel{" attention" if opened else ""}"><ul class="questions">')
        parts += [f'<li class="{"done" if q.done else "open"}">{_e(q.text)} '
                  f'<span class="stat">{_e(timeparse.local_clock(q.at, "%H:%M"))}</span></li>' for q in view.questions]
        parts.append("</ul></div>")
    else:
        parts.append('<p class="none">None.</p>')

    parts.append('<h2 id="timeline">Timeline</h2><div class="panel">')
    parts.append(timeline_svg(facts))
    parts.append(_legend(facts))
    parts.append("</div>")

    parts.append(f'<h2 id="branches">Branches and commits ({len(view.branches)} branches, '
                 f'{len(view.commits)} commits)</h2>')
    if view.git_error:
        parts.append(f'<p class="none">git could not be read: {_e(view.git_error)}</p>')
    if not view.branches:
        parts.append('<p class="none">No <code>overnight/*</code> branch was made during this night.</p>')
    colours = _branch_colours(view)
    for b in view.branches:
        tags = []
        if b.name == s.session_branch:
            tags.append('<span class="tag">session branch</span>')
        if b.commits and b.merged:
            tags.append(f'<span class="tag good">merged into {_e(s.base_branch)}</span>')
        elif b.commits:
            tags.append('<span class="tag">not merged yet</span>')
        if any(c.checkpoint for c in b.commits):
            tags.append('<span class="tag warn">checkpoint at the deadline</span>')
        if b.needs_review:
            tags.append(f'<span class="tag warn">not validated: {_e(b.validation)}</span>')
        elif b.validations:
            tags.append('<span class="tag good">validated</span>')
        parts.append(f'<section class="branch panel" data-branch="{_e(b.name)}"><header>'
                     f'<span class="swatch" style="background:{colours.get(b.name, "#999")}"></span>'
                     f'<h3>{_e(b.name)}</h3>{"".join(tags)}'
                     f'<span class="stat">{len(b.commits)} commit{"s" if len(b.commits) != 1 else ""} · '
                     f'{_e(b.shortstat or "no changes against the base")}</span></header>')
        if b.commits:
            rows = [f'<tr class="commit" data-sha="{_e(c.sha)}"><td><code>{_e(c.sha[:10])}</code></td>'
                    f'<td>{_e(timeparse.local_clock(c.at))}</td><td>{_e(c.subject)}</td><td>{_e(c.author)}</td></tr>'
                    for c in b.commits]
            head = ('<table class="commits"><colgroup><col style="width:14%"><col style="width:12%"><col>'
                    '<col style="width:22%"></colgroup>')
            parts.append(f'{head}<thead><tr><th>commit</th><th>time</th><th>subject</th><th>author</th>'
                         f'</tr></thead><tbody>{"".join(rows[:SHOWN_COMMITS])}</tbody></table>')
            if len(rows) > SHOWN_COMMITS:
                parts.append(f'<details><summary>{len(rows) - SHOWN_COMMITS} older commits</summary>'
                             f'{head}<tbody>{"".join(rows[SHOWN_COMMITS:])}</tbody></table></details>')
        if b.validations:
            rows = "".join(f'<tr class="validation {"good" if v.ok else "bad"}"><td>{_e(timeparse.local_clock(v.at))}</td>'
                           f'<td>{_e(v.describe())}</td></tr>' for v in b.validations)
            parts.append(f'<p class="stat">Validation: {_e(status.validation_line(b))}</p>'
                         f'<table class="validations"><tbody>{rows}</tbody></table>')
        elif b.commits:
            parts.append(f'<p class="stat">Validation: {_e(status.validation_line(b))}</p>')
        if b.files:
            rows = "".join(f'<tr><td><code>{_e(f.path)}</code></td>' + (
                f'<td class="num add">+{_num(f.added)}</td><td class="num del">−{_num(f.deleted)}</td>'
                if f.added is not None else '<td class="num stat" colspan="2">binary</td>') + '</tr>'
                for f in b.files)
            table = f'<table class="files"><tbody>{rows}</tbody></table>'
            if len(b.files) > 8:
                table = f"<details><summary>{len(b.files)} files changed</summary>{table}</details>"
            parts.append(f'<div style="margin-top:8px">{table}</div>')
        parts.append("</section>")

    parts.append('<h2 id="tokens">Tokens per attempt</h2><div class="panel">'
                 '<p class="stat" style="margin-top:0">Codex reports usage cumulative per thread; '
                 'these are each attempt\'s own share.</p>')
    biggest = max([_tokens(d) for d in facts.deltas] + [1])
    parts.append('<table><thead><tr><th>attempt</th><th>kind</th><th>outcome</th><th>duration</th>'
                 + "".join(f'<th class="num">{_e(k.replace("_tokens", "").replace("_", " "))}</th>'
                           for k in status.USAGE_KEYS)
                 + '<th class="num">input + output</th><th style="width:18%"></th></tr></thead><tbody>')
    for a, d in zip(s.attempts, facts.deltas):
        key, colour, words = _outcome(a)
        cells = "".join(f'<td class="num">{_num(d.get(k)) if d else "–"}</td>' for k in status.USAGE_KEYS)
        bar = (f'<div class="bar" style="width:{100 * _tokens(d) / biggest:.1f}%"></div>' if d else "")
        parts.append(f'<tr class="attempt" data-attempt="{a.number}"><td>{a.number}</td><td>{_e(a.kind)}</td>'
                     f'<td><span class="swatch" style="background:{colour}"></span>{_e(words)}</td>'
                     f'<td>{_e(timeparse.span(a.started_at, a.ended_at) if a.ended_at else "running")}</td>'
                     f'{cells}<td class="num">{_num(_tokens(d)) if d else "–"}</td><td>{bar}</td></tr>')
    totals = "".join(f'<td class="num"><b>{_num(sum((d or {}).get(k, 0) for d in facts.deltas))}</b></td>'
                     for k in status.USAGE_KEYS)
    parts.append(f'<tr><td colspan="4"><b>whole night</b></td>{totals}<td class="num"><b>'
                 f'{_num(sum(_tokens(d) for d in facts.deltas))}</b></td><td></td></tr></tbody></table></div>')

    parts.append(f'<h2 id="summaries">Summaries ({len(view.summaries)})</h2>')
    if view.summaries:
        parts.append('<div class="panel"><table><thead><tr><th>time</th><th>branch</th><th>commit</th>'
                     '<th>summary</th></tr></thead><tbody>')
        parts += [f'<tr class="summary"><td>{_e(timeparse.local_clock(x.at))}</td><td><code>{_e(x.branch)}</code></td>'
                  f'<td><code>{_e(x.sha)}</code></td><td>{_e(x.text)}</td></tr>' for x in view.summaries]
        parts.append("</tbody></table></div>")
    else:
        parts.append('<p class="none">None.</p>')

    parts.append('<h2 id="secrets">Refused or redacted</h2><div class="panel">')
    if facts.notices:
        parts.append('<table><thead><tr><th>time</th><th>what</th></tr></thead><tbody>')
        parts += [f'<tr class="notice"><td>{_e(timeparse.local_clock(n.get("at")))}</td><td>{_e(_notice_text(n))}</td></tr>'
                  for n in facts.notices]
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="none" style="margin:0">Nothing was refused or redacted during the night.</p>')
    parts.append(f'<p class="stat" style="margin-bottom:0">This report: {facts.redactions} value'
                 f'{"s" if facts.redactions != 1 else ""} redacted before rendering.</p></div>')

    parts.append('<h2 id="events">Timeline, line by line</h2><div class="panel"><details><summary>'
                 f'{len(_chronicle(facts))} entries</summary><table><tbody>')
    parts += [f'<tr><td class="mono">{_e(timeparse.local_clock(at))}</td><td>{_e(text)}</td></tr>'
              for at, text in _chronicle(facts)]
    parts.append("</tbody></table></details></div>")

    if view.strategy:
        parts.append(f'<h2 id="strategy">Strategy</h2><div class="panel"><details><summary>The plan the '
                     f'agent wrote</summary><pre>{_e(view.strategy)}</pre></details></div>')

    parts.append(f"""<h2 id="where">Where things are</h2><div class="panel"><table><tbody>
<tr><td>session worktree</td><td><code>{_e(s.session_worktree)}</code>
  on <code>{_e(s.session_branch)}</code></td></tr>
<tr><td>ops journal</td><td><code>{_e(s.ops_journal_worktree)}</code>
  on <code>{_e(s.ops_journal_branch)}</code></td></tr>
<tr><td>run folder (logs)</td><td><code>{_e(view.run_dir)}</code></td></tr>
<tr><td>session state</td><td><code>{_e(view.session_path)}</code></td></tr>
</tbody></table></div>
<footer>overnight-agent · run {_e(s.run_id)} · thread <code>{_e(s.thread_id or '–')}</code></footer>
</main></body></html>
""")
    return "\n".join(parts)


def _branch_colours(view: status.View) -> Dict[str, str]:
    return {b.name: BRANCH_COLOURS[i % len(BRANCH_COLOURS)] for i, b in enumerate(view.branches)}


def _legend(facts: Facts) -> str:
    seen: Dict[str, List[str]] = {}
    for a in facts.view.session.attempts:
        key, colour, words = _outcome(a)
        if words not in seen.setdefault(colour, []):
            seen[colour].append(words)
    items = [f'<span><span class="swatch" style="background:{c}"></span>attempt: {_e(" / ".join(w))}</span>'
             for c, w in seen.items()]
    items += ['<span>● commit (colour of its branch)</span>', '<span>◆ summary</span>',
              '<span>? question</span>', '<span>▲ supervisor restart</span>', '<span>■ stall</span>',
              '<span>✕ refused or redacted</span>',
              '<span>┆ wrap-up · <b style="color:#c62828">│</b> deadline</span>']
    return f'<div class="legend">{"".join(items)}</div>'


# --- the chart ------------------------------------------------------------------------------------

TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def timeline_svg(facts: Facts) -> str:
    """The night as an inline SVG: attempts as bars, commits, journal writes and supervisor events
    as marks on their own rows, wrap-up and deadline as lines, a clock axis below."""
    view, s = facts.view, facts.view.session
    start = timeparse.parse_iso(s.created_at)
    end = max(s.deadline_dt, _night_end(facts))
    span = max((end - start).total_seconds(), 1.0)
    width, left, right = 1000, 118, 44
    rows = ("Agent", "Commits", "Journal", "Supervisor")
    row_h, top = 40, 14
    axis_y = top + row_h * len(rows) + 6
    height = axis_y + 28

    def x(moment: Optional[dt.datetime]) -> float:
        if moment is None:
            return left
        frac = (moment - start).total_seconds() / span
        return round(left + min(max(frac, 0.0), 1.0) * (width - left - right), 1)

    def row_mid(i: int) -> float:
        return top + row_h * i + row_h / 2

    out = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="Timeline of night {_e(s.run_id)}">']
    for i, name in enumerate(rows):
        y = top + row_h * i
        if i % 2 == 0:
            out.append(f'<rect x="{left}" y="{y}" width="{width - left - right}" height="{row_h}" '
                       'fill="#f7f9fa"/>')
        out.append(f'<text x="{left - 10}" y="{row_mid(i) + 4}" text-anchor="end" font-size="13" '
                   f'fill="#5f6b73">{name}</text>')
    # clock axis
    step = next((t for t in TICK_STEPS if span / t <= 8), TICK_STEPS[-1])
    offset = start.astimezone(timeparse.local_now().tzinfo).utcoffset().total_seconds()
    first = math.ceil((start.timestamp() + offset) / step) * step - offset
    fmt = "%H:%M:%S" if step < 60 else "%H:%M"
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#b0bec5"/>')
    tick = first
    while tick <= end.timestamp() + 0.001:
        moment = dt.datetime.fromtimestamp(tick, tz=dt.timezone.utc)
        tx = x(moment)
        out.append(f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{axis_y + 4}" stroke="#e3e7ea"/>')
        out.append(f'<text x="{tx}" y="{axis_y + 19}" text-anchor="middle" font-size="12" fill="#5f6b73">'
                   f'{_e(timeparse.local_clock(moment, fmt))}</text>')
        tick += step
    # attempts, with the backoff waits between them as a thin line
    mid = row_mid(0)
    out.append(f'<line x1="{x(start)}" y1="{mid}" x2="{x(_night_end(facts))}" y2="{mid}" stroke="#cfd8dc" '
               'stroke-width="2" stroke-dasharray="3 3"><title>waiting between attempts (backoff)</title>'
               '</line>')
    for a in s.attempts:
        a_start = timeparse.moment(a.started_at) or start
        a_end = timeparse.moment(a.ended_at) or (view.now if view.live else _night_end(facts))
        x0, x1 = x(a_start), x(a_end)
        w = max(x1 - x0, 3.0)
        key, colour, words = _outcome(a)
        until = timeparse.local_clock(a.ended_at) if a.ended_at else "now"
        tip = (f"attempt {a.number} ({a.kind}) {timeparse.local_clock(a.started_at)}–{until}: {words}"
               + (f" — {a.detail}" if a.detail else ""))
        out.append(f'<g class="attempt" data-attempt="{a.number}" data-outcome="{_e(key)}">'
                   f'<rect x="{x0}" y="{mid - 11}" width="{w:.1f}" height="22" rx="4" fill="{colour}">'
                   f'<title>{_e(tip)}</title></rect>')
        if w >= 26:
            out.append(f'<text x="{x0 + w / 2:.1f}" y="{mid + 4.5}" text-anchor="middle" font-size="12" '
                       f'font-weight="600" fill="#fff">#{a.number}</text>')
        out.append("</g>")
    # commits, coloured by branch
    colours = _branch_colours(view)
    mid = row_mid(1)
    for b in view.branches:
        for c in b.commits:
            out.append(f'<circle class="commit-mark" cx="{x(timeparse.moment(c.at))}" cy="{mid}" r="6" '
                       f'fill="{colours.get(b.name, "#999")}" stroke="#fff" stroke-width="1.5">'
                       f'<title>{_e(timeparse.local_clock(c.at))} {_e(c.sha[:10])} on {_e(b.name)}: {_e(c.subject)}'
                       '</title></circle>')
    # journal: summaries and questions
    mid = row_mid(2)
    for item in view.summaries:
        cx = x(timeparse.moment(item.at))
        out.append(f'<path d="M{cx} {mid - 7} L{cx + 7} {mid} L{cx} {mid + 7} L{cx - 7} {mid} Z" '
                   f'fill="#00838f"><title>{_e(timeparse.local_clock(item.at))} summary: {_e(item.text)}</title></path>')
    for q in view.questions:
        cx = x(timeparse.moment(q.at))
        out.append(f'<g><circle cx="{cx}" cy="{mid}" r="8" fill="#ef6c00"/><text x="{cx}" y="{mid + 4.5}" '
                   f'text-anchor="middle" font-size="12" font-weight="700" fill="#fff">?</text>'
                   f'<title>{_e(timeparse.local_clock(q.at))} question: {_e(q.text)}</title></g>')
    # supervisor: restarts, stalls, fresh threads, checkpoints, refusals
    mid = row_mid(3)
    for e in facts.events:
        name = str(e.get("event", ""))
        moment = timeparse.moment(e.get("at"))
        if moment is None or name in ("night.created",):
            continue
        cx = x(moment)
        label = f"{timeparse.local_clock(e.get('at'))} {name}"
        if "restart" in name:
            mark = f'<path d="M{cx} {mid - 8} L{cx + 8} {mid + 6} L{cx - 8} {mid + 6} Z" fill="#c62828"/>'
        elif "stall" in name:
            mark = f'<rect x="{cx - 6}" y="{mid - 6}" width="12" height="12" fill="#f9a825"/>'
        elif "refus" in name or "redact" in name or "secret" in name:
            mark = (f'<path d="M{cx - 6} {mid - 6} L{cx + 6} {mid + 6} M{cx + 6} {mid - 6} '
                    f'L{cx - 6} {mid + 6}" stroke="#6a1b9a" stroke-width="3"/>')
        elif name.startswith("night."):
            mark = f'<rect x="{cx - 2}" y="{mid - 9}" width="4" height="18" fill="#37474f"/>'
        else:
            mark = f'<circle cx="{cx}" cy="{mid}" r="5" fill="#546e7a"/>'
        out.append(f'<g class="event" data-event="{_e(name)}">{mark}<title>{_e(label)}</title></g>')
    # wrap-up, deadline and now
    bottom = axis_y
    wx = x(s.wrap_up_dt)
    out.append(f'<line x1="{wx}" y1="{top - 4}" x2="{wx}" y2="{bottom}" stroke="#78909c" '
               f'stroke-dasharray="4 3"><title>wrap-up from {_e(timeparse.local_clock(s.wrap_up_at))}</title></line>')
    dx = x(s.deadline_dt)
    out.append(f'<line class="deadline" x1="{dx}" y1="{top - 4}" x2="{dx}" y2="{bottom}" stroke="#c62828" '
               f'stroke-width="2"><title>deadline {_e(timeparse.local_clock(s.deadline))}</title></line>')
    if view.live:
        nx = x(view.now)
        out.append(f'<line x1="{nx}" y1="{top - 4}" x2="{nx}" y2="{bottom}" stroke="#1565c0" stroke-width="2" '
                   f'stroke-dasharray="2 2"><title>now</title></line>')
    out.append("</svg>")
    return "".join(out)



# --- the command ----------------------------------------------------------------------------------

def command(loaded, run_id: Optional[str] = None) -> Tuple[Path, Path]:
    """`overnight-agent report [--run ID]`: write the report of the current night, or of the
    archived night `<run_root>/runs/<ID>/session.json`."""
    from .exitcodes import ConfigError
    paths = loaded.paths
    current = state.load(paths.session_state)
    if run_id is None or (current is not None and current.run_id == run_id):
        if current is None:
            raise ConfigError(f"{paths.session_state}: no session state; start a night with "
                              "`overnight-agent run`, or name an archived one with --run ID")
        return write(paths.session_state, paths.run_dir(current.run_id), session=current,
                     codex_home=paths.codex_home)
    session_path = paths.run_dir(run_id) / "session.json"
    session = state.load(session_path)
    if session is None:
        known = sorted(p.parent.name for p in (paths.run_root / "runs").glob("*/session.json"))
        raise ConfigError(f"--run: {run_id!r}: no night {session_path}; archived nights: "
                          f"{', '.join(known) or 'none'}"
                          + (f"; current: {current.run_id}" if current else ""))
    return write(session_path, paths.run_dir(run_id), session=session, codex_home=paths.codex_home)

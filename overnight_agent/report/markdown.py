"""The morning report as Markdown: what `report.md` holds, and what the ops journal keeps.

Owns: the Markdown text of one night's facts (see the package). Must not: gather facts or write
files (the package does), or show anything the facts did not redact.
"""
from pathlib import Path

from .. import status, timeparse
from .facts import Facts, _chronicle, _headline, _notice_text, _num, _tokens

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



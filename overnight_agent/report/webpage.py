"""The morning report as one self-contained page: `report.html`.

Owns: the HTML of one night's facts, its timeline chart (inline SVG) and its style (the
package's `report.css`, put inline). Must not: gather facts or write files (the package does),
load anything from elsewhere (no script, font or image), or show anything the facts did not
redact.
"""
import datetime as dt
import html
import math
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional

from .. import status, timeparse
from .facts import BRANCH_COLOURS, Facts, _chronicle, _headline, _night_end, _notice_text, _num, _outcome, _tokens

CSS = resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")
def _e(text) -> str:
    return html.escape(str(text), quote=True)


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




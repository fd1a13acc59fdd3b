"""The morning report: one night on one page, for a person with five minutes.

Owns: the facts of one night for the page (gathered from `status.collect`, redacted), writing
`report.md` (`markdown.py`) and `report.html` (`webpage.py`: self-contained, the CSS of
`report.css` inline, SVG, no script, no font or file from anywhere else, so it opens from disk)
in the run folder, and committing the Markdown to the ops journal. Sections: what needs the
operator (open questions), the branches with their commits, validation and diffstat, a timeline of the night (attempts, restarts, stalls,
commits, journal writes, the deadline), tokens per attempt, the summaries, anything refused or
redacted, the strategy.
Must not: show a secret (every text is redacted before it is rendered), take the lock, or
change git state; facts come from `status.collect`.
"""
import os
from pathlib import Path
from typing import Optional, Tuple

from .. import journal, redact, state
from ..exitcodes import ConfigError
from . import markdown, webpage
from .facts import Facts, gather

__all__ = ["Facts", "command", "commit_markdown", "gather", "write"]


# --- writing ------------------------------------------------------------------------------------

def write(session_path: Path, run_dir: Path, *, session: Optional[state.Session] = None,
          codex_home: Optional[Path] = None) -> Tuple[Path, Path]:
    """Write `report.md` and `report.html` into `run_dir`; returns their paths."""
    facts = gather(session_path, run_dir, session=session, codex_home=codex_home)
    layout = state.RunLayout(run_dir)
    md_path, html_path = layout.report_md, layout.report_html
    final = redact.Redactor(os.environ)      # a last pass: nothing slips through a template
    state.write_atomic(md_path, final.text(markdown.markdown(facts)))
    state.write_atomic(html_path, final.text(webpage.render_html(facts)))
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


# --- the command ----------------------------------------------------------------------------------

def command(loaded, run_id: Optional[str] = None) -> Tuple[Path, Path]:
    """`overnight-agent report [--run ID]`: write the report of the current night, or of the
    archived night `<run_root>/runs/<ID>/session.json`."""
    paths = loaded.paths
    current = state.load(paths.session_state)
    if run_id is None or (current is not None and current.run_id == run_id):
        if current is None:
            raise ConfigError(f"{paths.session_state}: no session state; start a night with "
                              "`overnight-agent run`, or name an archived one with --run ID")
        return write(paths.session_state, paths.run_dir(current.run_id), session=current,
                     codex_home=paths.codex_home)
    session_path = paths.run(run_id).archived_session
    session = state.load(session_path)
    if session is None:
        known = sorted(p.parent.name for p in (paths.run_root / "runs").glob("*/session.json"))
        raise ConfigError(f"--run: {run_id!r}: no night {session_path}; archived nights: "
                          f"{', '.join(known) or 'none'}"
                          + (f"; current: {current.run_id}" if current else ""))
    return write(session_path, paths.run_dir(run_id), session=session, codex_home=paths.codex_home)



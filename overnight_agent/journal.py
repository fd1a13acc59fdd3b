"""The ops journal: executive summary lines, strategy notes and questions for the operator.

Owns: appending whole lines (one O_APPEND write, then fsync: never torn, safe when several
writers race), writing the per-run strategy, and committing journal files on the ops-journal
branch in its own worktree (retrying while git's index is locked, clearing a lock a killed git
left). Every line written is redacted (`redact`), and a commit whose staged lines still hold a
secret is refused and its files put back (`secretguard`, exit 65). Must not: trust the agent for
facts git can tell (branch and commit come from the session worktree), or write anywhere but
the ops-journal worktree.
"""
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import List, Optional

from . import faults, gitops, redact, secretguard, state
from .exitcodes import OvernightError

LOCK_RETRIES = 50


def _clean(session: state.Session, text: str, what: str) -> str:
    """`text` with secrets redacted (shapes and this environment's secret values); counted."""
    redactor = redact.Redactor(os.environ)
    text = redactor.text(text)
    if redactor.count:
        secretguard.record(session, "journal.redacted", what=what, count=redactor.count,
                           kinds=sorted(redactor.counts))
    return text


def append_line(path: Path, line: str) -> None:
    """Append `line` as one whole line: a single write on an O_APPEND descriptor, then fsync.
    Every line is redacted first: no secret reaches a journal file."""
    line = redact.Redactor(os.environ).text(line)
    data = (line.replace("\r", " ").replace("\n", " ").rstrip() + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a regular file takes the whole write or fails; be loud if not
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path, key: str) -> List[dict]:
    """The JSON objects of a file of whole lines (as `append_line` writes them) that have a
    string `key`; a missing file is empty, an unreadable line is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get(key), str):
            records.append(item)
    return records


def utc_stamp(now: Optional[dt.datetime] = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary_line(session: state.Session, text: str, now: Optional[dt.datetime] = None) -> str:
    worktree = Path(session.session_worktree)
    branch = gitops.current_branch(worktree) or "n/a"
    sha = gitops.git(["rev-parse", "--short=12", "HEAD"], worktree, check=False) or "n/a"
    return f"{utc_stamp(now)} {branch} {sha} {' '.join(text.split())}"


def commit(session: state.Session, paths, message: str) -> Optional[str]:
    """Commit `paths` (inside the ops-journal worktree) on the ops-journal branch."""
    worktree = Path(session.ops_journal_worktree)
    rel = [str(Path(p).relative_to(worktree)) for p in paths]
    identity = session.git_identity or None
    for attempt in range(LOCK_RETRIES):
        try:
            gitops.git(["add", "--", *rel], worktree)
            if not gitops.git(["diff", "--cached", "--name-only", "--", *rel], worktree):
                return None
            secretguard.refuse_secrets(session, worktree, rel)  # raises SecretRefused
            gitops.git(["commit", "-q", "--no-verify", "-m", message, "--", *rel], worktree,
                       identity=identity)
            return gitops.rev(worktree, "HEAD")
        except gitops.GitError as exc:
            said = f"{exc} {exc.stderr}"
            if "nothing to commit" in said or "no changes added to commit" in said:
                return None  # a writer racing us committed our line with its own
            if gitops.lock_error(said) is None or attempt == LOCK_RETRIES - 1:
                raise
            # Another writer's lock goes in milliseconds; one a killed git left stays: cleared
            # once it is old enough to be sure.
            if not gitops.clear_stale_locks(worktree):
                time.sleep(0.05 + 0.01 * attempt)
    return None


def _require_worktree(session: state.Session) -> None:
    """Writing into a deleted ops-journal worktree would make a plain folder in its place, which
    git could not check the branch out into again: refuse, and say it comes back."""
    if not (Path(session.ops_journal_worktree) / ".git").exists():
        raise OvernightError(f"{session.ops_journal_worktree}: the ops-journal worktree is missing; "
                             "the supervisor checks it out again before the next attempt: write again then")


def summary(session: state.Session, text: str, author: str = "agent") -> str:
    _require_worktree(session)
    line = summary_line(session, _clean(session, text, "summary"))
    log = Path(session.exec_summary_log)
    append_line(log, line)
    faults.point("journal.appended")          # the line is in the file, not yet committed
    commit(session, [log], f"ops: summary ({author})")
    faults.point("journal.committed")
    return line


def question(session: state.Session, text: str) -> Path:
    _require_worktree(session)
    path = Path(session.reports_dir) / f"{dt.date.today().isoformat()}_questions_for_operator.md"
    if not path.exists():
        append_line(path, f"# Questions for the operator ({dt.date.today().isoformat()})")
    text = _clean(session, text, "question")
    append_line(path, f"- [ ] {utc_stamp()} (run {session.run_id}) {' '.join(text.split())}")
    commit(session, [path], "ops: question for the operator")
    return path


def strategy(session: state.Session, text: str) -> Path:
    _require_worktree(session)
    path = Path(session.reports_dir) / f"{session.run_id}_strategy.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _clean(session, text, "strategy")
    state.write_atomic(path, text if text.endswith("\n") else text + "\n")
    commit(session, [path], f"ops: strategy for run {session.run_id}")
    return path

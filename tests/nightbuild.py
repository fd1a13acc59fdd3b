"""Nights built by hand on a real repository: worktrees made the way `night` makes them, commits
and branches dated where a test needs them, and the `session.json` that records them.

For tests of what reads a night afterwards (status, report, gc, the journal) without running
one; `overnight-agent demo` and the `night` fixture cover the real thing.
"""
import datetime as dt
import os
import subprocess
from pathlib import Path
from typing import Dict, Optional

import helpers
from overnight_agent import gitops, state, timeparse


def stamp(moment: dt.datetime) -> str:
    return timeparse.iso(moment.replace(microsecond=0))


def git_at(repo: Path, moment: dt.datetime, *args: str) -> str:
    """git with author, committer and reflog dates at `moment`."""
    date = f"@{int(moment.timestamp())} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout.strip()


def commit_file(worktree: Path, moment: dt.datetime, name: str, text: str, message: str) -> str:
    (worktree / name).write_text(text)
    git_at(worktree, moment, "add", name)
    git_at(worktree, moment, "commit", "-q", "-m", message)
    return git_at(worktree, moment, "rev-parse", "HEAD")


def new_night(base: Path, repo: Path, run_id: str, created: dt.datetime, *, hours: float = 1.0,
              state_name: str = state.FINISHED, current: bool = False,
              attempts: Optional[list] = None, extra: Optional[Dict] = None) -> state.Session:
    """A finished night `run_id` that started at `created`: its session worktree (on
    overnight/session_<run_id>), the shared ops-journal worktree, and its session.json (archived
    under runs/<run_id>/ unless `current`)."""
    run_root = base / "run"
    run_dir = run_root / "runs" / run_id
    (run_dir / "agent").mkdir(parents=True, exist_ok=True)
    base_commit = helpers.git(repo, "rev-parse", "main")
    deadline = created + dt.timedelta(hours=hours)
    session = state.Session(
        run_id=run_id, repo_root=str(repo), deadline=stamp(deadline),
        wrap_up_at=stamp(deadline - dt.timedelta(minutes=10)),
        session_worktree=str(base / "worktrees" / "session" / run_id),
        session_branch=f"overnight/session_{run_id}",
        ops_journal_worktree=str(base / "worktrees" / "ops"), ops_journal_branch="overnight/ops-journal",
        base_branch="main", base_commit=base_commit, agent="codex", model="gpt-5.3-codex",
        model_reasoning_effort="xhigh", sandbox="workspace-write", created_at=stamp(created),
        state=state_name, heartbeat_file=str(run_dir / "agent" / "heartbeat"),
        exec_summary_log=str(base / "worktrees" / "ops" / "docs/meta/logs/ops/executive_summary.log"),
        reports_dir=str(base / "worktrees" / "ops" / "docs/meta/logs/ops"),
        git_identity={"name": "Overnight Agent", "email": "overnight-agent@localhost"},
        attempts=attempts or [], **(extra or {}))
    session.note("night.created", stamp(created), deadline=session.deadline)
    if state_name in (state.FINISHED, state.STOPPED, state.FAILED):
        session.note(f"night.{state_name}", stamp(deadline), reason="deadline")
    # Worktrees as `night` makes them; the branch's reflog is dated at the night's start.
    git_at(repo, created, "branch", session.session_branch, base_commit)
    gitops.ensure_worktree(repo, Path(session.session_worktree), session.session_branch, base_commit)
    gitops.ensure_worktree(repo, Path(session.ops_journal_worktree), session.ops_journal_branch, base_commit)
    save(session, run_root, current)
    (run_dir / "codex_start.log").write_text("=== attempt 1 ===\n" + "x" * 500 + "\n")
    return session


def save(session: state.Session, run_root: Path, current: bool) -> Path:
    path = run_root / "session.json" if current else run_root / "runs" / session.run_id / "session.json"
    state.save(path, session)
    return path


def work_branch(repo: Path, session: state.Session, slug: str, moment: dt.datetime,
                files: Dict[str, str]) -> str:
    """A work branch made from the session branch at `moment`, with one commit per file."""
    worktree = Path(session.session_worktree)
    name = f"overnight/{moment.strftime('%Y-%m-%d_%H%M')}_{slug}"
    git_at(worktree, moment, "switch", "-q", "-c", name, session.session_branch)
    for i, (path, text) in enumerate(files.items()):
        commit_file(worktree, moment + dt.timedelta(seconds=i + 1), path, text, f"feat: {path}")
    git_at(worktree, moment, "switch", "-q", session.session_branch)
    return name


def merge_into_main(repo: Path, branch: str, moment: dt.datetime) -> None:
    """Fast-forward or merge `branch` into main in the primary tree (as the operator would)."""
    git_at(repo, moment, "merge", "-q", "--no-edit", branch)

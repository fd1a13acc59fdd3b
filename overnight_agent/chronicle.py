"""What a night records about itself besides its phase: the supervisor's journal lines, the
notable events in session.json, the after-attempt guard check and the deadline's checkpoint.

Owns: turning what happened (a stall, a pause, a fresh thread, the guard's findings, the
checkpoint, the end) into `session.events` notes, `[supervisor]` summary lines in the ops
journal and log events, once each. Must not: write session.json (the supervisor saves it with
the next state write), decide anything, or let a failed journal write or git check end the night.
"""
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from . import gitops, journal, secretguard, state, timeparse


class Chronicle:
    def __init__(self, session: state.Session, log, now: Callable, *, audit=None,
                 identity: Optional[Dict[str, str]] = None, env: Optional[Dict[str, str]] = None):
        self.session = session
        self.log = log
        self.now = now
        self.audit = audit                # audit.Audit, or None
        self.identity = identity or {}
        self.env = env or {}

    def note(self, event: str, **fields) -> None:
        self.session.note(event, timeparse.iso(self.now()), **fields)

    def journal(self, text: str) -> None:
        """A summary line by the supervisor itself; never fatal to the night."""
        if not self.session.exec_summary_log:
            return
        try:
            journal.summary(self.session, f"[supervisor] {text}", author="supervisor")
        except Exception as exc:
            self.log.warning("journal.write_failed", error=str(exc))

    def stalled(self, attempt: int, detail: str) -> None:
        self.note("stall", attempt=attempt, reason=detail)
        self.log.warning("attempt.stalled", attempt=attempt, reason=detail)
        self.journal(f"attempt {attempt} stalled and was stopped: {detail}")

    def paused(self, seconds: float, reason: str) -> None:
        self.note("pause", reason=reason, seconds=round(seconds))
        self.journal(f"paused for {timeparse.format_duration(seconds)}: {reason}")

    def fresh_start(self, reason: str, old_thread: str) -> None:
        self.journal(f"started a fresh session: {reason}")
        self.note("fresh_start", reason=reason, old_thread=old_thread)
        self.log.warning("attempt.fresh_start", reason=reason, old_thread=old_thread)

    def guard_check(self, attempt: int) -> None:
        """The after-attempt check of refs outside overnight/* and the primary tree (see
        audit.Audit.check): what it found and restored, recorded once."""
        if self.audit is None:
            return
        try:
            check = self.audit.check(attempt)
        except Exception as exc:  # a failed check must not end the night; it is reported
            self.log.error("guard.check_failed", error=str(exc))
            return
        if check is None:
            return
        changes = [c.describe() for c in check.changes]
        self.log.warning("guard.changes", attempt=attempt, changes=changes, actions=check.actions,
                         record=check.record)
        self.note("guard", attempt=attempt, changes=changes, actions=check.actions)
        self.journal(check.summary())

    def repair_worktrees(self) -> None:
        """Before an attempt: a worktree or branch deleted by hand is put back (see
        gitops.repair_worktree), and that is said in the journal; never fatal to the night."""
        s = self.session
        for path, branch in ((s.session_worktree, s.session_branch),
                             (s.ops_journal_worktree, s.ops_journal_branch)):
            if gitops.worktree_intact(Path(path), branch):
                continue
            try:
                done = gitops.repair_worktree(Path(s.repo_root), Path(path), branch, s.base_commit)
            except gitops.GitError as exc:
                self.log.error("worktree.repair_failed", path=path, error=str(exc))
                continue
            for what in done:
                self.note("worktree.repaired", what=what)
                self.log.warning("worktree.repaired", what=what)
                self.journal(what)

    def checkpoint(self) -> None:
        """Commit what the agent left uncommitted, except files holding a secret: those stay in
        the work tree, uncommitted, and are recorded (names and kinds, never values)."""
        worktree = Path(self.session.session_worktree)
        try:  # the provider's key among the secrets looked for
            sha, left_out = secretguard.checkpoint(self.session, self.identity, {**os.environ, **self.env})
        except gitops.GitError as exc:
            self.log.error("checkpoint.failed", error=str(exc))
            return
        if left_out:
            files = sorted(left_out)
            kinds = sorted({kind for found in left_out.values() for kind in found})
            # Recorded once, in the state (the report counts it there); the log line says so too.
            self.note("checkpoint.refused", files=files, kinds=kinds)
            self.log.warning("checkpoint.left_out", files=files, kinds=kinds)
            self.journal(f"checkpoint left out {len(files)} file(s) that hold a secret "
                         f"({', '.join(kinds)}): {', '.join(files)}; they stay uncommitted in {worktree}")
        if sha:
            self.note("checkpoint", commit=sha, branch=gitops.current_branch(worktree))
            self.log.info("checkpoint.committed", commit=sha)

    def night_ended(self, final: state.Phase, reason: str, redactor=None) -> None:
        session = self.session
        if redactor is not None and redactor.count:
            self.note("redacted", where="agent output and logs", count=redactor.count,
                      kinds=sorted(redactor.counts))
        self.note(f"night.{final}", reason=reason)
        self.journal(f"night {final}: {reason}; {len(session.attempts)} attempts, "
                     f"{session.restarts} supervisor restarts")
        self.log.info(f"night.{final}", reason=reason, attempts=len(session.attempts),
                      thread_id=session.thread_id)

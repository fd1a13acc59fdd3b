"""The last check before the tool commits (the ops journal, the deadline's checkpoint): no secret leaves.

Owns: scanning what a journal commit would add (the staged diff of its files), and what the
deadline's checkpoint would commit (each changed file, before anything is staged), with the
redactor, putting those files back as they were committed when a secret is found, and the
small local record of redactions and refusals that the morning report shows
(`<run_dir>/agent/events.jsonl`, next to the heartbeat; never committed).
Must not: print or record a secret's value (only its kind and the file), or touch files other
than the ones the commit was about.
"""
import datetime as dt
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from . import gitops, redact
from .exitcodes import SecretRefused
from .state import RunLayout



def staged_secrets(worktree: Path, rel_paths: Sequence[str],
                   env: Optional[Mapping[str, str]] = None) -> Dict[str, List[str]]:
    """Kinds of secret in the lines the index adds to `rel_paths` (relative to `worktree`)."""
    redactor = redact.Redactor(os.environ if env is None else env)
    found: Dict[str, List[str]] = {}
    for rel in rel_paths:
        diff = gitops.git(["diff", "--cached", "--no-color", "--no-ext-diff", "--text", "-U0",
                           "--", rel], worktree)
        added, in_hunk = [], False
        for line in diff.splitlines():
            in_hunk = in_hunk or line.startswith("@@")
            if in_hunk and line.startswith("+"):
                added.append(line[1:])
        kinds = redactor.scan("\n".join(added))
        if kinds:
            found[rel] = kinds
    return found


def changed_secrets(worktree: Path, rel_paths: Sequence[str],
                    env: Optional[Mapping[str, str]] = None) -> Dict[str, List[str]]:
    """Kinds of secret in what the work tree adds to `rel_paths` over HEAD (a new file's whole
    content, a changed file's added lines), read without writing anything to git's store."""
    redactor = redact.Redactor(os.environ if env is None else env)
    found: Dict[str, List[str]] = {}
    for rel in rel_paths:
        path = worktree / rel
        if not path.is_file() or path.is_symlink():
            continue  # deleted (nothing added), or a link (its target is not committed)
        if _in_head(worktree, rel):
            diff = gitops.git(["diff", "--no-color", "--no-ext-diff", "--text", "-U0", "HEAD",
                               "--", rel], worktree, env=dict(os.environ, GIT_LITERAL_PATHSPECS="1"))
            text = "\n".join(line[1:] for line in diff.splitlines()
                             if line.startswith("+") and not line.startswith("+++"))
        else:
            text = path.read_bytes().decode("utf-8", errors="replace")
        kinds = redactor.scan(text)
        if kinds:
            found[rel] = kinds
    return found


def checkpoint(session, identity: Mapping[str, str], env: Mapping[str, str]):
    """The deadline's checkpoint commit of the session worktree, leaving out every file that holds
    a secret (a shape, or a secret value of `env`): (the commit or None, {file: kinds})."""
    return gitops.checkpoint(Path(session.session_worktree), session.run_id, dict(identity),
                             screen=lambda tree, paths: changed_secrets(tree, paths, env))


def restore(worktree: Path, rel_paths: Sequence[str]) -> None:
    """Put `rel_paths` back as HEAD has them, in the index and the work tree; a file HEAD does
    not have is removed."""
    for rel in rel_paths:
        if _in_head(worktree, rel):
            gitops.git(["restore", "--source=HEAD", "--staged", "--worktree", "--", rel], worktree)
        else:
            gitops.git(["rm", "-q", "--cached", "--ignore-unmatch", "--", rel], worktree)
            try:
                (worktree / rel).unlink()
            except FileNotFoundError:
                pass


def _in_head(worktree: Path, rel: str) -> bool:
    return gitops.succeeds(["cat-file", "-e", f"HEAD:{rel}"], worktree)


def refuse_secrets(session, worktree: Path, rel_paths: Sequence[str]) -> None:
    """Raise `SecretRefused` (after restoring the files) when the staged change adds a secret."""
    found = staged_secrets(worktree, rel_paths)
    if not found:
        return
    restore(worktree, list(found))
    described = "; ".join(f"{path} ({', '.join(kinds)})" for path, kinds in sorted(found.items()))
    record(session, "journal.refused", files=sorted(found),
           kinds=sorted({k for kinds in found.values() for k in kinds}))
    raise SecretRefused(
        f"ops journal: refused to commit {described} on {session.ops_journal_branch}: it looks like "
        "a secret (the value is not shown). The file was put back as last committed; write it "
        "again without the secret, naming it by its variable instead (e.g. $API_TOKEN)")


def record(session, event: str, **fields) -> None:
    """Append one event (kinds and counts only, never values) to the run's local events file.
    Best effort: the journal must not fail because the run folder is not writable."""
    layout = RunLayout.of_session(session)
    if layout is None:
        return
    path = layout.secret_events
    line = json.dumps({"event": event, "at": _now(), "run_id": session.run_id, **fields},
                      sort_keys=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass


def read_events(run_dir: Path) -> List[dict]:
    """The events recorded for a run (unreadable lines skipped)."""
    from .journal import read_records  # the journal imports this module
    return read_records(RunLayout(run_dir).secret_events, "event")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

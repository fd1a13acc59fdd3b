"""The commands the agent calls back while it works: `journal`, `branch`, `heartbeat`.

Owns: which night such a command acts on (the agent's own, named in its environment, unless
--repo/--config name another), starting a work-item branch (its name, its declared paths, the
record the hooks read), touching the heartbeat, and reading a strategy file. Must not: write
session.json (the supervisor owns it) or act outside the night's own worktrees and files.
"""
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Tuple

from . import gitops, night, pathglob, state, timeparse
from .exitcodes import ConfigError, UsageError

SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,60}")


def session_for(repo: Optional[Path] = None, config_path: Optional[Path] = None) -> Tuple[Path, state.Session]:
    """The session.json to act on: the agent's (from its environment) or the repository's."""
    env_path = os.environ.get("OVERNIGHT_AGENT_SESSION")
    if env_path and repo is None and config_path is None:
        path = Path(env_path)
    else:
        path = night.load_for(night.RunRequest(repo=repo, config_path=config_path)).paths.session_state
    session = state.load(path)
    if session is None:
        raise ConfigError(f"{path}: no session state; start a night with `overnight-agent run`")
    return path, session


def start_branch(session: state.Session, slug: str, paths: Sequence[str] = ()) -> str:
    """`overnight/YYYY-MM-DD_HHMM_<slug>` from the session branch, checked out in the session
    worktree, with the paths the work item may touch recorded for the guards."""
    from . import validation
    if not SLUG.fullmatch(slug):
        raise UsageError(f"branch: {slug!r} is not a slug; expected lowercase letters, digits, "
                         "'-', '_' or '.', e.g. fix-broken-links")
    for pattern in paths:
        try:
            pathglob.check(pattern)
        except ValueError as exc:
            raise UsageError(f"branch --paths: {exc}") from None
    name = f"overnight/{timeparse.local_now().strftime('%Y-%m-%d_%H%M')}_{slug}"
    gitops.git(["switch", "-c", name, session.session_branch], Path(session.session_worktree))
    validation.record_work_item(session, name, list(paths) or None)
    return name


def heartbeat(repo: Optional[Path] = None, config_path: Optional[Path] = None) -> Path:
    """Touch the night's heartbeat file (the agent's evidence of life)."""
    path_text = os.environ.get("OVERNIGHT_AGENT_HEARTBEAT")
    if not path_text:
        path_text = session_for(repo, config_path)[1].heartbeat_file
    path = Path(path_text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a"):
        os.utime(path)
    return path


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None

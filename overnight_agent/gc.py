"""Cleaning up after old nights: `overnight-agent gc`.

Owns: finding what the tool made for nights that ended more than N days ago (their session
worktrees, their `overnight/*` branches, their run folders), deciding what may go, and removing
it when asked (`--apply`; the default only prints the plan). (A live night's log size cap is
`capture.LogCap`.)
Must not: touch anything no `session.json` records, a night that may still run (supervisor alive
or deadline not passed), a worktree with uncommitted changes (`git worktree remove` without
--force refuses), a branch not merged into the night's base branch, a branch checked out
anywhere, or the ops-journal worktree and branch (shared by every night: the morning read).
"""
import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import gitops, state, status, timeparse
from .exitcodes import ConfigError, OvernightError


@dataclass(frozen=True)
class Action:
    kind: str          # worktree | branch | run_folder | run_logs
    target: str        # a path, or a branch name
    run_id: str
    why: str
    tip: str = ""      # a branch's commit when planned: deleted only if it still points there
    base: str = ""     # the branch it must still be merged into

    def describe(self) -> str:
        words = {"worktree": "remove worktree", "branch": "delete branch",
                 "run_folder": "remove run folder", "run_logs": "remove the logs (keep session.json) of"}
        return f"{words[self.kind]} {self.target} ({self.why})"


@dataclass
class Plan:
    actions: List[Action]
    kept: List[str]            # what stays and why, for the operator


@dataclass
class Night:
    session: state.Session
    path: Path                 # its session.json
    ended: dt.datetime


def recorded_nights(run_root: Path, session_state: Path) -> List[Night]:
    """Every night a `session.json` records: the archived ones and the current one."""
    found: Dict[str, Night] = {}
    paths = sorted((run_root / "runs").glob("*/session.json")) + [session_state]
    for path in paths:
        try:
            session = state.load(path)
        except ConfigError:
            continue                # unreadable: not ours to judge
        if session is None:
            continue
        found[session.run_id] = Night(session=session, path=path, ended=status.last_recorded(session))
    return sorted(found.values(), key=lambda n: n.session.run_id)


def plan(run_root: Path, session_state: Path, older_than_days: float,
         now: Optional[dt.datetime] = None) -> Plan:
    now = now or timeparse.local_now()
    cutoff = now - dt.timedelta(days=older_than_days)
    actions: List[Action] = []
    kept: List[str] = []
    for night in recorded_nights(run_root, session_state):
        s = night.session
        if night.ended > cutoff:
            continue
        if (s.state in status.LIVE_STATES and status.supervisor_alive(run_root / "overnight-agent.lock",
                                                                     s.supervisor_pid)) \
                or s.deadline_dt > now:
            kept.append(f"night {s.run_id}: may still run; left alone")
            continue
        ago = (now - night.ended).total_seconds()
        age = f"ended {ago / 86400:.1f} days ago" if ago >= 86400 else \
            f"ended {timeparse.format_duration(ago)} ago"
        leftovers = False
        repo = Path(s.repo_root)
        try:
            worktrees = gitops.registered_worktrees(repo) if repo.is_dir() else {}
        except gitops.GitError:
            worktrees = {}
        removed_worktrees = set()
        wt = Path(s.session_worktree)
        if wt in worktrees and wt.exists():
            if _dirty(wt):
                kept.append(f"worktree {wt}: has uncommitted changes; kept")
                leftovers = True
            else:
                actions.append(Action("worktree", str(wt), s.run_id, age))
                removed_worktrees.add(wt)
        elif wt.exists():
            kept.append(f"{wt}: not a registered worktree of {repo}; not touched")
        if repo.is_dir():
            try:
                branches = status.run_branches(s, status.run_window(s, now))
            except (gitops.GitError, OSError) as exc:
                kept.append(f"night {s.run_id}: branches not read ({exc}); kept")
                branches, leftovers = [], True
            for b in branches:
                holder = next((p for p, name in worktrees.items()
                               if name == b.name and p not in removed_worktrees), None)
                if not b.merged:
                    kept.append(f"branch {b.name}: not merged into {s.base_branch}; kept")
                    leftovers = True
                elif holder is not None:
                    kept.append(f"branch {b.name}: checked out in {holder}; kept")
                    leftovers = True
                else:
                    actions.append(Action("branch", b.name, s.run_id, f"merged into {s.base_branch}",
                                          tip=b.tip, base=s.base_branch))
        folder = run_root / "runs" / s.run_id
        if folder.is_dir():
            archived = night.path.parent == folder
            if leftovers and archived:
                if all(child.name == "session.json" for child in folder.iterdir()):
                    continue            # only its record is left
                actions.append(Action("run_logs", str(folder), s.run_id,
                                      f"{age}; its session.json stays: it records what was kept"))
            else:
                actions.append(Action("run_folder", str(folder), s.run_id, age))
    return Plan(actions=actions, kept=kept)


def _dirty(worktree: Path) -> bool:
    try:
        return bool(gitops.git(["status", "--porcelain", "--untracked-files=all"], worktree))
    except gitops.GitError:
        return True


def apply(actions: List[Action], repo_of: Dict[str, Path]) -> List[Tuple[Action, Optional[str]]]:
    """Carry out `actions` (worktrees, then branches, then folders); each with None or the reason
    it was not done. `repo_of` maps a run id to its repository."""
    results: List[Tuple[Action, Optional[str]]] = []
    order = {"worktree": 0, "branch": 1, "run_logs": 2, "run_folder": 2}
    for action in sorted(actions, key=lambda a: order[a.kind]):
        repo = repo_of[action.run_id]
        try:
            if action.kind == "worktree":
                gitops.git(["worktree", "remove", action.target], repo)
            elif action.kind == "branch":
                holders = [p for p, name in gitops.registered_worktrees(repo).items() if name == action.target]
                if holders:
                    raise OvernightError(f"checked out in {holders[0]}")
                if not gitops.succeeds(["merge-base", "--is-ancestor", action.tip, f"refs/heads/{action.base}"],
                                       repo):
                    raise OvernightError("no longer merged")
                # Deleted only if it still points where it pointed when planned.
                gitops.git(["update-ref", "-d", f"refs/heads/{action.target}", action.tip], repo)
            elif action.kind == "run_folder":
                shutil.rmtree(action.target)
            elif action.kind == "run_logs":
                folder = Path(action.target)
                for child in folder.iterdir():
                    if child.name == "session.json":
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            results.append((action, None))
        except (OvernightError, OSError) as exc:
            results.append((action, str(exc)))
    return results


def command(loaded, older_than_days: float, do_apply: bool, out=None) -> int:
    """`overnight-agent gc --older-than DAYS [--apply]`: print the plan; carry it out with
    `do_apply`. Exit 1 when something planned could not be done."""
    import sys
    from .exitcodes import UsageError
    if not older_than_days >= 0:
        raise UsageError(f"gc --older-than: {older_than_days!r} is not a number of days (0 or more)")
    out = out or sys.stdout
    paths = loaded.paths
    the_plan = plan(paths.run_root, paths.session_state, older_than_days)
    nights = {n.session.run_id: n.session for n in recorded_nights(paths.run_root, paths.session_state)}
    if not the_plan.actions:
        print(f"nothing to clean up: no recorded night ended more than {older_than_days:g} days ago "
              "with anything left to remove", file=out)
    if not do_apply:
        for action in the_plan.actions:
            print(f"would {action.describe()}", file=out)
        for line in the_plan.kept:
            print(f"keep: {line}", file=out)
        if the_plan.actions:
            print("dry run: nothing was changed; pass --apply to do it", file=out)
        return 0
    repo_of = {run_id: Path(s.repo_root) for run_id, s in nights.items()}
    failed = 0
    for action, error in apply(the_plan.actions, repo_of):
        if error:
            failed += 1
            print(f"not done: {action.describe()}: {error}", file=out)
        else:
            print(f"done: {action.describe()}", file=out)
    for line in the_plan.kept:
        print(f"keep: {line}", file=out)
    return 1 if failed else 0

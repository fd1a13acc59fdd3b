"""Git: the one runner of git commands, and the supervisor's git effects (worktrees, checkpoints).

Owns: running git (`run`, and `git` for its text: one environment policy, one `GitError`,
light enough for the agent's hooks to import), finding the primary repository, worktrees,
checkpoint commits. Must not: change the primary working tree, its index or its checked-out
branch (only `git worktree add` and ref creation touch the shared repository), rewrite the
repository's config or hooks, or run anything destructive.
"""
import enum
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import faults
from .exitcodes import ConfigError, OvernightError

# Empty folders that codex's bwrap sandbox leaves in a work tree after a kill mid-command.
SANDBOX_STUBS = (".agents", ".aws", ".codex")
# What git sets for one process (a hook inherits them) and the guard's settings for the agent:
# none of it belongs in the tool's own view of a repository.
_PER_PROCESS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR")


class Env(enum.Enum):
    """How a git command's environment is made from the caller's."""

    INHERIT = "inherit"   # as it is: a hook's git sees the hook's repository, the guard's settings
    CLEAN = "clean"       # without git's per-process variables and GIT_CONFIG_*: the tool's own view
    READ = "read"         # CLEAN, and GIT_OPTIONAL_LOCKS=0: a read never takes the index lock


class GitError(OvernightError):
    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr  # git's whole message (the one-line text keeps only its last line)


def environment(policy: Env, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ if base is None else base)
    if policy != Env.INHERIT:
        env = {k: v for k, v in env.items() if not k.startswith("GIT_CONFIG_") and k not in _PER_PROCESS}
    if policy == Env.READ:
        env["GIT_OPTIONAL_LOCKS"] = "0"
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


def run(args: Sequence[str], cwd: Path, *, check: bool = True, policy: Env = Env.INHERIT,
        env: Optional[Dict[str, str]] = None, identity: Optional[Dict[str, str]] = None,
        input: Optional[bytes] = None, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """Run git in `cwd` (bytes in and out, stdin /dev/null unless `input`); GitError with git's
    own last line when it fails and `check`. With `timeout` (a command that talks to another
    machine: a push), git runs in a session of its own, and past the timeout it and everything
    it started (ssh, a credential helper) get SIGKILL and GitError is raised, `check` or not."""
    cmd = ["git"]
    for key, value in (identity or {}).items():
        cmd += ["-c", f"user.{key}={value}"]
    cmd += list(args)
    if timeout is None:
        proc = subprocess.run(cmd, cwd=str(cwd), env=environment(policy, env), capture_output=True,
                              **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}))
    else:
        proc = _run_bounded(cmd, cwd, environment(policy, env), input, timeout, args)
    if check and proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode("utf-8", "replace")
        lines = said.strip().splitlines()
        raise GitError(f"git {' '.join(args)} (in {cwd}): {lines[-1] if lines else proc.returncode}",
                       stderr=said)
    return proc


def _run_bounded(cmd: List[str], cwd: Path, env: Dict[str, str], input: Optional[bytes], timeout: float,
                 args: Sequence[str]) -> subprocess.CompletedProcess:
    with subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          start_new_session=True) as child:
        try:
            out, err = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.communicate()
            verb = next((a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-c")),
                        "")  # the command only: its arguments may hold a URL with credentials
            raise GitError(f"git {verb} (in {cwd}): no answer after {timeout:g}s; stopped") from None
    return subprocess.CompletedProcess(cmd, child.returncode, out, err)


def git(args: Sequence[str], cwd: Path, *, check: bool = True, policy: Env = Env.INHERIT,
        env: Optional[Dict[str, str]] = None, identity: Optional[Dict[str, str]] = None,
        input: Optional[str] = None, raw: bool = False) -> str:
    """git's stdout as text, without its trailing newlines (as it is with `raw`); paths that
    are not UTF-8 survive the trip back into another git command."""
    proc = run(args, cwd, check=check, policy=policy, env=env, identity=identity,
               input=input.encode("utf-8", "surrogateescape") if input is not None else None)
    out = proc.stdout.decode("utf-8", "surrogateescape")
    return out if raw else out.rstrip("\n")


def answer(args: Sequence[str], cwd: Path, policy: Env = Env.INHERIT) -> Tuple[int, str]:
    """git's exit status and its stdout text, whatever the status (a question a hook asks)."""
    proc = run(args, cwd, check=False, policy=policy)
    return proc.returncode, proc.stdout.decode("utf-8", "replace").strip()


def succeeds(args: Sequence[str], cwd: Path, policy: Env = Env.INHERIT) -> bool:
    """Whether git exits 0 (a question: `merge-base --is-ancestor`, `cat-file -e`, ...)."""
    return run(args, cwd, check=False, policy=policy).returncode == 0


def primary_root(path: Path) -> Path:
    """The primary working tree of the repository that contains `path` (even from a linked one)."""
    if not path.is_dir():
        raise ConfigError(f"{path}: --repo: not a folder; expected a git repository")
    common_text = git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path, check=False,
                      policy=Env.CLEAN)
    if not common_text:
        raise ConfigError(f"{path}: --repo: not inside a git repository; run from one or pass --repo")
    common = Path(common_text)
    if common.name != ".git":
        raise ConfigError(f"{path}: --repo: bare repositories are not supported; "
                          "expected a repository with a working tree")
    return common.parent


def common_dir(repo: Path) -> Path:
    return Path(git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo))


def worktree_git_dir(worktree: Path) -> Path:
    return Path(git(["rev-parse", "--path-format=absolute", "--git-dir"], worktree))


# A lock git left behind: git holds one for milliseconds; a git killed mid-commit (an agent
# stopped at the deadline, a supervisor killed) leaves it, and every later commit fails.
STALE_LOCK_AGE = 5.0
_LOCK_HELD = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def lock_error(text: str) -> Optional[Path]:
    """The lock file a git error says exists, if that is what it says."""
    found = _LOCK_HELD.search(text)
    return Path(found.group(1)) if found else None


def clear_stale_locks(worktree: Path, min_age: float = STALE_LOCK_AGE) -> List[str]:
    """Remove the lock files of `worktree` (its index, its HEAD, and the refs under
    refs/heads/overnight/) older than `min_age` seconds while no git runs in it; the paths
    removed. Between attempts nothing of the agent's runs any more, and a second is enough.
    Locks of the repository's shared files (packed-refs, config) and of other refs are the
    user's: never touched."""
    dirs = _linked_dirs(worktree)
    if dirs is None:
        return []
    git_dir, common = dirs
    candidates = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "ORIG_HEAD.lock"]
    for folder, _dirs, files in os.walk(common / "refs" / "heads" / "overnight"):
        candidates += [Path(folder) / name for name in files if name.endswith(".lock")]
    now = time.time()
    old = []
    for lock in candidates:
        try:
            if now - lock.stat().st_mtime >= min_age:
                old.append(lock)
        except OSError:
            pass
    if not old or _git_running_in(worktree):
        return []
    removed = []
    for lock in old:
        try:
            lock.unlink()
            removed.append(str(lock))
        except OSError:
            pass
    return removed


def clear_locks_left(worktrees: Sequence[str]) -> List[str]:
    """`clear_stale_locks` of each worktree, when none of our gits can be running in it (at
    setup, after an earlier supervisor's processes were stopped; after an attempt): a second
    old is enough."""
    return [lock for tree in worktrees for lock in clear_stale_locks(Path(tree), min_age=1.0)]


def _git_running_in(worktree: Path) -> bool:
    import psutil   # late: the agent's hooks import this module and never get here
    inside = str(worktree.resolve())
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "git" and (proc.cwd() + "/").startswith(inside + "/"):
                return True
        except psutil.Error:
            pass
    return False


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo, check=False))


def rev(repo: Path, ref: str) -> str:
    return git(["rev-parse", "--verify", f"{ref}^{{commit}}"], repo)


def registered_worktrees(repo: Path) -> Dict[Path, Optional[str]]:
    """Registered worktree paths -> their checked-out branch (None when detached)."""
    result: Dict[Path, Optional[str]] = {}
    current: Optional[Path] = None
    for line in git(["worktree", "list", "--porcelain"], repo).splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree "):])
            result[current] = None
        elif line.startswith("branch ") and current is not None:
            result[current] = line[len("branch "):].removeprefix("refs/heads/")
    return result


def ensure_worktree(repo: Path, path: Path, branch: str, start_point: str, *, agent_owned: bool = False) -> bool:
    """Make `path` a worktree on `branch` (created from `start_point` if missing).

    Returns True when an existing worktree was reused. `agent_owned`: the agent works in it and
    switches it to its work-item branches (or a detached HEAD mid-rebase), so a reused one may be
    on any branch; it was made for this night (its path names the run). Never touches the
    primary tree.
    """
    worktrees = registered_worktrees(repo)
    if path in worktrees and path.exists():
        if worktrees[path] != branch and not agent_owned:
            raise GitError(f"{path} is a worktree on {worktrees[path] or 'a detached HEAD'}, "
                           f"not {branch}; move it aside or change the config")
        return True
    git(["worktree", "prune"], repo)  # forget registrations whose folder was deleted
    holder = next((p for p, b in registered_worktrees(repo).items() if b == branch), None)
    if holder is not None:
        raise GitError(f"branch {branch} is checked out in {holder}; "
                       "it must be free for the overnight worktree")
    if path.exists() and any(path.iterdir()):
        raise GitError(f"{path} exists and is not a worktree of {repo}; move it aside")
    path.parent.mkdir(parents=True, exist_ok=True)
    if branch_exists(repo, branch):
        git(["worktree", "add", str(path), branch], repo)
    else:
        git(["worktree", "add", "-b", branch, str(path), start_point], repo)
    return False


def _linked_dirs(worktree: Path) -> Optional[Tuple[Path, Path]]:
    """(its git dir, the repository's common dir) of a linked worktree, read from its files (no
    git process: asked around every attempt); None when it is not one."""
    try:
        pointer = (worktree / ".git").read_text().strip()
        if not pointer.startswith("gitdir: "):
            return None
        git_dir = (worktree / pointer[len("gitdir: "):]).resolve()
        return git_dir, (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    except OSError:
        return None


def worktree_intact(path: Path, branch: str) -> bool:
    """Whether `path` is still a checkout and `branch` still exists, read from the files alone."""
    dirs = _linked_dirs(path)
    if dirs is None or not dirs[0].is_dir():
        return False
    common = dirs[1]
    try:
        if (common / "refs" / "heads" / branch).is_file():
            return True
        packed = common / "packed-refs"
        return packed.exists() and f" refs/heads/{branch}\n" in packed.read_text()
    except OSError:
        return False


def repair_worktree(repo: Path, path: Path, branch: str, start_point: str) -> List[str]:
    """Put back a worktree or its branch deleted by hand during a night; what was done, in words.

    A deleted branch is recreated where the worktree's HEAD last pointed (its reflog outlives
    the branch), else at `start_point`; a deleted folder is checked out again on the branch.
    Never touches the primary tree."""
    done = []
    if not branch_exists(repo, branch):
        sha = _last_head(repo, path) or rev(repo, start_point)
        git(["update-ref", f"refs/heads/{branch}", sha, ZERO_SHA], repo)
        done.append(f"branch {branch} was deleted: recreated at {sha[:12]}")
    if not (path / ".git").exists() or path not in registered_worktrees(repo):
        said = f"worktree {path} was deleted: checked out again on {branch}"
        if path.exists():   # what was still writing in it (the agent) made the folder again
            aside = path.with_name(f"{path.name}.leftover-{time.strftime('%Y%m%d_%H%M%S')}")
            path.rename(aside)
            said += f"; what was written there since is kept in {aside}"
        git(["worktree", "prune"], repo)
        ensure_worktree(repo, path, branch, start_point)
        done.append(said)
    return done


ZERO_SHA = "0" * 40


def _last_head(repo: Path, path: Path) -> Optional[str]:
    """The commit `path`'s HEAD last pointed to, from its reflog in the repository's
    worktrees/ folder (there as long as the worktree is registered)."""
    try:
        admin = common_dir(repo) / "worktrees"
        for gitdir in admin.iterdir():
            pointer = gitdir / "gitdir"
            if pointer.exists() and Path(pointer.read_text().strip()).parent == path:
                lines = (gitdir / "logs" / "HEAD").read_text().splitlines()
                sha = lines[-1].split()[1] if lines else None
                if sha and succeeds(["cat-file", "-e", f"{sha}^{{commit}}"], repo):
                    return sha
    except (OSError, IndexError, GitError):
        return None
    return None


def sandbox_writable_roots(worktree: Path) -> List[Path]:
    """What codex's workspace-write sandbox must also allow so the agent can commit in a linked
    worktree: its own git dir, objects, refs and logs; never the whole `.git`, whose config and
    hooks stay read-only."""
    common = common_dir(worktree)
    return [worktree_git_dir(worktree), common / "objects", common / "refs", common / "logs"]


def remove_sandbox_stubs(worktree: Path) -> List[str]:
    """Remove the empty stub folders codex's sandbox may leave; keep anything with content."""
    removed = []
    for name in SANDBOX_STUBS:
        stub = worktree / name
        try:
            if stub.is_dir() and not stub.is_symlink() and not any(stub.iterdir()):
                stub.rmdir()
                removed.append(name)
        except OSError:
            pass
    return removed


def current_branch(worktree: Path) -> Optional[str]:
    name = git(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree, check=False)
    return name or None


def checkpoint(worktree: Path, run_id: str, identity: Dict[str, str],
               screen: Optional[Callable[[Path, List[str]], Dict[str, List[str]]]] = None
               ) -> Tuple[Optional[str], Dict[str, List[str]]]:
    """Commit uncommitted work in `worktree` as a marked checkpoint: (the commit or None when
    there was nothing to commit, the files left out).

    Commits on the checked-out `overnight/*` branch; anything else (a detached HEAD, a foreign
    branch) gets a new `overnight/checkpoint_<run_id>` branch first. `screen(worktree, changed)`
    names the changed files that must not be committed (a secret in them), before anything is
    added, so not even a loose object holds them: they stay in the work tree as they are.
    """
    changed = changed_paths(worktree)
    if not changed:
        return None, {}
    left_out = screen(worktree, changed) if screen is not None else {}
    keep = [p for p in changed if p not in left_out]
    if not keep:
        return None, left_out
    branch = current_branch(worktree)
    if not branch or not branch.startswith("overnight/"):
        branch = f"overnight/checkpoint_{run_id}"
        git(["switch", "-c", branch], worktree)
    literal = {**os.environ, "GIT_LITERAL_PATHSPECS": "1"}  # a path is a path, not a glob
    git(["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"], worktree, env=literal,
        input="\0".join(keep))
    faults.point("checkpoint.staged")
    for path in left_out:  # staged earlier by the agent itself: out of this commit too
        git(["restore", "--staged", "--", path], worktree, env=literal, check=False)
    if not git(["diff", "--cached", "--name-only"], worktree):
        return None, left_out
    git(["commit", "--no-verify", "-q", "-m",
         f"checkpoint: uncommitted work at the deadline (overnight-agent run {run_id})\n\n"
         "Saved automatically by the supervisor; review before merging."],
        worktree, identity=identity)
    return rev(worktree, "HEAD"), left_out


def changed_paths(worktree: Path) -> List[str]:
    """Every path (relative to `worktree`) that differs from HEAD: staged, changed, untracked
    (not ignored), deleted; both sides of a staged rename."""
    out = git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"], worktree)
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def ensure_ignored(repo: Path, path: Path) -> Optional[str]:
    """Keep `path` (inside the primary tree) out of git's view through `.git/info/exclude`,
    which is local to this clone and touches no tracked file. Returns the pattern added."""
    try:
        rel = path.relative_to(repo)
    except ValueError:
        return None
    if _ignored(repo, rel):
        return None
    exclude = common_dir(repo) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    pattern = f"/{rel.as_posix()}/"
    with open(exclude, "a", encoding="utf-8") as handle:
        handle.write(f"# overnight-agent runtime (local only)\n{pattern}\n")
    return pattern


def _ignored(repo: Path, rel: Path) -> bool:
    return succeeds(["check-ignore", "-q", rel.as_posix() + "/"], repo)

"""Git safety for the agent's own processes: codex command rules, git hooks, and checking the
repository after every attempt.

Owns:
  - `prepare()`: the `.rules` file codex enforces (`$CODEX_HOME/rules/overnight-agent.rules`,
    never another rules file), the hooks folder under the run folder, the guard spec the hooks
    and `validate` read, and the environment (`GIT_CONFIG_*`) that points the agent's git at
    those hooks. The repository's config and hooks are never written.
  - `snapshot()`, `compare()`, `restore()`: what must not change outside `overnight/*` (refs,
    the stash, the primary worktree and its index, the operator's other worktrees, the
    repository's config and hooks), the differences an attempt left, and putting refs back.
Must not: touch the operator's own git setup, or trust the agent: rules are a speed bump on
what the model asks for; the hooks hold for anything that runs git with the agent's
environment; the after-attempt check holds even when both were bypassed.

Layers, from outermost:
  1. codex's sandbox (workspace-write): the primary tree, `.git/config` and `.git/hooks` are
     read-only for the agent. Not ours; stays on.
  2. `.rules` (this module): codex refuses a forbidden command prefix before running it, even
     inside `a && b`, and the model reads the justification. Blind to redirections, `$(...)`,
     `VAR=x cmd`, subshells, `bash -c`, scripts, and option orders it does not list.
  3. hooks (`hookrun.py`): git itself refuses ref updates outside `overnight/*` and bad commits,
     whatever the command line; bypassed by `-c core.hooksPath=...`, unsetting `GIT_CONFIG_*`,
     or writing files under `.git/refs` directly.
  4. `compare`/`restore` after every attempt: sees every ref and the primary tree, however they
     changed; restores refs, reports what it cannot restore.
"""
import functools
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import gitops, guards, hookrun
from .state import RunLayout, write_atomic

RULES_NAME = "overnight-agent.rules"
ZERO = "0" * 40
GUARD_ENV = "OVERNIGHT_AGENT_GUARD"
AGENT_REF_PREFIX = "refs/heads/overnight/"
# Hooks git runs on the client side: each gets a stub that runs the repository's own hook.
# (Receive-side hooks and ones whose mere presence changes git's behaviour are left out.)
CHAINED_HOOKS = (
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
    "pre-push", "reference-transaction", "pre-auto-gc", "post-rewrite", "sendemail-validate",
    "post-index-change", "p4-changelist", "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit",
)
GUARDED_HOOKS = ("reference-transaction", "pre-commit", "pre-push")


# The tool's own view of the repository: the agent's guard settings (GIT_CONFIG_*) stay out.
_git = functools.partial(gitops.git, policy=gitops.Env.CLEAN)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ================================================================================================
# Snapshot, compare, restore
# ================================================================================================

@dataclass(frozen=True)
class RepoSnapshot:
    """What must not change while the agent works, outside `refs/heads/overnight/`."""

    taken_at: float
    refs: Dict[str, str]                       # refname -> object id (shared refs only)
    stash: Tuple[Tuple[str, str], ...]         # (commit, reflog subject), newest first
    head_ref: Optional[str]                    # the primary worktree's HEAD: its branch ref ...
    head: Optional[str]                        # ... and the commit
    index: str                                 # digest of the primary index (`ls-files --stage`)
    status: Dict[str, str]                     # path -> porcelain status (primary worktree)
    dirty: Dict[str, str]                      # path -> digest of its content (changed/untracked)
    worktrees: Dict[str, str]                  # other worktrees not on overnight/*: path -> HEAD
    config: str                                # digest of the repository's config file
    hooks: str                                 # digest of its default hooks folder

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stash"] = [list(s) for s in self.stash]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RepoSnapshot":
        data = dict(data)
        data["stash"] = tuple(tuple(s) for s in data.get("stash", ()))
        return cls(**data)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Optional["RepoSnapshot"]:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def _shared_ref(name: str) -> bool:
    return not name.startswith(AGENT_REF_PREFIX) and not name.startswith(hookrun.PER_WORKTREE_PREFIXES)


def _read_stash(repo: Path) -> Tuple[Tuple[str, str], ...]:
    out = _git(["log", "-g", "--format=%H%x00%gs", "refs/stash", "--"], repo, check=False)
    entries = []
    for line in out.splitlines():
        if "\0" in line:
            sha, subject = line.split("\0", 1)
            entries.append((sha, subject))
    return tuple(entries)


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                h.update(str(path.relative_to(folder)).encode() + b"\0")
                try:
                    h.update(_digest(path.read_bytes()).encode())
                    h.update(oct(path.stat().st_mode).encode())
                except OSError:
                    pass
    return h.hexdigest()


def snapshot(repo: Path, *, exclude: Sequence[str] = ()) -> RepoSnapshot:
    """The state of `repo` (its primary worktree) that the agent must leave as it found it;
    `exclude`: more refs the agent may move (an ops-journal branch outside overnight/)."""
    repo = Path(repo)
    common = Path(_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo))
    primary = common.parent
    refs = {}
    for line in _git(["for-each-ref", "--format=%(objectname) %(refname)"], primary).splitlines():
        sha, _, name = line.partition(" ")
        if name != "refs/stash" and _shared_ref(name) and name not in exclude:
            refs[name] = sha
    head_ref = _git(["symbolic-ref", "--quiet", "HEAD"], primary, check=False) or None
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD"], primary, check=False) or None
    status: Dict[str, str] = {}
    raw = _git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none"],
               primary)
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        item = fields[i]
        if len(item) > 3:
            code, path = item[:2], item[3:]
            status[path] = code
            if code[0] in "RC":
                i += 1  # the old name follows
        i += 1
    dirty = {}
    for path in status:
        target = primary / path
        try:
            dirty[path] = _digest(target.read_bytes()) if target.is_file() else "-"
        except OSError:
            dirty[path] = "?"
    worktrees = {}
    current = None
    for line in _git(["worktree", "list", "--porcelain"], primary).splitlines():
        if line.startswith("worktree "):
            current = line[len("worktree "):]
            worktrees[current] = ""
        elif current is not None and line.startswith(("HEAD ", "branch ", "detached", "bare")):
            worktrees[current] = (worktrees[current] + " " + line).strip()
    others = {p: h for p, h in worktrees.items()
              if Path(p) != primary and " refs/heads/overnight/" not in f" {h}"}
    config = common / "config"
    return RepoSnapshot(
        taken_at=time.time(), refs=refs, stash=_read_stash(primary), head_ref=head_ref, head=head,
        index=_digest(_git(["ls-files", "--stage", "-z"], primary).encode("utf-8", "surrogateescape")),
        status=status, dirty=dirty, worktrees=others,
        config=_digest(config.read_bytes()) if config.is_file() else "",
        hooks=_folder_digest(common / "hooks"))


@dataclass(frozen=True)
class Change:
    kind: str                 # ref | stash | primary_head | primary_index | primary_tree | worktree | config | hooks
    name: str                 # the ref, path or thing that changed
    before: Optional[str]
    after: Optional[str]
    restorable: bool

    def describe(self) -> str:
        if self.kind == "ref":
            if self.before is None:
                return f"{self.name} was created (at {self.after[:12]})"
            if self.after is None:
                return f"{self.name} was deleted (was {self.before[:12]})"
            return f"{self.name} moved from {self.before[:12]} to {self.after[:12]}"
        if self.kind == "stash":
            return f"the stash list changed ({self.before} entries before, {self.after} now)"
        if self.kind == "primary_head":
            return f"the primary worktree's HEAD changed from {self.before} to {self.after}"
        if self.kind == "primary_index":
            return "the primary worktree's index changed"
        if self.kind == "primary_tree":
            return f"the primary working tree changed: {self.name}"
        if self.kind == "worktree":
            return f"the worktree {self.name} changed: {self.before or '-'} -> {self.after or 'removed'}"
        if self.kind == "config":
            return "the repository's config file changed"
        if self.kind == "hooks":
            return "the repository's hooks changed"
        return f"{self.kind} {self.name} changed"

    def to_dict(self) -> dict:
        return asdict(self)


def compare(before: RepoSnapshot, after: RepoSnapshot) -> List["Change"]:
    """Every difference between two snapshots of the same repository (pure)."""
    changes: List[Change] = []
    for name in sorted(set(before.refs) | set(after.refs)):
        old, new = before.refs.get(name), after.refs.get(name)
        if old != new:
            changes.append(Change("ref", name, old, new, True))
    if before.stash != after.stash:
        changes.append(Change("stash", "refs/stash", str(len(before.stash)), str(len(after.stash)), True))
    if before.head_ref != after.head_ref or (before.head_ref is None and before.head != after.head):
        changes.append(Change("primary_head", "HEAD", before.head_ref or before.head,
                              after.head_ref or after.head, False))
    if before.index != after.index:
        changes.append(Change("primary_index", "index", before.index[:12], after.index[:12], False))
    paths = sorted(p for p in set(before.status) | set(after.status)
                   if before.status.get(p) != after.status.get(p) or before.dirty.get(p) != after.dirty.get(p))
    if paths:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        changes.append(Change("primary_tree", shown, None, None, False))
    for path in sorted(before.worktrees):
        if before.worktrees[path] != after.worktrees.get(path):
            changes.append(Change("worktree", path, before.worktrees[path], after.worktrees.get(path), False))
    if before.config != after.config:
        changes.append(Change("config", "config", before.config[:12], after.config[:12], False))
    if before.hooks != after.hooks:
        changes.append(Change("hooks", "hooks", before.hooks[:12], after.hooks[:12], False))
    return changes


def _reflog_identities(repo: Path, ref: str, since: float) -> List[str]:
    """Emails of the reflog entries of `ref` written after `since` (epoch seconds)."""
    out = _git(["reflog", "show", "--format=%gE %gd", "--date=unix", ref, "--"], repo, check=False)
    emails = []
    for line in out.splitlines():
        email, _, selector = line.partition(" ")
        try:
            stamp = float(selector[selector.rindex("{") + 1:selector.rindex("}")])
        except ValueError:
            continue
        if stamp >= int(since):
            emails.append(email)
    return emails


def _rescue_name(repo: Path, run_id: str, ref: str) -> str:
    short = ref[len("refs/"):] if ref.startswith("refs/") else ref
    base = f"refs/heads/overnight/rescued_{run_id}/{short}"
    name, n = base, 2
    while _git(["rev-parse", "--verify", "--quiet", name], repo, check=False):
        name, n = f"{base}-{n}", n + 1
    return name


def _rescue(repo: Path, run_id: Optional[str], ref: str, value: str) -> Optional[str]:
    """Keep what the agent put in `ref` reachable under overnight/ before undoing it."""
    if not run_id:
        return None
    commit = _git(["rev-parse", "--verify", "--quiet", f"{value}^{{commit}}"], repo, check=False)
    if not commit:
        return None
    name = _rescue_name(repo, run_id, ref)
    _git(["update-ref", "-m", "overnight-agent: rescued before restoring", name, commit, ZERO], repo)
    return name


def restore(repo: Path, before: RepoSnapshot, changes: Sequence[Change], *,
            run_id: Optional[str] = None, agent_email: Optional[str] = None) -> List[str]:
    """Put back what can safely be put back; one line per change saying what was done.

    Refs go back to their old values with `update-ref` (old-value checked, so a ref moved again
    meanwhile is left alone); what the agent had put there is first kept under
    `overnight/rescued_<run_id>/...` (with `run_id`). With `agent_email`, a ref whose reflog
    since the snapshot shows only other identities is the operator's doing and is left as is.
    The stash is rebuilt as it was. The primary worktree, its index, other worktrees, config
    and hooks cannot be restored safely: they are reported."""
    repo = Path(repo)
    primary = Path(_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo)).parent
    done: List[str] = []
    for change in changes:
        try:
            if change.kind == "ref":
                done.append(_restore_ref(primary, before, change, run_id, agent_email))
            elif change.kind == "stash":
                done.append(_restore_stash(primary, before, run_id))
            else:
                done.append(f"not restored: {change.describe()}: it cannot be undone safely; check it")
        except gitops.GitError as exc:
            done.append(f"not restored: {change.describe()}: {exc}")
    return done


def _restore_ref(primary: Path, before: RepoSnapshot, change: Change, run_id, agent_email) -> str:
    ref = change.name
    if agent_email:
        emails = _reflog_identities(primary, ref, before.taken_at)
        if emails and agent_email not in emails:
            return (f"left as is: {change.describe()}: its reflog names {', '.join(sorted(set(emails)))}, "
                    "not the agent (the operator's own change?)")
    current = _git(["rev-parse", "--verify", "--quiet", ref], primary, check=False) or None
    if current != change.after:
        return f"left as is: {change.describe()}: it changed again since (now {current or 'deleted'})"
    rescued = _rescue(primary, run_id, ref, change.after) if change.after else None
    kept = f"; the agent's value is kept as {rescued[len('refs/heads/'):]}" if rescued else ""
    if change.before is None:
        _git(["update-ref", "-m", "overnight-agent: undo after attempt", "-d", ref, change.after], primary)
        return f"restored: deleted {ref}, which the agent created{kept}"
    if not _git(["cat-file", "-t", change.before], primary, check=False):
        return f"not restored: {change.describe()}: the old object {change.before[:12]} is gone"
    _git(["update-ref", "-m", "overnight-agent: undo after attempt", ref, change.before,
          change.after or ZERO], primary)
    return f"restored: {ref} back to {change.before[:12]}{kept}"


def _restore_stash(primary: Path, before: RepoSnapshot, run_id: Optional[str]) -> str:
    now = _read_stash(primary)
    old = {sha for sha, _ in before.stash}
    added = [sha for sha, _ in now if sha not in old]
    kept = [_rescue(primary, run_id, "refs/stash", sha) for sha in added]
    _git(["update-ref", "-m", "overnight-agent: rebuild stash", "-d", "refs/stash"], primary, check=False)
    missing = []
    for sha, subject in reversed(before.stash):
        if _git(["cat-file", "-t", sha], primary, check=False):
            _git(["stash", "store", "-m", subject, sha], primary)
        else:
            missing.append(sha[:12])
    text = f"restored: the stash list as it was ({len(before.stash) - len(missing)} entries)"
    if kept and any(kept):
        text += "; the agent's entries are kept as " + ", ".join(k[len("refs/heads/"):] for k in kept if k)
    if missing:
        text += f"; lost (objects gone): {', '.join(missing)}"
    return text


# ================================================================================================
# Codex rules
# ================================================================================================

def _q(items) -> str:
    """A Starlark list of strings; never empty (an empty alternative would match nothing anyway)."""
    items = list(items) or ["--overnight-agent-none--"]
    return json.dumps(items)


def _clean_flags() -> List[str]:
    """`git clean` option clusters that force deletion: every order of f with d, x, X, q."""
    from itertools import combinations, permutations
    out = {"--force", "-ff"}
    letters = "dxXq"
    for k in range(len(letters) + 1):
        for extra in combinations(letters, k):
            for perm in permutations(("f",) + extra):
                out.add("-" + "".join(perm))
    return sorted(out)


RUNNERS = (["npx"], ["pnpm", "dlx"], ["pnpm", "exec"], ["yarn", "dlx"], ["bunx"], ["uv", "run"], ["uvx"],
           ["poetry", "run"], ["pipx", "run"], ["python", "-m"], ["python3", "-m"])
WRAPPERS = ([], ["env"], ["command"], ["exec"], ["nohup"], ["nice"], ["time"], ["sudo"])


def render_rules(*, git_programs: Sequence[str], dirs: Sequence[str], branches: Sequence[str],
                 refs: Sequence[str], worktrees: Sequence[str], forbidden_commands: Sequence[str],
                 tool: str, run_id: str = "", own_branches: Sequence[str] = ()) -> str:
    """The Starlark rules file codex enforces for the agent (`codex execpolicy check` reads it)."""
    revs = ["HEAD", "HEAD~", "HEAD^", "@", "@{u}", "@{upstream}", "ORIG_HEAD", "FETCH_HEAD"]
    revs += [f"HEAD~{n}" for n in range(1, 10)] + [f"HEAD^{n}" for n in range(1, 3)]
    revs += list(branches) + list(own_branches)
    lines = [
        f"# overnight-agent: generated for run {run_id}; rewritten at every night start. Do not edit:",
        "# change guard.forbidden_commands in the overnight-agent config instead.",
        "# A speed bump on what the model asks for, not a sandbox: see docs/guardrails.md.",
        f"GIT = {_q(list(dict.fromkeys(git_programs)))}",
        f"DIRS = {_q(list(dict.fromkeys(dirs)))}",
        "NOPAGER = [\"--no-pager\", \"-P\"]",
        "PRE = [[], [NOPAGER], [\"-C\", DIRS], [\"-C\", DIRS, NOPAGER], [NOPAGER, \"-C\", DIRS], "
        "[\"-C\", DIRS, \"-C\", DIRS]]",
        f"WRAP = {json.dumps(list(WRAPPERS))}",
        f"RUNNERS = {json.dumps(list(RUNNERS))}",
        f"BRANCHES = {_q(list(dict.fromkeys(branches)))}",
        f"REFS = {_q(list(dict.fromkeys(refs)))}",
        f"REVS = {_q(list(dict.fromkeys(revs)))}",
        f"WORKTREES = {_q(list(dict.fromkeys(worktrees)))}",
        f"CLEAN_FORCE = {_q(_clean_flags())}",
        "",
        "def git_forbid(suffix, why):",
        "    for w in WRAP:",
        "        for p in PRE:",
        "            prefix_rule(pattern = w + [GIT] + p + suffix, decision = \"forbidden\", "
        "justification = \"overnight-agent guard: \" + why)",
        "",
        "def forbid(cmd, why):",
        "    for w in WRAP + RUNNERS:",
        "        prefix_rule(pattern = w + cmd, decision = \"forbidden\", "
        "justification = \"overnight-agent guard: \" + why)",
        "",
    ]
    commit_hint = "commit your work on your overnight/* branch instead"
    rules: List[Tuple[List, str]] = [
        (["reset", ["--hard", "--merge"]], f"`git reset --hard` throws work away; {commit_hint}. "
                                           "To unstage a file use `git reset -q -- <path>`."),
        (["reset", ["-q", "--quiet"], ["--hard", "--merge"]], "`git reset --hard` throws work away."),
        (["reset", "REVS", ["--hard", "--merge"]], "`git reset --hard` throws work away."),
        (["push"], "pushing is never allowed overnight: the operator reviews and pushes in the morning."),
        (["send-pack"], "pushing is never allowed overnight."),
        (["subtree", "push"], "pushing is never allowed overnight."),
        (["clean", "CLEAN_FORCE"], "`git clean -f` deletes untracked files for good; delete the "
                                   "files you created one by one instead."),
        (["clean", ["-d", "-x", "-X", "-q", "--quiet"], "CLEAN_FORCE"], "`git clean -f` deletes files for good."),
        (["checkout"], "`git checkout` can discard uncommitted work (`checkout -- <path>`, "
                       "`checkout .`), and a rule cannot tell its forms apart. Use `git switch "
                       "<branch>` or `git switch -c <branch>` to change branches."),
        (["restore"], "`git restore` discards changes. To unstage use `git reset -q -- <path>`."),
        (["switch", ["-f", "--force", "--discard-changes", "-C", "--force-create"]],
         "switching with --force / --discard-changes / -C throws work away; commit first."),
        (["branch", ["-d", "-D", "--delete"], "BRANCHES"],
         "deleting a branch this run did not create is not allowed."),
        (["branch", ["-d", "-D", "--delete"], ["-f", "--force", "-r", "--remotes"]],
         "deleting remote-tracking or forced branch deletions are not allowed."),
        (["branch", ["-r", "--remotes"], ["-d", "-D", "--delete"]], "deleting remote-tracking branches is not allowed."),
        (["branch", ["-m", "-M", "--move", "-c", "-C", "--copy"], "BRANCHES"],
         "renaming or overwriting a branch this run did not create is not allowed."),
        (["branch", ["-f", "--force"]], "moving a branch by force is not allowed; start a new one with "
                                        f"`{tool} branch <slug>`."),
        (["update-ref", "-d", "REFS"], "deleting a ref this run did not create is not allowed."),
        (["update-ref", "REFS"], "moving a ref this run did not create is not allowed."),
        (["update-ref", "--no-deref", "REFS"], "moving a ref this run did not create is not allowed."),
        (["update-ref", "--stdin"], "`git update-ref --stdin` is not allowed; use branch and commit."),
        (["symbolic-ref", "-d"], "deleting symbolic refs is not allowed."),
        (["tag", ["-d", "--delete", "-f", "--force"]], "deleting or moving tags is not allowed."),
        (["stash", ["drop", "clear", "pop"]], "the stash is shared with the operator's worktree: "
                                              "dropping entries is not allowed (use `git stash apply`). "
                                              f"Better: {commit_hint}."),
        (["rebase", "REVS", "BRANCHES"], "rebasing a branch this run did not create rewrites shared "
                                         "history; rebase only your own overnight/* branch."),
        (["worktree", ["remove", "move"], ["-f", "--force"]], "removing or moving worktrees by force is not allowed."),
        (["worktree", ["remove", "move"], "WORKTREES"], "that worktree is not yours: leave it alone."),
        (["worktree", "prune"], "pruning worktrees can drop the operator's worktree records."),
        (["gc", ["--prune=now", "--prune=all"]], "`gc --prune=now` destroys unreachable work for good."),
        (["gc", ["--aggressive", "--quiet", "-q", "--force", "--no-detach"], ["--prune=now", "--prune=all"]],
         "`gc --prune=now` destroys unreachable work for good."),
        (["prune"], "`git prune` destroys unreachable work for good."),
        (["reflog", ["expire", "delete"]], "the reflog is how the operator recovers work: leave it."),
        (["filter-branch"], "rewriting history is not allowed."),
        (["filter-repo"], "rewriting history is not allowed."),
        (["replace"], "replace refs hide history: not allowed."),
        (["remote", ["add", "remove", "rm", "rename", "set-url", "set-head", "set-branches", "prune",
                     "update"]], "the repository's remotes are the operator's: leave them."),
        (["commit", ["--no-verify", "-n"]], "the commit guards may not be skipped: fix what they report, "
                                            "or ask the operator."),
        (["commit", ["-a", "--all", "-q", "--quiet"], ["--no-verify", "-n"]],
         "the commit guards may not be skipped."),
    ]
    hookspath = ["core.hooksPath=/dev/null", "core.hookspath=/dev/null", "core.hooksPath=",
                 "core.hookspath=", "core.hooksPath=.git/hooks", "core.hookspath=.git/hooks"]
    for suffix, why in rules:
        lines.append(f"git_forbid({_pattern(suffix)}, {json.dumps(why)})")
    for value in hookspath:
        lines.append(f"git_forbid([\"-c\", {json.dumps(value)}], "
                     f"{json.dumps('the guard hooks may not be switched off.')})")
    env_vars = ["GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0", GUARD_ENV,
                "GIT_CONFIG_PARAMETERS"]
    lines.append(f"forbid([\"env\", [\"-u\", \"--unset\"], {json.dumps(env_vars)}], "
                 f"{json.dumps('the guard settings in the environment may not be removed.')})")
    lines.append(f"forbid([\"env\", [\"-i\", \"--ignore-environment\"]], "
                 f"{json.dumps('the guard settings in the environment may not be removed.')})")
    lines.append(f"forbid([\"unset\", {json.dumps(env_vars)}], "
                 f"{json.dumps('the guard settings in the environment may not be removed.')})")
    lines.append("")
    deploy_why = ("deploys, releases, publishing and secret rotation are never done overnight. Write "
                  f"down what should be done for the operator with `{tool} journal question '...'`.")
    for command in forbidden_commands:
        tokens = shlex.split(command)
        lines.append(f"forbid({json.dumps(tokens)}, {json.dumps(f'`{command}`: ' + deploy_why)})")
    return "\n".join(lines) + "\n"


def _pattern(suffix: List) -> str:
    parts = []
    for token in suffix:
        if token in ("REVS", "BRANCHES", "REFS", "WORKTREES", "CLEAN_FORCE"):
            parts.append(token)
        else:
            parts.append(json.dumps(token))
    return "[" + ", ".join(parts) + "]"


def git_programs() -> List[str]:
    found = ["git"]
    which = shutil.which("git")
    for cand in (which, os.path.realpath(which) if which else None, "/usr/bin/git", "/bin/git",
                 "/usr/local/bin/git"):
        if cand:
            found.append(cand)
    return list(dict.fromkeys(found))


def write_rules(codex_home: Path, text: str) -> Path:
    folder = Path(codex_home) / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RULES_NAME
    write_atomic(path, text)
    return path


# ================================================================================================
# Hooks
# ================================================================================================

def _python_hook(name: str, spec_file: Path) -> str:
    package_parent = Path(__file__).resolve().parent.parent
    return (f"#!{sys.executable}\n"
            f"# overnight-agent: the agent's {name} hook (run {spec_file.parent.parent.name}); generated, "
            "do not edit. It runs the repository's own hook of the same name after its check.\n"
            "import sys\n"
            f"sys.path.insert(0, {str(package_parent)!r})\n"
            "from overnight_agent.hookrun import main\n"
            f"sys.exit(main({name!r}, {str(spec_file)!r}, sys.argv[1:]))\n")


def _chain_hook(name: str, original: Optional[str], default_dir: str) -> str:
    folder = original or default_dir
    return ("#!/bin/sh\n"
            f"# overnight-agent: runs the repository's own {name} hook, if there is one; generated.\n"
            f"d={shlex.quote(folder)}\n"
            'case "$d" in /*) ;; *) d="$PWD/$d" ;; esac\n'
            f'if [ -x "$d/{name}" ]; then exec "$d/{name}" "$@"; fi\n'
            "exit 0\n")


def install_hooks(hooks_dir: Path, spec_file: Path, original: Optional[str], default_dir: str) -> None:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for name in CHAINED_HOOKS:
        text = _python_hook(name, spec_file) if name in GUARDED_HOOKS else _chain_hook(name, original, default_dir)
        path = hooks_dir / name
        write_atomic(path, text)
        os.chmod(path, 0o755)


# ================================================================================================
# prepare()
# ================================================================================================

@dataclass
class AttemptCheck:
    """What an attempt changed outside overnight/*, and what was done about it."""

    changes: List[Change]
    actions: List[str]
    record: Optional[str] = None

    @property
    def clean(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        """One line for the journal and the morning report."""
        if not self.changes:
            return "guard: nothing outside overnight/* changed"
        return ("guard: the agent changed things outside overnight/*: "
                + "; ".join(self.actions or [c.describe() for c in self.changes]))


@dataclass
class AgentGuard:
    repo_root: Path
    run_dir: Path
    run_id: str
    env: Dict[str, str]
    rules_file: Path
    hooks_dir: Path
    spec_file: Path
    branches_file: Path
    validation_dir: Path
    agent_email: Optional[str]
    writable_roots: List[Path] = field(default_factory=list)
    own_refs: Tuple[str, ...] = ()          # refs outside overnight/* the agent may move
    baseline: Optional[RepoSnapshot] = None  # what the next check compares with

    @property
    def snapshot_file(self) -> Path:
        return RunLayout(self.run_dir).guard_dir / "snapshot.json"

    def snapshot(self) -> RepoSnapshot:
        """Take (and keep on disk, for a restarted supervisor) the snapshot before an attempt."""
        snap = snapshot(self.repo_root, exclude=self.own_refs)
        snap.save(self.snapshot_file)
        return snap

    def last_snapshot(self) -> Optional[RepoSnapshot]:
        return RepoSnapshot.load(self.snapshot_file)

    def begin(self, restarted: bool) -> None:
        """The night's snapshot: a restarted supervisor compares with the one taken before it
        died, so nothing done while nobody watched goes unnoticed."""
        self.baseline = (restarted and self.last_snapshot()) or self.snapshot()

    def check(self, attempt: int) -> Optional[AttemptCheck]:
        """After an attempt: what changed outside overnight/* since the last check (restored
        where it can be), or None when nothing did. Each change is reported once."""
        if self.baseline is None:
            self.begin(restarted=False)
        check = self.after_attempt(self.baseline, attempt=attempt)
        if check.clean:
            return None
        self.baseline = self.snapshot()
        return check

    def after_attempt(self, before: RepoSnapshot, attempt: Optional[int] = None) -> AttemptCheck:
        """Compare with `before`, restore what can be, record it under guard/checks/."""
        changes = compare(before, snapshot(self.repo_root, exclude=self.own_refs))
        actions = restore(self.repo_root, before, changes, run_id=self.run_id,
                          agent_email=self.agent_email) if changes else []
        check = AttemptCheck(changes, actions)
        if changes:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            path = RunLayout(self.run_dir).guard_dir / "checks" / f"{stamp}_attempt{attempt or 0}.json"
            write_atomic(path, json.dumps({"attempt": attempt, "changes": [c.to_dict() for c in changes],
                                           "actions": actions}, indent=1) + "\n")
            check.record = str(path)
        return check


def _worktree_git_dir(path: str) -> Optional[str]:
    if not os.path.isdir(path):
        return None
    try:
        return _git(["rev-parse", "--absolute-git-dir"], Path(path))
    except gitops.GitError:
        return None


def prepare(repo_root: Path, run_dir: Path, codex_home: Path, session, config, *,
            tool: Optional[str] = None) -> AgentGuard:
    """Write the rules, hooks and spec for this run; return the environment to give the agent.

    `session` is the night's `state.Session`, `config` its `config.Config`. Idempotent: call it
    at every night start or resume (and before an attempt, to pick up new branches)."""
    repo_root, run_dir, codex_home = Path(repo_root), Path(run_dir), Path(codex_home)
    tool = tool or f"{shlex.quote(sys.executable)} -m overnight_agent"
    common = Path(_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo_root))
    layout = RunLayout(run_dir)
    guard_dir = layout.guard_dir
    hooks_dir = guard_dir / "hooks"
    spec_file = guard_dir / "spec.json"
    agent_dir, branches_file, validation_dir = layout.agent_dir, layout.branches_file, layout.validation_dir
    for folder in (guard_dir, agent_dir, validation_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if not branches_file.exists():
        hookrun.record_branch(str(branches_file), session.session_branch, by="supervisor")
    created = set(hookrun.created_branches(str(branches_file)))

    original = _git(["config", "--type=path", "--get", "core.hooksPath"], repo_root, check=False) or None
    default_hooks = str(common / "hooks")
    worktrees = []
    for line in _git(["worktree", "list", "--porcelain"], repo_root).splitlines():
        if line.startswith("worktree "):
            worktrees.append(line[len("worktree "):])
    mine = {os.path.realpath(session.session_worktree), os.path.realpath(session.ops_journal_worktree)}
    foreign_dirs = [str(common)]
    for path in worktrees:
        if os.path.realpath(path) not in mine and os.path.realpath(path) != os.path.realpath(common.parent):
            git_dir = _worktree_git_dir(path)
            if git_dir:
                foreign_dirs.append(git_dir)

    cfg_repo = config.repo
    settings = guards.GuardSettings.from_validation(
        config.validation, base=session.base_commit, ops_journal_branch=session.ops_journal_branch,
        journal_paths=(cfg_repo.reports_dir.strip("/"), cfg_repo.exec_summary_log.strip("/")),
        branches_file=str(branches_file))
    spec = {
        "version": 1, "run_id": session.run_id, "repo_root": str(repo_root), "common_dir": str(common),
        "session_branch": session.session_branch, "session_worktree": session.session_worktree,
        "ops_journal_branch": session.ops_journal_branch,
        "ops_journal_worktree": session.ops_journal_worktree, "branches_file": str(branches_file),
        "ref_log": str(agent_dir / "ref-updates.jsonl"), "foreign_git_dirs": foreign_dirs,
        "original_hooks_path": original, "default_hooks_dir": default_hooks, "hooks_dir": str(hooks_dir),
        "tool": tool, "validation_dir": str(validation_dir), "guards": settings.to_dict(),
        "suites": [asdict(s) for s in config.validation.suites],
    }
    write_atomic(spec_file, json.dumps(spec, indent=1) + "\n")
    install_hooks(hooks_dir, spec_file, original, default_hooks)

    branches = [line for line in _git(["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
                                      repo_root).splitlines() if line and line not in created]
    refs = [line for line in _git(["for-each-ref", "--format=%(refname)"], repo_root).splitlines()
            if line and line[len("refs/heads/"):] not in created]
    dirs = [".", "..", str(repo_root), session.session_worktree, session.ops_journal_worktree]
    dirs += [d + "/" for d in dirs if d not in (".", "..")]
    worktree_names = []
    for path in worktrees:
        worktree_names += [path, path + "/", os.path.relpath(path, session.session_worktree)]
    rules = render_rules(git_programs=git_programs(), dirs=dirs, branches=branches, refs=refs,
                         worktrees=worktree_names, forbidden_commands=config.guard.forbidden(),
                         tool=tool, run_id=session.run_id, own_branches=sorted(created))
    rules_file = write_rules(codex_home, rules)

    pairs = [("core.hooksPath", str(hooks_dir)), ("gc.auto", "0"), ("core.logAllRefUpdates", "always")]
    email = None
    identity = getattr(session, "git_identity", None) or {}
    if config.guard.agent_identity and identity.get("email"):
        email = identity["email"]
        pairs += [("user.name", identity.get("name") or "Overnight Agent"), ("user.email", email)]
    env = {"GIT_CONFIG_COUNT": str(len(pairs)), GUARD_ENV: str(spec_file)}
    if email:
        # Also as plain variables: they survive a command that drops GIT_CONFIG_* and keep the
        # agent's ref updates attributable in the reflog.
        name = identity.get("name") or "Overnight Agent"
        env.update({"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                    "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email})
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return AgentGuard(repo_root=repo_root, run_dir=run_dir, run_id=session.run_id, env=env,
                      rules_file=rules_file, hooks_dir=hooks_dir, spec_file=spec_file,
                      branches_file=branches_file, validation_dir=validation_dir, agent_email=email,
                      writable_roots=[validation_dir],
                      own_refs=(f"refs/heads/{session.ops_journal_branch}",))

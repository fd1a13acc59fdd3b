"""The after-attempt check: what the agent changed outside `overnight/*`, put back where it can be.

Owns: the snapshot of what must not change (every ref outside `overnight/*`, the stash, the
primary worktree and its index, the operator's other worktrees, the repository's config and
hooks), comparing two snapshots, restoring refs (the agent's version rescued first, under
`overnight/rescued_<run_id>/`), and `Audit`: the night's baseline, kept on disk for a restarted
supervisor, and the check after each attempt, recorded under `<run_dir>/guard/checks/`.
Must not: trust the agent or its environment (it runs git with the tool's own view, see
`gitops.Env.CLEAN`), or change anything it cannot put back exactly (it reports those).

The last of four layers (see `fences` for the first three): it sees every ref and the primary
tree however they changed, so it holds even when the rules and the hooks were bypassed.
"""
import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import gitops, hookrun
from .state import RunLayout, write_atomic

ZERO = "0" * 40
AGENT_REF_PREFIX = "refs/heads/overnight/"

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
class Audit:
    """The night's baseline and the check after each attempt."""

    repo_root: Path
    run_dir: Path
    run_id: str
    agent_email: Optional[str]
    own_refs: Tuple[str, ...] = ()           # refs outside overnight/* the agent may move
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



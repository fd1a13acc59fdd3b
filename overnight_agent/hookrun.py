"""What the agent's git hooks do: the code behind the scripts in `<run_dir>/guard/hooks/`.

Git runs these hooks only for the agent's processes: the supervisor points `core.hooksPath` at
that folder through `GIT_CONFIG_*` variables in the agent's environment, never in the
repository's config. Each hook does its check, then runs the repository's own hook of the same
name (from its original hooks path), so the operator's hooks still run.

Owns:
  reference-transaction  refuses, in the `prepared` phase, any update of a branch, tag or other
                         shared ref outside `refs/heads/overnight/`; of an `overnight/*` branch this
                         run did not create (the ops-journal branch may only move forward); a
                         deletion of the stash; anything done from a worktree that is not the
                         agent's; and new commits that add a secret. Records the `overnight/*`
                         branches the agent creates.
  pre-commit             the guards of `guards.py` on the staged set.
  pre-push               refuses every push.
Must not: import anything heavy (it runs on every ref update), write anywhere but the run's
`agent/` folder, or print a secret.
"""
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import gitops  # light: the standard library and exitcodes

PREFIX = "overnight-agent guard"
PER_WORKTREE_PREFIXES = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
MAX_SCANNED_COMMITS = 500


def load_spec(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _zero(oid: str) -> bool:
    return not oid.strip("0")


# --- branch records (the run's agent/ folder: writable by the agent inside its sandbox) -------

def record_branch(branches_file: str, name: str, *, paths: Optional[List[str]] = None,
                  by: str = "hook") -> None:
    """Add `name` to the run's work-item branches (keeping declared paths already there)."""
    path = Path(branches_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        branches = data.setdefault("branches", {})
        entry = branches.get(name) or {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": by}
        if paths is not None:
            entry["paths"] = list(paths)
        branches[name] = entry
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        os.close(lock)


def created_branches(branches_file: Optional[str]) -> Dict[str, dict]:
    if not branches_file:
        return {}
    try:
        data = json.loads(Path(branches_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    branches = data.get("branches") if isinstance(data, dict) else None
    return branches if isinstance(branches, dict) else {}


# --- reference-transaction ---------------------------------------------------------------------

def _packed_value(common_dir: str, ref: str) -> Optional[str]:
    try:
        with open(os.path.join(common_dir, "packed-refs"), encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        pass
    return None


def _packing(common_dir: str, ref: str, old: str, new: str) -> bool:
    """`git pack-refs` moves a loose ref into packed-refs with two transactions that look like a
    creation and a deletion of the same value: neither changes what the ref points to."""
    return _zero(new) and not _zero(old) and _packed_value(common_dir, ref) == old


def _secret_kinds(cwd: str, new: str) -> List[str]:
    """Kinds of secrets added by the commits `new` brings that no ref has yet."""
    try:
        from . import redact
    except ImportError:  # pragma: no cover - redact is part of the package
        return []
    code, out = gitops.answer(["-c", "core.quotePath=false", "log", "-p", "-U0", "--no-color", "--no-ext-diff",
                      "--no-textconv", f"--max-count={MAX_SCANNED_COMMITS}", "--format=commit %H",
                      new, "--not", "--all"], cwd)
    if code != 0 or not out:
        return []
    found, added, current = [], [], None

    def flush():
        if current is not None and added:
            for kind in redact.scan("\n".join(added)):
                found.append(f"{current} ({kind})")

    for line in out.splitlines():
        if line.startswith("+++ "):
            flush()
            added, current = [], line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("+") and current is not None:
            added.append(line[1:])
    flush()
    return sorted(set(found))


def check_transaction(spec: dict, phase: str, lines: Sequence[Tuple[str, str, str]], cwd: str,
                      git_dir: Optional[str] = None) -> List[str]:
    """The reasons to refuse this transaction (empty: allow). Pure but for reading refs."""
    if phase != "prepared":
        return []
    common = spec["common_dir"]
    ops = spec.get("ops_journal_branch")
    ours = {spec.get("session_branch")} | set(created_branches(spec.get("branches_file")))
    ours.discard(None)
    tool = spec.get("tool", "overnight-agent")
    refusals: List[str] = []
    foreign = None
    for old, new, ref in lines:
        deleting = _zero(new)
        if not deleting and old == new:
            continue
        if _packing(common, ref, old, new):
            continue
        if foreign is None:
            if git_dir is None:
                _, git_dir = gitops.answer(["rev-parse", "--absolute-git-dir"], cwd)
            foreign = os.path.realpath(git_dir) in {os.path.realpath(d) for d in spec.get("foreign_git_dirs", [])}
        code, current = gitops.answer(["rev-parse", "--verify", "--quiet", ref], cwd)
        current = current if code == 0 and current else None
        if not deleting and current == new:
            continue  # e.g. pack-refs rewriting a ref to the value it has
        if foreign:
            refusals.append(f"{ref}: this worktree ({cwd}) is not yours: it belongs to the operator "
                            "(or to another night). Work only in your session worktree.")
            continue
        if not ref.startswith("refs/"):
            if ref.startswith(("main-worktree/", "worktrees/")):
                refusals.append(f"{ref}: that is another worktree's ref; leave it alone.")
            continue  # HEAD, ORIG_HEAD, FETCH_HEAD, ... of this worktree
        if ref.startswith(PER_WORKTREE_PREFIXES):
            continue
        if ref == "refs/stash":
            if deleting:
                refusals.append("refs/stash: dropping or clearing stash entries is not allowed: the "
                                "stash is shared with the operator's worktree. Commit work-in-progress "
                                "on your overnight/* branch instead.")
            continue
        branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else None
        if branch is not None and (branch.startswith("overnight/") or branch == ops):
            reason = _overnight_update(branch, ref, old, new, current, deleting, ours, ops, cwd, tool)
            if reason:
                refusals.append(reason)
            elif not deleting:
                kinds = _secret_kinds(cwd, new)
                if kinds:
                    refusals.append(f"{ref}: the new commits add what looks like a secret in "
                                    f"{', '.join(kinds)}. Remove it and commit again (the value was "
                                    "not printed; never commit secrets).")
            continue
        what = ("branch" if branch is not None else "tag" if ref.startswith("refs/tags/")
                else "shared ref")
        verb = "delete" if deleting else "create" if current is None else "move"
        refusals.append(f"{ref}: the overnight agent may not {verb} the {what} {ref}: only branches "
                        f"under overnight/ that this run created are yours. Start work items with "
                        f"`{tool} branch <slug>`; leave the operator's branches and tags alone.")
    return refusals


def _overnight_update(branch, ref, old, new, current, deleting, ours, ops, cwd, tool) -> Optional[str]:
    if deleting:
        if branch in ours and branch != ops and branch not in _session_like(ours):
            return None
        return (f"{ref}: deleting {branch} is not allowed: this run did not create it (or it is the "
                "session or ops-journal branch). Leave it for the operator's review.")
    if current is None or branch in ours:
        return None
    if branch == ops:
        code, _ = gitops.answer(["merge-base", "--is-ancestor", current, new], cwd)
        if code == 0:
            return None
        return (f"{ref}: the ops journal only grows: this update would rewrite its history. Use "
                f"`{tool} journal ...` to add to it.")
    return (f"{ref}: {branch} belongs to an earlier night or to the operator, not to this run: "
            f"do not rewrite it. Start a new work item with `{tool} branch <slug>` (you may start it "
            "from that branch).")


def _session_like(ours) -> set:
    return {b for b in ours if b.startswith("overnight/session_")}


def _record_creations(spec: dict, lines, cwd: str) -> None:
    branches_file = spec.get("branches_file")
    if not branches_file:
        return
    known = created_branches(branches_file)
    for old, new, ref in lines:
        if not ref.startswith("refs/heads/overnight/") or _zero(new):
            continue
        branch = ref[len("refs/heads/"):]
        if branch in known or branch == spec.get("ops_journal_branch"):
            continue
        code, current = gitops.answer(["rev-parse", "--verify", "--quiet", ref], cwd)
        if code != 0 or not current:  # it does not exist yet: this transaction creates it
            try:
                record_branch(branches_file, branch, by="git")
            except OSError:
                pass


def _log_updates(spec: dict, phase: str, lines, cwd: str, refused: List[str]) -> None:
    path = spec.get("ref_log")
    if not path or phase not in ("committed", "prepared") or (phase == "prepared" and not refused):
        return
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "phase": phase, "cwd": cwd,
             "updates": [{"old": o, "new": n, "ref": r} for o, n, r in lines],
             "refused": refused}
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    except OSError:
        pass


# --- chaining to the repository's own hooks ----------------------------------------------------

def original_hook(spec: dict, name: str, cwd: str) -> Optional[str]:
    folder = spec.get("original_hooks_path") or spec.get("default_hooks_dir")
    if not folder:
        return None
    if not os.path.isabs(folder):
        folder = os.path.join(cwd, folder)
    candidate = os.path.join(folder, name)
    if os.path.realpath(os.path.dirname(candidate)) == os.path.realpath(spec.get("hooks_dir", "")):
        return None
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def chain(spec: dict, name: str, argv: Sequence[str], stdin: Optional[bytes], cwd: str) -> int:
    hook = original_hook(spec, name, cwd)
    if hook is None:
        return 0
    proc = subprocess.run([hook, *argv], cwd=cwd, input=stdin if stdin is not None else None,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    return proc.returncode


# --- entry points --------------------------------------------------------------------------------

def reference_transaction(spec: dict, argv: Sequence[str], stdin: bytes, cwd: str) -> int:
    phase = argv[0] if argv else ""
    lines = []
    for raw in stdin.decode("utf-8", "replace").splitlines():
        parts = raw.split(" ", 2)
        if len(parts) == 3:
            lines.append((parts[0], parts[1], parts[2]))
    refused = check_transaction(spec, phase, lines, cwd)
    _log_updates(spec, phase, lines, cwd, refused)
    if refused:
        for reason in refused:
            print(f"{PREFIX}: refused: {reason}", file=sys.stderr)
        return 1
    if phase == "prepared":
        _record_creations(spec, lines, cwd)
    return chain(spec, "reference-transaction", argv, stdin, cwd)


def pre_commit(spec: dict, argv: Sequence[str], cwd: str) -> int:
    from . import guards
    _, git_dir = gitops.answer(["rev-parse", "--absolute-git-dir"], cwd)
    if os.path.realpath(git_dir) in {os.path.realpath(d) for d in spec.get("foreign_git_dirs", [])}:
        print(f"{PREFIX}: refused: this worktree ({cwd}) is not yours; commit only in your session "
              "worktree.", file=sys.stderr)
        return 1
    settings = guards.GuardSettings.from_dict(spec.get("guards", {}))
    top = Path(cwd)
    target = guards.staged(top)
    branch_set = None
    if settings.base and settings.perf_cycle_dirs:
        try:
            branch_set = guards.against_base(top, settings.base)
        except gitops.GitError:
            branch_set = None
    failed = guards.failures(guards.run_all(settings, target, branch_set))
    if failed:
        for message in failed:
            print(f"{PREFIX}: commit refused: {message}", file=sys.stderr)
        return 1
    return chain(spec, "pre-commit", argv, None, cwd)


def main(name: str, spec_path: str, argv: Sequence[str]) -> int:
    cwd = os.getcwd()
    try:
        spec = load_spec(spec_path)
    except (OSError, ValueError) as exc:
        # Fail closed: without its spec the guard cannot tell what is allowed.
        print(f"{PREFIX}: cannot read {spec_path} ({exc}); refusing", file=sys.stderr)
        return 1
    if name == "reference-transaction":
        return reference_transaction(spec, argv, sys.stdin.buffer.read(), cwd)
    if name == "pre-commit":
        return pre_commit(spec, argv, cwd)
    if name == "pre-push":
        print(f"{PREFIX}: refused: pushing is never allowed overnight; the operator reviews the "
              "overnight/* branches and pushes in the morning.", file=sys.stderr)
        return 1
    return chain(spec, name, argv, None, cwd)

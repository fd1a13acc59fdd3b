"""Guards on a change set: what a commit by the agent may not contain, whatever the model thinks.

Owns: reading a change set from git (the staged set, or a branch against its base), and the five
checks run on it by the agent's pre-commit hook and by `overnight-agent validate`:
  perf_cycle    one perf-cycle directory per branch (a second one: stop and ask the operator);
  change_scope  at most `max_changed_files` files, all inside the paths the work item declared;
  doc_sprawl    a new .md file must be linked from the docs index (journal files exempt);
  line_endings  no CRLF introduced into a file that had LF line endings;
  secrets       no added line that `redact.scan` recognises as a secret.
Must not: change the repository (read-only git commands only), print a secret (only its kind),
or import anything heavy: git hooks import this module. Messages tell the agent what to do next,
and when a guard is about scope they say "ask the operator", never "format more".
"""
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import unquote

from . import gitops, pathglob, redact

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
ASK = "stop this work item and ask the operator (`journal question`), then take the next task"
MAX_LISTED = 10


# --- change sets -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    status: str                  # A, M, D, T, R (renamed: old_path is set)
    path: str
    old_path: Optional[str] = None


@dataclass
class ChangeSet:
    """Files touched between `old` (a commit or the empty tree) and `new` (the index or the
    working tree) of `worktree`."""

    worktree: Path
    old: str
    new: str                     # "index" | "worktree"
    entries: List[Entry]
    _added: Optional[Dict[str, str]] = field(default=None, repr=False)

    @property
    def paths(self) -> List[str]:
        """Every touched path, the old name of a rename included."""
        out = []
        for e in self.entries:
            out.append(e.path)
            if e.old_path:
                out.append(e.old_path)
        return out

    def old_bytes(self, path: str) -> Optional[bytes]:
        if self.old == EMPTY_TREE:
            return None
        proc = gitops.run(["cat-file", "blob", f"{self.old}:{path}"], self.worktree, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def new_bytes(self, path: str) -> Optional[bytes]:
        if self.new == "index":
            proc = gitops.run(["cat-file", "blob", f":{path}"], self.worktree, check=False)
            return proc.stdout if proc.returncode == 0 else None
        try:
            return (self.worktree / path).read_bytes()
        except OSError:
            return None

    def added_text(self) -> Dict[str, str]:
        """path -> the lines this change set adds to it, joined (what a secret scan must see)."""
        if self._added is not None:
            return self._added
        args = ["-c", "core.quotePath=false", "diff", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
                "--dst-prefix=b/"]
        args += ["--cached", self.old] if self.new == "index" else [self.old]
        added: Dict[str, List[str]] = {}
        current = None
        for line in gitops.run(args, self.worktree).stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("+++ "):
                name = line[4:]
                current = name[2:] if name.startswith("b/") else None
                if current is not None:
                    current = _unquote_path(current)
                    added.setdefault(current, [])
            elif line.startswith("+") and current is not None:
                added[current].append(line[1:])
        if self.new == "worktree":  # untracked files are wholly added
            for e in self.entries:
                if e.status == "A" and e.path not in added:
                    data = self.new_bytes(e.path) or b""
                    if b"\0" not in data[:8000]:
                        added[e.path] = data.decode("utf-8", "replace").splitlines()
        self._added = {k: "\n".join(v) for k, v in added.items()}
        return self._added


def _unquote_path(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape") \
            .encode("latin-1").decode("utf-8", "replace")
    return name


def head_or_empty(worktree: Path) -> str:
    return gitops.git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], worktree, check=False) or EMPTY_TREE


def _name_status(args: Sequence[str], worktree: Path) -> List[Entry]:
    raw = gitops.run(["diff", "--name-status", "-z", "-M", "--no-color", "--no-ext-diff", *args], worktree).stdout
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    entries, i = [], 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        kind = status[0]
        if kind in "RC":
            old, new = fields[i + 1], fields[i + 2]
            entries.append(Entry("R" if kind == "R" else "A", new, old if kind == "R" else None))
            i += 3
        else:
            entries.append(Entry(kind, fields[i + 1]))
            i += 2
    return entries


def staged(worktree: Path) -> ChangeSet:
    """The staged set: what `git commit` would record, against HEAD."""
    old = head_or_empty(worktree)
    return ChangeSet(worktree, old, "index", _name_status(["--cached", old], worktree))


def merge_base(worktree: Path, base: str) -> str:
    head = head_or_empty(worktree)
    if head == EMPTY_TREE:
        return EMPTY_TREE
    found = gitops.git(["merge-base", head, base], worktree, check=False)
    if not found:
        raise gitops.GitError(f"{base!r} has no common history with HEAD; pass --base with a commit of it")
    return found


def against_base(worktree: Path, base: str) -> ChangeSet:
    """Everything this branch changes since it left `base`: commits, staged and unstaged edits,
    and untracked files (not ignored ones)."""
    old = merge_base(worktree, base)
    entries = _name_status([old], worktree)
    seen = {e.path for e in entries}
    raw = gitops.run(["ls-files", "--others", "--exclude-standard", "-z"], worktree).stdout
    for path in raw.decode("utf-8", "surrogateescape").split("\0"):
        if path and path not in seen:
            entries.append(Entry("A", path))
    return ChangeSet(worktree, old, "worktree", entries)


# --- settings and branch records ---------------------------------------------------------------

@dataclass(frozen=True)
class GuardSettings:
    max_changed_files: int = 30
    docs_index: Optional[str] = "docs/index.md"
    docs_exempt: Tuple[str, ...] = ()
    perf_cycle_dirs: Optional[str] = None
    perf_cycle_complete_file: Optional[str] = None
    base: Optional[str] = None              # where the branch started (session base commit)
    ops_journal_branch: Optional[str] = None
    journal_paths: Tuple[str, ...] = ()     # repo-relative folders/files of the ops journal
    branches_file: Optional[str] = None     # the run's record of work-item branches

    @classmethod
    def from_validation(cls, validation, **extra) -> "GuardSettings":
        return cls(max_changed_files=validation.max_changed_files, docs_index=validation.docs_index,
                   docs_exempt=tuple(validation.docs_exempt), perf_cycle_dirs=validation.perf_cycle_dirs,
                   perf_cycle_complete_file=validation.perf_cycle_complete_file, **extra)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "GuardSettings":
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()
                 if k in cls.__dataclass_fields__}
        return cls(**known)


def load_branches(path: Optional[str]) -> Dict[str, dict]:
    """The run's work-item branches: name -> {created_at, paths, by}."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    branches = data.get("branches") if isinstance(data, dict) else None
    return branches if isinstance(branches, dict) else {}


def current_branch(worktree: Path) -> Optional[str]:
    return gitops.git(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree, check=False) or None


# --- the guards --------------------------------------------------------------------------------

@dataclass
class GuardResult:
    name: str
    ok: bool
    messages: List[str] = field(default_factory=list)
    skipped: Optional[str] = None            # why the guard did not apply

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "messages": self.messages, "skipped": self.skipped}


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def cycle_dir_of(pattern: str, path: str) -> Optional[str]:
    """The folder of `path` that the cycle-directory glob matches, if any."""
    parts = path.split("/")
    for n in range(1, len(parts)):
        candidate = "/".join(parts[:n])
        if pathglob.match(pattern, candidate):
            return candidate
    return None


def _journal_file(settings: GuardSettings, branch: Optional[str], path: str) -> bool:
    if not settings.ops_journal_branch or branch != settings.ops_journal_branch:
        return False
    return any(path == j or path.startswith(j.rstrip("/") + "/") for j in settings.journal_paths)


def check_perf_cycle(settings: GuardSettings, branch_set: Optional[ChangeSet],
                     target: ChangeSet) -> GuardResult:
    name = "perf_cycle"
    pattern = settings.perf_cycle_dirs
    if not pattern:
        return GuardResult(name, True, skipped="validation.perf_cycle_dirs is not set")
    whole = branch_set or target
    cycles: Dict[str, List[str]] = {}
    for e in whole.entries:
        if e.status == "D":
            continue
        found = cycle_dir_of(pattern, e.path)
        if found:
            cycles.setdefault(found, []).append(e.path)
    messages = []
    if len(cycles) > 1:
        names = sorted(cycles)
        messages.append(
            f"perf cycle retention: this branch holds {len(names)} perf cycle directories "
            f"({_listed(names)}); exactly one pre/post cycle per branch is allowed. Do not create "
            f"another cycle and do not delete one to make room: {ASK}.")
    if settings.perf_cycle_complete_file:
        staged_cycles = {cycle_dir_of(pattern, e.path) for e in target.entries if e.status != "D"}
        for cycle in sorted(c for c in staged_cycles if c):
            marker = f"{cycle}/{settings.perf_cycle_complete_file}"
            if whole.new_bytes(marker) is None and target.new_bytes(marker) is None:
                messages.append(
                    f"perf cycle retention: {cycle} has no {settings.perf_cycle_complete_file}: a pre "
                    "without its post. Finish it with the matching post run (same cycle id), or "
                    f"{ASK}; never start a second cycle.")
    return GuardResult(name, not messages, messages)


def check_change_scope(settings: GuardSettings, target: ChangeSet, branch: Optional[str]) -> GuardResult:
    name = "change_scope"
    pattern = settings.perf_cycle_dirs
    counted = [p for p in dict.fromkeys(e.path for e in target.entries)
               if not (pattern and cycle_dir_of(pattern, p)) and not _journal_file(settings, branch, p)]
    messages = []
    if len(counted) > settings.max_changed_files:
        messages.append(
            f"change scope: {len(counted)} files changed, more than validation.max_changed_files "
            f"({settings.max_changed_files}). Do not reformat or widen anything to get past this: "
            f"unstage what does not belong to this work item, or {ASK}.")
    declared = (load_branches(settings.branches_file).get(branch or "") or {}).get("paths") or []
    if declared:
        outside = [p for p in counted if not pathglob.any_match(declared, p)]
        if outside:
            messages.append(
                f"change scope: {_listed(outside)} lie outside the paths this work item declared "
                f"({', '.join(declared)}). Do not widen the change: unstage them, or {ASK}.")
    return GuardResult(name, not messages, messages)


_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_AUTO_LINK = re.compile(r"<([^<>\s]+\.md(?:#[^<>\s]*)?)>")


def index_links(index_path: str, text: str) -> set:
    """Repository-relative paths that the Markdown file `index_path` links to."""
    folder = posixpath.dirname(index_path)
    found = set()
    targets = _INLINE_LINK.findall(text) + _REF_LINK.findall(text) + _AUTO_LINK.findall(text)
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        target = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not target:
            continue
        joined = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        found.add(posixpath.normpath(joined))
    return found


def check_doc_sprawl(settings: GuardSettings, target: ChangeSet, branch: Optional[str]) -> GuardResult:
    name = "doc_sprawl"
    index = settings.docs_index
    if not index:
        return GuardResult(name, True, skipped="validation.docs_index is null")
    new_docs = [e.path for e in target.entries
                if e.status in ("A", "R") and e.path.lower().endswith(".md") and e.path != index
                and not pathglob.any_match(settings.docs_exempt, e.path)
                and not _journal_file(settings, branch, e.path)
                and not (settings.perf_cycle_dirs and cycle_dir_of(settings.perf_cycle_dirs, e.path))]
    if not new_docs:
        return GuardResult(name, True)
    data = target.new_bytes(index)
    links = index_links(index, data.decode("utf-8", "replace")) if data is not None else set()
    missing = [p for p in new_docs if p not in links]
    if not missing:
        return GuardResult(name, True)
    where = index if data is not None else f"{index} (which does not exist)"
    return GuardResult(name, False, [
        f"doc sprawl: {_listed(missing)} {'is a new Markdown file' if len(missing) == 1 else 'are new Markdown files'} "
        f"not linked from {where}. First look for an existing doc to extend (grep its keywords); if "
        f"the new doc is still needed, link it from {index} under the right section in the same "
        "commit. Otherwise do not create it."])


def _binary(data: bytes) -> bool:
    return b"\0" in data[:8000]


def _crlf_allowed(worktree: Path, paths: Sequence[str]) -> set:
    """Paths whose attributes ask for CRLF or say they are not text."""
    if not paths:
        return set()
    proc = gitops.run(["check-attr", "-z", "--stdin", "eol", "text"], worktree, check=False,
                      input="\0".join(paths).encode("utf-8", "surrogateescape") + b"\0")
    allowed = set()
    fields = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    for i in range(0, len(fields) - 2, 3):
        path, attr, value = fields[i], fields[i + 1], fields[i + 2]
        if (attr == "eol" and value == "crlf") or (attr == "text" and value == "unset"):
            allowed.add(path)
    return allowed


def check_line_endings(target: ChangeSet) -> GuardResult:
    name = "line_endings"
    candidates = [e for e in target.entries if e.status in ("A", "M", "R", "T")]
    allowed = _crlf_allowed(target.worktree, [e.path for e in candidates])
    bad = []
    for e in candidates:
        if e.path in allowed:
            continue
        new = target.new_bytes(e.path)
        if not new or b"\r\n" not in new or _binary(new):
            continue
        old = target.old_bytes(e.old_path or e.path)
        if old is None or b"\r\n" not in old:
            bad.append(e.path)
    if not bad:
        return GuardResult(name, True)
    return GuardResult(name, False, [
        f"line endings: CRLF line endings introduced into {_listed(bad)} (new files and files with "
        "LF endings stay LF; CRLF only where .gitattributes asks for it). Convert only the lines you changed back to LF (e.g. `sed -i 's/\\r$//' FILE` "
        "on that file alone) and stage it again."])


def check_secrets(target: ChangeSet) -> GuardResult:
    name = "secrets"
    found = []
    for path, text in sorted(target.added_text().items()):
        kinds = redact.scan(text)
        if kinds:
            found.append(f"{path} ({', '.join(sorted(set(kinds)))})")
    if not found:
        return GuardResult(name, True)
    return GuardResult(name, False, [
        f"secrets: {_listed(found)} add what looks like a secret. Remove it from the file and the "
        "index (never commit, print or log a secret; refer to it by its variable name, e.g. "
        "${API_TOKEN}). The value was not printed."])


def run_all(settings: GuardSettings, target: ChangeSet, branch_set: Optional[ChangeSet] = None,
            branch: Optional[str] = None) -> List[GuardResult]:
    """Every guard on `target` (the staged set, or the branch against its base); `branch_set`
    (the whole branch, for perf-cycle retention) defaults to `target`."""
    if branch is None:
        branch = current_branch(target.worktree)
    return [
        check_perf_cycle(settings, branch_set, target),
        check_change_scope(settings, target, branch),
        check_doc_sprawl(settings, target, branch),
        check_line_endings(target),
        check_secrets(target),
    ]


def failures(results: Iterable[GuardResult]) -> List[str]:
    return [m for r in results if not r.ok for m in r.messages]

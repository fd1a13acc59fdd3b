"""The fences around the agent's own processes, set before it runs: codex command rules, git
hooks, and the environment that points the agent's git at them.

Owns: `prepare()`: the `.rules` file codex enforces (`$CODEX_HOME/rules/overnight-agent-<repo>.rules`,
one per repository, never another rules file), the hooks folder under the run folder, the guard spec the hooks and
`validate` read, and the environment (`GIT_CONFIG_*`) that points the agent's git at those
hooks; it hands back `Fences` and the `audit.Audit` that checks afterwards. The repository's
config and hooks are never written. Must not: touch the operator's own git setup, or trust the
agent: rules are a speed bump on what the model asks for; the hooks hold for anything that runs
git with the agent's environment; the after-attempt check (`audit`) holds even when both were
bypassed.

Layers, from outermost:
  1. codex's sandbox (workspace-write): the primary tree, `.git/config` and `.git/hooks` are
     read-only for the agent. Not ours; stays on.
  2. `.rules` (this module): codex refuses a forbidden command prefix before running it, even
     inside `a && b`, and the model reads the justification. Blind to redirections, `$(...)`,
     `VAR=x cmd`, subshells, `bash -c`, scripts, and option orders it does not list.
  3. hooks (`hookrun.py`): git itself refuses ref updates outside `overnight/*` and bad commits,
     whatever the command line; bypassed by `-c core.hooksPath=...`, unsetting `GIT_CONFIG_*`,
     or writing files under `.git/refs` directly.
  4. `audit` after every attempt: sees every ref and the primary tree, however they changed;
     restores refs, reports what it cannot restore.
"""
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import gitops, guards, hookrun
from .audit import Audit
from .state import RunLayout, write_atomic

RULES_NAME = "overnight-agent.rules"
GUARD_ENV = "OVERNIGHT_AGENT_GUARD"
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


def rules_name(repo_root: Path) -> str:
    """One rules file per repository: codex reads every file in its rules folder, so two
    repositories sharing a CODEX_HOME each keep their own rules (both apply: stricter, never
    weaker) instead of the last night to start replacing the other's."""
    digest = hashlib.sha256(str(Path(repo_root).resolve()).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(repo_root).resolve().name)[:40] or "repo"
    return f"overnight-agent-{name}-{digest}.rules"


def write_rules(codex_home: Path, text: str, repo_root: Path) -> Path:
    folder = Path(codex_home) / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / rules_name(repo_root)
    write_atomic(path, text)
    legacy = folder / RULES_NAME   # one file for every repository, as earlier versions wrote it
    if legacy.exists():
        legacy.unlink()
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
class Fences:
    """What `prepare` set up for one night, and the audit that checks after each attempt."""

    env: Dict[str, str]                     # for the agent: points its git at the hooks
    rules_file: Path
    hooks_dir: Path
    spec_file: Path
    branches_file: Path
    validation_dir: Path
    audit: Audit
    writable_roots: List[Path] = field(default_factory=list)


def _worktree_git_dir(path: str) -> Optional[str]:
    if not os.path.isdir(path):
        return None
    try:
        return _git(["rev-parse", "--absolute-git-dir"], Path(path))
    except gitops.GitError:
        return None


def prepare(repo_root: Path, run_dir: Path, codex_home: Path, session, config, *,
            tool: Optional[str] = None) -> Fences:
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
    rules_file = write_rules(codex_home, rules, repo_root)

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
    audit = Audit(repo_root=repo_root, run_dir=run_dir, run_id=session.run_id, agent_email=email,
                  own_refs=(f"refs/heads/{session.ops_journal_branch}",))
    return Fences(env=env, rules_file=rules_file, hooks_dir=hooks_dir, spec_file=spec_file,
                  branches_file=branches_file, validation_dir=validation_dir, audit=audit,
                  writable_roots=[validation_dir])

"""A night's git layout without a supervisor, for the guard tests: an operator's repository
with things worth protecting, the session and ops-journal worktrees, and `fences.prepare`.

    night = make_night(base)          # base: a folder (outside /tmp for real-codex tests)
    night.agent_env()                 # the environment an agent process gets (guard env added)
    night.agent(cmd)                  # run a shell command as the agent, in the session worktree
    night.operator(*git_args)         # the operator's own git, in the primary worktree
    protected(night.repo)             # what must come out of a night unchanged
"""
import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import yaml

from overnight_agent import config, fences, state

IDENTITY = {"name": "Overnight Agent", "email": "overnight-agent@localhost"}


def git(cwd: Path, *args: str, check: bool = True, env: Optional[Dict[str, str]] = None) -> str:
    base = {k: v for k, v in (env or os.environ).items()
            if env is not None or not k.startswith(("GIT_CONFIG_", "OVERNIGHT_AGENT_"))}
    proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=base, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} in {cwd}: {proc.stderr}")
    return proc.stdout.strip()


def operator_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GIT_CONFIG_", "OVERNIGHT_AGENT_"))}


@dataclass
class Night:
    base: Path
    repo: Path
    session_wt: Path
    ops_wt: Path
    operator_wt: Path
    run_dir: Path
    codex_home: Path
    session: state.Session
    cfg: config.Config
    guard: fences.Fences = None
    extra_env: Dict[str, str] = field(default_factory=dict)

    def prepare(self) -> fences.Fences:
        self.guard = fences.prepare(self.repo, self.run_dir, self.codex_home, self.session, self.cfg)
        return self.guard

    def agent_env(self) -> Dict[str, str]:
        env = operator_env()
        env.update(self.guard.env)
        env["OVERNIGHT_AGENT_SESSION"] = str(self.base / "run" / "session.json")
        env.update(self.extra_env)
        return env

    def agent(self, cmd: str, cwd: Optional[Path] = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", cmd], cwd=str(cwd or self.session_wt), env=self.agent_env(),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def operator(self, *args: str, check: bool = True) -> str:
        return git(self.repo, *args, check=check, env=operator_env())


def make_night(base: Path, *, config_text: str = "version: 2\n", run_id: str = "20300101_000000") -> Night:
    """An operator's repository worth protecting, and a night's worktrees on it."""
    base.mkdir(parents=True, exist_ok=True)
    repo = base / "repo"
    repo.mkdir()
    env = operator_env()
    g = lambda *a, cwd=repo: git(cwd, *a, env=env)  # noqa: E731
    g("init", "-q", "-b", "main")
    g("config", "user.name", "Test Operator")
    g("config", "user.email", "operator@example.invalid")
    g("config", "commit.gpgsign", "false")
    for rel, text in {"README.md": "# sample\n", "src/app.py": "print('hi')\n",
                      "docs/index.md": "# Index\n\n- [Guide](guide.md)\n", "docs/guide.md": "# Guide\n",
                      "win.txt": "crlf\r\nfile\r\n"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(text.encode())
    g("add", "-A")
    g("commit", "-q", "-m", "initial")
    g("branch", "feature")
    g("tag", "v1")
    g("tag", "-a", "v1-annotated", "-m", "release")
    g("branch", "overnight/2020-01-01_0000_old-night")
    remote = base / "remote.git"
    git(base, "init", "-q", "--bare", str(remote), env=env)
    g("remote", "add", "origin", str(remote))
    g("push", "-q", "origin", "main", "feature")
    (repo / "src" / "wip.py").write_text("operator work in progress\n")
    g("stash", "push", "-q", "-u", "-m", "operator stash")
    operator_wt = base / "operator-wt"
    g("worktree", "add", "-q", "-b", "op-branch", str(operator_wt))
    # The operator is mid-work in the primary tree: a modified file and an untracked one.
    (repo / "README.md").write_text("# sample\noperator edit\n")
    (repo / "notes.txt").write_text("operator's untracked notes\n")
    session_wt = base / "worktrees" / "session" / run_id
    ops_wt = base / "worktrees" / "ops"
    g("worktree", "add", "-q", "-b", f"overnight/session_{run_id}", str(session_wt), "main")
    g("worktree", "add", "-q", "-b", "overnight/ops-journal", str(ops_wt), "main")
    run_dir = base / "run" / "runs" / run_id
    cfg = config.parse(config_text, "test-config")
    session = state.Session(
        run_id=run_id, repo_root=str(repo), deadline="2030-01-01T06:00:00+00:00",
        wrap_up_at="2030-01-01T05:30:00+00:00", session_worktree=str(session_wt),
        session_branch=f"overnight/session_{run_id}", ops_journal_worktree=str(ops_wt),
        ops_journal_branch="overnight/ops-journal", base_branch="main",
        base_commit=g("rev-parse", "main"), agent="codex", model="gpt-5.3-codex",
        model_reasoning_effort="xhigh", sandbox="workspace-write", created_at="2030-01-01T00:00:00+00:00",
        exec_summary_log=str(ops_wt / cfg.repo.exec_summary_log), reports_dir=str(ops_wt / cfg.repo.reports_dir),
        heartbeat_file=str(run_dir / "agent" / "heartbeat"), git_identity=dict(IDENTITY))
    state.save(base / "run" / "session.json", session)
    night = Night(base=base, repo=repo, session_wt=session_wt, ops_wt=ops_wt, operator_wt=operator_wt,
                  run_dir=run_dir, codex_home=base / "run" / "codex_home", session=session, cfg=cfg)
    night.prepare()
    return night


def protected(repo: Path) -> dict:
    """Everything outside overnight/* that a night must leave as it found it: every ref, the
    stash list, the primary worktree's HEAD, index and files (bytes), the operator's other
    worktree, and the repository's config and hooks."""
    env = operator_env()
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if rel.parts[0] == ".git" or not path.is_file():
            continue
        files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    common = repo / ".git"
    hooks = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((common / "hooks").glob("*"))}
    refs = [line for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)", env=env).splitlines()
            if " refs/heads/overnight/" not in line or "old-night" in line]
    return {
        "refs": refs,
        "stash": git(repo, "log", "-g", "--format=%H %gs", "refs/stash", "--", env=env, check=False),
        "head": git(repo, "symbolic-ref", "HEAD", env=env) + " " + git(repo, "rev-parse", "HEAD", env=env),
        "index": git(repo, "ls-files", "--stage", env=env),
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all", env=env),
        "files": files,
        "config": (common / "config").read_text(),
        "hooks": hooks,
        "operator_wt": sorted(str(p.relative_to(repo.parent)) for p in (repo.parent / "operator-wt").rglob("*")
                              if ".git" not in p.parts),
        "worktrees": [block for block in git(repo, "worktree", "list", "--porcelain", env=env).split("\n\n")
                      if "refs/heads/overnight/" not in block],
        "remote": git(repo.parent / "remote.git", "for-each-ref", env=env),
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

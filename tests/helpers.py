"""Shared helpers for the integration tests: real git repositories, real supervisor processes.

Everything here starts real processes; `assert_no_agent_processes` proves they are gone.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil
import yaml

from overnight_agent import demo

TEST_MARK = "OA_TEST_MARK"


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args}: {proc.stderr}")
    return proc.stdout.strip()


def make_repo(path: Path, files: Optional[Dict[str, str]] = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {"README.md": "# sample\n", "src/app.py": "print('hi')\n",
                                "docs/index.md": "# Index\n"}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test Operator")
    git(path, "config", "user.email", "operator@example.invalid")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def primary_fingerprint(repo: Path, skip: tuple = ("tmp",)) -> dict:
    """HEAD, branch, index, status, and every file's bytes in the primary tree (runtime folder
    and .git aside) plus .git/config and .git/hooks: what must never change."""
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if rel.parts[0] == ".git" or rel.parts[0] in skip or not path.is_file():
            continue
        files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    hooks = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((repo / ".git" / "hooks").glob("*"))}
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "index": git(repo, "ls-files", "--stage"),
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        "main": git(repo, "rev-parse", "refs/heads/main"),
        "config": (repo / ".git" / "config").read_text(),
        "hooks": hooks,
        "files": files,
    }


def write_config(path: Path, base: Path, **overrides) -> Path:
    """A config whose worktrees and run_root live under `base` (outside the repo)."""
    data = {
        "version": 2,
        "repo": {"session_worktree_root": str(base / "worktrees" / "session"),
                 "ops_journal_worktree": str(base / "worktrees" / "ops"),
                 "run_root": str(base / "run")},
        "codex": {"codex_bin": str(fake_codex_bin(base)), "codex_home": str(base / "run" / "codex_home")},
        "schedule": {"wrap_up": "2s"},
        "restart": {"backoff_initial": "0.1s", "backoff_max": "1s", "healthy_after": "30s"},
        "stop": {"sigint_grace": "1s", "sigterm_grace": "1s"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:   # a top-level key (agent: claude)
            data[section] = values
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fake_codex_bin(base: Path) -> Path:
    """A `codex` executable that runs the package's scripted stand-in."""
    path = base / "bin" / "codex"
    return path if path.exists() else demo.write_fake_codex(path)


def write_scenario(base: Path, invocations: List[List[dict]]) -> None:
    home = base / "run" / "codex_home"
    home.mkdir(parents=True, exist_ok=True)
    doc = {"invocations": [{"steps": steps} for steps in invocations]}
    (home / "fake_codex_scenario.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def supervisor_env(mark: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
    env[TEST_MARK] = mark
    env.update(extra)
    return env


def start_run(repo: Path, config: Path, mark: str, *args: str, env_extra=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "overnight_agent", "run", "--repo", str(repo), "--config",
           str(config), *args]
    return subprocess.Popen(cmd, env=supervisor_env(mark, **(env_extra or {})),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def run_cli(*args: str, mark: str = "cli", timeout: float = 60, env_extra=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "overnight_agent", *args],
                          env=supervisor_env(mark, **(env_extra or {})), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def read_session(base: Path) -> Optional[dict]:
    try:
        return json.loads((base / "run" / "session.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_session(base: Path, predicate, timeout: float = 20.0, what: str = "session state"):
    def check():
        data = read_session(base)
        return data if data and predicate(data) else None
    return wait_for(check, timeout, what=what)


def finish(proc: subprocess.Popen, timeout: float = 30.0):
    """Wait for a supervisor; kill its group if it overstays (and fail)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"supervisor did not exit in {timeout}s; stderr:\n{err[-3000:]}")
    return proc.returncode, out, err


def tag_prefix(run_root: Path) -> str:
    """The agent tag prefix the supervisor gives every agent process of `run_root`."""
    return "oa-" + hashlib.sha256(str(run_root).encode()).hexdigest()[:12] + ":"


def processes_marked(mark: Optional[str] = None, prefix: str = "oa-") -> List[psutil.Process]:
    """Live processes carrying an agent tag starting with `prefix`, or the test's own mark."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        if env.get("OVERNIGHT_AGENT_TAG", "").startswith(prefix) or (mark and env.get(TEST_MARK) == mark):
            found.append(proc)
    return found


def cmdlines(prefix: str) -> List[str]:
    """Command lines of the live agent processes under `prefix` (ones that exit meanwhile skipped)."""
    result = []
    for proc in processes_marked(None, prefix):
        try:
            result.append(" ".join(proc.cmdline()))
        except psutil.Error:
            pass
    return result


def assert_no_agent_processes(mark: Optional[str] = None, prefix: str = "oa-",
                              wait: float = 3.0) -> None:
    """Fail (after killing them) if any agent-tagged or test-marked process is still alive."""
    try:
        wait_for(lambda: not processes_marked(mark, prefix), timeout=wait, what="no leftover processes")
    except AssertionError:
        left = processes_marked(mark, prefix)
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.Error:
                pass
        if described:
            raise AssertionError("processes left behind:\n" + "\n".join(described))

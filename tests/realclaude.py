"""Helpers for tests that drive the real Claude Code CLI (npm ``@anthropic-ai/claude-code@2.1.328``)
against the loopback mock Messages API (``tests/mock_anthropic_server.py``), and the scripted
stand-in (``python -m overnight_agent.fakeclaude``) the same way.

Owns: installing the pinned CLI once per session (tests/setup_cli.sh claude, through `realcli`),
the environment both run with (the backend's own, plus the mock's URL, a scratch HOME and a test
tag), and running one invocation with bounded time, killing whatever it left. Must not: reach anything but
127.0.0.1, or skip under CI=true (a missing tool is a failure there).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import realcli
import realcodex
from overnight_agent.agents.claude import ClaudeBackend

CLAUDE_VERSION = "2.1.328"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
NPM_DIR = Path(os.environ.get("CLAUDE_NPM_DIR") or (REPO_ROOT / ".cache" / "claude-npm"))
TAG_VAR = realcodex.TAG_VAR
FAKE_ARGV0 = [sys.executable, "-m", "overnight_agent.fakeclaude"]

_INSTALL = realcli.Install(
    "claude", NPM_DIR, version_line=f"{CLAUDE_VERSION} (Claude Code)",
    candidates=lambda: [str(c) for c in sorted(NPM_DIR.glob("node_modules/@anthropic-ai/claude-code-linux-*/claude"))])


def claude_binary() -> Optional[str]:
    """The real CLI's native binary, installed once per session; None only without node/npm;
    RuntimeError for any other failure (never hidden as a skip)."""
    return _INSTALL.binary()


def require_claude() -> str:
    """The binary path; skips without node/npm, but fails under CI=true."""
    return _INSTALL.require("the real Claude Code CLI needs node and npm: install them (apt-get install "
                            "nodejs npm) and run bash tests/setup_cli.sh claude")


@dataclass
class Place:
    """One CLI's world: a git repo, its config dir, a run folder, a scratch HOME, a tag."""

    base: Path
    repo: Path
    home: Path
    run_dir: Path
    tag: str

    def backend(self, binary: Sequence[str], **overrides) -> "Backend":
        settings = dict(model="claude-opus-5-5", effort="high", permission_mode="acceptEdits",
                        allowed_tools=["Bash", "Edit", "Write", "Read"])
        settings.update(overrides)
        return Backend(list(binary), ClaudeBackend(claude_bin="claude", config_dir=self.home, worktree=self.repo,
                                                   run_dir=self.run_dir, **settings))

    def env(self, backend: "Backend", url: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base / "userhome"),
                "LANG": "C.UTF-8", "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "mock-key",
                "PYTHONPATH": str(REPO_ROOT)}
        env = backend.claude.environment(base)
        env.update({TAG_VAR: self.tag, "PYTHONPATH": str(REPO_ROOT), "CLAUDE_CODE_MAX_RETRIES": "0"})
        env.update(extra or {})
        return env


@dataclass
class Backend:
    """The adapter with argv[0] replaced by the binary under test (real, or the fake's argv)."""

    binary: List[str]
    claude: ClaudeBackend

    def start(self, prompt: str, session_id: str) -> List[str]:
        return self.binary + self.claude.start_argv(prompt, session_id)[1:]

    def resume(self, session_id: str, prompt: str) -> List[str]:
        return self.binary + self.claude.resume_argv(session_id, prompt)[1:]


def make_place(root: Path, name: str) -> Place:
    base = root / name
    base.mkdir(parents=True)
    (base / "userhome").mkdir()
    repo = realcodex.make_git_repo(base / "repo")
    home = base / "claude_home"
    home.mkdir(mode=0o700)
    run_dir = base / "runs" / "r1"
    run_dir.mkdir(parents=True)
    return Place(base=base, repo=repo, home=home, run_dir=run_dir, tag=f"claude-test-{uuid.uuid4().hex[:12]}")


@dataclass
class Run:
    argv: List[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    duration: float
    events: List[Dict[str, Any]] = field(default_factory=list)
    leftovers: List[str] = field(default_factory=list)  # tagged processes alive after it exited

    @property
    def types(self) -> List[str]:
        out = []
        for e in self.events:
            kind = e.get("type", "?")
            if kind in ("system",):
                kind += "/" + str(e.get("subtype"))
            if kind in ("assistant", "user"):
                blocks = (e.get("message") or {}).get("content")
                blocks = blocks if isinstance(blocks, list) else [{"type": "text"}]
                kind += "/" + ",".join(str(b.get("type")) for b in blocks if isinstance(b, dict))
            out.append(kind)
        return out

    def result(self) -> Optional[Dict[str, Any]]:
        found = [e for e in self.events if e.get("type") == "result"]
        return found[-1] if found else None

    def describe(self) -> str:
        return (f"argv={self.argv}\nrc={self.returncode} duration={self.duration:.2f}s\n--- stdout\n"
                f"{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-3000:]}")


def run(argv: Sequence[str], place: Place, env: Dict[str, str], *, timeout: float = 30.0,
        signal_after: Optional[str] = None, signum: Optional[int] = None) -> Run:
    """One invocation in the place's repo, stdin /dev/null, its own session. With `signal_after`
    (a file name in the repo), `signum` is sent to the CLI once that file exists. Whatever
    happens, everything carrying the place's tag is killed before returning."""
    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=str(place.repo), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out = err = b""
    leftovers: List[str] = []
    try:
        if signal_after:
            marker = place.repo / signal_after
            end = time.monotonic() + timeout
            while not marker.exists() and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.02)
            if proc.poll() is None:
                os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=timeout)
        end = time.monotonic() + 2.0  # a command killed as the CLI exits may still be dying
        while realcodex.processes_with_tag(place.tag) and time.monotonic() < end:
            time.sleep(0.05)
        leftovers = [" ".join(p.cmdline())[:120] for p in realcodex.processes_with_tag(place.tag)]
    except subprocess.TimeoutExpired:
        realcodex.kill_process_tree(proc.pid, tag=place.tag)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"{argv[:3]} did not finish in {timeout}s:\n{err.decode()[-2000:]}")
    finally:
        realcodex.kill_process_tree(proc.pid, tag=place.tag)
    text = out.decode("utf-8", "replace")
    return Run(list(argv), proc.returncode, text, err.decode("utf-8", "replace"), time.monotonic() - t0,
               realcodex.parse_events(text), leftovers)

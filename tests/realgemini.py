"""Helpers for tests that drive the real Gemini CLI (npm ``@google/gemini-cli@0.61.0``) and the
scripted stand-in (``overnight_agent.fakegemini``) against the loopback mock of the Gemini API
(``tests/mock_gemini_server.py``).

Owns: installing the CLI once per session (tests/setup_cli.sh gemini, through `realcli`, which
also holds the skip-or-fail rule for a missing node/npm: CI=true fails), preparing a CLI home through the backend itself (so the tests
run the settings and environment a night uses), and running either CLI with a bounded time and
everything it started killed afterwards. Must not: reach anything but 127.0.0.1.

    gemini_binary() -> Optional[str]    the installed CLI (None only when node/npm are missing)
    require_gemini() -> str             that path, or pytest.skip (pytest.fail under CI=true)
    fake_gemini_argv0(dirpath) -> str   a `gemini` wrapper that execs the stand-in
    backend(binary, home, run_dir, ...) a GeminiBackend for that CLI
    cli_env(backend, base_url, tag)     the environment the backend gives, pointed at the mock
    run_cli(argv, cwd, env, timeout)    -> CliRun (events, rc, stderr); kills the group and the tag
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from overnight_agent.agents.gemini import GeminiBackend

import realcli
import realcodex

GEMINI_VERSION = "0.61.0"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
NPM_DIR = Path(os.environ.get("GEMINI_NPM_DIR") or (REPO_ROOT / ".cache" / "gemini-npm"))
TAG_VAR = realcodex.TAG_VAR   # OA_TEST_TAG: every test process carries it, for the clean-up
MOCK_KEY = "mock-gemini-key"

_INSTALL = realcli.Install("gemini", NPM_DIR)  # the script itself checks the version


def gemini_binary() -> Optional[str]:
    """The installed CLI, installing it (once per session) when needed. None only when node or
    npm are missing; RuntimeError for any other failure (never hidden as a skip)."""
    return _INSTALL.binary()


def require_gemini() -> str:
    return _INSTALL.require("the real Gemini CLI needs node (>= 20) and npm: install them (e.g. apt-get "
                            "install nodejs npm) and run bash tests/setup_cli.sh gemini")


def fake_gemini_argv0(dirpath: Path) -> str:
    """A `gemini` executable that execs the stand-in (so signals reach the fake itself)."""
    path = Path(dirpath) / "gemini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -m overnight_agent.fakegemini \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def backend(binary: str, home: Path, run_dir: Path, *, model: str = "gemini-2.5-pro",
            max_attempts: int = 1) -> GeminiBackend:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return GeminiBackend(gemini_bin=binary, home=home, run_dir=run_dir, model=model,
                         approval_mode="yolo", max_attempts=max_attempts)


def cli_env(gemini: GeminiBackend, base_url: str, tag: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """What the backend gives the CLI (settings written into its home), pointed at the mock,
    with no proxy variables, and the test's tag on every process."""
    base = {k: v for k, v in os.environ.items() if k.lower() not in realcodex._PROXY_VARS
            and not k.startswith(("GEMINI_", "GOOGLE_"))}
    base.update({"GEMINI_API_KEY": MOCK_KEY, "GOOGLE_GEMINI_BASE_URL": base_url, "LANG": "C.UTF-8"})
    env = gemini.environment(base)
    env[TAG_VAR] = tag
    env.update(extra or {})
    return env


@dataclass
class CliRun(realcodex.CodexRun):
    """One run of a gemini CLI (the real one or the stand-in): what `realcodex.run_codex` returns,
    read as gemini's events."""

    @property
    def session_id(self) -> Optional[str]:
        return next((e.get("session_id") for e in self.events if e.get("type") == "init"), None)

    def last(self, kind: str) -> Optional[Dict[str, Any]]:
        found = [e for e in self.events if e.get("type") == kind]
        return found[-1] if found else None

    def describe(self) -> str:
        return (f"argv={self.argv[:1] + self.argv[2:]}\nrc={self.returncode} timed_out={self.timed_out} "
                f"duration={self.duration:.2f}s\n--- stdout\n{self.stdout[-4000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}")


parse_events = realcodex.parse_events
start_cli = realcodex.start_codex  # stdin /dev/null, stdout and stderr piped, a session of its own


def run_cli(argv: Sequence[str], *, cwd: Path, env: Dict[str, str], timeout: float = 30.0) -> CliRun:
    """Run with stdin=/dev/null in a new session; afterwards kill its group, its descendants and
    everything carrying env[OA_TEST_TAG] (`realcodex.run_codex`)."""
    return CliRun(**vars(realcodex.run_codex(argv, cwd=cwd, env=env, timeout=timeout)))


def read_until(proc: subprocess.Popen, kind: str, timeout: float) -> List[Dict[str, Any]]:
    """Events read from a live process's stdout up to and including the first of `kind`."""
    import selectors

    events: List[Dict[str, Any]] = []
    buffer = b""
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not sel.select(max(0.0, end - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                events.extend(parse_events(line.decode("utf-8", "replace")))
                if events and events[-1].get("type") == kind:
                    return events
    raise AssertionError(f"no {kind!r} event within {timeout}s; got {[e.get('type') for e in events]}")

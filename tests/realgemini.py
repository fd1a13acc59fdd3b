"""Helpers for tests that drive the real Gemini CLI (npm ``@google/gemini-cli@0.61.0``) and the
scripted stand-in (``overnight_agent.fakegemini``) against the loopback mock of the Gemini API
(``tests/mock_gemini_server.py``).

Owns: installing the CLI once per session (tests/setup_gemini.sh), the skip-or-fail rule for a
missing node/npm (CI=true fails), preparing a CLI home through the backend itself (so the tests
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

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from overnight_agent.agents.gemini import GeminiBackend

import realcodex

GEMINI_VERSION = "0.61.0"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SETUP_SCRIPT = TESTS_DIR / "setup_gemini.sh"
NPM_DIR = Path(os.environ.get("GEMINI_NPM_DIR") or (REPO_ROOT / ".cache" / "gemini-npm"))
TAG_VAR = realcodex.TAG_VAR   # OA_TEST_TAG: every test process carries it, for the clean-up
MOCK_KEY = "mock-gemini-key"

_cache: Dict[str, Optional[str]] = {}


def gemini_binary() -> Optional[str]:
    """The installed CLI, installing it (once per session) when needed. None only when node or
    npm are missing; RuntimeError for any other failure (never hidden as a skip)."""
    if "path" in _cache:
        return _cache["path"]
    if "error" in _cache:
        raise RuntimeError(_cache["error"])
    override = os.environ.get("OA_REAL_GEMINI_BIN")
    if override:
        _cache["path"] = override
        return override
    if shutil.which("npm") is None or shutil.which("node") is None:
        _cache["path"] = None
        return None
    try:
        proc = subprocess.run(["bash", str(SETUP_SCRIPT), str(NPM_DIR)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        _cache["error"] = f"tests/setup_gemini.sh timed out after {exc.timeout} s"
        raise RuntimeError(_cache["error"]) from None
    if proc.returncode == 2:
        _cache["path"] = None
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        _cache["error"] = (f"tests/setup_gemini.sh failed (rc {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        raise RuntimeError(_cache["error"])
    _cache["path"] = lines[-1]
    return lines[-1]


def require_gemini() -> str:
    import pytest

    path = gemini_binary()
    if path is None:
        why = ("the real Gemini CLI needs node (>= 20) and npm: install them (e.g. apt-get install "
               "nodejs npm) and run bash tests/setup_gemini.sh")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + " (CI=true: not skipping)", pytrace=False)
        pytest.skip(why)
    return path


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
class CliRun:
    argv: List[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    events: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def types(self) -> List[str]:
        return [e.get("type", "?") for e in self.events]

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


def parse_events(text: str) -> List[Dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


def start_cli(argv: Sequence[str], *, cwd: Path, env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(list(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def run_cli(argv: Sequence[str], *, cwd: Path, env: Dict[str, str], timeout: float = 30.0) -> CliRun:
    """Run with stdin=/dev/null in a new session; afterwards kill its group, its descendants and
    everything carrying env[OA_TEST_TAG]."""
    t0 = time.monotonic()
    proc = start_cli(argv, cwd=cwd, env=env)
    timed_out = False
    out = err = b""
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        realcodex.kill_process_tree(proc.pid, tag=env.get(TAG_VAR))
        if timed_out or proc.returncode is None:
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    text = out.decode("utf-8", "replace")
    return CliRun(argv=list(argv), returncode=proc.returncode, stdout=text,
                  stderr=err.decode("utf-8", "replace"), duration=time.monotonic() - t0,
                  timed_out=timed_out, events=parse_events(text))


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

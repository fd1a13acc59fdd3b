"""Helpers for tests that drive the real Codex CLI (npm ``@openai/codex@0.169.0``) against the
loopback mock model server (``tests/mock_model_server.py``).

Public API:
    CODEX_VERSION                       pinned version string ("0.169.0")
    codex_binary() -> Optional[str]     path of the real static binary; installs it once per
                                        session with tests/setup_cli.sh codex; None only when node/npm
                                        are missing; RuntimeError for any other install failure
    require_codex() -> str              the binary path, or pytest.skip (pytest.fail when CI=true)
    write_codex_home(path, port, *, model="gpt-5.3-codex", effort="xhigh",
                     stream_idle_timeout_ms=5000, sandbox_mode="workspace-write",
                     request_max_retries=1, stream_max_retries=1, extra_toml="") -> Path
                                        writes <path>/config.toml for the loopback provider
    codex_env(codex_home, *, home=None, tag=None, extra=None) -> dict
                                        environment to run codex with (no proxy variables)
    scratch_dir(prefix) -> Path         a fresh folder under <repo>/.cache/realcodex-tmp/ (not /tmp)
    make_git_repo(path, *, branch="main") -> Path
                                        git init -b main, identity, one commit
    run_codex(argv, *, cwd, env, timeout) -> CodexRun
                                        runs with stdin=/dev/null in a new session; whatever
                                        happens, kills the process group and every descendant
    start_codex(argv, *, cwd, env) -> Popen
                                        same start, for tests that watch a live process
    worktree_writable_roots(worktree) -> list[str]
    writable_roots_override(roots) -> str
                                        the -c value sandbox_workspace_write.writable_roots=[...]
    kill_process_tree(pid, *, tag=None) sweeps a pid's group, its descendants and any process
                                        whose environment carries OA_TEST_TAG=<tag>
    processes_with_tag(tag) -> list     live processes whose environment has OA_TEST_TAG=<tag>
    split_events(text) -> (events, junk) the JSON objects among the lines of text, and the rest
    parse_events(text) -> list          the JSON objects alone
    rollout_files(codex_home) -> list   $CODEX_HOME/sessions/**/rollout-*.jsonl
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import psutil

import realcli

CODEX_VERSION = "0.169.0"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
NPM_DIR = Path(os.environ.get("CODEX_NPM_DIR") or (REPO_ROOT / ".cache" / "codex-npm"))
def _outside_tmp(candidate: Path) -> Path:
    """`candidate`, unless it lies under /tmp or $TMPDIR (which workspace-write leaves writable,
    hiding sandbox denials): then a folder under the user's ~/.cache instead."""
    temp_roots = {Path("/tmp").resolve()}
    if os.environ.get("TMPDIR"):
        temp_roots.add(Path(os.environ["TMPDIR"]).resolve())
    resolved = candidate.resolve()
    if any(resolved == t or t in resolved.parents for t in temp_roots):
        return Path.home() / ".cache" / "overnight-agent-tests" / "realcodex-tmp"
    return candidate


SCRATCH_ROOT = _outside_tmp(REPO_ROOT / ".cache" / "realcodex-tmp")
TAG_VAR = "OA_TEST_TAG"
MOCK_API_KEY = "mock-key"

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy", "socks_proxy",
               "grpc_proxy"}

def _installed() -> List[str]:
    pattern = str(NPM_DIR / "node_modules" / "@openai" / "codex-linux-*" / "vendor" / "*" / "bin" / "codex")
    return sorted(glob.glob(pattern))


_INSTALL = realcli.Install("codex", NPM_DIR, candidates=_installed,
                           version_line=f"codex-cli {CODEX_VERSION}")
_binary_version = realcli.version


def codex_binary() -> Optional[str]:
    """Path of the real codex static binary, installing it (once per session) if needed.

    Returns None only when node or npm are missing; raises RuntimeError when the install fails
    for any other reason (that must not be hidden as a skip)."""
    return _INSTALL.binary()


def require_codex() -> str:
    """The binary path; skips the test when node/npm are missing, but fails it under CI=true."""
    return _INSTALL.require("real Codex CLI needs node and npm: install them (e.g. apt-get install "
                            "nodejs npm) and run bash tests/setup_cli.sh codex")


def write_codex_home(path: "os.PathLike[str] | str", port: int, *, model: str = "gpt-5.3-codex",
                     effort: str = "xhigh", stream_idle_timeout_ms: int = 5000,
                     sandbox_mode: Optional[str] = "workspace-write", request_max_retries: int = 1,
                     stream_max_retries: int = 1, extra_toml: str = "") -> Path:
    """Write ``<path>/config.toml`` for a loopback provider at http://127.0.0.1:<port>/v1.

    ``sandbox_mode=None`` leaves the key out (then ``exec resume`` without ``--sandbox`` runs
    read-only; with the key, resume uses it). The directory is created with mode 0700.
    Returns the directory."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    sandbox_line = f"sandbox_mode = {json.dumps(sandbox_mode)}\n" if sandbox_mode else ""
    toml = f"""\
model = {json.dumps(model)}
model_provider = "mock"
model_reasoning_effort = {json.dumps(effort)}
{sandbox_line}check_for_update_on_startup = false

[analytics]
enabled = false

# without these codex makes DNS lookups of outside hosts
[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.mock]
name = "mock"
base_url = "http://127.0.0.1:{int(port)}/v1"
wire_api = "responses"
env_key = "MOCK_API_KEY"
request_max_retries = {int(request_max_retries)}
stream_max_retries = {int(stream_max_retries)}
stream_idle_timeout_ms = {int(stream_idle_timeout_ms)}
"""
    if extra_toml:
        toml += "\n" + extra_toml.rstrip() + "\n"
    (home / "config.toml").write_text(toml)
    return home


def codex_env(codex_home: "os.PathLike[str] | str", *, home: "os.PathLike[str] | str | None" = None,
              tag: Optional[str] = None, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A small, explicit environment for running codex: CODEX_HOME, MOCK_API_KEY, HOME, PATH,
    locale; no proxy variables; ``OA_TEST_TAG=<tag>`` when a tag is given."""
    env = {
        "CODEX_HOME": str(codex_home),
        "MOCK_API_KEY": MOCK_API_KEY,
        "HOME": str(home) if home is not None else os.environ.get("HOME", "/root"),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    if os.environ.get("USER"):
        env["USER"] = os.environ["USER"]
    if tag:
        env[TAG_VAR] = tag
    if extra:
        env.update(extra)
    for k in list(env):
        if k.lower() in _PROXY_VARS:
            del env[k]
    return env


def scratch_dir(prefix: str = "t") -> Path:
    """A fresh folder under <repo>/.cache/realcodex-tmp/ (deliberately NOT under /tmp, which
    workspace-write leaves writable and so hides sandbox denials). Caller removes it."""
    SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
    d = SCRATCH_ROOT / f"{prefix}-{uuid.uuid4().hex[:10]}"
    d.mkdir()
    return d


def _git(args: Sequence[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)})
    out = subprocess.run(["git", *args], cwd=str(cwd), stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=60, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {out.stderr}")
    return out.stdout


def make_git_repo(path: "os.PathLike[str] | str", *, branch: str = "main") -> Path:
    """``git init -b <branch>`` with a local identity and one commit (README.md)."""
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    _git(["init", "-q", "-b", branch], repo)
    _git(["config", "user.name", "Realcodex Test"], repo)
    _git(["config", "user.email", "realcodex@example.invalid"], repo)
    _git(["config", "commit.gpgsign", "false"], repo)
    (repo / "README.md").write_text("test repository for the real Codex CLI\n")
    _git(["add", "README.md"], repo)
    _git(["commit", "-q", "-m", "initial"], repo)
    return repo


def processes_with_tag(tag: str) -> List[psutil.Process]:
    """Live processes whose environment contains OA_TEST_TAG=<tag> (needs permission to read
    /proc/<pid>/environ: fine as root or for our own processes)."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(TAG_VAR) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def kill_process_tree(pid: int, *, tag: Optional[str] = None, timeout: float = 5.0) -> None:
    """SIGKILL the process group of ``pid`` (it was started with start_new_session=True), all
    its descendants (which codex puts in sessions of their own) and, when ``tag`` is given,
    every process carrying that tag; wait (bounded) for them to go."""
    victims: Dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        victims[root.pid] = root
        for c in root.children(recursive=True):
            victims[c.pid] = c
    except psutil.NoSuchProcess:
        pass
    if tag:
        for p in processes_with_tag(tag):
            victims[p.pid] = p
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in victims.values():
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(list(victims.values()), timeout=timeout)
    if tag:  # anything that was forked while we were killing
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rest = processes_with_tag(tag)
            if not rest:
                break
            for p in rest:
                try:
                    p.kill()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            psutil.wait_procs(rest, timeout=1.0)


@dataclass
class CodexRun:
    argv: List[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    events: List[Dict[str, Any]] = field(default_factory=list)
    non_json_stdout: List[str] = field(default_factory=list)

    @property
    def types(self) -> List[str]:
        return [e.get("type", "?") for e in self.events]

    @property
    def thread_id(self) -> Optional[str]:
        for e in self.events:
            if e.get("type") == "thread.started":
                return e.get("thread_id")
        return None

    def items(self, item_type: Optional[str] = None) -> List[Dict[str, Any]]:
        out = []
        for e in self.events:
            item = e.get("item")
            if isinstance(item, dict) and (item_type is None or item.get("type") == item_type):
                out.append(e)
        return out

    def describe(self) -> str:
        return (f"argv={self.argv}\nrc={self.returncode} timed_out={self.timed_out} "
                f"duration={self.duration:.2f}s\n--- stdout\n{self.stdout[-6000:]}\n"
                f"--- stderr\n{self.stderr[-6000:]}")


def start_codex(argv: Sequence[str], *, cwd: "os.PathLike[str] | str",
                env: Dict[str, str]) -> subprocess.Popen:
    """Start codex with stdin=/dev/null, stdout/stderr piped, in a new session. The caller must
    end it with ``kill_process_tree(proc.pid, tag=env[OA_TEST_TAG])`` in a finally."""
    return subprocess.Popen(list(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def worktree_writable_roots(worktree: "os.PathLike[str] | str") -> List[str]:
    """The git folders a sandboxed agent needs to commit in a LINKED worktree:
    ``<common>/worktrees/<name>``, ``<common>/objects``, ``<common>/refs``, ``<common>/logs``."""
    wt = Path(worktree)
    common = _git(["rev-parse", "--path-format=absolute", "--git-common-dir"], wt).strip()
    gitdir = _git(["rev-parse", "--path-format=absolute", "--git-dir"], wt).strip()
    return [gitdir, f"{common}/objects", f"{common}/refs", f"{common}/logs"]


def writable_roots_override(roots: Sequence[str]) -> str:
    """The ``-c`` value: ``sandbox_workspace_write.writable_roots=[...]`` (TOML array)."""
    return "sandbox_workspace_write.writable_roots=" + json.dumps(list(roots))


def run_codex(argv: Sequence[str], *, cwd: "os.PathLike[str] | str", env: Dict[str, str],
              timeout: float = 30.0) -> CodexRun:
    """Run codex (argv[0] is the binary) with stdin=/dev/null in a new session; on return or on
    timeout kill its group, descendants and everything tagged with env[OA_TEST_TAG]."""
    tag = env.get(TAG_VAR)
    t0 = time.monotonic()
    proc = start_codex(argv, cwd=cwd, env=env)
    timed_out = False
    out = err = b""
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        kill_process_tree(proc.pid, tag=tag)
        if timed_out or proc.returncode is None:
            try:  # after a TimeoutExpired, communicate() returns everything read so far
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a leftover holds the pipes: give up on them
                proc.kill()
                proc.wait(timeout=5)
    duration = time.monotonic() - t0
    text = out.decode("utf-8", "replace")
    events, junk = split_events(text)
    return CodexRun(argv=list(argv), returncode=proc.returncode, stdout=text,
                    stderr=err.decode("utf-8", "replace"), duration=duration, timed_out=timed_out,
                    events=events, non_json_stdout=junk)


def split_events(text: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(the JSON objects among the lines of `text`, its other non-blank lines)."""
    events, junk = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            events.append(obj)
        else:
            junk.append(line)
    return events, junk


def parse_events(text: str) -> List[Dict[str, Any]]:
    """The JSON objects among the lines of `text` (anything else is left out)."""
    return split_events(text)[0]


def rollout_files(codex_home: "os.PathLike[str] | str") -> List[Path]:
    return sorted(Path(codex_home).glob("sessions/*/*/*/rollout-*.jsonl"))

"""Conformance of the scripted stand-in: one abstract scenario, two command-line programs.

Every test plays the same abstract scenario through
  - the real Codex CLI 0.169.0 (tests/setup_codex.sh) against the loopback mock model server
    (tests/mock_model_server.py), and
  - the scripted stand-in, ``python -m overnight_agent.fakecodex`` (docs/fake-codex.md),
and asserts that both give the same observations: the ``(type, item.type)`` sequence of the
``--json`` events (and the events themselves, with run-specific values blanked), the exit code,
stderr, the thread id printed back on resume, the rollout files, the cumulative usage, the
sandbox mode a resumed turn runs with, and what SIGINT / SIGTERM do to a running command.
Each observation is also checked against the value we expect, so the two cannot agree on
something wrong.

An abstract turn is a list of model steps, each one model response:
    {"shell": CMD}          the model asks for a command (one request; the next one sees
                            its output)
    {"message": TEXT}       the model answers (one request; ends the turn)
    {"http_error": 429|500} the request fails (429: no retry; 500: retried, then the turn fails)
A small adapter per CLI turns it into a mock-server script or a fake scenario file
(``CLI.play``) and runs the program (``CLI.run``) with stdin=/dev/null, in a new session, in a
temporary git repository under <repo>/.cache/realcodex-tmp/ (not /tmp), with a hard timeout.
Both CLIs read the same config.toml (``realcodex.write_codex_home``).

Every process started carries ``OA_TEST_TAG=<tag>`` (one tag per CLI per test); each run is
followed by a sweep (``realcodex.run_codex``) and a check that no process with the tag
survived, and the teardown checks it again.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realcodex as rc  # noqa: E402
from mock_model_server import MockModelServer  # noqa: E402

pytestmark = pytest.mark.realcodex

MODEL = "gpt-5.3-codex"
EFFORT = "xhigh"
# config.toml (both CLIs): request_max_retries = stream_max_retries = 1
STREAM_RETRIES = 1
# The mock server's usage for every response (tests/mock_model_server.py defaults)
USAGE_PER_RESPONSE = {"input": 100, "output": 20}
MSG_429 = "exceeded retry limit, last status: 429 Too Many Requests"
MSG_500 = "We\u2019re currently experiencing high demand, which may cause temporary errors."
MSG_STDIN = "Reading additional input from stdin..."
UNTRUSTED_WARNING = "warning: Untrusted project-local configuration is disabled."
UNKNOWN_ID = "01a20000-0000-7000-8000-000000000000"
RUN_TIMEOUT = 20.0
ROLLOUT_NAME = re.compile(r"\d{4}/\d\d/\d\d/rollout-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-"
                          r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
                          r"\.jsonl")


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------

def shape(events: List[Dict[str, Any]]) -> List[tuple]:
    return [(e.get("type"), (e.get("item") or {}).get("type")) for e in events]


def normalized(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The events with what legitimately differs between two runs blanked: the thread id and
    a command's output (the real CLI runs `bash -l`, whose profile may print)."""
    result = json.loads(json.dumps(events))
    for event in result:
        if "thread_id" in event:
            event["thread_id"] = "<thread>"
        item = event.get("item") or {}
        if event.get("type") == "item.completed" and item.get("type") == "command_execution":
            item["aggregated_output"] = "<output>"
    return result


@dataclass
class Result:
    """What one run of a CLI gave."""

    cli: str
    argv: List[str]
    rc: Optional[int]
    events: List[Dict[str, Any]]
    stdout: str
    stderr: str
    rollouts: List[Path]
    non_json: List[str] = field(default_factory=list)

    @property
    def shape(self) -> List[tuple]:
        return shape(self.events)

    @property
    def thread_id(self) -> Optional[str]:
        return next((e.get("thread_id") for e in self.events if e.get("type") == "thread.started"),
                    None)

    @property
    def usage(self) -> Optional[Dict[str, int]]:
        done = [e for e in self.events if e.get("type") == "turn.completed"]
        return done[-1].get("usage") if done else None

    def describe(self) -> str:
        args = self.argv[1:] if self.cli == "real" else self.argv[3:]
        return (f"[{self.cli}] argv={args} rc={self.rc}\n--- stdout\n{self.stdout[-4000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}")


def both(results: Dict[str, Any]) -> str:
    return "\n\n".join(r.describe() if isinstance(r, Result) else f"[{k}] {r!r}"
                       for k, r in results.items())


# ---------------------------------------------------------------------------------------------
# Adapters: one abstract scenario -> a mock-server script, or a fake scenario file
# ---------------------------------------------------------------------------------------------

class CLI:
    """One program under test, with its own CODEX_HOME, HOME, git repository and tag."""

    name = "?"

    def __init__(self, base: Path, config_sandbox: Optional[str]) -> None:
        self.base = base
        self.base.mkdir()
        self.tag = f"oa-conf-{self.name}-{uuid.uuid4().hex}"
        self.repo = rc.make_git_repo(base / "repo")
        self.user_home = base / "home"
        self.user_home.mkdir()
        self.codex_home = rc.write_codex_home(
            base / "codex_home", self.port(), model=MODEL, effort=EFFORT,
            sandbox_mode=config_sandbox, request_max_retries=1,
            stream_max_retries=STREAM_RETRIES)
        self.env = rc.codex_env(self.codex_home, home=self.user_home, tag=self.tag,
                                extra=self.extra_env())

    # what differs between the two
    def port(self) -> int:
        raise NotImplementedError

    def extra_env(self) -> Dict[str, str]:
        return {}

    def argv(self, args: List[str]) -> List[str]:
        raise NotImplementedError

    def play(self, turn: List[Dict[str, Any]]) -> None:
        """Make `turn` what the model does in the next run."""
        raise NotImplementedError

    def turn_sandbox_modes(self, rollout: Path) -> List[str]:
        """The sandbox mode of every turn recorded in a rollout, oldest first."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # the same for both
    def run(self, args: List[str], *, cwd: Optional[Path] = None) -> Result:
        r = rc.run_codex(self.argv(args), cwd=cwd or self.repo, env=self.env, timeout=RUN_TIMEOUT)
        survivors = rc.processes_with_tag(self.tag)
        assert survivors == [], f"[{self.name}] processes survived the sweep: {survivors}"
        assert not r.timed_out, f"[{self.name}] timed out\n{r.describe()}"
        return Result(self.name, r.argv, r.returncode, r.events, r.stdout, r.stderr,
                      rc.rollout_files(self.codex_home), r.non_json_stdout)

    def start(self, args: List[str], *, cwd: Optional[Path] = None) -> subprocess.Popen:
        return rc.start_codex(self.argv(args), cwd=cwd or self.repo, env=self.env)

    @staticmethod
    def turn_contexts(rollout: Path) -> List[Dict[str, Any]]:
        lines = [json.loads(x) for x in rollout.read_text().splitlines() if x.strip()]
        return [x["payload"] for x in lines if x.get("type") == "turn_context"]

    def rollout_summary(self, rollout: Path) -> Dict[str, Any]:
        """What the supervisor reads from a rollout (agents/codex.py): where it lies and how it
        is named, the session_meta id, and the latest recorded cwd (relative to this CLI's
        folder)."""
        lines = [json.loads(x) for x in rollout.read_text().splitlines() if x.strip()]
        meta = [x["payload"] for x in lines if x.get("type") == "session_meta"]
        cwds = [x["payload"]["cwd"] for x in lines
                if x.get("type") in ("session_meta", "turn_context") and x["payload"].get("cwd")]
        thread = meta[0]["id"] if meta else None
        return {"name_ok": bool(ROLLOUT_NAME.fullmatch(
                    rollout.relative_to(self.codex_home / "sessions").as_posix()))
                and rollout.name.endswith(f"-{thread}.jsonl"),
                "first_line": lines[0].get("type") if lines else None,
                "session_metas": len(meta),
                "latest_cwd": os.path.relpath(cwds[-1], self.base) if cwds else None}


class RealCodex(CLI):
    """The real CLI; its model is a MockModelServer whose script is replaced before each run."""

    name = "real"

    def __init__(self, base: Path, config_sandbox: Optional[str]) -> None:
        self.binary = rc.require_codex()
        self.server = MockModelServer([])
        super().__init__(base, config_sandbox)

    def port(self) -> int:
        return self.server.port

    def argv(self, args: List[str]) -> List[str]:
        return [self.binary, *args]

    def play(self, turn: List[Dict[str, Any]]) -> None:
        script = []
        for step in turn:
            if "shell" in step:  # longer than any test: a command runs until it ends
                script.append({"shell": step["shell"], "yield_time_ms": 60000})
            elif step.get("hang"):  # a request that never gets an answer
                script.append({"hang_before_headers": True, "max_seconds": 60})
            else:
                script.append(dict(step))
        self.server.set_script(script)

    def turn_sandbox_modes(self, rollout: Path) -> List[str]:
        return [tc["sandbox_policy"]["type"] for tc in self.turn_contexts(rollout)]

    def requested_sandbox_modes(self) -> List[str]:
        """The sandbox mode codex told the model server, per request (x-codex-turn-metadata)."""
        return [(q["turn_metadata"] or {}).get("sandbox_mode")
                for q in self.server.responses_requests]

    def close(self) -> None:
        self.server.close()


class FakeCodex(CLI):
    """The stand-in; its model is a scenario file ($FAKE_CODEX_SCENARIO) rewritten before each
    run with a single invocation, which every later run repeats."""

    name = "fake"

    def __init__(self, base: Path, config_sandbox: Optional[str]) -> None:
        self.scenario = base / "scenario.json"
        super().__init__(base, config_sandbox)

    def port(self) -> int:
        return 9  # never contacted: the fake sends no requests

    def extra_env(self) -> Dict[str, str]:
        return {"FAKE_CODEX_SCENARIO": str(self.scenario), "PYTHONPATH": str(rc.REPO_ROOT)}

    def argv(self, args: List[str]) -> List[str]:
        return [sys.executable, "-m", "overnight_agent.fakecodex", *args]

    def play(self, turn: List[Dict[str, Any]]) -> None:
        steps: List[Dict[str, Any]] = []
        for step in turn:
            if "http_error" not in step:  # each model response's usage, as the mock sends it
                steps.append({"usage": dict(USAGE_PER_RESPONSE)})
            if "shell" in step:
                steps.append({"shell": step["shell"]})
            elif "message" in step:
                steps.append({"message": step["message"]})
            elif step.get("hang"):
                steps.append({"hang": True})
            elif step.get("http_error") == 429:  # not retried
                steps.append({"fail": MSG_429})
                break
            elif step.get("http_error") == 500:  # each stream retry printed, then the failure
                steps.append({"fail": MSG_500, "retries": STREAM_RETRIES})
                break
            else:
                raise ValueError(f"no fake equivalent for {step!r}")
        self.scenario.write_text(json.dumps({"steps": steps}))

    def turn_sandbox_modes(self, rollout: Path) -> List[str]:
        return [tc["sandbox_mode"] for tc in self.turn_contexts(rollout)]


@pytest.fixture
def clis():
    """A factory: `clis(config_sandbox=None)` -> {"real": RealCodex, "fake": FakeCodex}, both in
    one scratch folder outside /tmp; the teardown proves that nothing tagged survives."""
    scratch = rc.scratch_dir("conf")
    made: List[CLI] = []

    def make(config_sandbox: Optional[str] = None) -> Dict[str, CLI]:
        pair: Dict[str, CLI] = {}
        for cls in (RealCodex, FakeCodex):
            cli = cls(scratch / f"{cls.name}-{len(made)}", config_sandbox)
            made.append(cli)
            pair[cls.name] = cli
        return pair

    try:
        yield make
    finally:
        left = []
        for cli in made:
            survivors = rc.processes_with_tag(cli.tag)
            left += survivors
            for p in survivors:
                rc.kill_process_tree(p.pid, tag=cli.tag)
            cli.close()
        shutil.rmtree(scratch, ignore_errors=True)
        assert left == [], f"tagged processes survived: {left}"


def per_cli(pair: Dict[str, CLI], scenario: Callable[[CLI], Any]) -> Dict[str, Any]:
    """Play `scenario` through both CLIs: {"real": ..., "fake": ...}."""
    return {name: scenario(cli) for name, cli in pair.items()}


def exec_args(prompt: str, *, sandbox: str = "workspace-write") -> List[str]:
    return ["exec", "--json", "--sandbox", sandbox, "-m", MODEL,
            "-c", f"model_reasoning_effort={EFFORT}", prompt]


def resume_args(thread: Optional[str], prompt: str, *, sandbox: Optional[str] = "workspace-write"
                ) -> List[str]:
    """The supervisor's resume command line (`--last` when thread is None)."""
    pre = ["exec", "--sandbox", sandbox] if sandbox else ["exec"]
    target = [thread] if thread else ["--last"]
    return [*pre, "resume", *target, "-m", MODEL, "-c", f"model_reasoning_effort={EFFORT}",
            "--json", prompt]


def usage(responses: int) -> Dict[str, int]:
    """The cumulative usage of a thread after `responses` successful model responses."""
    return {"input_tokens": 100 * responses, "cached_input_tokens": 0,
            "cache_write_input_tokens": 0, "output_tokens": 20 * responses,
            "reasoning_output_tokens": 0}


def assert_same_run(res: Dict[str, Result]) -> None:
    real, fake = res["real"], res["fake"]
    assert real.shape == fake.shape, both(res)
    assert real.rc == fake.rc, both(res)
    assert normalized(real.events) == normalized(fake.events), both(res)
    assert real.stderr.splitlines() == fake.stderr.splitlines(), both(res)
    assert real.non_json == fake.non_json == [], both(res)


PREAMBLE = [("thread.started", None), ("item.completed", "error"), ("turn.started", None)]
SHELL = [("item.started", "command_execution"), ("item.completed", "command_execution")]
MESSAGE = [("item.completed", "agent_message")]
COMPLETED = [("turn.completed", None)]


# ---------------------------------------------------------------------------------------------
# The comparisons
# ---------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_turn_and_resume_by_id(clis) -> None:
    """exec, then two resumes by id (one fails with a 429 after a command): same events and
    exit codes, the same thread id printed back, one rollout appended to, cumulative usage
    (the failed turn's successful response counts), and the commands really ran."""
    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"shell": "echo one >> log.txt"}, {"message": "first turn"}])
        first = cli.run(exec_args("start"))
        assert first.rc == 0 and len(first.rollouts) == 1, first.describe()
        rollout = first.rollouts[0]
        before = rollout.read_bytes()

        cli.play([{"shell": "echo two >> log.txt"}, {"http_error": 429}])
        failed = cli.run(resume_args(first.thread_id, "go on"))
        cli.play([{"message": "third turn"}])
        third = cli.run(resume_args(first.thread_id, "go on"))
        after = third.rollouts
        return {"runs": [first, failed, third],
                "same_thread": [r.thread_id == first.thread_id for r in (failed, third)],
                "rollouts": [p == rollout for p in after],
                "appended": rollout.read_bytes().startswith(before)
                and len(rollout.read_bytes()) > len(before),
                "turns_in_rollout": len(cli.turn_contexts(rollout)),
                "summary": cli.rollout_summary(rollout),
                "log": (cli.repo / "log.txt").read_text()}

    res = per_cli(clis(), scenario)
    for i in range(3):
        assert_same_run({k: v["runs"][i] for k, v in res.items()})
    for key in ("same_thread", "rollouts", "appended", "turns_in_rollout", "summary", "log"):
        assert res["real"][key] == res["fake"][key], (key, res["real"][key], res["fake"][key])
    first, failed, third = res["real"]["runs"]
    assert first.shape == PREAMBLE + SHELL + MESSAGE + COMPLETED
    assert failed.shape == PREAMBLE + SHELL + [("error", None), ("turn.failed", None)]
    assert failed.events[-1]["error"]["message"] == MSG_429
    assert third.shape == PREAMBLE + MESSAGE + COMPLETED
    assert [r.rc for r in (first, failed, third)] == [0, 1, 0]
    assert first.usage == usage(2) and third.usage == usage(4)
    assert res["real"]["same_thread"] == [True, True] and res["real"]["rollouts"] == [True]
    assert res["real"]["appended"] and res["real"]["turns_in_rollout"] == 3
    assert res["real"]["summary"] == {"name_ok": True, "first_line": "session_meta",
                                      "session_metas": 1, "latest_cwd": "repo"}
    assert res["real"]["log"] == "one\ntwo\n"
    assert first.stderr.splitlines() == [MSG_STDIN]
    assert third.stderr == ""  # a resume with a PROMPT does not read stdin, and says nothing


@pytest.mark.timeout(60)
def test_resume_last_is_scoped_to_the_cwd(clis) -> None:
    """`resume --last` in another git repository starts a new thread (rc 0); in the first
    one it finds the first thread even though the other one is newer."""
    def scenario(cli: CLI) -> Dict[str, Any]:
        other = rc.make_git_repo(cli.base / "other")
        cli.play([{"message": "hello"}])
        first = cli.run(exec_args("start"))
        elsewhere = cli.run(resume_args(None, "go on"), cwd=other)
        here = cli.run(resume_args(None, "go on"))
        by_thread = {r.name: cli.rollout_summary(r) for r in here.rollouts}
        return {"runs": [first, elsewhere, here],
                "new_thread_elsewhere": elsewhere.thread_id not in (None, first.thread_id),
                "same_thread_here": here.thread_id == first.thread_id,
                "rollouts": [by_thread[r.name] for r in sorted(
                    here.rollouts, key=lambda p: p.name.endswith(f"-{elsewhere.thread_id}.jsonl"))]}

    res = per_cli(clis(), scenario)
    for i in range(3):
        assert_same_run({k: v["runs"][i] for k, v in res.items()})
    for key in ("new_thread_elsewhere", "same_thread_here", "rollouts"):
        assert res["real"][key] == res["fake"][key], (key, res["real"][key], res["fake"][key])
    first, elsewhere, here = res["real"]["runs"]
    assert [r.rc for r in (first, elsewhere, here)] == [0, 0, 0]
    assert res["real"]["new_thread_elsewhere"] and res["real"]["same_thread_here"]
    # the first thread's rollout, then the one started by `--last` in the other repository
    assert res["real"]["rollouts"] == [
        {"name_ok": True, "first_line": "session_meta", "session_metas": 1, "latest_cwd": "repo"},
        {"name_ok": True, "first_line": "session_meta", "session_metas": 1, "latest_cwd": "other"}]
    assert elsewhere.shape == PREAMBLE + MESSAGE + COMPLETED
    assert elsewhere.usage == usage(1) and here.usage == usage(2)


@pytest.mark.timeout(60)
def test_resume_of_an_unknown_id_fails_loudly(clis) -> None:
    """A thread id codex does not know (here beside one it knows): rc 1, the message on stderr,
    nothing on stdout, no rollout written, and no turn played (no request to the model)."""
    def scenario(cli: CLI) -> Result:
        cli.play([{"message": "hello"}])
        known = cli.run(exec_args("start"))
        assert known.rc == 0 and len(known.rollouts) == 1, known.describe()
        return cli.run(resume_args(UNKNOWN_ID, "go on"))

    pair = clis()
    res = per_cli(pair, scenario)
    assert_same_run(res)
    for r in res.values():
        assert r.rc == 1 and r.stdout == "" and len(r.rollouts) == 1, r.describe()
        assert f"no rollout found for thread id {UNKNOWN_ID}" in r.stderr, r.describe()
    assert res["real"].stderr.splitlines() == [
        f"Error: thread/resume: thread/resume failed: no rollout found for thread id {UNKNOWN_ID}"
        " (code -32600)"]
    real = pair["real"]
    assert isinstance(real, RealCodex) and len(real.server.responses_requests) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status, message, retries", [
    (429, MSG_429, 0),
    (500, MSG_500, STREAM_RETRIES),
], ids=["429", "500-after-retries"])
def test_turn_failed(clis, status: int, message: str, retries: int) -> None:
    def scenario(cli: CLI) -> Result:
        cli.play([{"http_error": status}])
        return cli.run(exec_args("do it"))

    res = per_cli(clis(), scenario)
    assert_same_run(res)
    real = res["real"]
    assert real.rc == 1
    assert real.shape == PREAMBLE + [("error", None)] * (retries + 1) + [("turn.failed", None)]
    assert real.events[-1]["error"]["message"] == message
    assert [e["message"] for e in real.events if e["type"] == "error"][:retries] == [
        f"Reconnecting... {i}/{retries} ({message})" for i in range(1, retries + 1)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("config_sandbox, resume_sandbox, expected", [
    (None, None, "read-only"),
    ("workspace-write", None, "workspace-write"),
    (None, "workspace-write", "workspace-write"),
], ids=["no-config-no-flag", "config-no-flag", "no-config-flag"])
def test_resume_sandbox_mode(clis, config_sandbox: Optional[str], resume_sandbox: Optional[str],
                             expected: str) -> None:
    """The sandbox mode is not stored with the thread: a resume re-derives it from --sandbox,
    then config.toml's sandbox_mode, then read-only. Both CLIs read the same config.toml."""
    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"message": "hello"}])
        first = cli.run(exec_args("start", sandbox="workspace-write"))
        second = cli.run(resume_args(first.thread_id, "go on", sandbox=resume_sandbox))
        assert second.thread_id == first.thread_id, second.describe()
        return {"runs": [first, second], "modes": cli.turn_sandbox_modes(second.rollouts[0])}

    pair = clis(config_sandbox)
    res = per_cli(pair, scenario)
    for i in range(2):
        assert_same_run({k: v["runs"][i] for k, v in res.items()})
    assert res["real"]["modes"] == res["fake"]["modes"] == ["workspace-write", expected]
    # what the real CLI told the model server agrees with its rollout
    real = pair["real"]
    assert isinstance(real, RealCodex)
    assert real.requested_sandbox_modes() == ["workspace-write", expected]


class _Lines:
    """Reads a pipe line by line in a daemon thread, so every wait on it is bounded."""

    def __init__(self, pipe) -> None:
        self._queue: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe) -> None:
        try:
            for line in iter(pipe.readline, b""):
                self._queue.put(line)
        finally:
            self._queue.put(None)

    def until(self, stop: Callable[[Dict[str, Any]], bool], timeout: float) -> List[Dict[str, Any]]:
        events: List[Dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            events.append(json.loads(line))
            if stop(events[-1]):
                return events
        raise AssertionError(f"not seen within {timeout} s; got {shape(events)}")

    def rest(self, timeout: float) -> List[bytes]:
        """Whatever is left until EOF."""
        lines: List[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                return lines
            lines.append(line)
        raise AssertionError(f"no EOF within {timeout} s")


def _wait_for(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = probe()
    while not value and time.monotonic() < deadline:
        time.sleep(0.02)
        value = probe()
    return value


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum, returncode, counted", [
    (signal.SIGINT, 1, 1),
    (signal.SIGTERM, -signal.SIGTERM, 0),
], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_running_command(clis, signum: int, returncode: int, counted: int) -> None:
    """A signal while a command runs: the same events before it, nothing on stdout after it,
    the same exit (SIGINT: rc 1; SIGTERM: killed by signal 15), quickly, and the command
    (in a session of its own) is gone when the CLI has exited, before any sweep of ours.
    A resume by id afterwards continues the thread; the usage of the interrupted turn's
    response is kept after SIGINT (codex records it while aborting the turn) and lost after
    SIGTERM (codex records a response's usage only once its commands are done)."""
    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"shell": "sleep 30"}, {"message": "never"}])
        proc = cli.start(exec_args("go"))
        try:
            lines = _Lines(proc.stdout)
            events = lines.until(lambda e: e.get("type") == "item.started", timeout=15)
            sleepers = _wait_for(lambda: [p for p in rc.processes_with_tag(cli.tag)
                                          if p.name() == "sleep"], timeout=10)
            assert sleepers, f"[{cli.name}] the command did not start"
            t0 = time.monotonic()
            os.kill(proc.pid, signum)
            code = proc.wait(timeout=10)
            exit_seconds = time.monotonic() - t0
            after = lines.rest(timeout=5)
            all_gone = _wait_for(lambda: not rc.processes_with_tag(cli.tag), timeout=2)
            left = [] if all_gone else [p.name() for p in rc.processes_with_tag(cli.tag)]
        finally:
            rc.kill_process_tree(proc.pid, tag=cli.tag)
            proc.communicate(timeout=10)
        assert rc.processes_with_tag(cli.tag) == []
        thread = events[0].get("thread_id")
        cli.play([{"message": "after the signal"}])
        resumed = cli.run(resume_args(thread, "go on"))
        return {"interrupted": {"events": normalized(events), "rc": code,
                                "stdout_after_signal": after, "quick": exit_seconds < 2.0,
                                "left_by_cli": left},
                "resumed": resumed, "same_thread": resumed.thread_id == thread,
                "rollouts": len(resumed.rollouts)}

    res = per_cli(clis(), scenario)
    assert res["real"]["interrupted"] == res["fake"]["interrupted"], res
    interrupted = res["real"]["interrupted"]
    assert shape(interrupted["events"]) == PREAMBLE + [("item.started", "command_execution")]
    assert {k: v for k, v in interrupted.items() if k != "events"} == {
        "rc": returncode, "stdout_after_signal": [], "quick": True, "left_by_cli": []}
    # the resume: the real CLI may warn about the empty .codex mount stub its sandbox left in
    # the work tree when it was interrupted (trap 7: the fake has no sandbox, hence no stub)
    for r in (res["real"]["resumed"], res["fake"]["resumed"]):
        r.stderr = "".join(line for line in r.stderr.splitlines(keepends=True)
                           if not line.startswith(UNTRUSTED_WARNING))
    assert_same_run({k: v["resumed"] for k, v in res.items()})
    for key in ("same_thread", "rollouts"):
        assert res["real"][key] == res["fake"][key] == (True if key == "same_thread" else 1)
    resumed = res["real"]["resumed"]
    assert resumed.rc == 0 and resumed.shape == PREAMBLE + MESSAGE + COMPLETED
    assert resumed.usage == usage(counted + 1)


# ---------------------------------------------------------------------------------------------
# Talking to a thread: `codex queue`, and a thread another process still writes
# ---------------------------------------------------------------------------------------------

QUEUED_REPLY = re.compile(r"Queued message [0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                          r"[0-9a-f]{12} for thread (\S+)\.")
TURN_ABORTED_NOTE = "<turn_aborted>\nThe user interrupted the previous turn on purpose."


def queue_message(cli: CLI, thread: Optional[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli.argv(["queue", "--thread", str(thread), "--message", text]),
                          cwd=cli.repo, env=cli.env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)


def user_texts(rollout: Path) -> List[str]:
    """The user messages a rollout keeps, in order (codex's own environment context aside)."""
    texts = []
    for line in rollout.read_text().splitlines():
        record = json.loads(line)
        payload = record.get("payload") or {}
        if record.get("type") == "response_item" and payload.get("role") == "user":
            for part in payload.get("content") or []:
                text = part.get("text", "")
                if not text.startswith("<environment_context>"):
                    texts.append(text)
    return texts


def first_thread_id(proc: subprocess.Popen) -> Optional[str]:
    line = proc.stdout.readline().decode()
    return json.loads(line).get("thread_id") if line.strip() else None


@pytest.mark.timeout(90)
def test_a_queued_message_starts_the_next_resume_and_its_prompt_restarts_the_request(clis) -> None:
    """Queued while the thread is idle: the next `exec resume` starts its turn with the queued
    message, and its own PROMPT joins that turn; both end up in the thread, queued first. The
    real CLI sends a first request with the queued message alone, cancels it when the prompt
    arrives, and sends it again with both: one model response thrown away (which is why the
    supervisor puts messages into the resume prompt itself and never queues them)."""
    pair = clis()

    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"message": "answer"}])  # every request of the turn gets the same answer
        first = cli.run(exec_args("start"))
        reply = queue_message(cli, first.thread_id, "QUEUED NOTE")
        resumed = cli.run(resume_args(first.thread_id, "go on"))
        return {"reply": (reply.returncode, QUEUED_REPLY.fullmatch(reply.stdout.strip()) is not None,
                          reply.stderr),
                "thread_in_reply": QUEUED_REPLY.fullmatch(reply.stdout.strip()).group(1) == first.thread_id,
                "resumed": resumed, "texts": user_texts(resumed.rollouts[0])}

    res = per_cli(pair, scenario)
    assert_same_run({k: v["resumed"] for k, v in res.items()})
    for key in ("reply", "thread_in_reply", "texts"):
        assert res["real"][key] == res["fake"][key], (key, res["real"][key], res["fake"][key])
    assert res["real"]["reply"] == (0, True, "") and res["real"]["thread_in_reply"]
    assert res["real"]["texts"] == ["start", "QUEUED NOTE", "go on"]
    assert res["real"]["resumed"].usage == usage(2)  # the thrown-away response is not counted
    real = pair["real"]
    assert isinstance(real, RealCodex)
    resume_requests = real.server.responses_requests[1:]
    last_inputs = [[i["content"][0]["text"] for i in q["body"]["input"]
                    if i.get("role") == "user"][-2:] for q in resume_requests]
    assert last_inputs == [["start", "QUEUED NOTE"], ["QUEUED NOTE", "go on"]], last_inputs


@pytest.mark.timeout(90)
def test_a_message_queued_while_a_turn_runs_comes_after_that_turn_in_an_aborted_turn(clis) -> None:
    """Queued while an `exec` of the thread runs: that turn does not see it; as the process
    ends it takes the message off the queue, starts a turn for it and aborts that turn at once
    (stdout says nothing of it). The thread then holds codex's `<turn_aborted>` note, and the
    message before it, or not at all: the real CLI races with its own exit (both seen here),
    and a message it drops is gone. The next resume sends what the thread holds, then its
    prompt."""
    pair = clis()

    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"shell": "sleep 2"}, {"message": "first"}])
        proc = cli.start(exec_args("start"))
        try:
            thread = first_thread_id(proc)
            time.sleep(0.5)  # the command is running
            reply = queue_message(cli, thread, "QUEUED WHILE RUNNING")
            out, _err = proc.communicate(timeout=30)
        finally:
            rc.kill_process_tree(proc.pid, tag=cli.tag)
        cli.play([{"message": "second"}])
        resumed = cli.run(resume_args(thread, "go on"))
        texts = user_texts(resumed.rollouts[0])
        return {"first_rc": proc.returncode,
                "reply": (reply.returncode, bool(QUEUED_REPLY.fullmatch(reply.stdout.strip()))),
                "first_stdout": [json.loads(x)["type"] for x in out.decode().splitlines()][-2:],
                "resumed": resumed,
                "texts": [t.split("\n")[0] + ("..." if t.startswith(TURN_ABORTED_NOTE) else "")
                          for t in texts]}

    res = per_cli(pair, scenario)
    assert_same_run({k: v["resumed"] for k, v in res.items()})
    for key in ("first_rc", "reply", "first_stdout"):
        assert res["real"][key] == res["fake"][key], (key, res["real"][key], res["fake"][key])
    assert res["real"]["first_rc"] == 0 and res["real"]["reply"] == (0, True)
    assert res["real"]["first_stdout"] == ["item.completed", "turn.completed"]
    kept = ["start", "QUEUED WHILE RUNNING", "<turn_aborted>...", "go on"]
    dropped = ["start", "<turn_aborted>...", "go on"]
    assert res["real"]["texts"] in (kept, dropped), res["real"]["texts"]
    assert res["fake"]["texts"] == kept  # one of the real outcomes, every time
    real = pair["real"]
    assert isinstance(real, RealCodex)
    during = [q for q in real.server.responses_requests[:2]]  # the first exec's two requests
    assert not any("QUEUED WHILE RUNNING" in json.dumps(q["body"]) for q in during)
    sent_later = "QUEUED WHILE RUNNING" in json.dumps(real.server.responses_requests[-1]["body"])
    assert sent_later == (res["real"]["texts"] == kept)


@pytest.mark.timeout(90)
def test_a_resume_of_a_thread_another_process_writes_is_refused_and_typed_busy(clis) -> None:
    """While an `exec` of the thread waits for the model, `exec resume` of it fails at once:
    rc 1, nothing on stdout, and on stderr the text the supervisor types as `thread_busy`."""
    from overnight_agent.agents import base
    from overnight_agent.agents.codex import CodexBackend

    pair = clis()

    def scenario(cli: CLI) -> Dict[str, Any]:
        cli.play([{"hang": True}])
        proc = cli.start(exec_args("start"))
        try:
            thread = first_thread_id(proc)
            other = dict(cli.env, **{rc.TAG_VAR: cli.tag + "-second"})
            refused = rc.run_codex(cli.argv(resume_args(thread, "again")), cwd=cli.repo, env=other,
                                   timeout=RUN_TIMEOUT)
            still_running = proc.poll() is None
        finally:
            rc.kill_process_tree(proc.pid, tag=cli.tag)
            proc.communicate(timeout=10)
        view = base.AttemptView(kind="resume", expected_thread=thread, stderr_tail=refused.stderr,
                                returncode=refused.returncode)
        backend = CodexBackend(codex_bin="codex", codex_home=cli.codex_home, model=MODEL, effort=EFFORT,
                               sandbox="workspace-write")
        last = refused.stderr.strip().splitlines()[-1]
        return {"rc": refused.returncode, "stdout": refused.stdout, "still_running": still_running,
                "last_line": last.replace(str(thread), "<thread>"),
                "log_lines": [re.sub(r"^\S+ ", "<ts> ", x).replace(str(thread), "<thread>")
                              for x in refused.stderr.strip().splitlines()[:-1]],
                "outcome": backend.classify(view).kind}

    res = per_cli(pair, scenario)
    assert res["real"] == res["fake"], res
    assert res["real"]["rc"] == 1 and res["real"]["stdout"] == "" and res["real"]["still_running"]
    assert res["real"]["last_line"] == ("Error: thread/resume: thread/resume failed: thread <thread> "
                                        "already has an active writer (code -32600)")
    assert res["real"]["outcome"] == base.THREAD_BUSY

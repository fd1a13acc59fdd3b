"""The real Codex CLI (npm @openai/codex@0.169.0) against the scripted loopback mock model server.

Tests marked ``realcodex`` run the real static binary (installed by tests/setup_codex.sh) with
stdin=/dev/null, in a git repository under <repo>/.cache/realcodex-tmp/ (NOT /tmp: workspace-write
leaves /tmp writable, which would hide sandbox denials), in a new session, with a hard timeout,
and kill the process group plus every descendant and every process carrying the test's
``OA_TEST_TAG`` afterwards; each test proves via psutil that nothing with its tag survives.

The first tests (no marker) check the mock server itself and need neither node nor codex.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realcodex as rc  # noqa: E402
from mock_model_server import MockModelServer  # noqa: E402

MODEL = "gpt-5.3-codex"
EFFORT = "xhigh"

# The (type, item.type) sequence of samples/exec_success.jsonl (a real capture); the test also
# re-reads the sample itself from tests/samples/codex/.
EXEC_SUCCESS_SEQUENCE = [
    ("thread.started", None),
    ("item.completed", "error"),
    ("turn.started", None),
    ("item.completed", "reasoning"),
    ("item.completed", "agent_message"),
    ("item.started", "command_execution"),
    ("item.completed", "command_execution"),
    ("item.completed", "agent_message"),
    ("turn.completed", None),
]


def _sample_path(name: str) -> Path | None:
    """A real capture, from the copies the repository carries in tests/samples/codex/."""
    path = rc.TESTS_DIR / "samples" / "codex" / name
    return path if path.is_file() else None


def _seq(events: List[Dict[str, Any]]) -> List[tuple]:
    return [(e.get("type"), (e.get("item") or {}).get("type")) for e in events]


def _tool_outputs(request: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [i for i in (request["body"] or {}).get("input", []) if i.get("type") == "function_call_output"]


# ---------------------------------------------------------------------------------------------
# The mock server on its own (no codex needed)
# ---------------------------------------------------------------------------------------------

def _post(port: int, body: Dict[str, Any], timeout: float = 5.0) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/responses", body=json.dumps(body),
                     headers={"Content-Type": "application/json",
                              "x-codex-turn-metadata": json.dumps({"history_initialization": "new"})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _sse_types(text: str) -> List[str]:
    return [json.loads(line[6:])["type"] for line in text.splitlines() if line.startswith("data: ")]


def _mock_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mock-model")]


@pytest.mark.timeout(30)
def test_mock_server_script_steps_and_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    script = [
        {"shell": "echo hi > f.txt"},
        {"message": "done"},
        {"http_error": 429, "usage_limit": True, "resets_in_seconds": 60},
        {"response_failed": "boom"},
        {"slow_message": "abcdef", "seconds": 0.3},
    ]
    with MockModelServer(script, log_path=log) as srv:
        status, text = _post(srv.port, {"model": MODEL})
        assert status == 200
        assert _sse_types(text) == ["response.created", "response.output_item.added",
                                    "response.output_item.done", "response.completed"]
        call = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")][2]["item"]
        assert call["type"] == "function_call" and call["name"] == "exec_command"
        assert json.loads(call["arguments"]) == {"cmd": "echo hi > f.txt", "yield_time_ms": 10000}
        status, text = _post(srv.port, {"model": MODEL})
        types = _sse_types(text)
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert "response.output_text.delta" in types
        status, text = _post(srv.port, {})
        assert status == 429 and json.loads(text)["error"]["type"] == "usage_limit_reached"
        status, text = _post(srv.port, {})
        assert _sse_types(text) == ["response.created", "response.failed"]
        t0 = time.monotonic()
        status, text = _post(srv.port, {})
        assert time.monotonic() - t0 >= 0.25
        deltas = [json.loads(line[6:])["delta"] for line in text.splitlines()
                  if line.startswith("data: ") and "output_text.delta" in line]
        assert "".join(deltas) == "abcdef" and len(deltas) >= 2
        status, text = _post(srv.port, {})  # past the end: the last step repeats
        assert "response.output_text.delta" in _sse_types(text)
        assert [r["step_index"] for r in srv.requests] == [0, 1, 2, 3, 4, 4]
        assert srv.requests[0]["turn_metadata"] == {"history_initialization": "new"}
        assert srv.requests[0]["body"] == {"model": MODEL}
        assert srv.requests[0]["headers"]["content-type"] == "application/json"
    assert len(log.read_text().splitlines()) == 6
    assert _mock_threads() == []


@pytest.mark.timeout(30)
def test_mock_server_close_unblocks_hung_handlers() -> None:
    before = set(threading.enumerate())
    srv = MockModelServer([{"hang_before_headers": True}, {"stall_after": 2}, {"drop": True}])
    socks = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            body = b"{}"
            s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2\r\n\r\n" + body)
            socks.append(s)
            assert srv.wait_for_requests(len(socks), timeout=5)
        # the stalled one got headers and 2 events
        socks[1].settimeout(5)
        got = b""
        while got.count(b"event: ") < 2 or not got.endswith(b"\n\n"):
            chunk = socks[1].recv(4096)
            assert chunk
            got += chunk
        assert b"200 OK" in got and got.count(b"event: ") == 2
        # drop: connection closed without a response
        status = None
        try:
            status, _ = _post(srv.port, {}, timeout=5)
        except (http.client.HTTPException, ConnectionError):
            pass
        assert status is None
        t0 = time.monotonic()
        srv.close()
        assert time.monotonic() - t0 < 3.0
        for s in socks:  # the server side is gone: EOF
            s.settimeout(5)
            rest = s.recv(4096)
            while rest:
                rest = s.recv(4096)
    finally:
        for s in socks:
            s.close()
        srv.close()
    leaked = [t.name for t in set(threading.enumerate()) - before]
    assert leaked == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


@pytest.mark.timeout(30)
def test_mock_server_cli(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"message": "hello"}]))
    port_file = tmp_path / "port"
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "mock_model_server.py"),
                             "--script", str(script), "--port-file", str(port_file), "--log", str(log),
                             "--max-seconds", "60"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(port_file.read_text())
        status, text = _post(port, {"model": "m"})
        assert status == 200 and "hello" in text
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert json.loads(log.read_text().splitlines()[0])["body"] == {"model": "m"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# The real Codex CLI
# ---------------------------------------------------------------------------------------------

class Workspace:
    """Per-test scratch area under <repo>/.cache/realcodex-tmp/, a git repo, a tag."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = rc.scratch_dir("rc")
        self.tag = f"oa-{uuid.uuid4()}"
        self.repo = rc.make_git_repo(self.dir / "repo")
        self.home = self.dir / "home"
        self.home.mkdir()
        self.codex_home = self.dir / "codex_home"

    def env(self, srv: MockModelServer, **kw: Any) -> Dict[str, str]:
        rc.write_codex_home(self.codex_home, srv.port, model=MODEL, effort=EFFORT, **kw)
        return rc.codex_env(self.codex_home, home=self.home, tag=self.tag)

    def run(self, args: List[str], env: Dict[str, str], *, cwd: Path | None = None,
            timeout: float = 30.0) -> rc.CodexRun:
        r = rc.run_codex([self.binary, *args], cwd=cwd or self.repo, env=env, timeout=timeout)
        survivors = rc.processes_with_tag(self.tag)
        assert survivors == [], f"processes survived the kill: {survivors}"
        return r


@pytest.fixture
def ws():
    binary = rc.require_codex()
    w = Workspace(binary)
    try:
        yield w
    finally:
        left = rc.processes_with_tag(w.tag)
        for p in left:  # belt and braces: run_codex already swept them
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(w.dir, ignore_errors=True)
        assert left == [], f"processes with {rc.TAG_VAR}={w.tag} survived: {left}"


def _exec_args(prompt: str, *extra: str) -> List[str]:
    return ["exec", "--json", "--sandbox", "workspace-write", *extra, "-m", MODEL,
            "-c", f"model_reasoning_effort={EFFORT}", prompt]


def _resume_args(thread_id: str, prompt: str, *extra: str, sandbox: bool = True) -> List[str]:
    pre = ["exec", "--sandbox", "workspace-write"] if sandbox else ["exec"]
    return [*pre, "resume", thread_id, "-m", MODEL, "-c", f"model_reasoning_effort={EFFORT}",
            *extra, "--json", prompt]


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_exec_success_matches_real_capture(ws: Workspace) -> None:
    script = [{"shell": "echo hi > f.txt", "message": "Creating f.txt.", "reasoning": "Plan: f.txt."},
              {"message": "done"}]
    with MockModelServer(script, log_path=ws.dir / "requests.jsonl") as srv:
        r = ws.run(_exec_args("do it"), ws.env(srv))
        reqs = srv.responses_requests
    assert r.returncode == 0, r.describe()
    assert not r.timed_out and not r.non_json_stdout, r.describe()
    assert _seq(r.events) == EXEC_SUCCESS_SEQUENCE, r.describe()
    sample = _sample_path("exec_success.jsonl")
    if sample is not None:
        want = _seq([json.loads(x) for x in sample.read_text().splitlines() if x.strip()])
        assert _seq(r.events) == want
        no_reasoning = [s for s in want if s[1] != "reasoning"]
        assert [s for s in _seq(r.events) if s[1] != "reasoning"] == no_reasoning
    assert (ws.repo / "f.txt").read_text() == "hi\n"
    assert r.events[-1]["usage"]["input_tokens"] == 200  # 2 requests x 100, cumulative
    assert [e["item"]["text"] for e in r.items("agent_message")] == ["Creating f.txt.", "done"]
    # requests: model and effort in every body; the second carries the call's output
    assert len(reqs) == 2
    for q in reqs:
        assert q["body"]["model"] == MODEL
        assert q["body"]["reasoning"]["effort"] == EFFORT
        assert q["body"]["stream"] is True
        assert q["headers"]["authorization"] == f"Bearer {rc.MOCK_API_KEY}"
        assert q["turn_metadata"]["history_initialization"] == "new"
        assert q["turn_metadata"]["thread_id"] == r.thread_id
        assert q["turn_metadata"]["sandbox_mode"] == "workspace-write"
    outs = _tool_outputs(reqs[1])
    assert outs and "Process exited with code 0" in outs[-1]["output"]
    rollouts = rc.rollout_files(ws.codex_home)
    assert len(rollouts) == 1 and rollouts[0].name.endswith(f"-{r.thread_id}.jsonl")
    assert (ws.dir / "requests.jsonl").read_text().count("\n") >= 2


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_resume_by_thread_id(ws: Workspace) -> None:
    with MockModelServer([{"message": "first turn"}]) as srv:
        env = ws.env(srv)
        first = ws.run(_exec_args("start"), env)
        assert first.returncode == 0, first.describe()
        tid = first.thread_id
        assert tid

        srv.set_script([{"shell": "echo resumed >> f.txt"}, {"message": "second turn"}])
        n_before = len(srv.responses_requests)
        second = ws.run(_resume_args(tid, "continue"), env)
        assert second.returncode == 0, second.describe()
        assert second.thread_id == tid
        assert second.types[-1] == "turn.completed"
        assert second.events[-1]["usage"]["input_tokens"] == 300  # cumulative, restored on resume
        assert (ws.repo / "f.txt").read_text() == "resumed\n"
        reqs = srv.responses_requests[n_before:]
        assert len(reqs) == 2
        for q in reqs:
            assert q["turn_metadata"]["history_initialization"] == "cold_resume"
            assert q["turn_metadata"]["thread_id"] == tid
            assert q["body"]["model"] == MODEL and q["body"]["reasoning"]["effort"] == EFFORT
            assert q["turn_metadata"]["sandbox_mode"] == "workspace-write"
        assert "first turn" in json.dumps(reqs[0]["body"]["input"])  # history came along
        assert len(rc.rollout_files(ws.codex_home)) == 1  # resume appends to the same rollout

        # trap 1: the sandbox mode is not stored with the thread. Without --sandbox before
        # `resume`, the turn takes config.toml's sandbox_mode, and runs read-only without one.
        srv.set_script([{"message": "third"}])
        n_before = len(srv.responses_requests)
        third = ws.run(_resume_args(tid, "continue", sandbox=False), env)
        assert third.returncode == 0 and third.thread_id == tid, third.describe()
        assert srv.responses_requests[n_before]["turn_metadata"]["sandbox_mode"] == "workspace-write"
        env = ws.env(srv, sandbox_mode=None)
        n_before = len(srv.responses_requests)
        fourth = ws.run(_resume_args(tid, "continue", sandbox=False), env)
        assert fourth.returncode == 0 and fourth.thread_id == tid, fourth.describe()
        assert srv.responses_requests[n_before]["turn_metadata"]["sandbox_mode"] == "read-only"

        # unknown id: loud failure, no request to the model
        n_before = len(srv.responses_requests)
        unknown = ws.run(_resume_args("01a20000-0000-7000-8000-000000000000", "continue"), env)
        assert unknown.returncode == 1, unknown.describe()
        assert "no rollout found for thread id" in unknown.stderr
        assert len(srv.responses_requests) == n_before


@pytest.mark.realcodex
@pytest.mark.timeout(60)
@pytest.mark.parametrize("step, message_part", [
    # a plain 429 is not retried either, though the message says so (body not shown)
    ({"http_error": 429}, "exceeded retry limit, last status: 429 Too Many Requests"),
    ({"http_error": 429, "usage_limit": True, "resets_in_seconds": 3600}, "try again later"),
    ({"http_error": 429, "usage_limit": True, "resets_at": "AT"}, "try again at "),
    ({"http_error": 400}, "bad request mock"),
], ids=["429", "usage-limit-in-seconds", "usage-limit-at", "400"])
def test_http_4xx_fails_the_turn_without_retry(ws: Workspace, step: Dict[str, Any],
                                                message_part: str) -> None:
    step = dict(step)
    if step.get("resets_at") == "AT":
        step["resets_at"] = int(time.time()) + 1800
    with MockModelServer([step]) as srv:
        r = ws.run(_exec_args("do it"), ws.env(srv))
        n = len(srv.responses_requests)
    assert r.returncode == 1, r.describe()
    assert r.types[-1] == "turn.failed", r.describe()
    assert message_part in r.events[-1]["error"]["message"], r.describe()
    assert r.types[-2] == "error"
    assert n == 1  # no retry


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_http_500_retries_then_fails(ws: Workspace) -> None:
    with MockModelServer([{"http_error": 500}]) as srv:
        r = ws.run(_exec_args("do it"), ws.env(srv))
        n = len(srv.responses_requests)
    assert r.returncode == 1, r.describe()
    assert r.types[-1] == "turn.failed", r.describe()
    turn = r.types[r.types.index("turn.started") + 1:]
    assert turn[-1] == "turn.failed" and set(turn[:-1]) == {"error"} and len(turn) >= 2, r.describe()
    retries = [e["message"] for e in r.events if e["type"] == "error" and e["message"].startswith("Reconnecting")]
    # Only the stream-level retries (stream_max_retries = 1) are printed; each stream attempt
    # also retries the HTTP request silently (request_max_retries = 1): (1+1) x (1+1) requests.
    assert len(retries) == 1 and retries[0].startswith("Reconnecting... 1/1 "), r.describe()
    assert n == 4


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_stalled_stream_fails_after_idle_timeout(ws: Workspace) -> None:
    with MockModelServer([{"stall_after": 2}]) as srv:
        r = ws.run(_exec_args("do it"), ws.env(srv, stream_idle_timeout_ms=1000), timeout=30)
        n = len(srv.responses_requests)
    assert r.returncode == 1, r.describe()
    assert r.types[-1] == "turn.failed"
    assert "idle timeout" in r.events[-1]["error"]["message"]
    assert n == 2  # stream_max_retries = 1


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_hang_before_headers_is_not_timed_out_by_codex(ws: Workspace) -> None:
    """Trap 5: codex has no timeout before response headers; only our own hard timeout ends it,
    and the kill leaves nothing behind."""
    with MockModelServer([{"hang_before_headers": True}]) as srv:
        # a 1 s idle timeout would end a stalled *stream* within ~2.5 s (see the stall test);
        # it does not apply before the headers arrive
        r = ws.run(_exec_args("do it"), ws.env(srv, stream_idle_timeout_ms=1000), timeout=4)
        assert srv.wait_for_requests(1, timeout=1)
    assert r.timed_out, r.describe()
    assert r.types[-1] == "turn.started", r.describe()


def _name(proc) -> str:
    """A process's name, or "" if it ended since it was listed (`touch` lives a millisecond)."""
    try:
        return proc.name()
    except psutil.Error:
        return ""


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_kill_reaches_commands_in_their_own_session(ws: Workspace) -> None:
    """Trap 6: each command runs in its own session, so killpg(codex) alone misses it."""
    marker = ws.dir / "started"
    script = [{"shell": f"touch {marker}; sleep 57 & sleep 58; wait", "yield_time_ms": 30000}]
    with MockModelServer(script) as srv:
        env = ws.env(srv)
        proc = rc.start_codex([ws.binary, *_exec_args("do it")], cwd=ws.repo, env=env)
        try:
            deadline = time.monotonic() + 20
            sleepers: list = []
            while time.monotonic() < deadline and len(sleepers) < 2:
                sleepers = [p for p in rc.processes_with_tag(ws.tag) if _name(p) == "sleep"]
                time.sleep(0.05)
            assert len(sleepers) == 2, "the command did not start"
            codex_sid = os.getsid(proc.pid)
            assert all(os.getsid(p.pid) != codex_sid for p in sleepers)
        finally:
            rc.kill_process_tree(proc.pid, tag=ws.tag)
            proc.communicate(timeout=10)
    assert rc.processes_with_tag(ws.tag) == []
    # trap 7: a kill mid-command can leave empty bwrap mount stubs in the work tree (measured
    # here: .agents and .codex stay, .aws goes); nothing else
    leftovers = {p.name for p in ws.repo.iterdir()} - {".git", "README.md"}
    assert leftovers <= {".agents", ".aws", ".codex"}, leftovers


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_no_stdout_while_the_model_streams(ws: Workspace) -> None:
    with MockModelServer([{"slow_message": "slowly streamed answer", "seconds": 2}]) as srv:
        env = ws.env(srv)
        t0 = time.monotonic()
        proc = rc.start_codex([ws.binary, *_exec_args("do it")], cwd=ws.repo, env=env)
        stamped = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # bounded: the stream ends after ~2 s, pytest-timeout 60 s
                stamped.append((time.monotonic() - t0, json.loads(line)))
            proc.wait(timeout=30)
        finally:
            rc.kill_process_tree(proc.pid, tag=ws.tag)
            proc.communicate(timeout=10)
    assert proc.returncode == 0
    types = [e["type"] for _, e in stamped]
    assert types == ["thread.started", "item.completed", "turn.started", "item.completed", "turn.completed"]
    t_turn_started, t_message = stamped[2][0], stamped[3][0]
    assert t_message - t_turn_started >= 1.5  # silence while the answer streams
    assert stamped[3][1]["item"]["text"] == "slowly streamed answer"


@pytest.mark.realcodex
@pytest.mark.timeout(60)
@pytest.mark.parametrize("step, requests, message_part", [
    ({"response_failed": "boom"}, 2, "stream disconnected before completion: boom"),
    ({"drop": True}, 4, "stream disconnected before completion: error sending request"),
], ids=["response.failed", "dropped-connection"])
def test_transient_failures_are_retried_then_fail(ws: Workspace, step: Dict[str, Any], requests: int,
                                                  message_part: str) -> None:
    with MockModelServer([step]) as srv:
        r = ws.run(_exec_args("do it"), ws.env(srv))
        n = len(srv.responses_requests)
    assert r.returncode == 1 and r.types[-1] == "turn.failed", r.describe()
    assert r.events[-1]["error"]["message"] == message_part
    assert r.events[-3]["message"].startswith("Reconnecting... 1/1 ")
    assert n == requests  # response.failed: stream retries only; a drop: request x stream retries


@pytest.mark.realcodex
@pytest.mark.timeout(60)
def test_commit_in_linked_worktree_needs_writable_roots(ws: Workspace) -> None:
    wt = ws.dir / "wt"
    subprocess.run(["git", "-C", str(ws.repo), "worktree", "add", "-q", "-b", "feature", str(wt)],
                   check=True, capture_output=True, timeout=30)
    roots = rc.worktree_writable_roots(wt)
    common = str(ws.repo / ".git")
    assert roots == [f"{common}/worktrees/wt", f"{common}/objects", f"{common}/refs", f"{common}/logs"]

    def script(n: int) -> List[Dict[str, Any]]:
        return [{"shell": f"echo {n} > w{n}.txt && git add w{n}.txt && git commit -qm wt-commit-{n}"
                          f" && git branch side-{n}"},
                {"shell": f"git config oa.probe{n} 1"},
                {"shell": f"touch {ws.repo}/probe{n}.txt"},
                {"message": "done"}]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(wt), *args], capture_output=True, text=True,
                              timeout=30).stdout

    # 1. plain workspace-write: git cannot write the primary repo's .git -> no commit, rc 0 anyway
    with MockModelServer(script(1)) as srv:
        r = ws.run(_exec_args("commit it"), ws.env(srv), cwd=wt)
        reqs = srv.responses_requests
    assert r.returncode == 0, r.describe()
    out = _tool_outputs(reqs[1])[-1]["output"]
    assert "index.lock': Read-only file system" in out, out
    assert "wt-commit-1" not in git("log", "--oneline", "--all")
    assert git("branch", "--list", "side-1") == ""

    # 2. with the writable roots: commit and branch work; .git/config and the primary tree stay read-only
    with MockModelServer(script(2)) as srv:
        r = ws.run(_exec_args("commit it", "-c", rc.writable_roots_override(roots)), ws.env(srv), cwd=wt)
        reqs = srv.responses_requests
    assert r.returncode == 0, r.describe()
    assert "Process exited with code 0" in _tool_outputs(reqs[1])[-1]["output"]
    assert "wt-commit-2" in git("log", "--oneline", "-1")
    assert git("branch", "--list", "side-2").strip() == "side-2"
    cfg_out = _tool_outputs(reqs[2])[-1]["output"]
    assert "could not lock config file" in cfg_out and "Read-only file system" in cfg_out, cfg_out
    assert "oa.probe2" not in (ws.repo / ".git" / "config").read_text()
    assert "Read-only file system" in _tool_outputs(reqs[3])[-1]["output"]
    assert not (ws.repo / "probe2.txt").exists()


@pytest.mark.realcodex
@pytest.mark.timeout(240)
def test_a_clean_checkout_installs_the_pinned_codex_before_its_first_real_test(tmp_path: Path) -> None:
    """Field defect: from a clean clone the first real-codex test installed the CLI with npm
    inside its own time limit, and timed out. The install now happens once, after collection:
    a real-codex test with a 5 s limit passes although the CLI was not there at start."""
    rc.require_codex()  # node and npm are here (the install below needs them)
    npm_dir = tmp_path / "codex-npm"
    test_file = tmp_path / "test_first_real.py"
    test_file.write_text(
        "import pytest\nimport realcodex as rc\n\n"
        "@pytest.mark.realcodex\n@pytest.mark.timeout(5)\n"
        "def test_first():\n"
        "    binary = rc.require_codex()\n"
        f"    assert binary.startswith({str(npm_dir)!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "OA_REAL_CODEX_BIN"}
    env.update(CODEX_NPM_DIR=str(npm_dir), PYTHONPATH=str(rc.TESTS_DIR))
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "conftest", "-c", str(rc.REPO_ROOT / "pyproject.toml"),
                               "--rootdir", str(tmp_path), str(test_file)],
                              cwd=str(rc.TESTS_DIR), env=env, capture_output=True, text=True, timeout=200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "1 passed" in proc.stdout
    finally:
        shutil.rmtree(npm_dir, ignore_errors=True)


# --- the stored captures ------------------------------------------------------------------------

CAPTURED = rc.TESTS_DIR / "samples" / "codex"


def test_every_stored_capture_is_raw_and_names_the_command_that_made_it() -> None:
    """Field defect 8: the samples were re-serialized (`", "`) and edited (`$HOME`), with no
    record of how they were made. Each is now what the CLI printed, byte for byte, listed in
    captures.json with its argv, model script, config and exit code."""
    manifest = json.loads((CAPTURED / "captures.json").read_text())
    listed = {f for entry in manifest.values() for f in entry["files"]}
    stored = {p.name for p in CAPTURED.iterdir()} - {"captures.json"}
    assert listed == stored, (listed ^ stored)
    for name, entry in manifest.items():
        assert entry["argv"][0] == "codex" and entry["cli"] == f"codex-cli {rc.CODEX_VERSION}", name
        if name != "version":
            assert "model_script" in entry and isinstance(entry["exit_code"], int), name
    for path in CAPTURED.glob("*.jsonl"):
        raw = path.read_bytes()
        lines = raw.decode("utf-8").splitlines()
        assert raw.endswith(b"\n") and lines, path.name
        for line in lines:  # compact JSON as codex prints it, never re-serialized
            assert json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":")) == line, path.name
    for path in CAPTURED.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "$HOME" not in text and "$TMPDIR" not in text and str(Path.home()) not in text, path.name


@pytest.mark.realcodex
@pytest.mark.timeout(240)
def test_the_commands_in_the_manifest_reproduce_the_stored_captures() -> None:
    """Each capture's command, run again against the loopback mock, prints the same events."""
    import capture_codex_samples
    assert capture_codex_samples.main(["--check"]) == 0

"""The real Gemini CLI 0.61.0 and the scripted stand-in (`overnight_agent.fakegemini`), side by
side against the loopback mock of the Gemini API (127.0.0.1 only), driven with the argv and
environment of the gemini backend: they agree on the events of a fresh turn with a shell call,
resume by id, an unknown id (42), a --session-id that exists (42), SIGTERM mid-command (rc 0,
no result, the command group left running) and an API error's result and exit code. And the
supervisor's sweep (procs, by the agent tag) finds and stops the command group a real CLI
leaves after a stop and after a SIGKILL.

Owns: those checks. Must not: leave a process behind (each test sweeps its tag and asserts it),
reach beyond 127.0.0.1. The real CLI takes 2-4 s per start: few real runs, one install.
"""
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List

import psutil
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
import realcodex  # noqa: E402
import realgemini  # noqa: E402
from mock_gemini_server import MockGeminiServer  # noqa: E402
from overnight_agent import procs  # noqa: E402
from overnight_agent.agents import base  # noqa: E402

IMPLS = ("real", "fake")
SLEEPER = "sleep 37; echo after > after.txt"


@pytest.fixture(scope="module")
def mock():
    with MockGeminiServer() as server:
        yield server


class Side:
    """One CLI (real or fake) with its own home, run folder, work tree and tags."""

    def __init__(self, impl: str, root: Path, mock: MockGeminiServer):
        self.impl = impl
        self.mock = mock
        self.root = root / impl
        self.repo = realcodex.make_git_repo(self.root / "repo")
        self.home = self.root / "home"
        binary = realgemini.require_gemini() if impl == "real" else realgemini.fake_gemini_argv0(self.root / "bin")
        self.backend = realgemini.backend(binary, self.home, self.root / "run")
        self.test_tag = f"gemconf-{uuid.uuid4().hex[:10]}"
        self.run_tags: List[str] = []
        self.agent_tag = f"oa-gemconf{uuid.uuid4().hex[:8]}:run"
        self.env = realgemini.cli_env(self.backend, mock.base_url, self.test_tag,
                                      {procs.TAG_VAR: self.agent_tag})

    def script(self, steps: List[Dict]) -> None:
        """The same turn for both: the mock's script (real) and the scenario file (fake)."""
        if self.impl == "real":
            self.mock.set_script(steps)
            return
        (self.home / "fake_gemini_scenario.yaml").write_text(
            yaml.safe_dump({"invocations": [{"steps": steps}]}))
        state = self.home / ".gemini" / "fake_gemini_state.json"
        if state.exists():
            state.unlink()

    def run(self, argv: List[str], timeout: float = 40.0, after: bool = True) -> realgemini.CliRun:
        """One run, with a test tag of its own: the clean-up after it kills by that tag, and
        must not reach a run going on beside it. Then, as the supervisor does after every
        attempt, `backend.after_attempt` (0.61.0 can leave its registry lock behind: the next
        start would wait 13 to 51 s for it)."""
        tag = f"{self.test_tag}-{uuid.uuid4().hex[:6]}"
        self.run_tags.append(tag)
        env = {**self.env, realgemini.TAG_VAR: tag}
        result = realgemini.run_cli(argv, cwd=self.repo, env=env, timeout=timeout)
        if after:
            self.backend.after_attempt(self.repo)
        return result

    def view(self, result: realgemini.CliRun, kind: str, expected: str) -> base.AttemptView:
        view = base.AttemptView(kind=kind, expected_thread=expected)
        for line in result.stdout.splitlines():
            event = self.backend.parse_line(line)
            if event is not None:
                view.observe(event)
        view.returncode, view.stderr_tail = result.returncode, result.stderr[-4000:]
        return view

    def leftovers(self) -> List[psutil.Process]:
        return procs.tagged(self.agent_tag)

    def clean(self) -> None:
        tags = [self.test_tag, *self.run_tags]
        for proc in self.leftovers() + [p for tag in tags for p in realcodex.processes_with_tag(tag)]:
            try:
                proc.kill()
            except psutil.Error:
                pass
        helpers.assert_no_agent_processes(prefix=self.agent_tag)
        assert not [p for tag in tags for p in realcodex.processes_with_tag(tag)]


@pytest.fixture
def sides(tmp_path, mock):
    made = {}
    try:
        for impl in IMPLS:
            made[impl] = Side(impl, tmp_path, mock)
        yield made
    finally:
        for side in made.values():
            side.clean()


def _shape(events: List[Dict]) -> List[tuple]:
    """Type, role and the sorted keys of each event (values differ: ids, times, text)."""
    return [(e.get("type"), e.get("role"), tuple(sorted(e))) for e in events]


@pytest.mark.realgemini
@pytest.mark.timeout(90)
def test_fresh_turn_with_a_shell_call_then_resume_by_id(sides):
    runs = {}
    for impl, side in sides.items():
        session = side.backend.new_thread_id()
        side.script([{"shell": "echo hi > f.txt && echo wrote"}, {"message": "Done: wrote f.txt"}])
        fresh = side.run(side.backend.start_argv("-make f.txt (a prompt that starts with a dash)", session))
        assert fresh.returncode == 0, fresh.describe()
        assert fresh.session_id == session, fresh.describe()
        assert (side.repo / "f.txt").read_text() == "hi\n"
        assert side.backend.classify(side.view(fresh, "start", session)).kind == base.COMPLETED
        assert fresh.events[1]["content"] == "-make f.txt (a prompt that starts with a dash)"
        files = side.backend.progress_files(session)
        assert files and all(f.stat().st_size > 0 for f in files), files

        side.script([{"message": "Resumed: nothing left"}])
        resumed = side.run(side.backend.resume_argv(session, "anything left?"))
        assert resumed.returncode == 0, resumed.describe()
        assert resumed.session_id == session, resumed.describe()
        resumed_view = side.view(resumed, "resume", session)
        assert side.backend.classify(resumed_view).kind == base.COMPLETED
        # The session's usage so far (3 model requests of 100 in, 20 out), not this process's.
        assert (resumed_view.usage["input_tokens"], resumed_view.usage["output_tokens"]) == (300, 60), impl
        runs[impl] = (fresh, resumed)
    real, fake = runs["real"], runs["fake"]
    assert real[0].types == ["init", "message", "tool_use", "tool_result", "message", "result"]
    for left, right in zip(real, fake):
        assert _shape(left.events) == _shape(right.events)
        assert left.last("result")["stats"].keys() == right.last("result")["stats"].keys()
    # The resumed request replays the earlier call's response twice (0.61.0's history rebuild,
    # docs/gemini-cli.md); the loopback mock accepts it, the real API is not known to.
    resumed_body = sides["real"].mock.turn_requests()[-1]["body"]
    responses = [part for content in resumed_body["contents"] for part in content.get("parts", [])
                 if "functionResponse" in part]
    assert len(responses) == 2 and responses[0] == responses[1], responses
    tool = [e for e in real[0].events if e["type"] == "tool_use"][0]
    assert tool["tool_name"] == "run_shell_command" and tool["tool_id"].startswith("run_shell_command__")
    assert [r["output"] for r in (real[0].last("tool_result"), fake[0].last("tool_result"))] == ["wrote"] * 2


@pytest.mark.realgemini
@pytest.mark.timeout(90)
def test_unknown_id_and_a_taken_session_id_exit_42(sides):
    results = {}
    for impl, side in sides.items():
        session = side.backend.new_thread_id()
        side.script([{"message": "ok"}])
        first = side.run(side.backend.start_argv("hello", session))
        assert first.returncode == 0, first.describe()
        unknown_id = str(uuid.uuid4())
        # One after the other: two CLIs starting at once in one home were seen to hang (40 s).
        unknown = side.run(side.backend.resume_argv(unknown_id, "again"))
        taken = side.run(side.backend.start_argv("hello again", session))
        for result in (unknown, taken):
            assert result.returncode == 42, result.describe()
            assert result.events == [], result.describe()
        assert f'Invalid session identifier "{unknown_id}"' in unknown.stderr
        assert f'Session ID "{session}" already exists' in taken.stderr
        assert side.backend.classify(side.view(unknown, "resume", unknown_id)).kind == base.UNKNOWN_THREAD
        assert side.backend.classify(side.view(taken, "start", session)).kind == base.THREAD_BUSY
        results[impl] = (unknown, taken)


@pytest.mark.realgemini
@pytest.mark.timeout(90)
def test_a_registry_lock_left_behind_costs_the_next_start_until_it_is_stale(sides):
    """The cause of starts that sat silent for 13 to 51 s (one ran past a 40 s limit in CI):
    0.61.0 can exit with `.gemini/projects.json.lock` still taken, and every start waits for
    that lock until it is 10 s old, retrying after 0.1, 0.2, 0.4 ... s. Both CLIs, side by
    side, with a lock left 6 s ago: each waits until it is stale (4 s more, and then its next
    retry), the lock is taken over and released. Once `after_attempt` (what the supervisor runs
    after every attempt) has removed a fresh one, the same start takes its usual second or two."""
    for side in sides.values():
        side.script([{"message": "ok"}])
        first = side.run(side.backend.start_argv("hello", side.backend.new_thread_id()))
        assert first.returncode == 0, first.describe()
    unknown = str(uuid.uuid4())
    resume = lambda side: side.run(side.backend.resume_argv(unknown, "again"), after=False)  # noqa: E731
    quick = _side_by_side(sides, resume)  # no lock: the baseline, measured in the same run
    locks = {impl: side.home / ".gemini" / "projects.json.lock" for impl, side in sides.items()}
    left = time.time() - 4.0   # stale 6 s from now: no start can take it sooner
    for lock in locks.values():
        lock.mkdir()
        os.utime(lock, (left, left))
    waited = _side_by_side(sides, resume)
    for impl, result in waited.items():
        assert result.returncode == 42 and not result.timed_out, result.describe()
        assert result.duration > max(5.5, quick[impl].duration + 2.0), (impl, quick[impl].duration, result.duration)
        assert not locks[impl].exists()  # taken over as stale, then released
    for impl, side in sides.items():
        locks[impl].mkdir()
        assert side.backend.after_attempt(side.repo) == (str(locks[impl]),)
    cleared = _side_by_side(sides, resume)
    for impl, result in cleared.items():
        assert result.returncode == 42, result.describe()
        assert result.duration < quick[impl].duration + 2.0, (impl, quick[impl].duration, result.duration)


def _side_by_side(sides, run):
    """`run(side)` for each side at once (threads): the real and the fake wait together."""
    results = {}
    threads = [threading.Thread(target=lambda impl=impl, side=side: results.__setitem__(impl, run(side)))
               for impl, side in sides.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert set(results) == set(sides), results
    return results


@pytest.mark.realgemini
@pytest.mark.timeout(90)
def test_api_errors_give_a_result_event_and_the_http_status_as_exit_code(sides):
    """One try each (general.maxAttempts 1, from the backend's settings), side by side: each run
    asks its own model name, so the mock plays each its own script. The 400 is compared with the
    stand-in's; 429 and 500 are typed from the real CLI's result."""
    real, fake = sides["real"], sides["fake"]
    cases = {400: base.TURN_FAILED, 429: base.RATE_LIMITED, 500: base.SERVER_ERROR}
    binary = realgemini.require_gemini()
    runs = []
    for status in cases:
        model = f"gemini-2.5-pro-e{status}"
        real.mock.set_script([{"http_error": status}], model=model)
        gemini = realgemini.backend(binary, real.home, real.root / "run", model=model)
        session = gemini.new_thread_id()
        runs.append((status, gemini, session, gemini.start_argv("do X", session)))
    results = [real.run(argv) for _s, _g, _sid, argv in runs]   # one at a time (see above)
    for (status, gemini, session, _argv), result in zip(runs, results):
        assert result.returncode == status & 0xFF, result.describe()
        assert result.types == ["init", "message", "result"], result.describe()
        assert result.last("result")["status"] == "error"
        assert gemini.classify(real.view(result, "start", session)).kind == cases[status], result.describe()
    message = '{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}'
    fake.script([{"fail": message}])
    session = fake.backend.new_thread_id()
    faked = fake.run(fake.backend.start_argv("do X", session))
    assert faked.returncode == 144 and faked.types == ["init", "message", "result"], faked.describe()
    assert fake.backend.classify(fake.view(faked, "start", session)).kind == base.TURN_FAILED
    assert _shape(faked.events) == _shape(results[0].events)
    assert faked.last("result")["error"] == results[0].last("result")["error"] == {
        "type": "unknown", "message": f"[API Error: {message}]"}


def _names(processes) -> set:
    names = set()
    for proc in processes:
        try:
            names.add(proc.name())
        except psutil.Error:  # gone meanwhile
            pass
    return names


def _wait_for_command(side, proc, timeout=30.0):
    """The tool_use event, then the command's `sleep` itself among the tagged processes."""
    events = realgemini.read_until(proc, "tool_use", timeout)
    helpers.wait_for(lambda: "sleep" in _names(side.leftovers()), timeout=10, what="the command's sleep")
    return events


@pytest.mark.realgemini
@pytest.mark.timeout(90)
def test_sigterm_mid_command_exits_0_without_result_and_the_sweep_stops_the_command(sides):
    for impl, side in sides.items():
        session = side.backend.new_thread_id()
        side.script([{"shell": SLEEPER}, {"message": "never"}])
        proc = realgemini.start_cli(side.backend.start_argv("sleep", session), cwd=side.repo, env=side.env)
        try:
            events = _wait_for_command(side, proc)
            os.kill(proc.pid, signal.SIGTERM)  # the CLI alone, one process (GEMINI_CLI_NO_RELAUNCH)
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, (impl, err[-2000:])
            events += realgemini.parse_events(out.decode())
            assert [e["type"] for e in events] == ["init", "message", "tool_use"], impl
            stdout = "".join(json.dumps(event) + "\n" for event in events)
            view = side.view(realgemini.CliRun([], 0, stdout, err.decode(), 0), "start", session)
            assert side.backend.classify(view).kind == base.EXITED_EARLY
            # The command lives on in its own session, out of the CLI's group ...
            left = side.leftovers()
            assert left, f"{impl}: the command group did not outlive the CLI"
            assert all(os.getsid(p.pid) != proc.pid for p in left)
            # ... and the supervisor's sweep finds it by the tag and stops it.
            assert not procs.stop_blocking(left, grace=2.0)
            assert not side.leftovers()
            assert not (side.repo / "after.txt").exists()
        finally:
            realcodex.kill_process_tree(proc.pid, tag=side.test_tag)


@pytest.mark.realgemini
@pytest.mark.timeout(60)
def test_real_cli_sigkilled_mid_command_leaves_a_group_the_sweep_stops(sides):
    side = sides["real"]
    session = side.backend.new_thread_id()
    side.script([{"shell": SLEEPER}, {"message": "never"}])
    proc = realgemini.start_cli(side.backend.start_argv("sleep", session), cwd=side.repo, env=side.env)
    try:
        _wait_for_command(side, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole CLI group, as the supervisor's last step
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        left = side.leftovers()
        assert left and all(os.getpgid(p.pid) != proc.pid for p in left), "the command died with the CLI"
        assert "sleep" in _names(left)
        survivors = procs.stop_blocking(left, grace=2.0)
        assert not survivors and not side.leftovers()
        time.sleep(0.2)
        assert not (side.repo / "after.txt").exists()
        # Resumed afterwards: the same session, but the call that was running is gone from the
        # history the model gets (its record is written only once the call completes).
        side.script([{"message": "resumed"}])
        resumed = side.run(side.backend.resume_argv(session, "go on"))
        assert resumed.returncode == 0 and resumed.session_id == session, resumed.describe()
        body = side.mock.turn_requests()[-1]["body"]
        parts = [part for content in body["contents"] for part in content.get("parts", [])]
        assert not [part for part in parts if "functionCall" in part or "functionResponse" in part]
    finally:
        realcodex.kill_process_tree(proc.pid, tag=side.test_tag)


def test_the_mock_streams_its_script_per_model_and_releases_a_hang_on_close():
    """The loopback mock itself (no CLI): SSE chunks, errors, a script per model, the router's
    JSON schema filled, and a hung request released by close()."""
    import threading
    import urllib.error
    import urllib.request

    def post(url, body):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()

    server = MockGeminiServer([{"message": "hello world", "chunks": 2}, {"shell": "true"}])
    server.start()
    try:
        stream = f"{server.base_url}/v1beta/models/m:streamGenerateContent?alt=sse"
        chunks = [json.loads(line[6:]) for line in post(stream, {}).split("\r\n\r\n") if line]
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "hello world"
        assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, "STOP"]
        call = json.loads(post(stream, {}).split("\r\n\r\n")[0][6:])["candidates"][0]["content"]["parts"][0]
        assert call["functionCall"]["name"] == "run_shell_command"
        server.set_script([{"http_error": 503}], model="other")
        try:
            post(f"{server.base_url}/v1beta/models/other:streamGenerateContent?alt=sse", {})
            raise AssertionError("no error")
        except urllib.error.HTTPError as error:
            assert error.code == 503 and json.loads(error.read())["error"]["status"] == "UNAVAILABLE"
        routed = post(f"{server.base_url}/v1beta/models/lite:generateContent", {"generationConfig": {
            "responseJsonSchema": {"type": "object", "properties": {"complexity_score": {"type": "integer"}}}}})
        assert json.loads(json.loads(routed)["candidates"][0]["content"]["parts"][0]["text"]) == {
            "complexity_score": 10}
        server.set_script([{"hang": True}])
        errors = []
        hung = threading.Thread(target=lambda: errors.append(_quietly(post, stream)))
        hung.start()
        helpers.wait_for(lambda: len(server.turn_requests()) == 4, timeout=5, what="the hung request")
    finally:
        server.close()
    hung.join(timeout=5)
    assert not hung.is_alive()


def _quietly(post, url):
    try:
        return post(url, {})
    except Exception as exc:  # the connection closes without an answer
        return exc

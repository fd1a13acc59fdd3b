"""The fake Codex CLI against the real captures (tests/samples/codex/, from codex-cli 0.169.0).

Every test that starts a process runs it with `OA_TEST_TAG=<uuid>` in its environment; the
`fake` fixture's teardown proves no live process carries that tag (killing and failing if one
does). Real processes, real signals, real temporary git repositories.
"""
import datetime as dt
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from overnight_agent.fakecodex import cli, scenario, store

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SAMPLES = TESTS_DIR / "samples" / "codex"
TAG_VAR = "OA_TEST_TAG"
FAKE = [sys.executable, "-m", "overnight_agent.fakecodex"]
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HIGH_DEMAND = "We\u2019re currently experiencing high demand, which may cause temporary errors."


# ----------------------------------------------------------------------------- helpers

def sample(name):
    return [json.loads(line) for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines()]


def normalized(events):
    """Events with what legitimately differs between runs blanked: thread id, command output."""
    result = json.loads(json.dumps(events))
    for event in result:
        if "thread_id" in event:
            event["thread_id"] = "<thread>"
        item = event.get("item") or {}
        if event["type"] == "item.completed" and item.get("type") == "command_execution":
            item["aggregated_output"] = "<output>"
    return result


def shape(events):
    return [(e["type"], (e.get("item") or {}).get("type")) for e in events]


def make_repo(path):
    path.mkdir(parents=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    for argv in (["git", "init", "-q", "-b", "main"],
                 ["git", "commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(argv, cwd=path, env=env, check=True, stdin=subprocess.DEVNULL)
    return path


def processes_with_tag(tag):
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(TAG_VAR) == tag:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def gone(pid, timeout=5.0):
    """True once pid is dead (a zombie waiting for a non-reaping init counts as dead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


class Result:
    def __init__(self, done):
        self.rc = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr
        self.events = [json.loads(line) for line in done.stdout.splitlines()
                       if line.startswith("{")]

    @property
    def thread_id(self):
        return self.events[0]["thread_id"]

    def messages(self):
        return [e["item"]["text"] for e in self.events
                if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]


class Live:
    """A running fake whose stdout events are collected by a reader thread."""

    def __init__(self, proc):
        self.proc = proc
        self.events = []
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            event = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert event is not None, f"stdout closed; events so far: {self.events}"
            self.events.append(event)
            if predicate(event):
                return event

    def remaining_events(self, timeout=5.0):
        """After the process ended: whatever else it printed."""
        rest = []
        while True:
            event = self._lines.get(timeout=timeout)
            if event is None:
                return rest
            rest.append(event)

    def signal(self, signum):
        self.proc.send_signal(signum)


class FakeCodex:
    """One CODEX_HOME, one git repository, and the tagged environment to run the fake in."""

    def __init__(self, tmp_path, tag):
        self.tmp = tmp_path
        self.tag = tag
        self.home = tmp_path / "codex_home"
        self.repo = make_repo(tmp_path / "repo")
        self.env = dict(os.environ, CODEX_HOME=str(self.home), PYTHONPATH=str(REPO_ROOT),
                        **{TAG_VAR: tag})
        self.env.pop("FAKE_CODEX_SCENARIO", None)
        self.live = []

    def scenario(self, *invocations, **top):
        """Write $CODEX_HOME/fake_codex_scenario.yaml with one `steps` list per invocation."""
        self.home.mkdir(exist_ok=True)
        doc = dict(top, invocations=[{"steps": steps} for steps in invocations])
        (self.home / "fake_codex_scenario.yaml").write_text(
            yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    def run(self, *args, cwd=None, input=None, timeout=20):
        done = subprocess.run(FAKE + list(args), cwd=str(cwd or self.repo), env=self.env,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
        return Result(done)

    def start(self, *args, cwd=None):
        proc = subprocess.Popen(FAKE + list(args), cwd=str(cwd or self.repo), env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        live = Live(proc)
        self.live.append(live)
        return live

    def rollouts(self):
        return sorted((self.home / "sessions").rglob("rollout-*.jsonl"))

    def rollouts_by_age(self):
        return sorted(self.rollouts(), key=os.path.getmtime)

    def records(self, path=None):
        path = path or self.rollouts()[0]
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def turn_contexts(self, path=None):
        return [r["payload"] for r in self.records(path) if r["type"] == "turn_context"]

    def user_inputs_per_turn(self, path=None):
        turns = []
        for record in self.records(path):
            if record["type"] == "turn_context":
                turns.append([])
            payload = record["payload"]
            if record["type"] == "response_item" and payload.get("role") == "user":
                turns[-1].append(payload["content"][0]["text"])
        return turns

    def cleanup(self):
        for live in self.live:
            if live.proc.poll() is None:
                live.proc.kill()
                live.proc.wait(5)
            for stream in (live.proc.stdout, live.proc.stderr):
                stream.close()


@pytest.fixture
def fake(tmp_path):
    tag = uuid.uuid4().hex
    helper = FakeCodex(tmp_path, tag)
    yield helper
    helper.cleanup()
    leftovers = processes_with_tag(tag)
    for proc in leftovers:
        proc.kill()
    assert not leftovers, f"processes left behind: {[(p.pid, p.cmdline()) for p in leftovers]}"


def is_agent_message(event):
    return event["type"] == "item.completed" and event["item"]["type"] == "agent_message"


# ----------------------------------------------------------------------------- events vs captures

SUCCESS_STEPS = [
    {"reasoning": "Plan: create the heartbeat file."},
    {"message": "Creating heartbeat.txt."},
    {"shell": "touch heartbeat.txt && echo hi > file.txt"},
    {"message": "Done: heartbeat.txt and file.txt created."},
]


def test_success_matches_the_real_capture(fake, tmp_path):
    fake.scenario(SUCCESS_STEPS)
    last = tmp_path / "last.txt"
    res = fake.run("exec", "--skip-git-repo-check", "--sandbox", "workspace-write",
                   "-m", "gpt-5.3-codex", "-c", "model_reasoning_effort=xhigh", "--json",
                   "-o", str(last), "PROMPT")
    real = sample("exec_success.jsonl")

    assert res.rc == 0, res.stderr
    assert shape(res.events) == shape(real)
    assert [sorted(e) for e in res.events] == [sorted(e) for e in real]
    item_keys = [sorted(e.get("item", {})) for e in real]
    assert [sorted(e.get("item", {})) for e in res.events] == item_keys
    assert res.events[-1]["usage"] == real[-1]["usage"]
    assert normalized(res.events) == normalized(real)
    assert UUID7.match(res.thread_id)
    assert res.stdout.endswith("\n") and '", "' not in res.stdout  # compact, one per line
    assert "Reading additional input from stdin..." in res.stderr.splitlines()
    assert (fake.repo / "heartbeat.txt").exists() and (fake.repo / "file.txt").read_text() == "hi\n"
    assert last.read_text() == "Done: heartbeat.txt and file.txt created."


def test_rollout_file_layout_and_contents(fake):
    res = fake.run("exec", "-s", "workspace-write", "--json", "first prompt")
    [path] = fake.rollouts()
    rel = path.relative_to(fake.home / "sessions")
    match = re.fullmatch(
        r"(\d{4})/(\d\d)/(\d\d)/rollout-(\d{4})-(\d\d)-(\d\d)T\d\d-\d\d-\d\d-(.+)\.jsonl", str(rel))
    assert match and match.group(7) == res.thread_id
    assert match.groups()[:3] == match.groups()[3:6]
    for folder in (fake.home / "sessions", *list(path.parents)[:3]):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    records = fake.records(path)
    assert all(sorted(r) == ["payload", "timestamp", "type"] for r in records)
    meta = records[0]
    assert meta["type"] == "session_meta"
    assert {k: meta["payload"][k] for k in ("id", "cwd", "originator", "cli_version")} == {
        "id": res.thread_id, "cwd": str(fake.repo), "originator": "codex_exec",
        "cli_version": "0.169.0"}
    kinds = [(r["type"], r["payload"].get("type")) for r in records]
    assert ("turn_context", None) in kinds and ("event_msg", "task_started") in kinds
    assert kinds[-2:] == [("event_msg", "token_count"), ("event_msg", "task_complete")]
    assert ("response_item", "function_call") in kinds
    assert ("response_item", "function_call_output") in kinds
    assert fake.user_inputs_per_turn(path) == [["first prompt"]]


def test_default_scenario_without_a_scenario_file(fake):
    res = fake.run("exec", "--json", "hello")
    assert res.rc == 0, res.stderr
    commands = [e["item"]["command"] for e in res.events if e["type"] == "item.started"]
    assert commands == ["/bin/bash -lc 'git status --short'"]
    assert len(res.messages()) == 2 and res.events[-1]["type"] == "turn.completed"


def test_failed_command_matches_the_capture(fake):
    fake.scenario([{"shell": "echo oops; exit 3"}, {"message": "ok"},
                   {"usage": {"input": 300, "output": 60}}])
    res = fake.run("exec", "--json", "go")
    real = sample("command_failed_and_sandbox_denied.jsonl")
    assert res.rc == 0
    assert normalized(res.events) == normalized(real)
    assert res.events[4]["item"]["aggregated_output"] == "oops\n"


FAILURES = [
    ("fail_err500.jsonl", [{"fail": HIGH_DEMAND, "retries": 5}]),
    ("fail_400.jsonl", [{"fail": '{"error": {"message": "bad request mock", '
                                 '"type": "server_error", "code": null}}'}]),
    ("fail_stall.jsonl", [{"fail": {"retries": 1, "message": "stream disconnected before "
                                    "completion: idle timeout waiting for SSE"}}]),
    ("usage_limit_resets_at.jsonl", [{"usage_limit": "<the capture's reset time>"}]),
    ("usage_limit_resets_in_seconds.jsonl", [{"usage_limit": None}]),
]


@pytest.mark.parametrize("capture, steps", FAILURES, ids=[c for c, _ in FAILURES])
def test_failures_match_the_captures(fake, tmp_path, capture, steps):
    if steps == [{"usage_limit": "<the capture's reset time>"}]:
        steps = [{"usage_limit": captured_reset_time()}]
    fake.scenario(steps)
    last = tmp_path / "last.txt"
    res = fake.run("exec", "--json", "-o", str(last), "go")
    assert res.rc == 1
    assert normalized(res.events) == normalized(sample(capture))
    assert last.exists() and last.read_text() == ""


def test_network_down_retries_forever_until_interrupted(fake):
    fake.scenario([{"network_down": 0.05}])
    live = fake.start("exec", "--json", "go")
    for _ in range(3):
        live.wait_for(lambda e: e["type"] == "error")
    real = sample("fail_refused.jsonl")
    assert normalized(live.events[:5]) == normalized(real)
    live.signal(signal.SIGINT)
    assert live.proc.wait(5) == 1


def test_crash_and_exit_early(fake):
    fake.scenario([{"message": "a"}, {"crash": 3}], [{"message": "a"}, {"exit_early": True},
                                                    {"message": "never"}])
    crashed = fake.run("exec", "--json", "go")
    assert crashed.rc == 3
    assert re.search(r"ERROR codex_core::\S+: crash", crashed.stderr)
    assert crashed.events[-1]["type"] == "item.completed"
    early = fake.run("exec", "--json", "go")
    assert early.rc == 0 and early.messages() == ["a"]
    assert early.events[-1]["type"] == "turn.completed"


def test_yielded_command_is_left_open_then_killed(fake):
    fake.scenario([{"shell": "sleep 30", "yield_after": 0.2}, {"message": "turn over"}])
    res = fake.run("exec", "--json", "go")
    assert res.rc == 0
    assert shape(res.events)[3:] == [("item.started", "command_execution"),
                                     ("item.completed", "agent_message"), ("turn.completed", None)]
    # the teardown proves the `sleep 30` is gone


def test_write_file_and_usage_steps(fake):
    fake.scenario([{"write_file": {"path": "notes/n.txt", "text": "hello"}},
                   {"usage": {"input": 100, "output": 20}},
                   {"usage": {"input": 1, "reasoning_output": 5}}])
    res = fake.run("exec", "--json", "go")
    assert (fake.repo / "notes" / "n.txt").read_text() == "hello"
    assert res.events[-1]["usage"] == {"input_tokens": 101, "cached_input_tokens": 0,
                                       "cache_write_input_tokens": 0, "output_tokens": 20,
                                       "reasoning_output_tokens": 5}


# ----------------------------------------------------------------------------- resume

def test_resume_by_id_appends_and_accumulates_usage(fake):
    first = fake.run("exec", "-s", "workspace-write", "--json", "go")
    [rollout] = fake.rollouts()
    size = rollout.stat().st_size

    second = fake.run("exec", "resume", first.thread_id, "--json", "continue")
    assert second.rc == 0 and second.thread_id == first.thread_id
    assert fake.rollouts() == [rollout] and rollout.stat().st_size > size
    assert [r["type"] for r in fake.records()].count("session_meta") == 1
    assert first.events[-1]["usage"]["input_tokens"] == 200
    assert second.events[-1]["usage"]["input_tokens"] == 400
    assert second.events[1]["item"]["id"] == "item_0"  # item ids restart per process
    # trap 1: the sandbox is not stored with the thread, resume defaults to read-only
    assert [c["sandbox_mode"] for c in fake.turn_contexts()] == ["workspace-write", "read-only"]

    third = fake.run("exec", "--sandbox", "workspace-write", "resume", first.thread_id, "--json",
                     "-m", "other-model", "-c", "model_reasoning_effort=high",
                     "-c", 'sandbox_workspace_write.writable_roots=["/x/objects", "/x/refs"]',
                     "more")
    assert third.rc == 0 and third.events[-1]["usage"]["output_tokens"] == 120
    context = fake.turn_contexts()[-1]
    assert (context["sandbox_mode"], context["model"], context["reasoning_effort"]) == (
        "workspace-write", "other-model", "high")
    assert context["writable_roots"] == ["/x/objects", "/x/refs"]
    assert context["cwd"] == str(fake.repo)
    assert "`other-model`" in third.events[1]["item"]["message"]


def test_config_toml_then_c_overrides(fake):
    fake.home.mkdir()
    (fake.home / "config.toml").write_text(
        'model = "toml-model"\nsandbox_mode = "workspace-write"\nmodel_reasoning_effort = "low"\n')
    fake.run("exec", "--json", "go")
    fake.run("exec", "-c", "sandbox_mode=danger-full-access", "-c", 'model="c-model"', "--json",
             "go")
    fake.run("exec", "--ignore-user-config", "--json", "go")
    contexts = [fake.turn_contexts(path)[0] for path in fake.rollouts_by_age()]
    assert [(c["model"], c["sandbox_mode"], c["reasoning_effort"]) for c in contexts] == [
        ("toml-model", "workspace-write", "low"), ("c-model", "danger-full-access", "low"),
        ("gpt-5.3-codex", "read-only", None)]


def test_resume_start_up_errors(fake):
    fake.run("exec", "--json", "go")
    state = (fake.home / "fake_codex_state.json").read_text()

    unknown = fake.run("exec", "resume", "01a20c76-3768-7bc3-baf2-000000000000", "--json", "x")
    assert unknown.rc == 1 and unknown.stdout == ""
    assert "no rollout found for thread id 01a20c76-3768-7bc3-baf2-000000000000" in unknown.stderr

    for misplaced in (["-s", "workspace-write"], ["-C", "/tmp"], ["--color", "never"]):
        res = fake.run("exec", "resume", *misplaced, "--last", "x")
        assert res.rc == 2 and res.stdout == ""
        assert f"error: unexpected argument '{misplaced[0]}' found" in res.stderr
        assert "Usage: codex exec resume [OPTIONS] [SESSION_ID] [PROMPT]" in res.stderr
    bogus = fake.run("exec", "--bogus", "x")
    assert bogus.rc == 2 and "unexpected argument '--bogus'" in bogus.stderr
    assert (fake.home / "fake_codex_state.json").read_text() == state  # no turn was played


def test_resume_last_follows_the_latest_cwd(fake, tmp_path):
    first = fake.run("exec", "--json", "go")
    again = fake.run("exec", "resume", "--last", "--json", "next prompt")
    assert again.rc == 0 and again.thread_id == first.thread_id
    assert fake.user_inputs_per_turn()[-1] == ["next prompt"]  # the positional is the prompt

    other = make_repo(tmp_path / "other")
    elsewhere = fake.run("exec", "resume", "--last", "--json", "x", cwd=other)
    assert elsewhere.rc == 0 and elsewhere.thread_id != first.thread_id  # trap 3
    assert len(fake.rollouts()) == 2

    # --all: the newest thread whatever its cwd; resuming it here makes `repo` its latest cwd
    anywhere = fake.run("exec", "resume", "--last", "--all", "--json", "y")
    assert anywhere.thread_id == elsewhere.thread_id

    # the first thread is resumed with -C other: newest now, but its latest cwd is `other`
    moved = fake.run("exec", "-C", str(other), "resume", first.thread_id, "--json", "z",
                     cwd=tmp_path)
    assert moved.rc == 0
    back_home = fake.run("exec", "resume", "--last", "--json", "w")
    assert back_home.thread_id == elsewhere.thread_id
    in_other = fake.run("exec", "resume", "--last", "--json", "v", cwd=other)
    assert in_other.thread_id == first.thread_id and len(fake.rollouts()) == 2


def test_concurrent_resume_is_refused_while_a_writer_is_active(fake):
    fake.scenario([{"message": "working"}, {"hang": True}], [{"message": "resumed"}])
    live = fake.start("exec", "--json", "go")
    live.wait_for(is_agent_message)
    thread_id = live.events[0]["thread_id"]
    assert any(r["payload"].get("message") == "working" for r in fake.records())  # line by line

    refused = fake.run("exec", "resume", thread_id, "--json", "again")
    assert refused.rc == 1 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == (f"Error: thread/resume: thread/resume failed: thread {thread_id} "
                                               "already has an active writer (code -32600)")

    live.signal(signal.SIGTERM)
    assert live.proc.wait(5) == -signal.SIGTERM
    resumed = fake.run("exec", "resume", thread_id, "--json", "again")
    assert resumed.rc == 0 and resumed.thread_id == thread_id and resumed.messages() == ["resumed"]


def test_queue_then_resume_delivers_once(fake):
    first = fake.run("exec", "--json", "go")
    queued = fake.run("queue", "--thread", first.thread_id, "--message", "operator: wrap up now")
    assert queued.rc == 0
    assert re.fullmatch(rf"Queued message [0-9a-f-]{{36}} for thread {first.thread_id}\.", queued.stdout.strip())
    assert [e["message"] for e in json.loads((fake.home / "fake_queue.json").read_text())] == [
        "operator: wrap up now"]

    second = fake.run("exec", "resume", first.thread_id, "--json", "continue")
    assert shape(second.events) == shape(first.events) and "wrap up" not in second.stdout
    assert json.loads((fake.home / "fake_queue.json").read_text()) == []
    fake.run("exec", "resume", first.thread_id, "--json", "again")
    assert fake.user_inputs_per_turn() == [["go"], ["operator: wrap up now", "continue"], ["again"]]


# ----------------------------------------------------------------------------- signals, processes

def _tagged_sleep(fake, argv, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in processes_with_tag(fake.tag):
            if proc.cmdline() == argv:
                return proc
        time.sleep(0.02)
    raise AssertionError(f"no {argv} process found")


@pytest.mark.parametrize("signum, expected_rc",
                         [(signal.SIGINT, 1), (signal.SIGTERM, -signal.SIGTERM)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_command(fake, signum, expected_rc):
    fake.scenario([{"shell": "sleep 60"}, {"message": "never"}])
    live = fake.start("exec", "--json", "go")
    live.wait_for(lambda e: e["type"] == "item.started")
    sleeper = _tagged_sleep(fake, ["sleep", "60"])
    assert os.getsid(sleeper.pid) == sleeper.pid != os.getsid(live.proc.pid)  # own session

    started = time.monotonic()
    live.signal(signum)
    assert live.proc.wait(5) == expected_rc
    assert time.monotonic() - started < 0.5
    assert live.remaining_events() == []
    assert normalized(live.events) == normalized(sample("fail_sigint.jsonl"))
    assert gone(sleeper.pid)


def test_ignore_sigterm_needs_sigkill(fake):
    fake.scenario([{"ignore_sigterm": True}, {"message": "ready"}, {"hang": True}])
    live = fake.start("exec", "--json", "go")
    live.wait_for(is_agent_message)
    live.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert live.proc.poll() is None
    live.signal(signal.SIGKILL)
    assert live.proc.wait(5) == -signal.SIGKILL


def test_spawned_setsid_grandchild_survives_in_its_own_session(fake):
    fake.scenario([{"spawn_setsid_grandchild": 300}])
    res = fake.run("exec", "--json", "go")
    assert res.rc == 0
    [text] = res.messages()
    pid = int(re.fullmatch(r"spawned (\d+)", text).group(1))
    orphan = psutil.Process(pid)
    assert orphan.environ()[TAG_VAR] == fake.tag
    assert os.getsid(pid) == pid != os.getsid(0)
    orphan.kill()
    assert gone(pid)


# ----------------------------------------------------------------------------- stdin, counter, misc

def test_stdin_is_read_and_appended(fake):
    piped = fake.run("exec", "--json", "do it", input="extra context\n")
    assert "Reading additional input from stdin..." in piped.stderr
    fake.run("exec", "--json", "-", input="whole prompt from stdin")
    devnull = fake.run("exec", "--json", "plain")
    assert "Reading additional input from stdin..." in devnull.stderr  # even for /dev/null
    inputs = [fake.user_inputs_per_turn(path)[0] for path in fake.rollouts_by_age()]
    assert inputs == [["do it\n\n<stdin>\nextra context\n</stdin>"], ["whole prompt from stdin"],
                      ["plain"]]


def test_invocation_counter_advances_and_repeats_the_last(fake):
    fake.scenario([{"message": "first"}], [{"message": "second"}])
    assert [fake.run("exec", "--json", "p").messages() for _ in range(3)] == [
        ["first"], ["second"], ["second"]]
    assert json.loads((fake.home / "fake_codex_state.json").read_text())["invocations"] == 3


def test_scenario_from_env_and_metadata_warning_off(fake, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"model_metadata_warning": False, "steps": [{"message": "hi"}]}))
    fake.env["FAKE_CODEX_SCENARIO"] = str(path)
    res = fake.run("exec", "--json", "go")
    assert shape(res.events) == [("thread.started", None), ("turn.started", None),
                                 ("item.completed", "agent_message"), ("turn.completed", None)]
    assert res.events[2]["item"]["id"] == "item_0"
    path.write_text("invocations:\n  - steps:\n      - dance: true\n")
    bad = fake.run("exec", "--json", "go")
    assert bad.rc == 1 and bad.stdout == "" and "invocations[0].steps[0]" in bad.stderr


def test_outside_git_ephemeral_and_version(fake, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    refused = fake.run("exec", "--json", "go", cwd=plain)
    assert refused.rc == 1 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == (
        "Not inside a trusted directory and --skip-git-repo-check was not specified.")
    ephemeral = fake.run("exec", "--skip-git-repo-check", "--ephemeral", "--json", "go", cwd=plain)
    assert ephemeral.rc == 0 and UUID7.match(ephemeral.thread_id) and fake.rollouts() == []
    version = (SAMPLES / "version.txt").read_text()
    assert fake.run("--version").stdout == version and fake.run("exec", "-V").stdout == version
    script = Path(sys.executable).parent / "overnight-agent-fake-codex"
    if script.exists():
        done = subprocess.run([str(script), "-V"], capture_output=True, text=True, env=fake.env)
        assert (done.returncode, done.stdout) == (0, version)


def test_human_output_without_json(fake):
    fake.scenario([{"message": "the answer"}])
    res = fake.run("exec", "go")
    assert res.rc == 0 and res.stdout.strip() == "the answer"
    assert "session id:" in res.stderr and "codex\nthe answer" in res.stderr


# ----------------------------------------------------------------------------- pure functions

def test_command_line_parsing():
    args = cli.parse_exec_args(["--sandbox", "workspace-write", "--json", "resume", "ID",
                                       "-m", "m", "-c", "a=1", "PROMPT"])
    assert (args.resume, args.session_id, args.prompt, args.sandbox, args.model, args.json,
            args.config) == (True, "ID", "PROMPT", "workspace-write", "m", True, ["a=1"])
    last = cli.parse_exec_args(["resume", "--last", "ID-LOOKING"])
    assert (last.session_id, last.prompt) == (None, "ID-LOOKING")
    both = cli.parse_exec_args(["resume", "--last", "ignored", "P"])
    assert both.prompt == "P"
    eq = cli.parse_exec_args(["--model=x", "-cfoo=bar", "-o", "f", "p"])
    assert (eq.model, eq.config, eq.output_last_message, eq.prompt) == ("x", ["foo=bar"], "f", "p")
    for bad in (["resume", "ID", "-s", "read-only"], ["-m"], ["-m", "a", "-m", "b"],
                ["-s", "everything"], ["p1", "p2"], ["resume"], ["--json=yes"]):
        with pytest.raises(cli.UsageError):
            cli.parse_exec_args(bad)


def test_main_exit_codes(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "codex-cli 0.169.0\n"
    assert cli.main(["exec", "resume", "--sandbox", "read-only", "x"]) == 2
    assert "unexpected argument '--sandbox' found" in capsys.readouterr().err
    assert cli.main(["queue", "--thread", "t"]) == 2
    assert cli.main(["frobnicate"]) == 2


@pytest.mark.parametrize("text, value", [
    ('"o3"', "o3"), ("o3", "o3"), ("true", True), ("5", 5), ("workspace-write", "workspace-write"),
    ('["/a", "/b"]', ["/a", "/b"]), ("['/a']", ["/a"]), ("1:57", "1:57"), ("", ""),
])
def test_config_values_parse_like_toml(text, value):
    assert store.parse_config_value(text) == value
    mini = store._mini_toml_value(text.strip())
    assert (text.strip() if mini is store._NOT_TOML else mini) == value


def captured_reset_time() -> str:
    """The time of day the usage-limit capture was told to try again at (e.g. `8:45 PM`)."""
    message = sample("usage_limit_resets_at.jsonl")[-1]["error"]["message"]
    return re.search(r"try again at (\d{1,2}:\d\d [AP]M)\.$", message).group(1)


def test_usage_limit_wording():
    real_at = sample("usage_limit_resets_at.jsonl")[-1]["error"]["message"]
    real_later = sample("usage_limit_resets_in_seconds.jsonl")[-1]["error"]["message"]
    assert scenario.usage_limit_message(captured_reset_time()) == real_at
    assert scenario.usage_limit_message(None) == real_later
    now = dt.datetime(2026, 9, 10, 23, 0, 40)
    fmt = scenario.format_reset_time
    assert fmt(now + dt.timedelta(minutes=56, seconds=59), now) == "11:57 PM"
    assert fmt(dt.datetime(2026, 9, 11, 0, 26, 59), now) == "Sep 11th, 2026 12:26 AM"
    assert fmt(dt.datetime(2026, 10, 2, 13, 5), now) == "Oct 2nd, 2026 1:05 PM"
    assert fmt(dt.datetime(2026, 10, 13, 0, 0), now) == "Oct 13th, 2026 12:00 AM"
    assert scenario.usage_limit_message(60, now=now).endswith("try again at 11:01 PM.")


def test_scenario_validation_names_the_step():
    with pytest.raises(scenario.ScenarioError, match=r"invocations\[0\]\.steps\[1\]\.usage"):
        scenario.parse_scenario({"steps": [{"message": "x"}, {"usage": {"tokens": 1}}]})
    with pytest.raises(scenario.ScenarioError, match="exactly one"):
        scenario.parse_scenario({"steps": [{"message": "x", "shell": "y"}]})
    with pytest.raises(scenario.ScenarioError, match="unknown keys"):
        scenario.parse_scenario({"steps": [{"message": "x", "retries": 2}]})
    parsed = scenario.parse_scenario({"steps": [{"fail": "boom", "retries": 2}]})
    assert parsed["invocations"] == [[scenario.Step("fail", "boom", {"retries": 2})]]


def test_thread_ids_are_uuid7():
    ids = {store.uuid7() for _ in range(100)}
    assert len(ids) == 100 and all(UUID7.match(i) for i in ids)

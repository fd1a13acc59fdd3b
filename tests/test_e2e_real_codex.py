"""`overnight-agent run` driving the real Codex CLI 0.169.0 against the loopback mock model.

Repositories live under <repo>/.cache/realcodex-tmp/ (not /tmp: the sandbox leaves /tmp
writable, which would hide denials). Every test is bounded in time and proves no process of
codex or its commands survives.
"""
import os
import re
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

import helpers
import realcodex as rc
from helpers import git, wait_session
from mock_model_server import MockModelServer

pytestmark = pytest.mark.realcodex
TOOL = f"{sys.executable} -m overnight_agent"


@pytest.fixture
def real(tmp_path):
    binary = rc.require_codex()
    base = rc.scratch_dir("night")
    servers = []

    class Real:
        repo = helpers.make_repo(base / "repo")
        config = base / "overnight.yaml"
        mark = uuid.uuid4().hex
        run_root = base / "run"

        def __init__(self):
            self.base = base
            self.codex_home = base / "run" / "codex_home"

        def serve(self, steps, config=None, **home):
            server = MockModelServer(steps)
            server.__enter__()
            servers.append(server)
            rc.write_codex_home(self.codex_home, server.port, **home)
            overrides = {"stop": {"sigint_grace": "2s", "sigterm_grace": "2s"}, **(config or {})}
            helpers.write_config(self.config, base, codex={"codex_bin": binary,
                                                           "codex_home": str(self.codex_home)},
                                 **overrides)
            return server

        def start(self, *args):
            return helpers.start_run(self.repo, self.config, self.mark, *args,
                                     env_extra={"MOCK_API_KEY": rc.MOCK_API_KEY})

        def session(self):
            return helpers.read_session(base)

    real = Real()
    try:
        yield real
    finally:
        try:
            helpers.assert_no_agent_processes(real.mark, helpers.tag_prefix(real.run_root), wait=5)
        finally:
            for server in servers:
                server.close()
            shutil.rmtree(base, ignore_errors=True)


def agent_requests(server):
    return [r for r in server.requests if r["path"].endswith("/responses")]


def test_a_real_codex_night_commits_in_its_worktree_under_the_sandbox(real):
    commit = (f"{TOOL} branch feature-x && echo x > feature.txt && git add feature.txt && "
              f"git commit -qm 'feat: x' && {TOOL} journal summary 'Added feature.txt.' && {TOOL} heartbeat")
    server = real.serve([{"shell": commit}, {"message": "done"}, {"message": "still here"}])
    before = helpers.primary_fingerprint(real.repo)
    code, _, err = helpers.finish(real.start("--hours", str(6 / 3600)), timeout=60)
    assert code == 0, err[-3000:]
    session = real.session()
    assert session["state"] == "finished"
    branches = git(real.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/overnight/").split()
    feature = [b for b in branches if b.endswith("_feature-x")]
    assert feature, branches
    assert git(real.repo, "log", "-1", "--format=%s", feature[0]) == "feat: x"
    summary = Path(session["exec_summary_log"]).read_text()
    assert f"{feature[0]} " in summary and "Added feature.txt." in summary
    journal_log = git(real.repo, "log", "--format=%s", "overnight/ops-journal")
    assert "ops: summary (agent)" in journal_log and "ops: morning report" in journal_log
    assert Path(session["heartbeat_file"]).exists()
    assert helpers.primary_fingerprint(real.repo) == before  # incl. .git/config and hooks
    requests = agent_requests(server)
    assert requests and all(r["body"]["model"] == "gpt-5.3-codex" for r in requests)
    assert all(r["body"]["reasoning"]["effort"] == "xhigh" for r in requests)
    thread = session["thread_id"]
    assert thread and all(a["thread_id"] == thread for a in session["attempts"])
    assert any(r["turn_metadata"].get("history_initialization") == "cold_resume" for r in requests)
    for name in (".agents", ".aws", ".codex"):
        assert not (Path(session["session_worktree"]) / name).exists()


def test_sigkill_mid_turn_then_restart_resumes_the_real_thread_and_it_can_still_write(real):
    server = real.serve([{"shell": "sleep 30", "yield_time_ms": 60000},
                         {"shell": "echo resumed > resumed.txt"}, {"message": "ok"}])
    first = real.start("--hours", "1")
    session = wait_session(real.base, lambda s: s.get("thread_id") and s["state"] == "running",
                           timeout=30, what="thread started")
    thread = session["thread_id"]
    prefix = helpers.tag_prefix(real.run_root)
    helpers.wait_for(lambda: any("sleep" in cmd for cmd in helpers.cmdlines(prefix)),
                     timeout=20, what="the agent's command running")  # the turn is mid-way
    os.killpg(first.pid, signal.SIGKILL)
    helpers.finish(first)
    second = real.start("--hours", "1")
    try:
        wait_session(real.base, lambda s: len(s["attempts"]) >= 2 and s["attempts"][1].get("outcome"),
                     timeout=40, what="resumed turn done")
    finally:
        second.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(second, timeout=40)
    assert code == 0, err[-3000:]
    session = real.session()
    assert session["restarts"] == 1 and session["thread_id"] == thread
    resumed = session["attempts"][1]
    assert resumed["kind"] == "resume" and resumed["thread_id"] == thread
    assert resumed["outcome"] == "completed", resumed
    assert (Path(session["session_worktree"]) / "resumed.txt").read_text() == "resumed\n"
    cold = [r for r in agent_requests(server) if r["turn_metadata"].get("history_initialization") == "cold_resume"]
    assert cold and cold[0]["turn_metadata"]["thread_id"] == thread
    assert all(r["body"]["reasoning"]["effort"] == "xhigh" for r in agent_requests(server))
    for name in (".agents", ".aws", ".codex"):  # bwrap's stubs from the killed command are gone
        assert not (Path(session["session_worktree"]) / name).exists()


def test_sigkill_during_a_long_command_of_a_short_night_then_restart_runs_the_next_step(real):
    """The field case: a night shorter than its wrap-up window (the notice is due at once), the
    agent commits, then runs a two-minute command; the supervisor is SIGKILLed and started again
    at once with the same arguments and the default stop graces. The old command is stopped,
    the same thread resumes with its sandbox, model and effort, the next step runs (it was once
    thrown away by a wrap-up notice left in codex's queue), and the night ends at its deadline."""
    server = real.serve([{"shell": "echo a > a.txt && git add a.txt && git commit -qm 'feat: a'"},
                         {"shell": "sleep 120", "yield_time_ms": 200000},
                         {"shell": "echo next >> steps.txt"}, {"message": "done"}],
                        config={"stop": {"sigint_grace": "10s", "sigterm_grace": "10s"},
                                "schedule": {"wrap_up": "30m"}})
    first = real.start("--hours", "0.012")
    prefix = helpers.tag_prefix(real.run_root)
    helpers.wait_for(lambda: any("sleep 120" in cmd for cmd in helpers.cmdlines(prefix)),
                     timeout=30, what="the long command running")
    thread = real.session()["thread_id"]
    os.killpg(first.pid, signal.SIGKILL)
    helpers.finish(first)
    second = real.start("--hours", "0.012")
    worktree = Path(real.session()["session_worktree"])
    helpers.wait_for(lambda: (worktree / "steps.txt").exists() or second.poll() is not None,
                     timeout=60, what="the next scripted step")
    assert (worktree / "steps.txt").read_text() == "next\n"
    assert not any("sleep 120" in cmd for cmd in helpers.cmdlines(prefix))
    code, _, err = helpers.finish(second, timeout=60)
    assert code == 0, err[-3000:]
    session = real.session()
    assert session["state"] == "finished" and session["restarts"] == 1
    assert session["thread_id"] == thread
    lost, resumed = session["attempts"][0], session["attempts"][1]
    assert lost["outcome"] == "supervisor_lost"
    assert (resumed["kind"], resumed["thread_id"]) == ("resume", thread)
    requests = agent_requests(server)
    assert all(r["body"]["model"] == "gpt-5.3-codex" and r["body"]["reasoning"]["effort"] == "xhigh"
               for r in requests)
    assert all(r["turn_metadata"]["sandbox_mode"] == "workspace-write" for r in requests)
    assert git(Path(session["session_worktree"]), "log", "-1", "--format=%s", session["session_branch"]) \
        in ("feat: a", "checkpoint: uncommitted work at the deadline (overnight-agent run "
            f"{session['run_id']})")


def test_tell_and_the_wrap_up_notice_reach_the_real_cli_once_each_in_the_next_prompt(real):
    """A message left with `tell` while a turn runs, and the wrap-up notice, arrive in the next
    resume's prompt: in one request each, every scripted step used once (none thrown away, as a
    message left in codex's own queue would make it)."""
    server = real.serve([{"shell": "sleep 3", "yield_time_ms": 60000}, {"message": "first turn done"},
                         {"shell": "echo second >> steps.txt"}, {"message": "second turn done"},
                         {"message": "idle"}],
                        config={"schedule": {"wrap_up": "1h"}})  # wrap-up time is now
    proc = real.start("--hours", "1")
    try:
        prefix = helpers.tag_prefix(real.run_root)
        helpers.wait_for(lambda: any("sleep 3" in cmd for cmd in helpers.cmdlines(prefix)),
                         timeout=30, what="the first turn's command")
        told = helpers.run_cli("tell", "--repo", str(real.repo), "--config", str(real.config),
                               "Operator says: keep the old API.", mark=real.mark)
        assert told.returncode == 0, told.stderr
        worktree = Path(real.session()["session_worktree"])
        helpers.wait_for(lambda: (worktree / "steps.txt").exists(), timeout=40, what="the second turn's step")
        wait_session(real.base, lambda s: len(s["attempts"]) >= 2 and s["attempts"][1].get("outcome"),
                     timeout=30, what="the second turn over")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc, timeout=40)
    assert code == 0, err[-3000:]
    session = real.session()
    first, second = session["attempts"][:2]
    assert first["outcome"] == "completed" and second["outcome"] == "completed"
    assert (worktree / "steps.txt").read_text() == "second\n"
    requests = agent_requests(server)
    assert [r["step_index"] for r in requests[:4]] == [0, 1, 2, 3]  # no response thrown away
    second_turn = requests[2]["body"]["input"]
    prompts = [part["text"] for item in second_turn if item.get("role") == "user"
               for part in item["content"] if part.get("type") == "input_text"]
    assert sum("keep the old API" in text for text in prompts) == 1, prompts
    assert sum(text.startswith("Wrap-up time") for text in prompts) == 1, prompts
    assert session["messages_delivered"] == 1 and session["wrap_up_sent"] is True


def test_http_errors_are_recorded_and_resumed_with_backoff(real):
    # No retries inside codex, so each error step answers exactly one attempt.
    real.serve([{"http_error": 429}, {"http_error": 500}, {"message": "recovered"}, {"message": "idle"}],
               request_max_retries=0, stream_max_retries=0)
    code, _, err = helpers.finish(real.start("--hours", str(8 / 3600)), timeout=60)
    assert code == 0, err[-3000:]
    outcomes = [a["outcome"] for a in real.session()["attempts"]]
    assert outcomes[0] == "rate_limited" and outcomes[1] == "server_error", outcomes
    assert "completed" in outcomes[2:]


def test_a_request_that_never_gets_headers_is_stopped_cleanly_at_the_deadline(real):
    real.serve([{"hang_before_headers": True, "max_seconds": 60}])
    code, _, err = helpers.finish(real.start("--hours", str(4 / 3600)), timeout=40)
    assert code == 0, err[-3000:]
    session = real.session()
    assert session["state"] == "finished"
    assert session["attempts"][-1]["outcome"] == "stopped"


def test_a_slow_but_streaming_model_is_not_a_stall(real):
    # Nothing reaches stdout or the rollout while the model streams; codex's own CPU does move.
    real.serve([{"slow_message": "thinking aloud " * 40, "seconds": 8, "deltas": 60}, {"message": "idle"}],
               config={"liveness": {"model_silent": "3s", "sample_interval": "0.5s"}},
               stream_idle_timeout_ms=20000)
    proc = real.start("--hours", "1")
    try:
        session = wait_session(real.base, lambda s: s["attempts"] and s["attempts"][0].get("outcome"),
                               timeout=30, what="first turn over")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc, timeout=30)
    assert session["attempts"][0]["outcome"] == "completed", session["attempts"][0]


def test_a_model_that_never_answers_is_a_stall_and_the_thread_is_resumed(real):
    server = real.serve([{"hang_before_headers": True, "max_seconds": 30}, {"message": "back"}],
                        config={"liveness": {"model_silent": "3s", "sample_interval": "0.5s"}})
    proc = real.start("--hours", "1")
    try:
        session = wait_session(real.base, lambda s: len(s["attempts"]) >= 2 and s["attempts"][1].get("outcome"),
                               timeout=40, what="stall, then a resumed turn")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc, timeout=30)
    first, second = session["attempts"][:2]
    assert first["outcome"] == "stalled" and "limit 3s" in first["detail"], first
    assert second["kind"] == "resume" and second["thread_id"] == first["thread_id"]
    assert second["outcome"] == "completed", second
    assert server.requests[-1]["turn_metadata"].get("history_initialization") == "cold_resume"


def test_connection_refused_is_network_down_with_a_bounded_wait(real):
    real.serve([{"message": "unused"}], config={"liveness": {"network_down_limit": "3s"}})
    port = helpers_free_port()
    config_toml = real.codex_home / "config.toml"
    text = config_toml.read_text()
    config_toml.write_text(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", text))  # nobody listens
    proc = real.start("--hours", "1")
    try:
        session = wait_session(real.base, lambda s: s["attempts"] and s["attempts"][0].get("outcome"),
                               timeout=40, what="network-down attempt over")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc, timeout=30)
    first = session["attempts"][0]
    assert first["outcome"] == "network_down", first
    assert "waiting for the network" in first["detail"]


def helpers_free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

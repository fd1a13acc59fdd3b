"""The Claude Code adapter, pure: argv, parsing the real CLI's stream-json captures
(tests/samples/claude/), typing outcomes, the environment, the transcript as progress.

Owns: checks of `overnight_agent.agents.claude` alone. Must not: run processes (the real CLI is
driven in tests/test_claude_conformance.py).
"""
import datetime as dt
import uuid
from pathlib import Path

import pytest

from overnight_agent import agents, config, policy
from overnight_agent.agents import base
from overnight_agent.agents.base import AttemptView, StopReason
from overnight_agent.agents.claude import ClaudeBackend, mangle, root_refusal, usage_limit_detail

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "claude"
SID = "b6789d40-d179-4f79-b1f7-0e11a9f20a20"   # the session of new_session_bash_tool


def backend(tmp_path=Path("/nonexistent"), **overrides):
    settings = dict(claude_bin="/opt/claude", config_dir=tmp_path / "home", worktree=Path("/work/tree"),
                    run_dir=tmp_path / "runs" / "r1", model="claude-opus-5-5", effort="high",
                    permission_mode="acceptEdits", allowed_tools=["Bash", "Edit", "Write"])
    settings.update(overrides)
    return ClaudeBackend(**settings)


def replay(name, *, kind="start", expected=None, rc=0, stderr="", b=None, stopped_for=None):
    """Parse a capture line by line into a view, as the supervisor does; (view, events)."""
    b = b or backend()
    view = AttemptView(kind=kind, expected_thread=expected, returncode=rc, stderr_tail=stderr,
                       stopped_for=stopped_for)
    events = []
    path = SAMPLES / f"{name}.stream.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        event = b.parse_line(line)
        if event is not None:
            events.append(event)
            view.observe(event)
    return view, events


# --- argv -----------------------------------------------------------------------------------------

PINNED = ["--model", "claude-opus-5-5", "--effort", "high", "--permission-mode", "acceptEdits",
          "--allowedTools", "Bash", "Edit", "Write"]


def test_a_fresh_start_names_the_session_and_pins_everything():
    assert backend().start_argv("do it", SID) == [
        "/opt/claude", "-p", "--output-format", "stream-json", "--verbose", "--session-id", SID,
        *PINNED, "--", "do it"]


def test_a_resume_repeats_model_effort_and_permissions():
    argv = backend(extra_args=["--add-dir", "/x"]).resume_argv(SID, "-starts with a dash")
    assert argv == ["/opt/claude", "-p", "--output-format", "stream-json", "--verbose", "--resume", SID,
                    *PINNED, "--add-dir", "/x", "--", "-starts with a dash"]


def test_no_effort_means_no_flag_and_the_ids_are_checked():
    assert "--effort" not in backend(effort=None).start_argv("x", SID)
    with pytest.raises(ValueError):
        backend().start_argv("x")          # claude's session id is chosen up front
    with pytest.raises(ValueError):
        backend().resume_argv("--last", "x")


def test_the_supervisor_picks_the_session_id():
    b = backend()
    assert b.capabilities.picks_thread_id and b.capabilities.threads and b.capabilities.event_stream
    first, second = b.new_thread_id(), b.new_thread_id()
    assert first != second and uuid.UUID(first).version == 4
    assert b.find_thread(Path("/work/tree")) is None


def test_registered_and_made_from_the_config(tmp_path):
    cfg = config.parse("version: 2\nagent: claude\n", "test.yaml")
    night = agents.NightFacts(run_id="r1", worktree=tmp_path / "wt", run_dir=tmp_path / "run",
                              heartbeat=tmp_path / "hb", state_home=tmp_path / "home", binary="/bin/claude",
                              model=cfg.claude.model, effort="", sandbox="workspace-write")
    made = agents.create("claude", cfg, night)
    assert isinstance(made, ClaudeBackend)
    argv = made.start_argv("p", SID)
    assert argv[0] == "/bin/claude" and argv[argv.index("--permission-mode") + 1] == cfg.claude.permission_mode
    assert argv[argv.index("--model") + 1] == cfg.claude.model


# --- parsing the real captures ---------------------------------------------------------------------

def test_a_fresh_turn_with_a_bash_call():
    view, events = replay("new_session_bash_tool")
    assert [(e.kind, e.item_type, e.phase, e.command) for e in events] == [
        ("thread_started", None, None, False),
        ("item", "agent_message", "completed", False),
        ("item", "command_execution", "started", True),
        ("item", "command_execution", "completed", True),
        ("item", "agent_message", "completed", False),
        ("turn_completed", None, None, False)]
    assert events[0].thread_id == SID
    assert events[-1].usage["input_tokens"] == 200 and events[-1].usage["output_tokens"] == 40
    assert backend().classify(view).kind == base.COMPLETED


def test_usage_is_cumulative_per_session_like_codex():
    b = backend()
    replay("new_session_bash_tool", b=b)
    _view, events = replay("new_session_bash_tool", b=b)   # a second run of the same session
    assert events[-1].usage["input_tokens"] == 400


def test_sigint_mid_command_is_a_failed_turn_with_exit_0():
    view, events = replay("sig_INT", rc=0)
    assert [e.phase for e in events if e.command] == ["started", "completed"]
    outcome = backend().classify(view)
    assert outcome.kind == base.TURN_FAILED and "interrupted" in outcome.detail and "aborted_tools" in outcome.detail


def test_sigint_while_waiting_on_the_api_has_no_result_but_says_so():
    view, _ = replay("apiwait_INT", rc=0)
    outcome = backend().classify(view)
    assert outcome.kind == base.TURN_FAILED and "interrupted" in outcome.detail


def test_sigint_mid_command_without_its_result_line_is_still_interrupted():
    lines = (SAMPLES / "sig_INT.stream.jsonl").read_text().splitlines()[:-1]   # seen in 1 run in 12
    b = backend()
    view = AttemptView(kind="start", returncode=0)
    for line in lines:
        view.observe(b.parse_line(line))
    outcome = b.classify(view)
    assert outcome.kind == base.TURN_FAILED and "interrupted" in outcome.detail


def test_exit_0_without_a_result_is_not_completed():
    b = backend()
    view = AttemptView(kind="start", returncode=0)
    view.observe(b.parse_line('{"type":"system","subtype":"init","session_id":"%s"}' % SID))
    assert b.classify(view).kind == base.EXITED_EARLY


def test_sigterm_and_sigkill():
    view, _ = replay("sig_TERM", rc=143)
    assert backend().classify(view).kind == base.KILLED
    view, _ = replay("sig_TERM", rc=143, stopped_for=StopReason.SIGNAL)
    assert backend().classify(view).kind == base.STOPPED
    view, _ = replay("sig_KILL", rc=-9)
    assert backend().classify(view).kind == base.KILLED
    view, _ = replay("apiwait_TERM", rc=143, stopped_for=StopReason.STALL)
    assert backend().classify(view).kind == base.STALLED


def test_an_unknown_session_id():
    stderr = (SAMPLES / "resume_unknown_id.stderr.txt").read_text()
    view, events = replay("resume_unknown_id", kind="resume", expected="11111111-2222-3333-4444-555555555555",
                          rc=1, stderr=stderr)
    assert [e.kind for e in events] == ["turn_failed"]
    outcome = backend().classify(view)
    assert outcome.kind == base.UNKNOWN_THREAD and "No conversation found" in outcome.detail


def test_a_session_id_already_in_use():
    stderr = (SAMPLES / "session_id_reuse.stderr.txt").read_text()
    view, _ = replay("none", rc=1, stderr=stderr, expected=None)
    outcome = backend().classify(view)
    assert outcome.kind == base.THREAD_BUSY and "already in use" in outcome.detail


def test_root_refusal_of_bypass_is_typed_not_retried_as_a_crash():
    stderr = (SAMPLES / "root_skip_permissions_refused.stderr.txt").read_text()
    view, _ = replay("none", rc=1, stderr=stderr)
    outcome = backend(permission_mode="bypassPermissions").classify(view)
    assert outcome.kind == base.REFUSED
    assert "root" in outcome.detail and "IS_SANDBOX" in outcome.detail


@pytest.mark.parametrize("name,rc,kind", [
    ("e429_def", 1, base.RATE_LIMITED), ("e500_def", 1, base.SERVER_ERROR), ("e529_def", 1, base.SERVER_ERROR),
    ("e401_all", 1, base.AUTH_FAILED), ("e400_all", 1, base.TURN_FAILED), ("refused_def", 1, base.NETWORK_DOWN),
    ("dropnf", 1, base.NETWORK_DOWN), ("stall_nofallback", 1, base.NETWORK_DOWN),
])
def test_api_errors_after_claudes_own_retries(name, rc, kind):
    view, _ = replay(name, rc=rc)
    outcome = backend().classify(view)
    assert outcome.kind == kind, outcome
    if name == "e401_all":
        assert outcome.detail.startswith("authentication")


def test_retry_notices_are_not_evidence_and_refused_connections_wait_for_the_network():
    _, events = replay("refused_def", rc=1)
    retries = [e for e in events if e.kind == "error"]
    assert len(retries) == 10 and all(e.network_wait and not e.progress for e in retries)
    _, events = replay("e429_def", rc=1)
    assert not any(e.network_wait for e in events)


def test_denied_tool_calls_are_named_in_a_completed_outcome():
    view, _ = replay("perm_none", rc=0)
    outcome = backend().classify(view)
    assert outcome.kind == base.COMPLETED and "denied" in outcome.detail and "Bash" in outcome.detail
    view, _ = replay("perm_acceptEdits", rc=0)
    assert "denied" not in backend().classify(view).detail


def test_a_resume_that_announces_another_session():
    view, _ = replay("new_session_bash_tool", kind="resume", expected="0b7f1a8e-5d2c-4c1e-9a43-2f6d8e9b1c00")
    assert backend().classify(view).kind == base.THREAD_MISMATCH


def test_junk_lines_and_wrong_types():
    b = backend()
    assert b.parse_line("not json") is None and b.parse_line("[1]") is None
    assert b.parse_line('{"type":"system","subtype":"init","session_id":"../../etc"}').thread_id is None
    assert b.parse_line('{"type":"result","is_error":false,"usage":{"input_tokens":"many"}}').usage is None
    assert b.parse_line('{"type":"assistant","message":{"content":"text"}}').kind == "item"


# --- usage limits ---------------------------------------------------------------------------------

def _usage_limit_view(text):
    b = backend()
    view = AttemptView(kind="resume", expected_thread=SID, returncode=1)
    for line in ('{"type":"system","subtype":"init","session_id":"%s"}' % SID,
                 '{"type":"result","subtype":"success","is_error":true,"api_error_status":429,'
                 '"terminal_reason":"api_error","result":"%s"}' % text):
        view.observe(b.parse_line(line))
    return b.classify(view)


def test_a_usage_limit_with_an_epoch_reset_reads_as_the_policy_expects():
    reset = dt.datetime.now().astimezone().replace(second=0, microsecond=0) + dt.timedelta(hours=2)
    outcome = _usage_limit_view(f"Claude AI usage limit reached|{int(reset.timestamp())}")
    assert outcome.kind == base.USAGE_LIMIT
    assert policy.usage_reset_time(outcome.detail, dt.datetime.now().astimezone()) == reset


def test_a_usage_limit_with_a_clock_reset_and_without_one():
    outcome = _usage_limit_view("You've hit your usage limit \u00b7 resets 3am")
    assert outcome.kind == base.USAGE_LIMIT and "try again at 3:00 AM." in outcome.detail
    outcome = _usage_limit_view("You've hit your usage limit.")
    assert outcome.kind == base.USAGE_LIMIT
    assert policy.usage_reset_time(outcome.detail, dt.datetime.now().astimezone()) is None
    assert usage_limit_detail("limit reached|1800000000", dt.datetime(2020, 1, 1).astimezone()).count(", 2027") == 1


# --- environment, transcripts, root -------------------------------------------------------------------

def test_the_environment(tmp_path):
    b = backend(tmp_path, env_passthrough=["CLAUDE_CODE_MAX_RETRIES", "MY_VAR"])
    env = b.environment({"PATH": "/bin", "HOME": "/root", "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "u",
                         "OPENAI_API_KEY": "no", "IS_SANDBOX": "1", "MY_VAR": "yes", "CLAUDE_CODE_MAX_RETRIES": "7",
                         "GIT_DIR": "/elsewhere"})
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "home")
    assert env["TMPDIR"] == str(tmp_path / "runs" / "r1" / "tmp")
    assert env["ANTHROPIC_API_KEY"] == "k" and env["ANTHROPIC_BASE_URL"] == "u" and env["MY_VAR"] == "yes"
    assert "OPENAI_API_KEY" not in env and "IS_SANDBOX" not in env and "GIT_DIR" not in env
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["DISABLE_TELEMETRY"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "7"   # the operator's, passed through
    assert backend(tmp_path).environment({"CLAUDE_CODE_MAX_RETRIES": "7"})["CLAUDE_CODE_MAX_RETRIES"] == "3"


def test_the_transcript_is_the_progress_file(tmp_path):
    b = backend(tmp_path, worktree=Path("/work/my.repo_x-y"))
    assert mangle("/work/my.repo_x-y") == "-work-my-repo-x-y"
    assert b.progress_files(SID) == [] and b.progress_files(None) == [] and b.progress_files("../x") == []
    path = tmp_path / "home" / "projects" / "-work-my-repo-x-y" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    assert b.progress_files(SID) == [path] == [b.transcript_path(SID)]
    elsewhere = tmp_path / "home" / "projects" / "-other" / f"{uuid.UUID(int=1)}.jsonl"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}\n")
    assert b.progress_files(str(uuid.UUID(int=1))) == [elsewhere]   # resumed from another cwd


def test_root_refusal_is_said_up_front():
    assert root_refusal("bypassPermissions", [], 0, {}) is not None
    assert root_refusal("acceptEdits", ["--dangerously-skip-permissions"], 0, {}) is not None
    assert root_refusal("bypassPermissions", [], 1000, {}) is None
    assert root_refusal("bypassPermissions", [], 0, {"IS_SANDBOX": "1"}) is None
    assert root_refusal("acceptEdits", [], 0, {}) is None

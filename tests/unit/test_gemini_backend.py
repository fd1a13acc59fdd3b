"""The gemini backend as a pure adapter: argv in, events and typed outcomes out, on the real
CLI's captures (tests/samples/gemini/). Seconds, no processes.

Owns: those checks. Must not: start a process or reach the network.
"""
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overnight_agent.agents import BACKENDS, base
from overnight_agent.agents.gemini import GeminiBackend

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "gemini"
SID = "54d89951-b9fe-4fa1-bd74-ecdfa1949504"


@pytest.fixture
def backend(tmp_path):
    return GeminiBackend(gemini_bin="/opt/gemini", home=tmp_path / "home", run_dir=tmp_path / "run",
                         model="gemini-2.5-pro", approval_mode="yolo", extra_args=["--debug"],
                         env_passthrough=["MY_VAR", "GITHUB_SHA"], max_attempts=2)


def replay(backend, name, kind="start", expected=None, rc=0, stderr=""):
    view = base.AttemptView(kind=kind, expected_thread=expected)
    events = []
    for line in (SAMPLES / name).read_text().splitlines():
        event = backend.parse_line(line)
        assert event is not None, line
        events.append(event)
        view.observe(event)
    view.returncode, view.stderr_tail = rc, stderr
    return events, view


def test_registered_with_the_capabilities_the_supervisor_relies_on():
    assert BACKENDS["gemini"] is GeminiBackend
    caps = GeminiBackend.capabilities
    assert caps.threads and caps.event_stream and caps.picks_thread_id


def test_start_and_resume_argv_repeat_model_format_and_approval_mode(backend):
    session = backend.new_thread_id()
    assert len(session) == 36 and session != backend.new_thread_id()
    start = backend.start_argv("-do it", session)
    resume = backend.resume_argv(session, "go on")
    common = ["-m", "gemini-2.5-pro", "-o", "stream-json", "--approval-mode", "yolo", "--debug"]
    assert start == ["/opt/gemini", "--prompt=-do it", *common, "--session-id", session]
    assert resume == ["/opt/gemini", "--prompt=go on", *common, "--resume", session]
    with pytest.raises(ValueError):
        backend.resume_argv("--yolo", "x")
    with pytest.raises(ValueError):
        backend.start_argv("x", "../*")


def test_for_night_reads_the_gemini_section(tmp_path):
    from types import SimpleNamespace

    from overnight_agent import config
    cfg = config.parse("version: 2\nagent: gemini\ngemini:\n  approval_mode: auto_edit\n"
                       "  extra_args: [--debug]\n  max_attempts: 20\n", "<test>")
    night = SimpleNamespace(binary="/usr/bin/gemini", state_home=tmp_path / "h", run_dir=tmp_path / "r",
                            model="gemini-2.5-flash")
    made = GeminiBackend.for_night(cfg, night)
    assert made.start_argv("p", "abc")[:8] == ["/usr/bin/gemini", "--prompt=p", "-m", "gemini-2.5-flash",
                                              "-o", "stream-json", "--approval-mode", "auto_edit"]
    assert made.max_attempts == 10  # the CLI's cap


def test_parse_line_on_a_real_turn_with_a_shell_call(backend):
    events, view = replay(backend, "success_tool_call.jsonl", expected=SID)
    assert [e.kind for e in events] == ["thread_started", "turn_started", "item", "item", "item",
                                        "turn_completed"]
    assert events[0].thread_id == SID
    use, result, message = events[2:5]
    assert (use.command, use.phase, use.item_type) == (True, "started", "command_execution")
    assert (result.command, result.phase) == (True, "completed")
    assert (message.item_type, message.message) == ("agent_message", "Done: created heartbeat.txt")
    assert events[-1].usage == {"input_tokens": 200, "output_tokens": 40, "total_tokens": 240,
                                "cached_input_tokens": 0}
    assert backend.classify(view) == base.Outcome(base.COMPLETED, "exit 0")


def test_parse_line_refuses_junk(backend):
    assert backend.parse_line("not json") is None
    assert backend.parse_line("[1, 2]") is None
    assert backend.parse_line('{"type":"init","session_id":"--rm -rf"}').thread_id is None
    assert backend.parse_line('{"type":"result","status":"success","stats":{"input_tokens":true}}').usage is None
    assert backend.parse_line('{"type":"something_new"}').kind == "other"
    assert backend.parse_line("[" * 100000) is None


@pytest.mark.parametrize("sample,rc,kind,detail", [
    ("e429_ma2.jsonl", 173, base.RATE_LIMITED, "[API Error: Resource has been exhausted"),
    ("e500_ma2.jsonl", 244, base.SERVER_ERROR, '[API Error: {"error":{"code":500'),
    ("e400.jsonl", 144, base.TURN_FAILED, '[API Error: {"error":{"code":400'),
    ("refused_ma2.jsonl", 1, base.NETWORK_DOWN, "[API Error: exception TypeError: fetch failed"),
    ("drop_ma2.jsonl", 0, base.SERVER_ERROR, "Model stream ended without a finish reason."),
    ("empty.jsonl", 0, base.SERVER_ERROR, "Model stream ended without a finish reason."),
    ("maxturns.jsonl", 53, base.TURN_FAILED, "Reached max session turns"),
])
def test_the_last_result_event_types_the_outcome_whatever_the_exit_code(backend, sample, rc, kind, detail):
    _events, view = replay(backend, sample, rc=rc)
    outcome = backend.classify(view)
    assert outcome.kind == kind
    assert outcome.detail.startswith(detail), outcome.detail


@pytest.mark.parametrize("message,kind,prefix", [
    ("[API Error: You have exhausted your daily quota on this model.]", base.USAGE_LIMIT, ""),
    ("[API Error: Quota exceeded for metric: generate_content_free_tier_requests, limit: 0]",
     base.USAGE_LIMIT, ""),
    ('[API Error: {"error":{"code":401,"message":"API key not valid. Please pass a valid API key.",'
     '"status":"UNAUTHENTICATED"}}]', base.AUTH_FAILED, "auth: "),
    ('[API Error: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}]',
     base.SERVER_ERROR, ""),
])
def test_api_error_messages_are_typed(backend, message, kind, prefix):
    line = json.dumps({"type": "result", "status": "error", "error": {"type": "unknown", "message": message}})
    view = base.AttemptView(kind="resume", expected_thread=SID, thread_id=SID)
    view.observe(backend.parse_line(line))
    view.returncode = 1
    outcome = backend.classify(view)
    assert (outcome.kind, outcome.detail) == (kind, prefix + message[:300])


def test_a_signal_or_a_cut_stream_is_rc_0_without_a_result_and_not_completed(backend):
    _events, view = replay(backend, "sig_term_child.jsonl", rc=0)
    assert view.thread_id and view.turn_completed is False
    assert backend.classify(view).kind == base.EXITED_EARLY
    view.returncode = -9
    assert backend.classify(view).kind == base.KILLED
    view.returncode = 173  # output cut before the result of a 429
    assert backend.classify(view).kind == base.RATE_LIMITED
    view.returncode = 247
    assert backend.classify(view).kind == base.SERVER_ERROR
    view.returncode = 7
    assert backend.classify(view).kind == base.CRASHED


def test_rc_42_before_init_is_an_unknown_session_or_a_taken_id(backend):
    stderr = (SAMPLES / "resume_unknown_id.stderr.txt").read_text()
    view = base.AttemptView(kind="resume", expected_thread="11111111-2222-4333-8444-555555555555",
                            returncode=42, stderr_tail=stderr)
    outcome = backend.classify(view)
    assert outcome.kind == base.UNKNOWN_THREAD and "Invalid session identifier" in outcome.detail
    view = base.AttemptView(kind="resume", expected_thread=SID, returncode=42,
                            stderr_tail="Error resuming session: No previous sessions found for this project.")
    assert backend.classify(view).kind == base.UNKNOWN_THREAD
    taken = base.AttemptView(kind="start", expected_thread=SID, returncode=42, stderr_tail=(
        f'Error starting session: Session ID "{SID}" already exists. Use --resume to resume it, '
        "or provide a different ID."))
    assert backend.classify(taken).kind == base.THREAD_BUSY
    auth = base.AttemptView(kind="start", expected_thread=SID, returncode=41,
                            stderr_tail="Invalid auth method selected.")
    outcome = backend.classify(auth)
    assert outcome.kind == base.AUTH_FAILED and outcome.detail.startswith("auth: exit 41")


def test_another_session_than_asked_is_a_mismatch_and_a_stop_wins(backend):
    _events, view = replay(backend, "resume_by_id.jsonl", kind="resume", expected="0" * 8 + SID[8:])
    assert backend.classify(view).kind == base.THREAD_MISMATCH
    view.stopped_for = base.StopReason.DEADLINE
    assert backend.classify(view) == base.Outcome(base.STOPPED, "deadline")


def test_environment_home_single_process_trust_tmpdir_and_settings(backend, tmp_path):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "security": {"auth": {"selectedType": "vertex-ai"}, "folderTrust": {"enabled": True}},
        "general": {"maxAttempts": 10}, "mcpServers": {"x": {"command": "y"}}}))
    env = backend.environment({"PATH": "/bin", "HOME": "/home/op", "GEMINI_API_KEY": "k",
                               "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9", "MY_VAR": "1",
                               "GITHUB_SHA": "abc", "OPENAI_API_KEY": "no", "GEMINI_CLI_HOME": "/elsewhere"})
    assert env == {"PATH": "/bin", "HOME": "/home/op", "GEMINI_API_KEY": "k",
                   "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9", "MY_VAR": "1",
                   "GEMINI_CLI_HOME": str(home), "GEMINI_CLI_NO_RELAUNCH": "1",
                   "GEMINI_CLI_TRUST_WORKSPACE": "true", "TMPDIR": str(tmp_path / "run" / "tmp")}
    assert (tmp_path / "run" / "tmp").is_dir()
    settings = json.loads((home / ".gemini" / "settings.json").read_text())
    assert settings["security"] == {"auth": {"selectedType": "vertex-ai"}, "folderTrust": {"enabled": False}}
    assert settings["general"]["maxAttempts"] == 2
    assert settings["general"]["sessionRetention"] == {"enabled": True, "maxAge": "30d"}
    assert settings["privacy"] == {"usageStatisticsEnabled": False}
    assert settings["mcpServers"] == {"x": {"command": "y"}}
    stamp = (home / ".gemini" / "settings.json").stat().st_mtime_ns
    backend.after_attempt(tmp_path)
    assert (home / ".gemini" / "settings.json").stat().st_mtime_ns == stamp  # unchanged: not rewritten


def test_progress_files_are_the_sessions_chat_files(backend, tmp_path):
    chats = tmp_path / "home" / ".gemini" / "tmp" / "repo" / "chats"
    chats.mkdir(parents=True)
    example = (SAMPLES / "session_file_example.jsonl").read_text()
    (chats / f"session-2026-11-29T00-02-{SID[:8]}.jsonl").write_text(example)
    other = json.dumps({"sessionId": SID[:8] + "-ffff-ffff-ffff-ffffffffffff"}) + "\n"
    (chats / f"session-2026-11-29T00-03-{SID[:8]}.jsonl").write_text(other)  # same 8, other id
    assert backend.progress_files(SID) == [chats / f"session-2026-11-29T00-02-{SID[:8]}.jsonl"]
    assert backend.progress_files(None) == [] and backend.progress_files("*") == []
    assert backend.find_thread(tmp_path) is None


def test_usage_is_the_sessions_so_far_from_its_chat_files(backend, tmp_path):
    """stats are per process; the budget counts a thread at its largest total."""
    chats = tmp_path / "home" / ".gemini" / "tmp" / "repo" / "chats"
    chats.mkdir(parents=True)
    (chats / f"session-2026-11-29T00-02-{SID[:8]}.jsonl").write_text(
        (SAMPLES / "session_file_example.jsonl").read_text())
    events, _view = replay(backend, "resume_by_id.jsonl", kind="resume", expected=SID)
    # Five model responses are recorded (a call and an answer in the first run, the same in
    # the resume by id, one answer in a later resume), each 100 in and 20 out, while this
    # process's stats say 200 and 40.
    assert events[-1].usage == {"input_tokens": 500, "output_tokens": 100, "total_tokens": 600,
                                "cached_input_tokens": 0}


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=3),
                       max_leaves=8)
_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["init", "message", "tool_use", "tool_result", "error", "result", "x"])},
    optional={key: _values for key in ("session_id", "role", "content", "tool_name", "tool_id", "parameters",
                                       "status", "stats", "error", "message")})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_objects.map(json.dumps), st.text(max_size=40)), max_size=6))
def test_fuzzed_lines_parse_into_usable_events_or_are_ignored(backend, lines):
    view = base.AttemptView(kind="resume", expected_thread=SID, returncode=0, stderr_tail="x")
    for line in lines:
        event = backend.parse_line(line)
        if event is None:
            continue
        assert event.usage is None or all(type(v) is int for v in event.usage.values())
        for text in (event.thread_id, event.message, event.item_type):
            assert text is None or isinstance(text, str)
        view.observe(event)
    assert isinstance(backend.classify(view), base.Outcome)
    if view.thread_id:  # what the supervisor does with an announced id: argv, a glob
        backend.resume_argv(view.thread_id, "go on")
        backend.progress_files(view.thread_id)

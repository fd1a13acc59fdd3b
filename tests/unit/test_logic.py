"""Pure logic, tested fast: time arithmetic, backoff, resume-or-fresh, codex argv and outcomes."""
import datetime as dt
import json
from pathlib import Path

import pytest

from overnight_agent import policy, timeparse
from overnight_agent.agents import base
from overnight_agent.agents.base import AttemptView
from overnight_agent.agents.codex import CodexBackend

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "codex"
TZ = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize("text,seconds", [("45s", 45), ("10m", 600), ("1h30m", 5400), ("2.5s", 2.5),
                                          ("500ms", 0.5), (90, 90), ("90", 90), ("1d", 86400)])
def test_durations(text, seconds):
    assert timeparse.parse_duration(text) == seconds


def test_next_occurrence_and_the_night_window():
    evening = dt.datetime(2026, 3, 1, 19, 0, tzinfo=TZ)
    night = dt.datetime(2026, 3, 2, 1, 30, tzinfo=TZ)
    assert timeparse.next_occurrence(night, dt.time(5, 0)).replace(tzinfo=None) == dt.datetime(2026, 3, 2, 5, 0)
    start, end = dt.time(17, 0), dt.time(5, 0)
    assert timeparse.in_night_window(evening, start, end)
    assert timeparse.in_night_window(night, start, end)
    assert not timeparse.in_night_window(dt.datetime(2026, 3, 2, 8, 0, tzinfo=TZ), start, end)
    assert not timeparse.in_night_window(dt.datetime(2026, 3, 2, 5, 0, tzinfo=TZ), start, end)


def _history(*items):
    return [policy.AttemptSummary(kind, duration, outcome) for kind, duration, outcome in items]


def test_backoff_grows_on_quick_exits_and_resets_after_a_healthy_stretch():
    rule = dict(initial=2, factor=2, maximum=30, healthy_after=600)
    quick = ("resume", 5, base.CRASHED)
    assert policy.backoff_delay(_history(quick), **rule) == 2
    assert policy.backoff_delay(_history(quick, quick, quick), **rule) == 8
    assert policy.backoff_delay(_history(*[quick] * 10), **rule) == 30
    assert policy.backoff_delay(_history(quick, quick, ("resume", 900, base.COMPLETED)), **rule) == 2
    assert policy.backoff_delay(_history(("resume", 900, base.COMPLETED), quick, quick), **rule) == 4


def test_resume_or_fresh():
    assert policy.next_attempt(None, [], resume_failures_before_fresh=2).fresh
    ok = policy.next_attempt("t1", _history(("start", 5, base.CRASHED)), resume_failures_before_fresh=2)
    assert not ok.fresh
    gone = policy.next_attempt("t1", _history(("resume", 1, base.UNKNOWN_THREAD)), resume_failures_before_fresh=2)
    assert gone.fresh and "unknown_thread" in gone.reason
    dying = _history(("resume", 1, base.CRASHED_BEFORE_THREAD), ("resume", 1, base.CRASHED_BEFORE_THREAD))
    assert policy.next_attempt("t1", dying, resume_failures_before_fresh=2).fresh
    assert not policy.next_attempt("t1", dying[:1], resume_failures_before_fresh=2).fresh
    # A CLI that could not be started at all (its binary gone) says nothing about the thread.
    missing = _history(*[("resume", 0, base.NOT_STARTED)] * 5)
    assert not policy.next_attempt("t1", missing, resume_failures_before_fresh=2).fresh
    mixed = _history(("resume", 1, base.CRASHED_BEFORE_THREAD), ("resume", 0, base.NOT_STARTED),
                     ("resume", 1, base.CRASHED_BEFORE_THREAD))
    assert policy.next_attempt("t1", mixed, resume_failures_before_fresh=2).fresh
    # Resumes that sat silent until the stall limit, never naming the thread, count as failed
    # resumes; a stall after the thread was named (a slow model, a long command) does not.
    silent = [policy.AttemptSummary("resume", 600, base.STALLED, announced=False)] * 2
    assert policy.next_attempt("t1", silent, resume_failures_before_fresh=2).fresh
    assert "hung" in policy.next_attempt("t1", silent, resume_failures_before_fresh=2).reason
    assert not policy.next_attempt("t1", silent[:1], resume_failures_before_fresh=2).fresh
    busy = [policy.AttemptSummary("resume", 600, base.STALLED, announced=True)] * 3
    assert not policy.next_attempt("t1", busy, resume_failures_before_fresh=2).fresh
    # A silent fresh start says nothing about resuming.
    assert not policy.next_attempt("t1", [policy.AttemptSummary("start", 600, base.STALLED, False)] * 3,
                                   resume_failures_before_fresh=2).fresh


def backend(**kw):
    args = dict(codex_bin="codex", codex_home=Path("/h"), model="gpt-5.3-codex", effort="xhigh",
                sandbox="workspace-write", writable_roots=[Path("/r/.git/worktrees/s"), Path("/r/.git/objects")])
    args.update(kw)
    return CodexBackend(**args)


def test_exec_and_resume_argv_pin_model_effort_sandbox_and_writable_roots():
    b = backend(extra_config=["model_verbosity=low"])
    start = b.start_argv("PROMPT")
    assert start[:5] == ["codex", "exec", "--json", "--sandbox", "workspace-write"]
    assert start[-1] == "PROMPT"
    resume = b.resume_argv("0199-thread", "go on")
    # --sandbox must precede `resume` (which has none and defaults to read-only).
    assert resume[:6] == ["codex", "exec", "--sandbox", "workspace-write", "resume", "0199-thread"]
    for argv in (start, resume):
        assert argv[argv.index("-m") + 1] == "gpt-5.3-codex"
        assert "model_reasoning_effort=xhigh" in argv
        assert 'sandbox_workspace_write.writable_roots=["/r/.git/worktrees/s","/r/.git/objects"]' in argv
        assert "model_verbosity=low" in argv
        assert "--last" not in argv
    assert resume[-2:] == ["--json", "go on"]


def test_environment_is_an_allowlist_plus_provider_keys(tmp_path):
    (tmp_path / "config.toml").write_text('[model_providers.mock]\nenv_key = "MOCK_API_KEY"\n')
    b = backend(codex_home=tmp_path, env_passthrough=["EXTRA"])
    env = b.environment({"PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "s",
                         "OPENAI_API_KEY": "k", "MOCK_API_KEY": "m", "EXTRA": "e", "GITHUB_TOKEN": "g"})
    assert env == {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "OPENAI_API_KEY": "k",
                   "MOCK_API_KEY": "m", "EXTRA": "e", "CODEX_HOME": str(tmp_path)}


def view_from_sample(name, kind="start", returncode=1, expected=None, stderr=""):
    b = backend()
    view = AttemptView(kind=kind, expected_thread=expected, returncode=returncode, stderr_tail=stderr)
    for line in (SAMPLES / name).read_text().splitlines():
        event = b.parse_line(line)
        if event:
            view.observe(event)
    return b.classify(view)


@pytest.mark.parametrize("sample,rc,kind", [
    ("exec_success.jsonl", 0, base.COMPLETED),
    ("fail_400.jsonl", 1, base.TURN_FAILED),
    ("fail_err500.jsonl", 1, base.SERVER_ERROR),
    ("fail_stall.jsonl", 1, base.SERVER_ERROR),
    ("usage_limit_resets_at.jsonl", 1, base.USAGE_LIMIT),
    ("usage_limit_resets_in_seconds.jsonl", 1, base.USAGE_LIMIT),
    ("usage_limit_resets_another_day.jsonl", 1, base.USAGE_LIMIT),
    ("fail_refused.jsonl", 1, base.NETWORK_DOWN),
    ("fail_sigint.jsonl", 1, base.CRASHED),
    ("fail_sigint.jsonl", -15, base.KILLED),
])
def test_real_captures_are_classified(sample, rc, kind):
    assert view_from_sample(sample, returncode=rc).kind == kind


def test_resume_failures_are_typed_from_stderr():
    b = backend()
    unknown = AttemptView(kind="resume", expected_thread="t", returncode=1,
                          stderr_tail="Error: thread/resume failed: no rollout found for thread id t\n")
    assert b.classify(unknown).kind == base.UNKNOWN_THREAD
    busy = AttemptView(kind="resume", expected_thread="t", returncode=1,
                       stderr_tail="Error: thread/resume: thread/resume failed: thread t already has an "
                                   "active writer (code -32600)\n")
    assert b.classify(busy).kind == base.THREAD_BUSY
    other = AttemptView(kind="resume", expected_thread="t", thread_id="u", returncode=0, turn_completed=True)
    assert b.classify(other).kind == base.THREAD_MISMATCH
    stopped = AttemptView(kind="start", returncode=1, stopped_for=base.StopReason.DEADLINE)
    assert b.classify(stopped) == base.Outcome(base.STOPPED, "deadline")
    stalled = AttemptView(kind="resume", returncode=1, stopped_for=base.StopReason.STALL,
                          stop_detail="no evidence of life for 3.0s")
    assert b.classify(stalled) == base.Outcome(base.STALLED, "stall: no evidence of life for 3.0s")
    silent = AttemptView(kind="start", thread_id="t", returncode=0)
    assert b.classify(silent).kind == base.EXITED_EARLY


def test_turn_failed_with_exit_status_zero_is_still_a_failure():
    b = backend()
    view = AttemptView(kind="start", returncode=0)
    for line in ('{"type":"thread.started","thread_id":"t"}',
                 '{"type":"turn.failed","error":{"message":"boom"}}'):
        view.observe(b.parse_line(line))
    assert b.classify(view).kind == base.TURN_FAILED


def test_find_thread_by_the_latest_cwd_in_rollouts(tmp_path):
    day = tmp_path / "sessions" / "2026" / "11" / "29"
    day.mkdir(parents=True)
    def rollout(name, thread, cwds):
        lines = [{"type": "session_meta", "payload": {"id": thread, "cwd": cwds[0]}}]
        lines += [{"type": "turn_context", "payload": {"cwd": c}} for c in cwds[1:]]
        (day / name).write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rollout("rollout-a-t1.jsonl", "t1", ["/w/a"])
    rollout("rollout-b-t2.jsonl", "t2", ["/w/b", "/w/a"])
    rollout("rollout-c-t3.jsonl", "t3", ["/w/a", "/w/c"])
    import os
    os.utime(day / "rollout-a-t1.jsonl", (1, 1))
    b = backend(codex_home=tmp_path)
    assert b.find_thread(Path("/w/a")) == "t2"
    assert b.find_thread(Path("/w/c")) == "t3"
    assert b.find_thread(Path("/w/zzz")) is None


def test_an_agent_that_refuses_its_settings_ends_the_night_failed_at_once():
    """claude refuses bypassPermissions to root: every retry would be refused the same way."""
    import datetime as dt
    from overnight_agent import policy
    from overnight_agent.agents import base
    from overnight_agent.state import Phase
    now = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.timezone.utc)
    budgets = policy.Budgets(initial=2.0, factor=2.0, maximum=300.0, healthy_after=600.0, max_per_hour=30,
                             rate_limit_backoff=60.0, usage_limit_margin=120.0, max_tokens=0)
    decision = policy.decide(base.REFUSED, "refused as root: run as another user", [], [], 100.0, now,
                             now + dt.timedelta(hours=6), 0, budgets)
    assert (decision.action, decision.final_state) == (policy.END_NIGHT, Phase.FAILED)
    assert "run as another user" in decision.reason


def test_credentials_refused_once_wait_and_retry_and_twice_in_a_row_end_the_night():
    import datetime as dt
    from overnight_agent import policy
    from overnight_agent.agents import base
    from overnight_agent.state import Phase
    now = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.timezone.utc)
    budgets = policy.Budgets(initial=2.0, factor=2.0, maximum=300.0, healthy_after=600.0, max_per_hour=30,
                             rate_limit_backoff=60.0, usage_limit_margin=120.0, max_tokens=0)
    auth = policy.AttemptSummary("start", 1.0, base.AUTH_FAILED)

    def decide(history):
        return policy.decide(base.AUTH_FAILED, "auth: 401", history, [], 100.0, now,
                             now + dt.timedelta(hours=6), 0, budgets)

    once = decide([auth])
    assert once.action == policy.RESUME and once.wait >= 60.0
    twice = decide([auth, policy.AttemptSummary("resume", 1.0, base.AUTH_FAILED)])
    assert (twice.action, twice.final_state) == (policy.END_NIGHT, Phase.FAILED)
    assert "API key" in twice.reason


def test_a_stop_escalates_one_signal_per_grace_and_a_stall_gets_short_graces():
    import signal
    from overnight_agent.agents.base import StopReason
    from overnight_agent.stopping import STALL_GRACE, Escalation
    stop = Escalation.begin(StopReason.DEADLINE, 100.0, sigint_grace=10.0, sigterm_grace=5.0, kill_grace=2.0)
    assert stop.next_signal(100.0) == signal.SIGINT
    assert stop.next_signal(109.9) is None
    assert stop.next_signal(110.0) == signal.SIGTERM
    assert stop.next_signal(115.0) == signal.SIGKILL
    assert not stop.gave_up(116.9) and stop.gave_up(117.0)   # then again a kill grace later
    assert not stop.gave_up(118.0) and stop.gave_up(119.0)
    stall = Escalation.begin(StopReason.STALL, 0.0, sigint_grace=10.0, sigterm_grace=10.0, kill_grace=2.0)
    assert [g for _, g in stall.steps] == [STALL_GRACE, STALL_GRACE, 2.0]


def test_asked_again_a_final_stop_jumps_to_sigkill_and_a_stop_to_resume_ends_the_night():
    import signal
    from overnight_agent.agents.base import StopReason
    from overnight_agent.stopping import Escalation
    final = Escalation.begin(StopReason.SIGNAL, 0.0, sigint_grace=10.0, sigterm_grace=10.0, kill_grace=2.0)
    assert final.next_signal(0.0) == signal.SIGINT
    final.asked_again(1.0)
    assert final.next_signal(1.0) == signal.SIGKILL
    stall = Escalation.begin(StopReason.STALL, 0.0, sigint_grace=10.0, sigterm_grace=10.0, kill_grace=2.0)
    stall.asked_again(0.1)
    assert stall.reason == StopReason.SIGNAL and len(stall.steps) == 3

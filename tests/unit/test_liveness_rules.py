"""Hang detection on evidence, and what to do after an attempt: pure rules, scripted histories
through a fake clock (the real processes are in tests/test_liveness.py)."""
import datetime as dt

import pytest

from overnight_agent import policy
from overnight_agent.agents import base
from overnight_agent.liveness import SOURCES, Limits, Liveness, sample_every

LIMITS = Limits(model_silent=600, command_silent=1800, agent_cpu_floor=0.001,
                agent_cpu_ceiling=0.25, command_cpu_floor=0.005)


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def advance(self, seconds):
        self.now += seconds
        return self.now


# --- the evidence bookkeeping, scripted -------------------------------------------------------------

def test_model_silent_limit_applies_when_no_command_runs():
    clock = FakeClock()
    live = Liveness(LIMITS, started=clock.now)
    live.saw("stdout", clock.advance(10))
    assert not live.verdict(clock.advance(599)).stalled
    verdict = live.verdict(clock.advance(1))
    assert verdict.stalled and verdict.limit == 600
    assert "stdout 600.0s ago" in verdict.reason and "heartbeat never" in verdict.reason
    assert "no command is running" in verdict.reason


def test_a_running_command_gets_the_longer_limit_and_its_cpu_is_progress():
    clock = FakeClock()
    live = Liveness(LIMITS, started=clock.now)
    live.command_running = True
    clock.advance(1000)
    assert not live.verdict(clock.now).stalled
    for _ in range(100):  # a quiet test suite: one core busy, nothing printed, for 100 minutes
        live.cpu(agent_seconds=0.0, command_seconds=60.0, window=60.0, now=clock.advance(60))
    assert not live.verdict(clock.now).stalled
    for _ in range(30):   # then a command asleep (waiting on a socket that never answers)
        live.cpu(agent_seconds=0.0, command_seconds=0.0, window=60.0, now=clock.advance(60))
    verdict = live.verdict(clock.now)
    assert verdict.stalled and verdict.limit == 1800 and "command_cpu 1800.0s ago" in verdict.reason


def test_agent_cpu_counts_between_idle_noise_and_a_spin():
    clock = FakeClock()
    live = Liveness(LIMITS, started=clock.now)
    for _ in range(5):  # an idle CLI: a timer's blip of a millisecond now and then
        live.cpu(agent_seconds=0.0012, command_seconds=0, window=2.0, now=clock.advance(2))
    assert "agent_cpu" not in live.last
    live.cpu(agent_seconds=0.02, command_seconds=0, window=2.0, now=clock.advance(2))    # streaming
    assert live.last["agent_cpu"] == clock.now
    streamed = clock.now
    live.cpu(agent_seconds=0.0, command_seconds=0, window=2.0, now=clock.advance(2))     # then quiet
    assert live.last["agent_cpu"] == streamed  # dated by when it last worked, not by the window
    for _ in range(4):  # pinned at a full core with nothing else moving: spinning, not working
        live.cpu(agent_seconds=2.0, command_seconds=0, window=2.0, now=clock.advance(2))
    spun_from = live.last["agent_cpu"]
    for _ in range(10):
        live.cpu(agent_seconds=2.0, command_seconds=0, window=2.0, now=clock.advance(2))
    assert live.last["agent_cpu"] == spun_from <= streamed + 4


def test_due_moves_with_evidence():
    live = Liveness(LIMITS, started=0.0)
    assert live.due() == 600
    live.saw("heartbeat", 100.0)
    assert live.due() == 700
    live.command_running = True
    assert live.due() == 1900


SHORT = Limits(model_silent=3, command_silent=3, agent_cpu_floor=0.05, agent_cpu_ceiling=0.25,
               command_cpu_floor=0.005)


@pytest.mark.parametrize("source", SOURCES)
def test_each_evidence_source_times_out_on_its_own_limit(source):
    """One sign of life from one source, then only what an idle agent does (a millisecond of
    CPU now and then): the verdict falls exactly one limit after that sign, whatever it was."""
    clock = FakeClock()
    every = sample_every(SHORT, 5.0)
    live = Liveness(SHORT, started=clock.now)
    clock.advance(every)
    if source == "agent_cpu":      # a CLI starting up: 0.4 s of CPU in one sample
        live.cpu(agent_seconds=0.4, command_seconds=0.0, window=every, now=clock.now)
    elif source == "command_cpu":  # a command that worked for a moment
        live.cpu(agent_seconds=0.0, command_seconds=0.3, window=every, now=clock.now)
    else:
        live.saw(source, clock.now)
    seen = clock.now
    while clock.now < seen + SHORT.model_silent - every / 2:
        assert not live.verdict(clock.now).stalled, (source, clock.now - seen)
        live.cpu(agent_seconds=0.001, command_seconds=0.0, window=every, now=clock.advance(every))
    clock.now = seen + SHORT.model_silent
    verdict = live.verdict(clock.now)
    assert verdict.stalled, (source, verdict.reason)
    assert f"{source} 3.0s ago" in verdict.reason and "limit 3s" in verdict.reason
    assert live.last_evidence() == seen


def test_samples_come_at_least_five_times_per_stall_limit():
    assert sample_every(SHORT, 5.0) == pytest.approx(0.6)
    assert sample_every(LIMITS, 5.0) == 5.0             # 10 and 30 minutes: as configured
    assert sample_every(Limits(0.2, 0.2, 0.05, 0.25, 0.005), 5.0) == 0.1


# --- what to do after an attempt, scripted -----------------------------------------------------------

TZ = dt.timezone(dt.timedelta(hours=-5))
NOW = dt.datetime(2026, 11, 29, 23, 10, tzinfo=TZ)
DEADLINE = dt.datetime(2026, 11, 30, 5, 0, tzinfo=TZ)
BUDGETS = policy.Budgets(initial=2, factor=2, maximum=300, healthy_after=600, max_per_hour=5,
                         rate_limit_backoff=60, usage_limit_margin=120, max_tokens=0)


def decide(outcome, detail="", history=(), starts=(), tokens=0, budgets=BUDGETS, now=NOW):
    hist = [policy.AttemptSummary("resume", 5, o) for o in history] + [policy.AttemptSummary("resume", 5, outcome)]
    return policy.decide(outcome, detail, hist, list(starts), 10_000.0, now, DEADLINE, tokens, budgets)


def test_usage_limit_with_a_reset_before_the_deadline_sleeps_until_then():
    message = ("You’ve hit your usage limit. Visit https://chatgpt.com/settings/usage to purchase more "
               "credits or try again at 1:57 AM.")
    decision = decide(base.USAGE_LIMIT, message)
    assert decision.action == policy.RESUME
    expected = (dt.datetime(2026, 11, 30, 1, 59, tzinfo=TZ) - NOW).total_seconds()
    assert decision.wait == expected and "usage limit" in decision.reason


def test_usage_limit_resetting_after_the_deadline_or_without_a_time_ends_the_night():
    late = decide(base.USAGE_LIMIT, "... or try again at Dec 1st, 2026 12:26 AM.")
    assert late.action == policy.END_NIGHT and late.final_state == "failed" and "after the deadline" in late.reason
    unknown = decide(base.USAGE_LIMIT, "... to purchase more credits or try again later.")
    assert unknown.action == policy.END_NIGHT and "no reset time" in unknown.reason


def test_reset_times_are_read_like_codex_writes_them():
    assert policy.usage_reset_time("try again at 1:57 AM.", NOW) == dt.datetime(2026, 11, 30, 1, 57, tzinfo=TZ)
    assert policy.usage_reset_time("try again at 11:15 PM.", NOW) == dt.datetime(2026, 11, 29, 23, 15, tzinfo=TZ)
    assert policy.usage_reset_time("try again at Sep 11th, 2027 12:26 AM.", NOW) == \
        dt.datetime(2027, 9, 11, 0, 26, tzinfo=TZ)
    assert policy.usage_reset_time("try again later.", NOW) is None


def test_rate_limits_and_server_errors_back_off_harder_each_time():
    assert decide(base.RATE_LIMITED).wait == 60
    assert decide(base.SERVER_ERROR, history=[base.RATE_LIMITED]).wait == 120
    assert decide(base.RATE_LIMITED, history=[base.SERVER_ERROR] * 6).wait == 300


def test_a_stall_resumes_at_once_but_within_the_hourly_budget():
    decision = decide(base.STALLED, history=[base.STALLED, base.CRASHED])
    assert (decision.action, decision.wait) == (policy.RESUME, 0.0)
    assert "stalled: resuming at once" in decision.reason
    starts = [10_000.0 - 3000 + i * 10 for i in range(5)]
    assert decide(base.STALLED, starts=starts).wait == pytest.approx(starts[0] + 3600 - 10_000.0)


def test_a_crash_loop_pauses_when_the_hourly_budget_is_spent():
    starts = [10_000.0 - 3000 + i * 10 for i in range(5)]  # five attempts in the last hour
    decision = decide(base.CRASHED, starts=starts)
    assert decision.action == policy.RESUME
    assert decision.wait == pytest.approx(starts[0] + 3600 - 10_000.0)
    assert "restart budget spent" in decision.reason
    assert decide(base.CRASHED, starts=starts[1:]).wait == 2


def test_the_token_budget_ends_the_night():
    budgets = policy.Budgets(**{**BUDGETS.__dict__, "max_tokens": 1000})
    assert decide(base.COMPLETED, tokens=999, budgets=budgets).action == policy.RESUME
    spent = decide(base.COMPLETED, tokens=1000, budgets=budgets)
    assert spent.action == policy.END_NIGHT and spent.final_state == "finished"


def test_tokens_are_counted_once_per_thread_because_codex_reports_them_cumulatively():
    class A:
        def __init__(self, n, thread, i, o):
            self.number, self.thread_id, self.usage = n, thread, {"input_tokens": i, "output_tokens": o}
    attempts = [A(1, "t1", 200, 40), A(2, "t1", 400, 80), A(3, "t1", 500, 100), A(4, "t2", 100, 10)]
    assert policy.tokens_used(attempts) == 600 + 110

"""Hang detection on evidence and typed outcomes.

Scripted histories through a fake clock for every decision; real processes for each hang kind.
"""
import datetime as dt
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from overnight_agent import policy
from overnight_agent.agents import base
from overnight_agent.liveness import SOURCES, Limits, Liveness, sample_every

import helpers

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


# --- real processes: each kind of hang, and what must not count as one --------------------------------

AGENT = Path(__file__).with_name("hang_agent.py")


def command_night(night, kind, beats=3, limit="1.5s", hours=None):
    helpers.write_config(night.config, night.base,
                         liveness={"model_silent": limit, "command_silent": limit, "sample_interval": "0.2s"},
                         stop={"sigint_grace": "0.5s", "sigterm_grace": "0.5s"})
    text = night.config.read_text()
    night.config.write_text(text + f"agent: command\ncommand:\n  argv: [{sys.executable}, {AGENT}, {kind}, '{beats}']\n")
    return night.start("--hours", str(hours or 1))


def first_attempt_ended(night, timeout=15):
    return helpers.wait_session(night.base, lambda s: s["attempts"] and s["attempts"][0].get("outcome"),
                                timeout=timeout, what="first attempt over")


@pytest.mark.parametrize("kind", ["sleep", "busy", "sigstop", "ignore_term", "setsid_child"])
def test_each_kind_of_hang_is_stopped_after_the_limit_and_restarted(night, kind):
    proc = command_night(night, kind)
    try:
        session = first_attempt_ended(night)
        helpers.wait_session(night.base, lambda s: len(s["attempts"]) >= 2, what="restart after the stall")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc)
    assert code == 0, err[-2000:]
    first = session["attempts"][0]
    assert first["outcome"] == "stalled", first
    assert "no evidence of life" in first["detail"] and "limit 1.5s" in first["detail"], first["detail"]
    # Declared once the last evidence is 1.5 s old. The heartbeat (dated by the file's mtime) may
    # be older by up to a CPU sample window or two: the window that holds the last beat also
    # holds the agent's own CPU (a spinning agent's first window is half work, half spin).
    age = float(re.search(r"heartbeat (\d+\.\d)s ago", first["detail"]).group(1))
    assert 1.5 <= age <= 2.2, first["detail"]
    assert [e for e in session["events"] if e["event"] == "stall"]


def supervisor_events(night, name):
    session = night.session()
    path = night.run_root / "runs" / session["run_id"] / "supervisor.log"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == name]


def stamp(event) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_a_silent_agent_is_stopped_and_its_thread_resumed_within_the_limit_plus_two_seconds(night):
    """The field case: an agent that announces its thread, then prints nothing, burns no CPU and
    holds no socket, with both stall limits at 3 s and everything else at its default (samples
    every 5 s, stop graces of 10 s, a 2 s backoff): stopped and the same thread resumed within
    the limit plus 2 s of its last sign of life."""
    helpers.write_config(night.config, night.base, liveness={"model_silent": "3s", "command_silent": "3s"},
                         stop={"sigint_grace": "10s", "sigterm_grace": "10s"},
                         restart={"backoff_initial": "2s", "backoff_max": "5m", "healthy_after": "10m"})
    night.scenario([{"ignore_sigterm": True}, {"hang": True}], [{"hang": True}])
    proc = night.start("--hours", "1")
    try:
        session = helpers.wait_session(night.base, lambda s: len(s["attempts"]) >= 2, timeout=20,
                                       what="the resumed attempt")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc)
    assert code == 0, err[-2000:]
    first, second = session["attempts"][:2]
    assert first["outcome"] == "stalled" and "limit 3s" in first["detail"], first
    assert (second["kind"], second["thread_id"]) == ("resume", first["thread_id"])
    announced = stamp(supervisor_events(night, "thread.started")[0])
    resumed = stamp(supervisor_events(night, "attempt.started")[1])
    assert 3.0 <= resumed - announced <= 3.0 + 2.0, resumed - announced


def test_a_quiet_but_busy_command_is_not_a_hang(night):
    proc = command_night(night, "quiet_busy_command", beats=1)
    try:
        session = first_attempt_ended(night, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    assert session["attempts"][0]["outcome"] == "completed", session["attempts"][0]


def test_network_down_is_given_a_bounded_wait(night):
    helpers.write_config(night.config, night.base, liveness={"network_down_limit": "1.5s", "sample_interval": "0.2s"})
    night.scenario([{"network_down": 0.3}], [{"hang": True}])
    proc = night.start("--hours", "1")
    try:
        session = first_attempt_ended(night)
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    first = session["attempts"][0]
    assert first["outcome"] == "network_down" and "waiting for the network" in first["detail"]


def test_a_usage_limit_without_a_reset_time_ends_the_night_and_says_so(night):
    night.scenario([{"usage_limit": None}])
    code, _, err = helpers.finish(night.start("--hours", "1"))
    assert code == 0, err[-2000:]
    session = night.session()
    assert session["state"] == "failed"
    assert session["attempts"][-1]["outcome"] == "usage_limit"
    assert "no reset time" in session["events"][-1]["reason"]


def test_the_token_budget_ends_a_night_of_turns_that_end_at_once(night):
    helpers.write_config(night.config, night.base, budget={"max_tokens": 1000})
    night.scenario([{"usage": {"input": 300, "output": 50}}])
    code, _, err = helpers.finish(night.start("--hours", "1"), timeout=40)
    assert code == 0, err[-2000:]
    session = night.session()
    assert session["state"] == "finished" and "token budget spent" in session["events"][-1]["reason"]
    assert len(session["attempts"]) == 3  # 350, 700, 1050 cumulative on one thread


def test_a_crash_loop_is_capped_and_the_pause_is_visible(night):
    helpers.write_config(night.config, night.base, restart={"max_per_hour": 3, "backoff_initial": "0.1s"})
    night.scenario([{"crash": 1}])
    proc = night.start("--hours", "1")
    try:
        session = helpers.wait_session(night.base, lambda s: any(e["event"] == "pause" for e in s["events"]),
                                       what="the pause")
        time.sleep(1.0)
        assert len(helpers.read_session(night.base)["attempts"]) == 3  # no tight loop
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    pause = [e for e in session["events"] if e["event"] == "pause"][0]
    assert "restart budget spent" in pause["reason"] and pause["seconds"] > 3000


def test_sd_notify_ready_watchdog_status_stopping(night, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    night.scenario([{"hang": True}])
    proc = night.start("--hours", "1", env_extra={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "600000"})
    messages = []
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end and sum("WATCHDOG=1" in m for m in messages) < 4:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc)
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                break
    finally:
        sock.close()
    assert code == 0, err[-2000:]
    assert any(m.startswith("READY=1") for m in messages)
    assert sum("WATCHDOG=1" in m for m in messages) >= 4
    status = [m for m in messages if m.startswith("STATUS=running")]
    assert status and "deadline in" in status[-1] and "last evidence" in status[-1]
    assert "STOPPING=1" in messages

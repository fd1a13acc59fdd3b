"""Hang detection with real processes: each kind of hang, and what must not count as one (the
pure rules are in tests/unit/test_liveness_rules.py)."""
import datetime as dt
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

import helpers


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

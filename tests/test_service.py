"""Running under a service manager, without one: the journal's native protocol, sd_notify,
`run --detach`, and announcing a failed night. Real sockets, processes and files; no systemd
needed (tests/test_systemd.py runs the same code under a real manager).
"""
import array
import datetime as dt
import json
import os
import signal
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import structlog
import structlog.testing
import yaml

from overnight_agent import alerts, config, journald, logs, notify, service

import helpers

OA = str(Path(sys.executable).parent / "overnight-agent")


def decode(payload: bytes) -> list:
    """The journal's native format back into (name, value) pairs."""
    fields, pos = [], 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        line = payload[pos:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            pos = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", payload[end + 1:end + 9])
            value = payload[end + 9:end + 9 + size]
            assert payload[end + 9 + size:end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields.append((name.decode(), value.decode()))
    return fields


@pytest.fixture
def journal_socket(tmp_path):
    path = str(tmp_path / "journal.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


# --- journald -----------------------------------------------------------------------------------

def test_events_become_native_journal_fields():
    fields = journald.fields_for({"event": "attempt.started", "level": "info", "timestamp": "t",
                                  "run_id": "20260101_190000", "attempt": 2, "thread_id": None,
                                  "usage": {"input": 5}, "healthy": True, "weird key-1": "x"})
    assert fields == [
        ("MESSAGE", 'attempt.started run_id=20260101_190000 attempt=2 usage={"input": 5} healthy=true '
                    "weird key-1=x"),
        ("PRIORITY", "6"), ("SYSLOG_IDENTIFIER", "overnight-agent"),
        ("OVERNIGHT_EVENT", "attempt.started"), ("OVERNIGHT_RUN_ID", "20260101_190000"),
        ("OVERNIGHT_ATTEMPT", "2"), ("OVERNIGHT_USAGE", '{"input": 5}'),
        ("OVERNIGHT_HEALTHY", "true"), ("OVERNIGHT_WEIRD_KEY_1", "x")]
    assert dict(journald.fields_for({"event": "x", "level": "error"}))["PRIORITY"] == "3"
    assert dict(journald.fields_for({"event": "x", "level": "warning"}))["PRIORITY"] == "4"


def test_the_native_protocol_frames_multiline_values_by_length():
    payload = journald.encode([("MESSAGE", "one line"), ("OVERNIGHT_DETAIL", "two\nlines=")])
    assert payload == (b"MESSAGE=one line\nOVERNIGHT_DETAIL\n" + struct.pack("<Q", 10) + b"two\nlines=\n")
    assert decode(payload) == [("MESSAGE", "one line"), ("OVERNIGHT_DETAIL", "two\nlines=")]
    with pytest.raises(ValueError):
        journald.encode([("_PID", "1")])  # trusted fields are the journal's to set


def test_the_sink_sends_one_datagram_and_drops_the_event_from_stderr(journal_socket):
    path, sock = journal_socket
    sink = journald.JournalSink(path)
    with pytest.raises(structlog.DropEvent):
        sink(None, "info", {"event": "night.created", "level": "info", "run_id": "r1"})
    fields = dict(decode(sock.recv(65536)))
    assert fields["OVERNIGHT_EVENT"] == "night.created" and fields["OVERNIGHT_RUN_ID"] == "r1"
    sink.close()


def test_an_entry_too_big_for_a_datagram_goes_in_a_sealed_memfd(journal_socket):
    path, sock = journal_socket
    sink = journald.JournalSink(path)
    big = "x" * (16 * 1024 * 1024)
    with pytest.raises(structlog.DropEvent):
        sink(None, "info", {"event": "big", "level": "info", "blob": big})
    fds = array.array("i")
    msg, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
    assert msg == b"" and ancillary
    fds.frombytes(ancillary[0][2][:fds.itemsize])
    with os.fdopen(fds[0], "rb") as handle:
        handle.seek(0)  # the descriptor shares our write offset; journald maps it from 0
        fields = dict(decode(handle.read()))
    assert fields["OVERNIGHT_BLOB"] == big and fields["OVERNIGHT_EVENT"] == "big"


def test_without_the_journal_the_event_goes_on_to_stderr(tmp_path):
    sink = journald.JournalSink(str(tmp_path / "no-such.socket"))
    event = {"event": "x", "level": "info"}
    assert sink(None, "info", event) is event


def test_the_journal_is_used_only_when_journal_stream_names_our_stream(tmp_path):
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        assert journald.stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journald.stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journald.stream_is_journal(stream, {})
        assert journald.processors_for(stream, {}) == []


def test_logs_configure_wires_the_journal_under_systemd(tmp_path, journal_socket, monkeypatch):
    path, sock = journal_socket
    monkeypatch.setattr(journald, "SOCKET_PATH", path)
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            logs.configure(stream)
            logs.get(run_id="r2").info("attempt.started", attempt=1)
        finally:
            monkeypatch.delenv("JOURNAL_STREAM")
            logs.configure()
    fields = dict(decode(sock.recv(65536)))
    assert (fields["OVERNIGHT_EVENT"], fields["OVERNIGHT_RUN_ID"], fields["OVERNIGHT_ATTEMPT"]) == \
        ("attempt.started", "r2", "1")
    assert (tmp_path / "stderr").read_text() == ""  # not twice


# --- sd_notify --------------------------------------------------------------------------------------

def notify_socket(tmp_path):
    path = str(tmp_path / "notify.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return path, sock


def drain(sock) -> list:
    got = []
    sock.settimeout(0.5)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except socket.timeout:
        return got


def test_ready_is_sent_once_and_before_stopping(tmp_path, monkeypatch):
    path, sock = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # sdnotify reads it from the process environment
    notifier = notify.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval == 1.0
    notifier.ready("running attempt 2")
    notifier.ready("running attempt 3")
    notifier.stopping()
    assert drain(sock) == ["READY=1\nSTATUS=running attempt 2", "STOPPING=1"]
    early = notify.Notifier({"NOTIFY_SOCKET": path})
    early.stopping()  # a night that ends before its loop ran: READY first, or 'protocol'
    assert drain(sock) == ["READY=1\nSTATUS=stopping before the night started", "STOPPING=1"]
    sock.close()


def outside_window_config(tmp_path):
    now = time.localtime()
    return helpers.write_config(tmp_path / "c.yaml", tmp_path, schedule={
        "window_start": f"{(now.tm_hour + 2) % 24:02d}:00", "deadline": f"{(now.tm_hour + 3) % 24:02d}:00"})


def test_a_timer_start_outside_the_night_window_exits_cleanly_and_says_when(tmp_path):
    path, sock = notify_socket(tmp_path)
    repo = helpers.make_repo(tmp_path / "repo")
    cfg = outside_window_config(tmp_path)
    proc = helpers.run_cli("run", "--repo", str(repo), "--config", str(cfg),
                           env_extra={"NOTIFY_SOCKET": path, "TRIGGER_UNIT": "overnight-agent.timer"})
    assert proc.returncode == 0 and "outside the night window" in proc.stderr
    ready, stopping = drain(sock)
    assert ready.startswith("READY=1\nSTATUS=outside the night window (") and "the next one opens at" in ready
    assert stopping == "STOPPING=1"
    assert helpers.read_session(tmp_path) is None  # no night was made
    sock.close()


def test_a_start_by_hand_under_systemd_runs_even_outside_the_night_window(tmp_path):
    """The field case: `systemctl --user start` by day. systemd sets no TRIGGER_UNIT, so the
    night runs now, to the configured deadline, and says READY once it is set up."""
    path, sock = notify_socket(tmp_path)
    repo = helpers.make_repo(tmp_path / "repo")
    cfg = outside_window_config(tmp_path)
    helpers.write_scenario(tmp_path, [[{"message": "working"}, {"hang": True}]])
    mark = uuid.uuid4().hex
    proc = helpers.start_run(repo, cfg, mark, env_extra={"NOTIFY_SOCKET": path})
    try:
        session = helpers.wait_session(tmp_path, lambda s: s["state"] == "running", what="the night running")
        sent = drain(sock)
        ready = [i for i, m in enumerate(sent) if m.startswith("READY=1")]
        assert len(ready) == 1 and sent[ready[0]].startswith("READY=1\nSTATUS=backoff attempt 0"), sent
        assert any(m.startswith("STATUS=running attempt 1") for m in sent[ready[0]:]), sent
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc)
        sock.close()
    assert code == 0, err[-2000:]
    deadline = dt.datetime.fromisoformat(session["deadline"])
    assert deadline.strftime("%H:%M") == yaml.safe_load(cfg.read_text())["schedule"]["deadline"]
    assert 2 * 3600 - 60 < (deadline - dt.datetime.now(deadline.tzinfo)).total_seconds() <= 3 * 3600
    helpers.assert_no_agent_processes(mark, helpers.tag_prefix(tmp_path / "run"))


def test_the_service_manager_is_recognised():
    assert service.manager({"OVERNIGHT_AGENT_SERVICE_MANAGER": "systemd"}) == "systemd"
    assert service.manager({"NOTIFY_SOCKET": "/run/x"}) == "systemd"
    assert service.manager({"XPC_SERVICE_NAME": "overnight-agent"}) == "launchd"
    assert service.manager({"XPC_SERVICE_NAME": "0"}) is None
    assert service.manager({}) is None


# --- run --detach ----------------------------------------------------------------------------------

def test_detach_is_refused_under_a_service_manager(night):
    for env in ({"NOTIFY_SOCKET": "/run/nowhere"}, {"OVERNIGHT_AGENT_SERVICE_MANAGER": "launchd"}):
        proc = helpers.run_cli("run", "--detach", "--repo", str(night.repo), "--config", str(night.config),
                               "--hours", "1", mark=night.mark, env_extra=env)
        assert proc.returncode == 2 and "--detach: refused under" in proc.stderr, proc.stderr
    assert night.session() is None


def test_run_detach_leaves_a_daemon_holding_the_lock_with_its_log_open(night):
    night.scenario([{"message": "working"}, {"hang": True}])
    started = time.monotonic()
    proc = helpers.run_cli("run", "--detach", "--repo", str(night.repo), "--config", str(night.config),
                           "--hours", "1", mark=night.mark)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    log_path = night.run_root / "overnight-agent.log"
    assert f"its log: {log_path}" in proc.stderr
    session = helpers.wait_session(night.base, lambda s: s["thread_id"], what="the detached night's thread")
    daemon_pid = session["supervisor_pid"]
    lock_file = night.run_root / "overnight-agent.lock"
    assert int(lock_file.read_text()) == daemon_pid  # our lock is the pidfile
    daemon = psutil.Process(daemon_pid)
    assert os.getsid(daemon_pid) != os.getsid(0) and os.getsid(daemon_pid) != daemon_pid  # detached twice
    assert daemon.ppid() != os.getpid()
    status = Path(f"/proc/{daemon_pid}/status").read_text()
    assert "Umask:\t0022" in status
    assert daemon.cwd() == str(night.repo)
    fds = {os.readlink(f"/proc/{daemon_pid}/fd/{n}") for n in (0, 1, 2)}
    assert fds == {"/dev/null", str(log_path)}
    # A second one is refused in the terminal, naming the daemon.
    again = helpers.run_cli("run", "--detach", "--repo", str(night.repo), "--config", str(night.config),
                            "--hours", "1", mark=night.mark)
    assert again.returncode == 75 and f"pid {daemon_pid}" in again.stderr
    os.kill(daemon_pid, signal.SIGTERM)
    helpers.wait_for(lambda: not psutil.pid_exists(daemon_pid), timeout=15, what="the daemon to exit")
    assert night.session()["state"] == "stopped"
    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert "night.created" in events and "night.stopped" in events


# --- announcing a failed night ------------------------------------------------------------------------

def hook(tmp_path: Path, exit_code: int = 0, sleep: float = 0) -> tuple:
    calls = tmp_path / "hook_calls.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys, time\n"
        f"time.sleep({sleep})\n"
        f"open({str(calls)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], 'env': "
        "{k: v for k, v in os.environ.items() if k.startswith('OVERNIGHT_AGENT_')}}) + '\\n')\n"
        f"sys.exit({exit_code})\n")
    return [sys.executable, str(script)], calls


def calls_of(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_night_that_cannot_start_announces_itself_without_systemd(night, tmp_path):
    argv, calls = hook(tmp_path)
    cfg = helpers.write_config(night.config, night.base, repo={"base_branch": "gone"},
                               notify={"command": argv})
    proc = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(cfg), "--hours", "1",
                           mark=night.mark)
    assert proc.returncode == 78 and "repo.base_branch: 'gone'" in proc.stderr
    (call,) = calls_of(calls)
    report, run_id, final = call["argv"]
    assert (run_id, final) == ("-", "none")
    assert call["env"]["OVERNIGHT_AGENT_REASON"].startswith("exit 78: ")
    assert call["env"]["OVERNIGHT_AGENT_REPORT"] == report == str(night.run_root / "failure_report.md")
    assert "repo.base_branch" in Path(report).read_text()
    # Under systemd the unit's OnFailure= announces instead: once, after systemd gives up.
    proc = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(cfg), "--hours", "1",
                           mark=night.mark, env_extra={"OVERNIGHT_AGENT_SERVICE_MANAGER": "systemd"})
    assert proc.returncode == 78 and len(calls_of(calls)) == 1
    # Under launchd (no RestartPreventExitStatus) it exits 0 so KeepAlive does not retry all night.
    proc = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(cfg), "--hours", "1",
                           mark=night.mark, env_extra={"OVERNIGHT_AGENT_SERVICE_MANAGER": "launchd"})
    assert proc.returncode == 0 and "repo.base_branch" in proc.stderr and "exiting 0, not 78" in proc.stderr
    assert len(calls_of(calls)) == 2


def live_session(night, state_name: str = "running"):
    """A night's session.json as a supervisor killed mid-attempt left it."""
    night.scenario([{"message": "working"}, {"hang": True}])
    proc = night.start("--hours", "1")
    session = helpers.wait_session(night.base, lambda s: s["thread_id"], what="thread")
    proc.kill()
    proc.wait()
    for child in helpers.processes_marked(night.mark, helpers.tag_prefix(night.run_root)):
        child.kill()  # what systemd's KillMode=control-group does after the supervisor died
    assert session["state"] == state_name
    return session


def test_notify_failure_marks_the_night_failed_and_runs_the_command(night, tmp_path):
    session = live_session(night)
    argv, calls = hook(tmp_path)
    helpers.write_config(night.config, night.base, notify={"command": argv})
    proc = helpers.run_cli("notify-failure", "--repo", str(night.repo), "--config", str(night.config),
                           "--unit", "overnight-agent.service", mark=night.mark,
                           env_extra={"MONITOR_SERVICE_RESULT": "watchdog", "MONITOR_EXIT_CODE": "killed",
                                      "MONITOR_EXIT_STATUS": "ABRT"})
    assert proc.returncode == 0, proc.stderr
    after = night.session()
    assert after["state"] == "failed" and after["events"][-1]["event"] == "night.failed"
    assert after["events"][-1]["was"] == "running"
    (call,) = calls_of(calls)
    run_dir = night.run_root / "runs" / session["run_id"]
    # The announcement points at the morning report, brought up to date; the failure report says why.
    assert call["argv"] == [str(run_dir / "report.md"), session["run_id"], "failed"]
    assert (run_dir / "report.html").is_file() and session["run_id"] in (run_dir / "report.md").read_text()
    assert call["env"]["OVERNIGHT_AGENT_FAILURE_REPORT"] == str(run_dir / "failure_report.md")
    assert call["env"]["OVERNIGHT_AGENT_UNIT"] == "overnight-agent.service"
    reason = call["env"]["OVERNIGHT_AGENT_REASON"]
    assert reason.startswith("systemd gave up on overnight-agent.service: result watchdog, main process killed ABRT")
    text = (run_dir / "failure_report.md").read_text()
    assert session["run_id"] in text and reason in text and "journalctl --user -u overnight-agent.service" in text
    assert f"morning report: {run_dir / 'report.md'}" in text
    assert "## The last" in text and "attempt.started" in text


def test_notify_failure_leaves_a_night_a_supervisor_still_holds(night, tmp_path):
    night.scenario([{"message": "working"}, {"hang": True}])
    argv, calls = hook(tmp_path)
    helpers.write_config(night.config, night.base, notify={"command": argv})
    proc = night.start("--hours", "1")
    try:
        helpers.wait_session(night.base, lambda s: s["thread_id"], what="thread")
        out = helpers.run_cli("notify-failure", "--repo", str(night.repo), "--config", str(night.config),
                              mark=night.mark)
        assert out.returncode == 0 and "night.failed_unmarked" in out.stderr
        assert night.session()["state"] == "running"
        assert calls_of(calls)[0]["argv"][2] == "running"
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)


def test_a_notify_command_that_fails_or_hangs_is_reported(night, tmp_path):
    for exit_code, sleep, expected in ((3, 0, "exit_code=3"), (0, 5, "timed out after 0.5s")):
        argv, _ = hook(tmp_path, exit_code=exit_code, sleep=sleep)
        cfg = helpers.write_config(night.config, night.base, notify={"command": argv, "timeout": "500ms"})
        loaded = config.load(cfg, night.repo)
        with structlog.testing.capture_logs() as captured:
            code = alerts.announce(loaded, None, alerts.Failure(reason="test"))
        assert code == 1
        (event,) = [e for e in captured if e["event"] == "notify.failed"]
        assert expected in " ".join(f"{k}={v}" for k, v in event.items())
    unset = config.load(helpers.write_config(night.config, night.base, notify={"command": None}), night.repo)
    with structlog.testing.capture_logs() as captured:
        assert alerts.announce(unset, None, alerts.Failure(reason="test")) == 0
    assert [e["event"] for e in captured] == ["notify.skipped"]

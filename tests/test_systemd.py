"""The units under a real `systemd --user` manager (tests/systemd_lab.py), installed by
`overnight-agent install` itself, running the scripted codex.

Each test starts its own manager and journald and tears them down; each proves that no process
of the night is left. Test drop-ins shorten systemd's own timers (WatchdogSec=2s,
RestartSec=0.5s) and add the test's mark to the environment (for the leftover check).
"""
import datetime as dt
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

import helpers
from systemd_lab import Lab

OA = str(Path(sys.executable).parent / "overnight-agent")
SERVICE, TIMER = "overnight-agent.service", "overnight-agent.timer"
HANG = [{"message": "working"}, {"hang": True}]


@dataclass
class Rig:
    lab: Lab
    base: Path
    repo: Path
    config: Path
    mark: str
    install_output: str

    @property
    def run_root(self) -> Path:
        return self.base / "run"

    def session(self):
        return helpers.read_session(self.base)

    def start(self) -> None:
        self.lab.systemctl("start", "--no-block", SERVICE)

    def stop_and_prove_nothing_is_left(self) -> None:
        self.lab.systemctl("stop", SERVICE, timeout=60)
        assert self.lab.unit_pids(SERVICE) == []
        helpers.assert_no_agent_processes(self.mark, helpers.tag_prefix(self.run_root))


def window_around_now() -> dict:
    """A night window holding now and 19:00: from an hour ago to a minute before that."""
    now = dt.datetime.now()
    start, end = now - dt.timedelta(minutes=60), now - dt.timedelta(minutes=61)
    if end.strftime("%H:%M") == "19:00" or start.strftime("%H:%M") == "19:01":
        start, end = start - dt.timedelta(minutes=2), end - dt.timedelta(minutes=2)
    return {"window_start": start.strftime("%H:%M"), "deadline": end.strftime("%H:%M")}


def window_away_from_now() -> dict:
    """A night window (and a timer time inside it) that opens two hours from now."""
    now = dt.datetime.now()
    return {"window_start": (now + dt.timedelta(hours=2)).strftime("%H:%M"),
            "deadline": (now + dt.timedelta(hours=3)).strftime("%H:%M"),
            "at": (now + dt.timedelta(hours=2, minutes=10)).strftime("%H:%M")}


def make_rig(lab: Lab, base: Path, scenario, at=None, **config) -> Rig:
    repo = helpers.make_repo(base / "repo")
    schedule = {**window_around_now(), **config.pop("schedule", {})}
    cfg = helpers.write_config(base / "overnight.yaml", base, schedule=schedule, **config)
    helpers.write_scenario(base, scenario)
    mark = uuid.uuid4().hex
    out = lab.run([OA, "install", "--systemd", "--repo", str(repo), "--config", str(cfg),
                   *(["--at", at] if at else [])]).stdout
    lab.drop_in(SERVICE, "test", f"""\
        [Service]
        WatchdogSec=2s
        RestartSec=0.5s
        Environment={helpers.TEST_MARK}={mark}
        """)
    lab.systemctl("daemon-reload")
    return Rig(lab=lab, base=base, repo=repo, config=cfg, mark=mark, install_output=out)


def journal_entries(lab: Lab, *matches: str) -> list:
    out = lab.journal("--user-unit", "overnight-agent", "-o", "json", *matches)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_install_enables_the_timer_with_its_next_start_at_19_00_and_uninstall_removes_it(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [HANG])
    out = rig.install_output
    for name in (SERVICE, TIMER, "overnight-agent-failed.service"):
        assert f"written     {lab.unit_dir / name}" in out
    assert f"ran         systemctl --user enable --now {TIMER}" in out
    timers = lab.systemctl("list-timers", "--all", TIMER).stdout
    assert TIMER in timers and "19:00:00" in timers, timers
    shown = lab.show(TIMER, "NextElapseUSecRealtime", "ActiveState", "UnitFileState")
    assert shown["ActiveState"] == "active" and shown["UnitFileState"] == "enabled"
    assert shown["NextElapseUSecRealtime"].split()[2] == "19:00:00", shown
    # What install wrote is what systemd loaded, with nothing to warn about.
    verify = lab.run(["systemd-analyze", "--user", "verify", *(str(lab.unit_dir / n) for n in
                      (SERVICE, TIMER, "overnight-agent-failed.service"))], check=False)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    exec_start = lab.show(SERVICE, "ExecStart")["ExecStart"]
    assert f"path={OA} ;" in exec_start and f"--repo {rig.repo} --config {rig.config}" in exec_start
    # doctor sees the same setup (the key, for the login check, from the units' environment file).
    key_file = lab.xdg / "config" / "overnight-agent" / "environment"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("OPENAI_API_KEY=sk-test-not-a-key\n")
    doctor = lab.run([OA, "doctor", "--systemd", "--repo", str(rig.repo), "--config", str(rig.config)],
                     check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for line in ("ok    timer enabled", "ok    unit installed", "ok    codex login", "ok    next start"):
        assert line in doctor.stdout, doctor.stdout
    # Installing again changes nothing; uninstall removes it all.
    again = lab.run([OA, "install", "--systemd", "--repo", str(rig.repo), "--config", str(rig.config)])
    assert f"unchanged   {lab.unit_dir / SERVICE}" in again.stdout
    gone = lab.run([OA, "uninstall", "--systemd"]).stdout
    assert f"removed     {lab.unit_dir / SERVICE}" in gone
    # Only what install wrote: the test's own drop-in is the operator's business.
    assert [p.name for p in lab.unit_dir.glob("overnight-agent*")] == [f"{SERVICE}.d"]
    assert lab.show(TIMER, "LoadState")["LoadState"] == "not-found"
    assert lab.run([OA, "doctor", "--systemd", "--repo", str(rig.repo), "--config", str(rig.config)],
                   check=False).returncode == 78


def test_a_timer_set_seconds_ahead_starts_the_night(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [HANG])
    fire = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    lab.drop_in(TIMER, "test", f"""\
        [Timer]
        OnCalendar=
        OnCalendar=*-*-* {fire:%H:%M:%S} UTC
        AccuracySec=1us
        """)
    lab.systemctl("daemon-reload")
    lab.systemctl("restart", TIMER)
    assert lab.show(SERVICE, "ActiveState")["ActiveState"] == "inactive"
    lab.wait_state(SERVICE, "active", timeout=15)
    assert dt.datetime.now(dt.timezone.utc) >= fire.replace(microsecond=0)
    assert lab.show(TIMER, "LastTriggerUSec")["LastTriggerUSec"] not in ("", "n/a")
    session = helpers.wait_session(rig.base, lambda s: s["attempts"], what="the first attempt")
    assert session["state"] == "running"
    rig.stop_and_prove_nothing_is_left()
    assert rig.session()["state"] == "stopped"


def test_the_unit_stays_activating_until_ready(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [HANG])
    # Setup blocked before the first attempt (a fault point): no READY=1, so no `active`.
    lab.drop_in(SERVICE, "fault", "[Service]\nEnvironment=OVERNIGHT_AGENT_FAULTS=setup.between_worktrees:1:hang\n")
    lab.systemctl("daemon-reload")
    rig.start()
    helpers.wait_session(rig.base, lambda s: True, what="session.json")
    end = time.monotonic() + 2.5  # > WatchdogSec: the watchdog is armed by READY, not before
    while time.monotonic() < end:
        shown = lab.show(SERVICE, "ActiveState", "SubState")
        assert (shown["ActiveState"], shown["SubState"]) == ("activating", "start"), shown
        time.sleep(0.1)
    assert rig.session()["attempts"] == []
    rig.stop_and_prove_nothing_is_left()
    # Without the fault the same unit turns active once the first attempt started, with a STATUS=.
    (lab.unit_dir / f"{SERVICE}.d" / "fault.conf").unlink()
    lab.systemctl("daemon-reload")
    rig.start()
    lab.wait_state(SERVICE, "active")
    # The same night, resumed; its first attempt (READY=1 comes as the loop starts, just before it)
    session = helpers.wait_session(rig.base, lambda s: s["attempts"], what="the first attempt")
    assert session["restarts"] == 1 and [a["kind"] for a in session["attempts"]] == ["start"]
    status = helpers.wait_for(lambda: lab.show(SERVICE, "StatusText")["StatusText"].startswith(
        "running attempt 1"), what="STATUS= of the first attempt")
    assert status
    rig.stop_and_prove_nothing_is_left()


def test_a_start_by_hand_outside_the_night_window_becomes_active_and_stays_so(lab, tmp_path):
    """The field case: `systemctl --user start` by day, with a night window that opens later.
    The unit becomes active (running) once set up, with a STATUS=, keeps pinging its watchdog,
    and stops cleanly; the night runs to the configured deadline."""
    window = window_away_from_now()
    at = window.pop("at")
    rig = make_rig(lab, tmp_path, [HANG], at=at, schedule=window)
    rig.start()
    lab.wait_state(SERVICE, "active")
    helpers.wait_for(lambda: lab.show(SERVICE, "StatusText")["StatusText"].startswith("running attempt 1"),
                     what="STATUS= of the first attempt")
    shown = lab.show(SERVICE, "SubState", "MainPID", "NRestarts")
    pid = shown["MainPID"]
    assert shown["SubState"] == "running" and pid != "0", shown
    session = rig.session()
    assert session["state"] == "running" and session["supervisor_pid"] == int(pid)
    assert dt.datetime.fromisoformat(session["deadline"]).strftime("%H:%M") == window["deadline"]
    time.sleep(3)  # 1.5 WatchdogSec: the pings keep it alive
    shown = lab.show(SERVICE, "ActiveState", "MainPID", "NRestarts")
    assert shown == {"ActiveState": "active", "MainPID": pid, "NRestarts": "0"}, shown
    rig.stop_and_prove_nothing_is_left()
    assert lab.show(SERVICE, "Result")["Result"] == "success"
    assert rig.session()["state"] == "stopped"


def test_a_timer_start_outside_the_night_window_exits_cleanly_and_says_when(lab, tmp_path):
    """A timer catching up by day (Persistent=true after a night the machine was off): a clean
    exit that says when the next window opens; no night is made."""
    window = window_away_from_now()
    at = window.pop("at")
    rig = make_rig(lab, tmp_path, [HANG], at=at, schedule=window)
    fire = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    lab.drop_in(TIMER, "test", f"[Timer]\nOnCalendar=\nOnCalendar=*-*-* {fire:%H:%M:%S} UTC\nAccuracySec=1us\n")
    lab.systemctl("daemon-reload")
    lab.systemctl("restart", TIMER)
    helpers.wait_for(lambda: lab.show(SERVICE, "ExecMainExitTimestamp")["ExecMainExitTimestamp"]
                     not in ("", "n/a"), timeout=15, what="the started night exiting")
    lab.wait_state(SERVICE, "inactive", timeout=15)
    shown = lab.show(SERVICE, "Result", "ExecMainStatus", "StatusText", "NRestarts")
    assert shown["Result"] == "success" and shown["ExecMainStatus"] == "0", shown
    assert shown["StatusText"].startswith(f"outside the night window ({window['window_start']}-"), shown
    assert rig.session() is None
    helpers.assert_no_agent_processes(rig.mark, helpers.tag_prefix(rig.run_root))


def test_a_blocked_main_loop_is_killed_by_the_watchdog_and_the_restart_resumes_the_thread(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [HANG, HANG])
    lab.drop_in(SERVICE, "fault", "[Service]\nEnvironment=OVERNIGHT_AGENT_FAULTS=loop.tick:12:hang\n")
    lab.systemctl("daemon-reload")
    rig.start()
    lab.wait_state(SERVICE, "active")
    first_pid = int(lab.show(SERVICE, "MainPID")["MainPID"])
    # The fault is for the first supervisor only: systemd reads the environment at each start.
    (lab.unit_dir / f"{SERVICE}.d" / "fault.conf").unlink()
    lab.systemctl("daemon-reload")
    lab.wait_state(SERVICE, "1", prop="NRestarts", timeout=20)
    lab.wait_state(SERVICE, "active")
    assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
    log = lab.journal("--user-unit", SERVICE, "-o", "cat")
    assert "Watchdog timeout (limit 2s)!" in log and f"Killing process {first_pid}" in log
    session = helpers.wait_session(rig.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                                   what="the resumed attempt")
    assert session["restarts"] == 1
    first, second = session["attempts"]
    assert (first["kind"], first["outcome"]) == ("start", "supervisor_lost")
    assert (second["kind"], second["thread_id"]) == ("resume", session["thread_id"])
    # One thread in codex's own store: the one the first supervisor started, now resumed.
    rollouts = list((rig.run_root / "codex_home" / "sessions").rglob("rollout-*.jsonl"))
    assert len(rollouts) == 1 and rollouts[0].name.endswith(f"-{session['thread_id']}.jsonl")
    assert int(lab.show(SERVICE, "MainPID")["MainPID"]) == session["supervisor_pid"] != first_pid
    rig.stop_and_prove_nothing_is_left()


def test_stop_leaves_no_process_not_even_a_setsid_grandchild(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [[{"spawn_setsid_grandchild": 300}, {"hang": True}]])
    rig.start()
    lab.wait_state(SERVICE, "active")
    main_pid = int(lab.show(SERVICE, "MainPID")["MainPID"])

    def grandchild():
        for pid in lab.unit_pids(SERVICE):
            try:
                proc = psutil.Process(pid)
                if proc.name() == "sleep" and os.getsid(pid) == pid:
                    return proc
            except (psutil.Error, OSError):
                pass
    orphan = helpers.wait_for(grandchild, what="the setsid grandchild in the unit's cgroup")
    assert main_pid not in [p.pid for p in orphan.parents()]  # double-forked away from us
    pids = lab.unit_pids(SERVICE)
    assert len(pids) >= 3  # supervisor, codex, the grandchild
    rig.stop_and_prove_nothing_is_left()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)
    shown = lab.show(SERVICE, "Result", "ExecMainStatus", "ActiveState")
    assert shown == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, shown
    assert rig.session()["state"] == "stopped"
    assert lab.show("overnight-agent-failed.service", "ActiveState")["ActiveState"] == "inactive"


def test_the_journal_holds_our_events_with_their_fields(lab, tmp_path):
    rig = make_rig(lab, tmp_path, [HANG])
    rig.start()
    session = helpers.wait_session(rig.base, lambda s: s["thread_id"], what="the thread id")
    run_id, thread = session["run_id"], session["thread_id"]
    entries = helpers.wait_for(
        lambda: [e for e in journal_entries(lab, f"OVERNIGHT_RUN_ID={run_id}")
                 if e.get("OVERNIGHT_EVENT") == "thread.started"] and journal_entries(
                     lab, f"OVERNIGHT_RUN_ID={run_id}"), what="thread.started in the journal")
    events = [e["OVERNIGHT_EVENT"] for e in entries]
    for name in ("night.created", "worktree.ready", "attempt.started", "thread.started"):
        assert name in events, events
    assert all(e["OVERNIGHT_RUN_ID"] == run_id and e["_SYSTEMD_USER_UNIT"] == SERVICE
               and e["SYSLOG_IDENTIFIER"] == "overnight-agent" and e["_TRANSPORT"] == "journal"
               for e in entries)
    started = next(e for e in entries if e["OVERNIGHT_EVENT"] == "attempt.started")
    assert (started["OVERNIGHT_ATTEMPT"], started["OVERNIGHT_KIND"], started["PRIORITY"]) == ("1", "start", "6")
    assert started["MESSAGE"].startswith("attempt.started run_id=" + run_id)
    threaded = next(e for e in entries if e["OVERNIGHT_EVENT"] == "thread.started")
    assert threaded["OVERNIGHT_THREAD_ID"] == thread
    # Each event is in the journal once: natively, not a second time as a stderr line.
    stderr_lines = [e for e in journal_entries(lab, "_TRANSPORT=stdout") if "thread.started" in e.get("MESSAGE", "")]
    assert stderr_lines == []
    # The same filter finds nothing for another night.
    assert journal_entries(lab, "OVERNIGHT_RUN_ID=19700101_000000") == []
    rig.stop_and_prove_nothing_is_left()


def test_a_night_that_cannot_start_is_not_restarted_and_is_announced(lab, tmp_path):
    hook = tmp_path / "hook.sh"
    calls = tmp_path / "calls.txt"
    hook.write_text(f'#!/bin/sh\necho "$@|$OVERNIGHT_AGENT_REASON|$OVERNIGHT_AGENT_UNIT" >> {calls}\n')
    hook.chmod(0o755)
    rig = make_rig(lab, tmp_path, [HANG], repo={"base_branch": "no-such-branch"},
                   notify={"command": [str(hook)]})
    rig.start()
    lab.wait_state(SERVICE, "failed")
    shown = lab.show(SERVICE, "Result", "ExecMainStatus", "NRestarts")
    assert shown == {"Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, shown
    line = helpers.wait_for(lambda: calls.exists() and calls.read_text().strip(), what="the notify hook")
    args, reason, unit = line.split("|")
    report, run_id, final_state = args.split(" ")
    assert (run_id, final_state, unit) == ("-", "none", SERVICE)
    assert "result exit-code" in reason and "78" in reason
    text = Path(report).read_text()
    assert "failed" in text and "result exit-code" in text
    lab.wait_state("overnight-agent-failed.service", "inactive")
    assert lab.show("overnight-agent-failed.service", "Result")["Result"] == "success"
    helpers.assert_no_agent_processes(rig.mark, helpers.tag_prefix(rig.run_root))


def test_the_watchdog_pings_survive_a_manager_reexec(lab, tmp_path):
    """`systemctl --user daemon-reexec` (a systemd upgrade) binds a new notify socket: pings sent
    on a socket connected to the old one would be lost and the watchdog would kill the night."""
    rig = make_rig(lab, tmp_path, [HANG])
    rig.start()
    lab.wait_state(SERVICE, "active")
    pid = lab.show(SERVICE, "MainPID")["MainPID"]
    lab.systemctl("daemon-reexec")
    time.sleep(3)  # 1.5 WatchdogSec
    shown = lab.show(SERVICE, "ActiveState", "MainPID", "NRestarts")
    assert shown == {"ActiveState": "active", "MainPID": pid, "NRestarts": "0"}, shown
    rig.stop_and_prove_nothing_is_left()


def test_two_repositories_run_as_instances_of_the_template_units(lab, tmp_path):
    nights = []
    for name in ("alpha", "beta two"):
        base = tmp_path / name
        repo = helpers.make_repo(base / "repo")
        helpers.write_scenario(base, [HANG])
        if name == "alpha":  # a config file of its own: --config, in the instance's drop-in
            cfg = helpers.write_config(base / "overnight.yaml", base, schedule=window_around_now())
            config_args = ["--config", str(cfg)]
        else:  # the repository's own config file, found at each start
            cfg = helpers.write_config(repo / ".overnight-agent.yaml", base, schedule=window_around_now())
            config_args = []
        out = lab.run([OA, "install", "--systemd", "--instance", "--repo", str(repo), *config_args])
        names = units_of(repo)
        assert f"enable --now {names['timer']}" in out.stdout
        nights.append((base, repo, cfg, names))
    timers = lab.systemctl("list-timers", "--all", "overnight-agent@*").stdout
    assert timers.count("19:00:00") == 2 and all(n["timer"] in timers for *_, n in nights), timers
    mark = uuid.uuid4().hex
    for base, repo, cfg, names in nights:
        lab.drop_in(names["service"], "test", f"[Service]\nEnvironment={helpers.TEST_MARK}={mark}\n")
    lab.systemctl("daemon-reload")
    lab.systemctl("start", *(n["service"] for *_, n in nights))  # returns once both are READY
    pids = {}
    for base, repo, cfg, names in nights:
        pids[names["service"]] = lab.unit_pids(names["service"])
        assert len(pids[names["service"]]) >= 2  # each its own supervisor and codex
        shown = lab.show(names["service"], "ActiveState", "ExecStart")
        assert shown["ActiveState"] == "active"
        if base.name == "alpha":  # %f, and the drop-in's --config
            assert f"--repo {repo} --config {cfg} ;" in shown["ExecStart"]
        else:
            assert f"--repo {repo} ;" in shown["ExecStart"]
        assert helpers.read_session(base)["repo_root"] == str(repo)
    lab.run([OA, "uninstall", "--systemd", "--instance", "--repo", str(nights[0][1])])
    assert (lab.unit_dir / "overnight-agent@.service").exists()  # still used by the other one
    assert lab.show(nights[0][3]["service"], "ActiveState")["ActiveState"] == "inactive"
    assert lab.show(nights[1][3]["service"], "ActiveState")["ActiveState"] == "active"
    lab.run([OA, "uninstall", "--systemd", "--instance", "--repo", str(nights[1][1])])
    assert not (lab.unit_dir / "overnight-agent@.service").exists()
    for base, repo, cfg, names in nights:
        assert lab.unit_pids(names["service"]) == []
        assert not any(psutil.pid_exists(p) for p in pids[names["service"]])
        helpers.assert_no_agent_processes(mark, helpers.tag_prefix(base / "run"))
        assert helpers.read_session(base)["state"] == "stopped"


def units_of(repo: Path) -> dict:
    from overnight_agent import units
    return units.instance_units(units.escape_path(str(repo)))

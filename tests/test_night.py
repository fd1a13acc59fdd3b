"""`overnight-agent run` end to end with the scripted codex: real git, processes and signals."""
import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import psutil

import helpers
from helpers import git, wait_session

HANG = [{"message": "working"}, {"hang": True}]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def attempts(session):
    return [(a["kind"], a["outcome"]) for a in session["attempts"]]


def rollout_turns(codex_home: Path):
    """turn_context records the fake codex wrote: what each exec/resume really ran with."""
    turns = []
    for path in sorted((codex_home / "sessions").rglob("rollout-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["type"] == "turn_context":
                turns.append(record["payload"])
    return turns


def test_a_short_night_commits_resumes_and_finishes(night):
    night.scenario(
        [{"shell": "git switch -q -c overnight/2026-01-01_0000_demo && echo one > one.txt && "
                   "git add one.txt && git commit -qm 'feat: one'"},
         {"crash": 1}],
        [{"message": "resumed"}, {"write_file": {"path": "wip.txt", "text": "unfinished\n"}}, {"hang": True}],
    )
    before = helpers.primary_fingerprint(night.repo)
    proc = night.start("--hours", str(9 / 3600))   # room for a loaded machine: the crash comes first
    code, out, err = helpers.finish(proc, timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished"
    assert attempts(session) == [("start", "crashed"), ("resume", "stopped")]
    thread = session["thread_id"]
    assert thread and all(a["thread_id"] == thread for a in session["attempts"])
    # The work is on overnight/* branches; the deadline saved the uncommitted file as a checkpoint.
    assert git(night.repo, "log", "-1", "--format=%s", "overnight/2026-01-01_0000_demo").startswith("checkpoint:")
    assert "feat: one" in git(night.repo, "log", "--format=%s", "overnight/2026-01-01_0000_demo")
    assert git(night.repo, "show", "overnight/2026-01-01_0000_demo:wip.txt") == "unfinished"
    assert helpers.primary_fingerprint(night.repo) == before
    # Every exec and resume ran with the pinned model, effort and workspace-write sandbox.
    turns = rollout_turns(night.run_root / "codex_home")
    assert len(turns) == 2
    for turn in turns:
        assert turn["model"] == "gpt-5.3-codex"
        assert turn["reasoning_effort"] == "xhigh"
        assert turn["sandbox_mode"] == "workspace-write"
        assert any(root.endswith("/objects") for root in turn["writable_roots"])
    run_dir = night.run_root / "runs" / session["run_id"]
    assert "attempt 1 (start" in (run_dir / "codex_start.log").read_text()
    resume_log = (run_dir / "codex_resume.log").read_text()
    assert f"attempt 2 (resume of {thread}" in resume_log and '"thread.started"' in resume_log
    events = [json.loads(line)["event"] for line in (run_dir / "supervisor.log").read_text().splitlines()]
    for name in ("night.created", "attempt.started", "thread.started", "attempt.ended", "stop.begin",
                 "checkpoint.committed", "night.finished"):
        assert name in events


def test_a_second_run_is_refused_with_the_holders_pid(night):
    night.scenario(HANG)
    first = night.start("--hours", "1")
    try:
        wait_session(night.base, lambda s: s["state"] == "running", what="first run running")
        second = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(night.config),
                                 "--hours", "1", mark=night.mark)
        assert second.returncode == 75
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0], second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(first)
    assert code == 0, err
    assert night.session()["state"] == "stopped"


def test_sigterm_stops_codex_and_everything_it_started(night):
    night.scenario([{"spawn_setsid_grandchild": 300}, {"ignore_sigterm": True}, {"hang": True}])
    proc = night.start("--hours", "1")
    prefix = helpers.tag_prefix(night.run_root)
    helpers.wait_for(lambda: len(helpers.processes_marked(None, prefix)) >= 2, what="codex and grandchild")
    sessions = {p.pid: os.getsid(p.pid) for p in helpers.processes_marked(None, prefix)}
    assert len(set(sessions.values())) >= 2, "the grandchild should have its own session"
    proc.send_signal(signal.SIGTERM)
    code, _, err = helpers.finish(proc)
    assert code == 0, err
    assert helpers.processes_marked(None, prefix) == []
    session = night.session()
    assert session["state"] == "stopped"
    assert attempts(session) == [("start", "stopped")]


def test_sigkill_mid_turn_then_restart_resumes_the_same_thread(night):
    night.scenario(HANG)
    first = night.start("--hours", "1")
    session = wait_session(night.base, lambda s: s.get("thread_id") and s["state"] == "running",
                           what="thread started")
    thread = session["thread_id"]
    old_codex = psutil.Process(session["attempts"][0]["pid"])
    os.killpg(first.pid, signal.SIGKILL)  # the supervisor only: codex has its own session
    helpers.finish(first)
    assert alive(old_codex), "codex outlives a SIGKILLed supervisor"
    second = night.start("--hours", "1")
    try:
        resumed = wait_session(night.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                               what="resumed attempt")
        assert not alive(old_codex), "the old codex must be stopped before a new one starts"
        assert resumed["restarts"] == 1
        assert resumed["thread_id"] == thread
        assert resumed["attempts"][0]["outcome"] == "supervisor_lost"
        assert resumed["attempts"][1]["kind"] == "resume"
        wait_session(night.base, lambda s: s["attempts"][1].get("thread_id") == thread,
                     what="resumed thread announced")
    finally:
        second.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(second)
    assert code == 0, err
    final = night.session()
    assert final["attempts"][1]["outcome"] == "stopped"  # not thread_busy: the old writer was gone


def _kill_then_restart(night, fault: str):
    night.scenario(HANG)
    first = night.start("--hours", "1", env_extra={"OVERNIGHT_AGENT_FAULTS": fault})
    code, _, err = helpers.finish(first)
    assert code == -signal.SIGKILL, f"the fault {fault} was not reached: {err[-2000:]}"
    before = night.session()
    second = night.start("--hours", "1")
    try:
        after = wait_session(night.base, lambda s: s["state"] == "running" and s.get("thread_id")
                             and s["restarts"] == 1, what="running again")
    finally:
        second.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(second)
    assert code == 0, err
    return before, after


def test_sigkill_during_setup_reuses_the_same_run_and_worktrees(night):
    before, after = _kill_then_restart(night, "setup.between_worktrees")
    assert before["run_id"] == after["run_id"]
    worktrees = git(night.repo, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 3  # primary, session, ops journal: nothing doubled
    assert Path(after["session_worktree"]).is_dir()


def test_a_night_killed_during_setup_and_restarted_past_its_deadline_is_closed_with_its_report(night):
    """Found by the chaos suite: killed between the two worktrees, restarted after the deadline,
    the old night was marked finished but had no ops-journal worktree, so no report at all."""
    night.scenario(HANG)
    first = night.start("--hours", str(2 / 3600), env_extra={"OVERNIGHT_AGENT_FAULTS": "setup.between_worktrees"})
    code, _, err = helpers.finish(first)
    assert code == -signal.SIGKILL, err[-2000:]
    old = night.session()
    assert not Path(old["ops_journal_worktree"]).exists()
    time.sleep(max(0.0, dt.datetime.fromisoformat(old["deadline"]).timestamp() - time.time()) + 0.2)
    second = night.start("--hours", str(2 / 3600))
    code, _, err = helpers.finish(second)
    assert code == 0, err[-2000:]
    closed = json.loads((night.run_root / "runs" / old["run_id"] / "session.json").read_text())
    assert closed["state"] == "finished"
    committed = git(night.repo, "ls-tree", "-r", "--name-only", "overnight/ops-journal")
    assert f"{old['run_id']}_report.md" in committed


def test_sigkill_right_after_spawn_recovers_the_thread_from_the_session_store(night):
    before, after = _kill_then_restart(night, "attempt.after_spawn")
    assert before["thread_id"] is None
    # The first codex announced a thread nobody saved; the restart found it and resumed it.
    assert after["attempts"][-1]["kind"] == "resume"
    rollouts = list((night.run_root / "codex_home" / "sessions").rglob("rollout-*.jsonl"))
    assert len(rollouts) == 1 and after["thread_id"] in rollouts[0].name


def test_sigkill_during_a_state_write_leaves_a_resumable_state(night):
    # Dying between the temp file and the rename of the write that records the thread id must
    # leave the previous write intact (never a torn file), and the restart must still find and
    # resume the thread.
    before, after = _kill_then_restart(night, "state.before_rename.thread")
    assert before is not None and before["state"] == "running" and before["thread_id"] is None
    assert before["run_id"] == after["run_id"]
    rollouts = list((night.run_root / "codex_home" / "sessions").rglob("rollout-*.jsonl"))
    assert len(rollouts) == 1 and after["thread_id"] in rollouts[0].name
    assert after["attempts"][-1]["kind"] == "resume"


def test_no_resume_and_a_past_deadline_start_fresh_and_archive_the_old_state(night):
    night.scenario([{"message": "quick"}])
    code, _, err = helpers.finish(night.start("--hours", str(2 / 3600)))
    assert code == 0, err
    first = night.session()
    assert first["state"] == "finished"
    time.sleep(1.1)  # run ids have one-second resolution
    # The deadline has passed: a new night starts.
    second_proc = night.start("--hours", str(2 / 3600))
    code, _, err = helpers.finish(second_proc)
    assert code == 0, err
    second = night.session()
    assert second["run_id"] != first["run_id"] and second["restarts"] == 0
    archived = night.run_root / "runs" / first["run_id"] / "session.json"
    assert json.loads(archived.read_text())["run_id"] == first["run_id"]
    # --no-resume starts fresh even before the deadline.
    time.sleep(1.1)
    night.scenario(HANG)
    live = night.start("--hours", "1")
    wait_session(night.base, lambda s: s["state"] == "running", what="live night")
    live.send_signal(signal.SIGTERM)
    helpers.finish(live)
    time.sleep(1.1)
    again = night.start("--hours", "1", "--no-resume")
    wait_session(night.base, lambda s: s["state"] == "running" and s["restarts"] == 0
                 and s["run_id"] != second["run_id"], what="fresh night")
    again.send_signal(signal.SIGTERM)
    helpers.finish(again)


def test_an_unreadable_session_json_is_a_clear_error_and_is_kept(night):
    state = night.run_root / "session.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"run_id": "x", "deadline": ')
    result = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(night.config),
                             "--hours", "1", mark=night.mark)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(state) in lines[0] and "not valid JSON" in lines[0]
    assert state.read_text() == '{"run_id": "x", "deadline": '


def test_a_start_outside_the_night_window_exits_zero_and_says_when(night):
    now = time.localtime()
    start = f"{(now.tm_hour + 2) % 24:02d}:{now.tm_min:02d}"
    end = f"{(now.tm_hour + 3) % 24:02d}:{now.tm_min:02d}"
    helpers.write_config(night.config, night.base, schedule={"window_start": start, "deadline": end})
    result = helpers.run_cli("run", "--repo", str(night.repo), "--config", str(night.config),
                             mark=night.mark)
    assert result.returncode == 0, result.stderr
    assert "outside the night window" in result.stderr and "next one opens at" in result.stderr
    assert night.session() is None


def test_a_thread_codex_no_longer_knows_falls_back_to_a_fresh_session(night):
    night.scenario(
        [{"shell": 'rm -f "$CODEX_HOME"/sessions/*/*/*/rollout-*.jsonl'}, {"crash": 1}],
        HANG,
    )
    proc = night.start("--hours", "1")
    try:
        session = wait_session(night.base, lambda s: s["fresh_starts"] == 1 and s["state"] == "running"
                               and s["thread_id"] and s["attempts"][-1].get("thread_id"),
                               what="fresh start after unknown thread")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    kinds = attempts(session)
    assert kinds[:2] == [("start", "crashed"), ("resume", "unknown_thread")]
    assert kinds[2][0] == "start"
    assert session["thread_id"] != session["attempts"][0]["thread_id"]
    assert any(e["event"] == "fresh_start" for e in session["events"])


def user_inputs(codex_home: Path):
    """The user messages the fake codex recorded in its rollout (prompts and queued messages)."""
    texts = []
    for path in sorted((codex_home / "sessions").rglob("rollout-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            payload = record.get("payload", {})
            if record["type"] == "response_item" and payload.get("role") == "user":
                texts.append(json.dumps(payload.get("content")))
    return texts


def test_the_wrap_up_notice_comes_with_the_next_turn_without_killing_the_current_one(night):
    helpers.write_config(night.config, night.base, schedule={"wrap_up": "1h"})  # wrap-up time is now
    night.scenario([{"sleep": 1.5}, {"exit_early": True}], HANG)
    proc = night.start("--hours", "1")
    try:
        wait_session(night.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                     what="second attempt")
        helpers.wait_for(lambda: any("Wrap-up time" in t for t in user_inputs(night.run_root / "codex_home")),
                         what="the notice in the resumed turn's input")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    session = night.session()
    assert session["wrap_up_sent"] is True
    assert [e for e in session["events"] if e["event"] == "prompt.wrap_up"]
    assert attempts(session)[0] == ("start", "completed")  # the turn was not interrupted
    log = (night.run_root / "runs" / session["run_id"] / "codex_resume.log").read_text()
    assert "attempt 2 (resume" in log and "prompt wrap_up" in log
    inputs = user_inputs(night.run_root / "codex_home")
    assert sum("Wrap-up time" in text for text in inputs) == 1, inputs  # once, in the prompt
    assert not (night.run_root / "codex_home" / "fake_queue.json").exists()  # codex's queue unused


def test_without_a_queue_the_first_resume_after_wrap_up_time_carries_the_wrap_up_prompt(night):
    helpers.write_config(night.config, night.base, schedule={"wrap_up": "1h"})
    night.config.write_text(night.config.read_text() + "agent: command\ncommand:\n  argv: [sh, -c, 'sleep 0.3']\n")
    proc = night.start("--hours", "1")
    try:
        wait_session(night.base, lambda s: len(s["attempts"]) >= 3, what="third attempt")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    session = night.session()
    log = (night.run_root / "runs" / session["run_id"] / "command_resume.log").read_text()
    assert "attempt 2 (resume, prompt wrap_up)" in log
    assert "attempt 3 (resume, prompt resume)" in log


def test_tell_reaches_the_agent_at_its_next_turn_and_is_recorded(night):
    night.scenario([{"sleep": 2}, {"exit_early": True}], HANG)
    proc = night.start("--hours", "1")
    try:
        wait_session(night.base, lambda s: s.get("thread_id") and s["state"] == "running", what="thread")
        told = helpers.run_cli("tell", "--repo", str(night.repo), "--config", str(night.config),
                               "Answer: keep the old API for now.", mark=night.mark)
        assert told.returncode == 0, told.stderr
        assert "arrives with the prompt of its next turn" in told.stdout
        wait_session(night.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                     what="the next turn")
        helpers.wait_for(lambda: any("keep the old API" in t for t in user_inputs(night.run_root / "codex_home")),
                         what="the told message in the next turn's input")
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    session = night.session()
    assert attempts(session)[0] == ("start", "completed")  # the running turn was not interrupted
    inputs = user_inputs(night.run_root / "codex_home")
    assert sum("keep the old API" in text for text in inputs) == 1, inputs
    assert session["messages_delivered"] == 1
    assert [e["attempt"] for e in session["events"] if e["event"] == "messages.delivered"] == [2]
    told_log = (night.run_root / "runs" / session["run_id"] / "told.jsonl").read_text()
    assert "keep the old API" in told_log
    assert "Operator told the agent: Answer: keep the old API" in Path(session["exec_summary_log"]).read_text()


def test_a_message_told_while_no_supervisor_runs_is_delivered_once_after_the_restart(night):
    night.scenario([{"message": "working"}, {"hang": True}], HANG, HANG)
    first = night.start("--hours", "1")
    wait_session(night.base, lambda s: s.get("thread_id") and s["state"] == "running", what="thread")
    os.killpg(first.pid, signal.SIGKILL)
    helpers.finish(first)
    told = helpers.run_cli("tell", "--repo", str(night.repo), "--config", str(night.config),
                           "Use the staging database.", mark=night.mark)
    assert told.returncode == 0, told.stderr
    running = [night.start("--hours", "1")]
    try:
        wait_session(night.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                     what="the resumed attempt")
        helpers.wait_for(lambda: any("staging database" in t for t in user_inputs(night.run_root / "codex_home")),
                         what="the message in the resumed turn")
        running[0].send_signal(signal.SIGTERM)
        assert helpers.finish(running.pop())[0] == 0
        running.append(night.start("--hours", "1"))
        wait_session(night.base, lambda s: len(s["attempts"]) == 3 and s["state"] == "running",
                     what="the next resumed attempt")
    finally:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
            helpers.finish(proc)
    inputs = user_inputs(night.run_root / "codex_home")
    assert sum("staging database" in text for text in inputs) == 1, inputs
    assert night.session()["messages_delivered"] == 1


def test_tell_refuses_a_command_agent_that_takes_no_prompt(night):
    night.config.write_text(night.config.read_text() + "agent: command\ncommand:\n  argv: [sleep, '30']\n")
    proc = night.start("--hours", "1")
    try:
        wait_session(night.base, lambda s: s["state"] == "running", what="running")
        told = helpers.run_cli("tell", "--repo", str(night.repo), "--config", str(night.config),
                               "hello", mark=night.mark)
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    assert told.returncode == 78 and "command.argv: has no {prompt}" in told.stderr, told.stderr


def test_run_root_inside_the_repo_is_excluded_without_touching_tracked_files(night):
    helpers.write_config(night.config, night.base, repo={"run_root": "tmp/overnight_agent"})
    night.scenario([{"message": "quick"}])
    before = helpers.primary_fingerprint(night.repo)
    code, _, err = helpers.finish(night.start("--hours", str(2 / 3600)))
    assert code == 0, err
    assert (night.repo / "tmp" / "overnight_agent" / "session.json").is_file()
    assert helpers.primary_fingerprint(night.repo) == before  # status included: tmp/ is invisible
    assert "/tmp/overnight_agent/" in (night.repo / ".git" / "info" / "exclude").read_text()
    helpers.assert_no_agent_processes(None, helpers.tag_prefix(night.repo / "tmp" / "overnight_agent"))


def test_two_nights_started_within_one_second_get_their_own_run(night):
    """Field defect: run ids were the start time to the second, so two nights of one repository
    started in the same second (two configs, each with its own run_root) shared a session
    branch and the second could not start."""
    other = night.base / "other"
    configs = [night.config, helpers.write_config(night.base / "other.yaml", other,
                                                  repo={"ops_journal_branch": "overnight/ops-journal-other"})]
    for base in (night.base, other):
        helpers.write_scenario(base, [[{"message": "working"}, {"hang": True}]])
    time.sleep(1.05 - time.time() % 1)  # both start early in the same second
    procs = [helpers.start_run(night.repo, cfg, night.mark, "--hours", "1") for cfg in configs]
    try:
        sessions = [wait_session(base, lambda s: s["state"] == "running", what="both nights running")
                    for base in (night.base, other)]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        results = [helpers.finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0, 0], [err[-1500:] for _, _, err in results]
    ids = [s["run_id"] for s in sessions]
    assert ids[0] != ids[1] and all(len(i) == len("20261206_190000_3fa9c1") for i in ids), ids
    assert sessions[0]["session_branch"] != sessions[1]["session_branch"]
    helpers.assert_no_agent_processes(night.mark, helpers.tag_prefix(other / "run"))

"""The bars of a night, passed by every agent: one matrix, three agents.

Each test runs a real night (real git, processes and signals) with the scripted stand-in of one
CLI: the Codex CLI (`overnight_agent.fakecodex`), Claude Code (`fakeclaude`) and the Gemini CLI
(`fakegemini`), each playing the same scenario in its own CLI's flags, events, session store and
resume rules. What is checked is the supervisor's promise, not the CLI's: restart safety (a
SIGKILLed supervisor's agent stopped, the same conversation resumed, never two processes on it),
a stall stopped and resumed, the guardrails, the journal and the report.
"""
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

import helpers
from helpers import git, wait_session

# agent -> (config section, its binary key, its home key, stand-in module, scenario file in its home)
AGENTS = {
    "codex": ("codex", "codex_bin", "codex_home", "overnight_agent.fakecodex", "fake_codex_scenario.yaml"),
    "claude": ("claude", "bin", "home", "overnight_agent.fakeclaude", "fake_claude_scenario.yaml"),
    "gemini": ("gemini", "bin", "home", "overnight_agent.fakegemini", "fake_gemini_scenario.yaml"),
}
SECRET = "AKIA" + "QWERTYUIOPASDFGH"   # AWS-shaped, split so this file holds none


class AgentNight:
    """A night of `agent` on a fresh repository, everything outside it under `base`."""

    def __init__(self, base: Path, agent: str):
        section, bin_key, home_key, module, scenario = AGENTS[agent]
        self.agent, self.base, self.mark = agent, base, uuid.uuid4().hex
        self.repo = helpers.make_repo(base / "repo")
        self.home = base / "run" / f"{agent}_home"
        self.scenario_file = self.home / scenario
        wrapper = base / "bin" / agent
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m {module} \"$@\"\n")
        wrapper.chmod(0o755)
        self.config = helpers.write_config(base / "overnight.yaml", base)
        self.configure(**{"agent": agent, section: {bin_key: str(wrapper), home_key: str(self.home)}})

    def configure(self, **sections) -> None:
        data = yaml.safe_load(self.config.read_text())
        for key, value in sections.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def scenario(self, *invocations) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        doc = {"invocations": [{"steps": steps} for steps in invocations]}
        self.scenario_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def start(self, *args):
        return helpers.start_run(self.repo, self.config, self.mark, *args)

    def session(self) -> dict:
        return helpers.read_session(self.base)


@pytest.fixture(params=sorted(AGENTS))
def agent_night(request, tmp_path):
    night = AgentNight(tmp_path, request.param)
    yield night
    helpers.assert_no_agent_processes(night.mark, helpers.tag_prefix(tmp_path / "run"))


def alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_killed_supervisor_is_restarted_resumes_the_same_conversation_and_reports(agent_night):
    night = agent_night
    tool = f"{sys.executable} -m overnight_agent"
    night.scenario(
        [{"shell": "git switch -q -c overnight/2026-01-01_0000_matrix && echo one > one.txt && "
                   "git add one.txt && git commit -qm 'feat: one'"},
         {"shell": f"{tool} journal summary 'first item committed on overnight/2026-01-01_0000_matrix'"},
         {"message": "working on the second item"}, {"hang": True}],
        [{"message": "resumed"}, {"write_file": {"path": "two.txt", "text": "second\n"}},
         {"shell": "git add two.txt && git commit -qm 'feat: two'"}, {"hang": True}],
    )
    before = helpers.primary_fingerprint(night.repo)
    first = night.start("--hours", str(16 / 3600))
    summary_file = night.base / "worktrees" / "ops" / "docs" / "meta" / "logs" / "ops" / "executive_summary.log"
    running = wait_session(night.base, lambda s: s.get("thread_id") and s["state"] == "running"
                           and summary_file.exists() and "first item committed" in summary_file.read_text(),
                           timeout=30, what="the first item committed and journaled")
    thread, old_pid = running["thread_id"], running["attempts"][0]["pid"]
    os.killpg(first.pid, signal.SIGKILL)           # the supervisor only: the agent has its own group
    helpers.finish(first)
    assert alive(old_pid), "the agent outlives a SIGKILLed supervisor"
    second = night.start("--hours", str(16 / 3600))
    resumed = wait_session(night.base, lambda s: len(s["attempts"]) == 2 and s["state"] == "running",
                           timeout=30, what="the resumed attempt")
    assert not alive(old_pid), "the old agent is stopped before a new one starts on its conversation"
    code, _, err = helpers.finish(second, timeout=60)
    assert code == 0, err[-3000:]
    session = night.session()
    assert session["state"] == "finished", session["state"]
    assert resumed["restarts"] == 1 and session["thread_id"] == thread
    assert [(a["kind"], a["thread_id"]) for a in session["attempts"]] == [("start", thread), ("resume", thread)]
    assert session["attempts"][0]["outcome"] == "supervisor_lost"
    assert session["attempts"][1]["outcome"] == "stopped"          # by the deadline
    branch = "overnight/2026-01-01_0000_matrix"
    assert git(night.repo, "log", "--format=%s", branch).splitlines()[:2] == ["feat: two", "feat: one"]
    assert helpers.primary_fingerprint(night.repo) == before
    # The journal: the agent's line and the supervisor's, committed on the ops-journal branch.
    summary = git(night.repo, "show", "overnight/ops-journal:docs/meta/logs/ops/executive_summary.log")
    assert "first item committed" in summary and session["run_id"] in summary
    # The report: written for this night and committed beside the journal.
    reports = git(night.repo, "ls-tree", "-r", "--name-only", "overnight/ops-journal").splitlines()
    assert any(session["run_id"] in name and name.endswith(".md") and "report" in name for name in reports), reports
    events = [json.loads(line)["event"] for line in
              (night.base / "run" / "runs" / session["run_id"] / "supervisor.log").read_text().splitlines()]
    assert events.count("night.resumed") == 1 and "night.finished" in events


def test_a_silent_agent_is_stopped_and_the_same_conversation_resumed(agent_night):
    night = agent_night
    night.configure(liveness={"model_silent": "3s", "command_silent": "3s"})
    night.scenario([{"message": "thinking"}, {"hang": True}], [{"message": "back"}, {"hang": True}])
    proc = night.start("--hours", "1")
    try:
        session = wait_session(night.base, lambda s: len(s["attempts"]) >= 2, timeout=40,
                               what="the resumed attempt")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc, timeout=40)
    assert code == 0, err[-3000:]
    first, second = session["attempts"][:2]
    assert first["outcome"] == "stalled", first
    assert (second["kind"], second["thread_id"]) == ("resume", first["thread_id"])
    assert first["thread_id"]


def test_the_guardrails_hold_whatever_the_agent(agent_night):
    night = agent_night
    main = git(night.repo, "rev-parse", "main")
    night.scenario(
        [{"shell": f"echo 'aws_access_key_id = {SECRET}' > creds.ini && git add creds.ini && "
                   "git commit -qm 'add creds'"},
         {"shell": "git reset -q --hard HEAD && git update-ref refs/heads/main HEAD"},
         {"shell": "git -c core.hooksPath=/dev/null branch -f main HEAD~0"},
         {"shell": "echo fine > ok.txt && git add ok.txt && git commit -qm 'feat: ok'"},
         {"hang": True}],
    )
    proc = night.start("--hours", str(7 / 3600))
    code, _, err = helpers.finish(proc, timeout=60)
    assert code == 0, err[-3000:]
    session = night.session()
    assert git(night.repo, "rev-parse", "main") == main, "main is restored or never moved"
    log = git(night.repo, "log", "--format=%s", session["session_branch"])
    assert "feat: ok" in log and "add creds" not in log
    for ref in git(night.repo, "for-each-ref", "--format=%(refname)").split():
        assert SECRET not in git(night.repo, "log", "-p", "--format=", ref), ref
    run_dir = night.base / "run" / "runs" / session["run_id"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

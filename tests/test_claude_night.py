"""`overnight-agent run` end to end with `agent: claude` and the scripted Claude Code stand-in:
the session id chosen up front, resumed by id with every flag repeated, leftovers swept.

Owns: the supervisor driving the claude backend for real (processes, git, signals). Must not:
need the real CLI (tests/test_claude_conformance.py checks the stand-in against it).
"""
import json
import os
import shlex
import sys
import uuid

import pytest
import yaml

import helpers

from overnight_agent.agents.claude import mangle


def _claude_night(night, invocations, **claude):
    """Turn the fixture's codex night into a claude night: a `claude` that runs the stand-in."""
    wrapper = night.base / "bin" / "claude"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m overnight_agent.fakeclaude \"$@\"\n")
    wrapper.chmod(0o755)
    home = night.base / "run" / "claude_home"
    data = yaml.safe_load(night.config.read_text())
    data["agent"] = "claude"
    data["claude"] = {"bin": str(wrapper), "home": str(home), "model": "claude-sonnet-4-5", "effort": "high",
                      **claude}
    night.config.write_text(yaml.safe_dump(data, sort_keys=False))
    home.mkdir(parents=True, exist_ok=True)
    (home / "fake_claude_scenario.yaml").write_text(yaml.safe_dump(
        {"invocations": [{"steps": steps} for steps in invocations]}, sort_keys=False))
    return home


def _prompts(transcript):
    """The user prompt records the stand-in wrote: what each start and resume ran with."""
    found = []
    for line in transcript.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "user" and isinstance(record["message"].get("content"), str):
            found.append(record)
    return found


def test_a_claude_night_names_its_session_resumes_it_and_finishes(night):
    home = _claude_night(night, [
        [{"message": "Working."},
         {"shell": "git switch -q -c overnight/2026-01-01_0000_claude && echo one > one.txt && "
                   "git add one.txt && git commit -qm 'feat: one'"},
         {"crash": 1}],
        [{"message": "resumed"}, {"spawn_setsid_grandchild": 300}, {"hang": True}],
    ])
    proc = night.start("--hours", str(9 / 3600))
    code, _out, err = helpers.finish(proc, timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished"
    assert [(a["kind"], a["outcome"]) for a in session["attempts"]] == [("start", "crashed"), ("resume", "stopped")]
    thread = session["thread_id"]
    assert str(uuid.UUID(thread)) == thread and all(a["thread_id"] == thread for a in session["attempts"])
    assert "feat: one" in helpers.git(night.repo, "log", "--format=%s", "overnight/2026-01-01_0000_claude")
    transcript = home / "projects" / mangle(session["session_worktree"]) / f"{thread}.jsonl"
    prompts = _prompts(transcript)
    assert [p["fakeClaude"]["resumed"] for p in prompts] == [False, True]
    assert all(p["permissionMode"] == "acceptEdits" and p["fakeClaude"]["effort"] == "high" for p in prompts)
    models = {json.loads(line)["message"]["model"] for line in transcript.read_text().splitlines()
              if json.loads(line).get("type") == "assistant"}
    assert models == {"claude-sonnet-4-5"}
    # The orphan the agent left in a session of its own was swept by its tag (the fixture
    # fails on any process left behind).
    helpers.assert_no_agent_processes(night.mark, helpers.tag_prefix(night.run_root))


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is of root (CI runs as root)")
def test_a_claude_night_refused_as_root_says_why(night):
    _claude_night(night, [[{"message": "never"}]], permission_mode="bypassPermissions")
    proc = night.start("--hours", str(4 / 3600))
    code, _, err = helpers.finish(proc, timeout=40)
    session = night.session()
    # Refused once is refused all night: the night ends failed at once, saying why.
    assert [(a["outcome"], a["detail"].split(":")[0]) for a in session["attempts"]] == [
        ("refused", "refused as root")], session["attempts"]
    assert "IS_SANDBOX" in session["attempts"][0]["detail"]
    assert session["state"] == "failed" and code == 0, (code, err[-2000:])   # a failed night is not a crash

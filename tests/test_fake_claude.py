"""The scripted Claude Code stand-in on its own: scenario lookup and errors, denials, usage limits,
resume from another cwd, crashes, orphans. (Its agreement with the real CLI is in
tests/test_claude_conformance.py.)

Owns: checks of `overnight_agent.fakeclaude` as a foreign binary. Must not: leave processes
behind (each run kills what carries its tag).
"""
import json
import uuid

import yaml

import realclaude
from overnight_agent.agents import base
from overnight_agent.agents.claude import ClaudeBackend

URL = "http://127.0.0.1:9"   # never contacted: the stand-in sends no request


def _place(tmp_path, steps, name="p", **settings):
    place = realclaude.make_place(tmp_path, name)
    (place.home / "fake_claude_scenario.yaml").write_text(yaml.safe_dump({"invocations": [
        {"steps": s} for s in steps]}))
    backend = place.backend(realclaude.FAKE_ARGV0, **settings)
    return place, backend, place.env(backend, URL)


def _outcome(backend, run, kind="start", expected=None):
    view = base.AttemptView(kind=kind, expected_thread=expected, returncode=run.returncode, stderr_tail=run.stderr)
    for line in run.stdout.splitlines():
        event = backend.claude.parse_line(line)
        if event is not None:
            view.observe(event)
    return backend.claude.classify(view)


def test_without_bash_allowed_commands_are_denied_silently(tmp_path):
    place, backend, env = _place(tmp_path, [[{"shell": "touch perm.txt"}, {"message": "after"}]],
                                 permission_mode="default", allowed_tools=["Read"])
    run = realclaude.run(backend.start("x", str(uuid.uuid4())), place, env)
    assert run.returncode == 0, run.describe()
    assert run.types == ["system/init", "assistant/tool_use", "system/permission_denied", "user/tool_result",
                         "assistant/text", "result"]   # as the real CLI's perm_none capture
    assert run.result()["is_error"] is False and run.result()["permission_denials"][0]["tool_name"] == "Bash"
    assert not (place.repo / "perm.txt").exists()
    outcome = _outcome(backend, run)
    assert outcome.kind == base.COMPLETED and "denied" in outcome.detail


def test_usage_limit_crash_and_failure_are_typed(tmp_path):
    place, backend, env = _place(tmp_path, [[{"usage_limit": 600}], [{"message": "hi"}, {"crash": 3}],
                                            [{"fail": "mock 529 overloaded", "retries": 2}]])
    sid = str(uuid.uuid4())
    limit = realclaude.run(backend.start("x", sid), place, env)
    assert limit.returncode == 1 and limit.result()["api_error_status"] == 429
    outcome = _outcome(backend, limit)
    assert outcome.kind == base.USAGE_LIMIT and "try again at" in outcome.detail
    crash = realclaude.run(backend.resume(sid, "x"), place, env)
    assert crash.returncode == 3 and crash.result() is None
    assert _outcome(backend, crash, "resume", sid).kind == base.CRASHED
    failed = realclaude.run(backend.resume(sid, "x"), place, env)
    assert failed.types.count("system/api_retry") == 2
    assert _outcome(backend, failed, "resume", sid).kind == base.SERVER_ERROR


def test_resume_from_another_cwd_appends_to_the_original_project(tmp_path):
    place, backend, env = _place(tmp_path, [[{"message": "one"}], [{"message": "two"}]])
    sid = str(uuid.uuid4())
    assert realclaude.run(backend.start("x", sid), place, env).returncode == 0
    other = place.repo / "sub"
    other.mkdir()
    place.repo, original = other, place.repo
    run = realclaude.run(backend.resume(sid, "y"), place, env)
    assert run.returncode == 0 and run.events[0]["cwd"] == str(other)
    files = list((place.home / "projects").rglob("*.jsonl"))
    assert files == [backend.claude.transcript_path(sid, original)]
    cwds = {json.loads(line).get("cwd") for line in files[0].read_text().splitlines()} - {None}
    assert cwds == {str(original), str(other)}


def test_the_scenario_comes_from_the_environment_and_a_bad_one_is_named(tmp_path):
    place, backend, env = _place(tmp_path, [[{"message": "from the config dir"}]])
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(yaml.safe_dump({"steps": [{"message": "from FAKE_CLAUDE_SCENARIO"}]}))
    run = realclaude.run(backend.start("x", str(uuid.uuid4())), place, dict(env, FAKE_CLAUDE_SCENARIO=str(explicit)))
    assert run.result()["result"] == "from FAKE_CLAUDE_SCENARIO"
    explicit.write_text(yaml.safe_dump({"steps": [{"message": "ok"}, {"dance": True}]}))
    bad = realclaude.run(backend.start("x", str(uuid.uuid4())), place, dict(env, FAKE_CLAUDE_SCENARIO=str(explicit)))
    assert bad.returncode == 1 and bad.stdout == "" and "steps[1]" in bad.stderr


def test_version_and_usage_errors(tmp_path):
    place, backend, env = _place(tmp_path, [[]])
    version = realclaude.run(realclaude.FAKE_ARGV0 + ["--version"], place, env)
    assert version.stdout.strip() == "2.1.328 (Claude Code)"
    missing = realclaude.run(realclaude.FAKE_ARGV0 + ["-p", "--output-format", "stream-json", "x"], place, env)
    assert missing.returncode == 1 and "requires --verbose" in missing.stderr
    unknown = realclaude.run(realclaude.FAKE_ARGV0 + ["-p", "--no-such-flag", "x"], place, env)
    assert unknown.returncode == 1 and "unknown option '--no-such-flag'" in unknown.stderr


def test_an_orphan_in_its_own_session_carries_the_tag(tmp_path):
    place, backend, env = _place(tmp_path, [[{"spawn_setsid_grandchild": 60}]])
    argv = backend.start("x", str(uuid.uuid4()))
    run = realclaude.run(argv, place, env)
    assert run.returncode == 0 and run.result()["result"].startswith("spawned ")
    assert len(run.leftovers) == 1 and "sleep 60" in run.leftovers[0]   # killed by run() afterwards
    assert realclaude.realcodex.processes_with_tag(place.tag) == []


def test_the_adapter_builds_argv_the_stand_in_accepts(tmp_path):
    b = ClaudeBackend(claude_bin="claude", config_dir=tmp_path, worktree=tmp_path, run_dir=tmp_path, model="m",
                      effort="max", allowed_tools=["Bash(git *)", "Edit"], extra_args=["--add-dir", str(tmp_path)])
    from overnight_agent.fakeclaude.cli import _tools, parse_args
    args = parse_args(b.start_argv("-x", str(uuid.uuid4()))[1:])
    assert args["prompt"] == "-x" and args["effort"] == "max" and args["add_dir"] == [str(tmp_path)]
    assert _tools(args["allowed_tools"]) == ["Bash(git *)", "Edit"]

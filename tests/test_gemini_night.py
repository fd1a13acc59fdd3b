"""A real night with `agent: gemini`, the scripted stand-in as the CLI: the supervisor names the
session before the first start (`--session-id`), resumes it by id after a crash, and at the
deadline stops the CLI and the command it left running in a session of its own.

Owns: the backend seen through the supervisor (real processes, real signals, real git). Must
not: leave a process behind (the `night` fixture asserts it).
"""
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
import realgemini  # noqa: E402


def test_a_gemini_night_names_resumes_and_stops_the_session_and_its_commands(night):
    binary = realgemini.fake_gemini_argv0(night.base / "bin")
    helpers.write_config(night.config, night.base, gemini={"bin": binary, "model": "gemini-2.5-pro"})
    config = yaml.safe_load(night.config.read_text())
    (night.base / "boot.md").write_text("Night $run_id: begin (gemini boot)\n")  # prompts.boot: any agent's
    night.config.write_text(yaml.safe_dump({**config, "agent": "gemini",
                                            "prompts": {"boot": str(night.base / "boot.md")}}, sort_keys=False))
    home = night.run_root / "gemini_home"
    home.mkdir(parents=True, exist_ok=True)
    scenario = {"invocations": [
        {"steps": [{"shell": "echo one > one.txt"}, {"crash": 3}]},
        {"steps": [{"message": "resumed"}, {"shell": "sleep 300"}]},
    ]}
    (home / "fake_gemini_scenario.yaml").write_text(yaml.safe_dump(scenario))
    # A lock an earlier night's CLI left: the first attempt would wait 13 s for it, past this
    # night's end, had the night not cleared it before starting.
    (home / ".gemini").mkdir(mode=0o700)
    (home / ".gemini" / "projects.json.lock").mkdir()
    proc = night.start("--hours", str(6 / 3600))
    code, out, err = helpers.finish(proc, timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished", session
    kinds = [(a["kind"], a["outcome"]) for a in session["attempts"]]
    assert kinds == [("start", "crashed"), ("resume", "stopped")], kinds
    thread = session["thread_id"]
    assert thread and all(a["thread_id"] == thread for a in session["attempts"])
    chats = list((home / ".gemini" / "tmp").glob(f"*/chats/session-*-{thread[:8]}*.jsonl"))
    assert chats and json.loads(chats[0].read_text().splitlines()[0])["sessionId"] == thread
    settings = json.loads((home / ".gemini" / "settings.json").read_text())
    assert settings["general"]["maxAttempts"] == 3
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert settings["general"]["sessionRetention"] == {"enabled": True, "maxAge": "30d"}
    run_dir = night.run_root / "runs" / session["run_id"]
    assert (run_dir / "tmp").is_dir()
    logs = "".join(p.read_text() for p in run_dir.glob("*_start.log")) + \
        "".join(p.read_text() for p in run_dir.glob("*_resume.log"))
    assert f'"session_id":"{thread}"' in logs
    assert f"Night {session['run_id']}: begin (gemini boot)" in logs


def _gemini_night(night, scenario):
    binary = realgemini.fake_gemini_argv0(night.base / "bin")
    helpers.write_config(night.config, night.base, gemini={"bin": binary, "model": "gemini-2.5-pro"})
    config = yaml.safe_load(night.config.read_text())
    night.config.write_text(yaml.safe_dump({**config, "agent": "gemini"}, sort_keys=False))
    home = night.run_root / "gemini_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "fake_gemini_scenario.yaml").write_text(yaml.safe_dump(scenario))
    return home


def test_a_registry_lock_the_cli_left_is_cleared_before_the_resume(night):
    """0.61.0 can exit with `.gemini/projects.json.lock` still taken; its next start would wait
    13 to 51 s for it with no output (the stand-in waits as it does). The supervisor removes it
    once the attempt's processes are gone, so the resume starts at once."""
    home = _gemini_night(night, {"invocations": [
        {"steps": [{"message": "one"}, {"leave_registry_lock": True}, {"crash": 3}]},
        {"steps": [{"message": "resumed"}, {"shell": "sleep 300"}]},
    ]})
    proc = night.start("--hours", str(8 / 3600))
    code, out, err = helpers.finish(proc, timeout=40)
    assert code == 0, err
    session = night.session()
    kinds = [(a["kind"], a["outcome"]) for a in session["attempts"]]
    assert kinds == [("start", "crashed"), ("resume", "stopped")], kinds
    run_dir = night.run_root / "runs" / session["run_id"]
    resumed = "".join(p.read_text() for p in run_dir.glob("*_resume.log"))
    assert '"content":"resumed"' in resumed, resumed  # it got past the lock before the deadline
    lock = home / ".gemini" / "projects.json.lock"
    events = [json.loads(line) for line in (run_dir / "supervisor.log").read_text().splitlines()
              if line.startswith("{")]
    removed = [e for e in events if e.get("event") == "agent.leftovers_removed"]
    assert removed and removed[0]["names"] == [str(lock)], removed
    assert not lock.exists()

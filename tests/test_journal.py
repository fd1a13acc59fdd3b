"""The ops journal: whole-line appends from racing processes, commits on its own branch, every
line redacted and a commit holding a secret refused."""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
import nightbuild
from helpers import git
from secretkit import AWS_ID, AWS_SECRET, ENV_VALUE, GITHUB, PEM

WRITER = """
import sys
from pathlib import Path
from overnight_agent.journal import append_line
path, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    append_line(path, f"{who} {i:05d} " + "x" * 5000)
"""


def test_concurrent_appends_from_several_processes_lose_no_line_and_tear_none(tmp_path):
    path = tmp_path / "executive_summary.log"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}", "150"])
               for n in range(6)]
    for proc in writers:
        assert proc.wait(timeout=60) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 6 * 150
    for line in lines:  # every line whole: its writer, its number, all 5000 x's
        who, number, tail = line.split(" ")
        assert who.startswith("w") and len(number) == 5 and tail == "x" * 5000
    for n in range(6):
        mine = [int(line.split(" ")[1]) for line in lines if line.startswith(f"w{n} ")]
        assert mine == list(range(150))


def test_a_writer_killed_mid_stream_leaves_only_whole_lines(tmp_path):
    path = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "k", "100000"])
    helpers.wait_for(lambda: path.exists() and path.stat().st_size > 200_000, what="some lines")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert all(line.endswith(b"x" * 5000) for line in data.splitlines())


def test_concurrent_summaries_are_all_committed_on_the_ops_journal_branch(night):
    night.scenario([{"hang": True}])
    proc = night.start("--hours", "1")
    try:
        session = helpers.wait_session(night.base, lambda s: s["state"] == "running", what="running")
        env = {"OVERNIGHT_AGENT_SESSION": str(night.run_root / "session.json")}
        procs = [subprocess.Popen([sys.executable, "-m", "overnight_agent", "journal", "summary", f"item {n}"],
                                  env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for n in range(6)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        helpers.finish(proc)
    log = Path(session["exec_summary_log"])
    rel = log.relative_to(session["ops_journal_worktree"])
    committed = git(night.repo, "show", f"overnight/ops-journal:{rel}")
    for n in range(6):
        line = next(line for line in committed.splitlines() if line.endswith(f" item {n}"))
        stamp, branch, sha, *_ = line.split(" ")
        assert stamp.endswith("Z") and branch == session["session_branch"]
        assert sha == git(night.repo, "rev-parse", "--short=12", session["session_branch"])
    assert git(night.repo, "status", "--porcelain") == ""


# --- the ops journal: every line redacted, a commit holding a secret refused ---------------------

@pytest.fixture
def journal_night(tmp_path):
    repo = helpers.make_repo(tmp_path / "repo")
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    session = nightbuild.new_night(tmp_path, repo, "20260101_010101", created, current=True,
                                   state_name="running")
    return session, tmp_path / "run" / "session.json"


def _journal(session_path, *args, stdin=None):
    env = helpers.supervisor_env("journal", OVERNIGHT_AGENT_SESSION=str(session_path),
                                 MY_SERVICE_TOKEN=ENV_VALUE)
    return subprocess.run([sys.executable, "-m", "overnight_agent", "journal", *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


def _events(session):
    lines = (Path(session.heartbeat_file).parent / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_journal_lines_are_redacted_before_they_are_written_or_committed(journal_night):
    session, session_path = journal_night
    ops = Path(session.ops_journal_worktree)
    done = _journal(session_path, "summary", f"Rotated nothing; saw {GITHUB} and {ENV_VALUE} in a log.")
    assert done.returncode == 0, done.stderr
    asked = _journal(session_path, "question", f"Is password=Hunter2-sailboat still used by {AWS_ID}?")
    assert asked.returncode == 0, asked.stderr
    planned = _journal(session_path, "strategy", "-", stdin=f"# Plan\n\nNever paste:\n{PEM}\nDone.\n")
    assert planned.returncode == 0, planned.stderr
    for out in (done, asked, planned):
        for secret in (GITHUB, ENV_VALUE, "Hunter2-sailboat", AWS_ID, "MIIE"):
            assert secret not in out.stdout + out.stderr
    history = helpers.git(ops, "log", "-p", "--format=%s", session.ops_journal_branch)
    files = "".join(p.read_text() for p in ops.rglob("*") if p.is_file() and ".git" not in p.parts)
    for text in (history, files):
        for secret in (GITHUB, ENV_VALUE, "Hunter2-sailboat", AWS_ID, "MIIE"):
            assert secret not in text
    summary = Path(session.exec_summary_log).read_text()
    assert "saw [REDACTED:github] and [REDACTED:env:MY_SERVICE_TOKEN] in a log." in summary
    assert "password=[REDACTED:password] still used by [REDACTED:aws_access_key_id]?" in files
    assert "[REDACTED:private_key]\nDone." in files
    redacted = [e for e in _events(session) if e["event"] == "journal.redacted"]
    assert [(e["what"], e["count"]) for e in redacted] == [("summary", 2), ("question", 2), ("strategy", 1)]
    assert redacted[0]["kinds"] == ["env:MY_SERVICE_TOKEN", "github"]


def test_a_journal_commit_holding_a_secret_is_refused_and_the_file_put_back(journal_night):
    session, session_path = journal_night
    ops = Path(session.ops_journal_worktree)
    assert _journal(session_path, "summary", "First line, clean.").returncode == 0
    log = Path(session.exec_summary_log)
    committed = log.read_text()
    head = helpers.git(ops, "rev-parse", "HEAD")
    # Something wrote a secret into the journal file behind the tool's back.
    with open(log, "a") as handle:
        handle.write(f"debug: export GITHUB_TOKEN={GITHUB}\n")
    refused = _journal(session_path, "summary", "Second line, clean too.")
    assert refused.returncode == 65, refused.stderr
    message = refused.stderr
    assert "refused" in message and "executive_summary.log" in message and "github" in message
    assert GITHUB not in message + refused.stdout
    assert log.read_text() == committed, "the file is put back as last committed"
    assert helpers.git(ops, "rev-parse", "HEAD") == head
    assert helpers.git(ops, "status", "--porcelain") == ""
    assert [e["files"] for e in _events(session) if e["event"] == "journal.refused"] == \
        [["docs/meta/logs/ops/executive_summary.log"]]
    # The next clean write goes through.
    assert _journal(session_path, "summary", "Third line.").returncode == 0
    assert helpers.git(ops, "rev-parse", "HEAD") != head


def test_a_new_journal_file_holding_a_secret_is_refused_and_removed(journal_night):
    from overnight_agent import journal
    from overnight_agent.exitcodes import SecretRefused
    session, _ = journal_night
    ops = Path(session.ops_journal_worktree)
    head = helpers.git(ops, "rev-parse", "HEAD")
    leak = Path(session.reports_dir) / "notes.md"
    leak.parent.mkdir(parents=True, exist_ok=True)
    leak.write_text(f"aws_secret_access_key = {AWS_SECRET}\n")
    with pytest.raises(SecretRefused) as caught:
        journal.commit(session, [leak], "ops: notes")
    assert caught.value.exit_code == 65 and AWS_SECRET not in str(caught.value)
    assert not leak.exists() and helpers.git(ops, "status", "--porcelain") == ""
    assert helpers.git(ops, "rev-parse", "HEAD") == head

"""The ops journal: whole-line appends from racing processes, and commits on its own branch."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import helpers
from helpers import git

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

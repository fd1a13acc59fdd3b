"""`overnight-agent demo`: a whole short night, as a person running `make demo` sees it."""
import json
import uuid

import helpers
from helpers import git


def test_the_demo_night_shows_worktrees_commits_a_crash_and_a_resume(tmp_path):
    mark = uuid.uuid4().hex
    result = helpers.run_cli("demo", "--dir", str(tmp_path), "--seconds", "12", mark=mark, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "is finished" in out and "Where everything is:" in out
    repo = tmp_path / "sample-repo"
    session = json.loads((tmp_path / "run" / "session.json").read_text())
    kinds = [(a["kind"], a["outcome"]) for a in session["attempts"]]
    assert kinds[0] == ("start", "crashed") and kinds[1][0] == "resume"
    assert len({a["thread_id"] for a in session["attempts"]}) == 1
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/overnight/").split()
    work = [b for b in branches if b.endswith(("_fix-docs-link", "_add-slugify-test"))]
    assert len(work) == 2 and all(b in out for b in work)
    assert "docs: fix broken link" in git(repo, "log", "--format=%s", work[0] if "docs" in work[0] else work[1])
    summary = (tmp_path / "worktrees" / "ops_journal" / "docs/meta/logs/ops/executive_summary.log").read_text()
    agent_lines = [line for line in summary.splitlines() if "[supervisor]" not in line]
    assert len(agent_lines) == 2 and "fix-docs-link" in agent_lines[0]
    assert "[supervisor] night started" in summary and "[supervisor] night finished: deadline" in summary
    run_dir = tmp_path / "run" / "runs" / session["run_id"]
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
    assert git(repo, "show", f"overnight/ops-journal:docs/meta/logs/ops/{session['run_id']}_report.md")
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    helpers.assert_no_agent_processes(mark, helpers.tag_prefix(tmp_path / "run"))

"""`overnight-agent status` while a night runs and after it, `overnight-agent gc`, and the size cap
of a night's logs: real supervisors, real git repositories and worktrees."""
import datetime as dt
import fcntl
import json
import signal
from pathlib import Path

import pytest

import helpers
import nightbuild
from helpers import git
from overnight_agent import capture, config, gc, night as night_mod, state, status


def test_status_of_a_live_night_without_the_lock_then_after_it(night, monkeypatch):
    tool = night_mod.tool_command()
    night.scenario([
        {"shell": f"{tool} branch status-check && echo two > two.txt && git add two.txt "
                  "&& git commit -qm 'feat: two'"},
        {"shell": f"{tool} journal summary 'Added two.txt on its own branch.'"},
        {"shell": f"{tool} journal question 'Keep two.txt or fold it into one.txt?'"},
        {"shell": f"{tool} heartbeat"},
        {"hang": True}])
    # A branch from an older night: dated two days back, it is not this night's work.
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    nightbuild.git_at(night.repo, old, "branch", "overnight/older-night-work", "main")
    nightbuild.git_at(night.repo, old, "switch", "-q", "overnight/older-night-work")
    nightbuild.commit_file(night.repo, old, "old.txt", "old\n", "feat: old work")
    nightbuild.git_at(night.repo, old, "switch", "-q", "main")

    proc = night.start("--hours", "1")
    try:
        session = helpers.wait_session(night.base, lambda s: s["state"] == "running", what="running")
        reports = Path(session["reports_dir"])
        helpers.wait_for(lambda: list(reports.glob("*_questions_for_operator.md"))
                         and Path(session["heartbeat_file"]).exists(), timeout=30, what="journal writes")

        # In-process: reading a live night never touches the lock, not even shared for a moment.
        def no_locking(*args, **kwargs):
            raise AssertionError("status took a lock")
        monkeypatch.setattr(fcntl, "flock", no_locking)
        monkeypatch.setattr(fcntl, "lockf", no_locking)
        view = status.collect(night.run_root / "session.json")
        monkeypatch.undo()
        assert view.supervisor_alive and view.live and view.session.state == "running"
        assert view.session.last_attempt().outcome is None
        assert 0 < view.time_left <= 3600
        assert view.evidence is not None and view.evidence.age_seconds < 60
        names = [b.name for b in view.branches]
        assert names[0] == view.session.session_branch
        work = [b for b in view.branches if b.name.endswith("_status-check")]
        assert len(work) == 1 and [c.subject for c in work[0].commits] == ["feat: two"]
        assert "overnight/older-night-work" not in names and "overnight/ops-journal" not in names
        assert [s.text for s in view.summaries if not s.text.startswith("[supervisor]")] == \
        ["Added two.txt on its own branch."]
        assert [q.text for q in view.open_questions] == ["Keep two.txt or fold it into one.txt?"]

        # The command, as an operator runs it while the night is live.
        out = helpers.run_cli("status", "--json", "--repo", str(night.repo), "--config", str(night.config),
                              mark=night.mark)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["live"] is True and data["supervisor_running"] is True
        assert data["state"] == "running" and data["time_left_seconds"] > 0
        assert data["last_evidence"]["source"] in ("heartbeat", "codex log", "rollout")
        assert work[0].name in [b["name"] for b in data["branches"]]
        assert [c["subject"] for c in data["commits"]] == ["feat: two"]
        assert data["open_questions"][0]["text"].startswith("Keep two.txt")
        text = helpers.run_cli("status", "--repo", str(night.repo), "--config", str(night.config),
                               mark=night.mark)
        assert text.returncode == 0, text.stderr
        assert "running (supervisor alive)" in text.stdout and "open questions: 1" in text.stdout
        assert "feat: two" in text.stdout and "last sign of life:" in text.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(proc)
    assert code == 0, err

    after = status.collect(night.run_root / "session.json")
    assert after.session.state == "stopped" and not after.supervisor_alive and not after.live
    assert [b.name for b in after.branches if b.commits] == [work[0].name]
    text = helpers.run_cli("status", "--repo", str(night.repo), "--config", str(night.config), mark=night.mark)
    assert text.returncode == 0 and "stopped" in text.stdout and "supervisor alive" not in text.stdout


def test_status_redacts_what_it_prints(tmp_path):
    repo = helpers.make_repo(tmp_path / "repo")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=3)
    token = "ghp_" + "S3cr3tV4lu3Th4tMustN0tB3Pr1nt3d0000"
    attempt = state.Attempt(number=1, kind="start", started_at=nightbuild.stamp(created),
                            log="codex_start.log", ended_at=nightbuild.stamp(created + dt.timedelta(minutes=1)),
                            outcome="crashed", detail=f"exit 1: bad credentials {token}")
    nightbuild.new_night(tmp_path, repo, "20260101_000000", created, current=True, attempts=[attempt])
    session_path = tmp_path / "run" / "session.json"
    view = status.collect(session_path)
    assert token not in status.render(view) and "[REDACTED:github]" in status.render(view)
    assert token not in status.dumps(view) and "[REDACTED:github]" in status.dumps(view)


def test_status_and_report_show_each_branch_validation_and_flag_what_was_not_validated(tmp_path):
    """Field defect 7: validation was invisible in the morning. Real `validate` records, one
    branch per case: passed on its tip, passed on the staged set that became its tip, passed
    before a later commit (stale), failed last, and commits never validated."""
    from overnight_agent import guards, report, validation
    repo = helpers.make_repo(tmp_path / "repo")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
    session = nightbuild.new_night(tmp_path, repo, "20260101_000000", created, current=True,
                                   state_name=state.FINISHED, hours=3)
    worktree, run_dir = Path(session.session_worktree), tmp_path / "run" / "runs" / session.run_id
    passing = [config.Suite(name="unit", command="true", timeout=30, paths=("**",))]
    failing = [config.Suite(name="unit", command="exit 3", timeout=30, paths=("**",))]
    settings = guards.GuardSettings(docs_index=None)

    def validate(branch, suites, mode="base"):
        git(worktree, "switch", "-q", branch)
        validation.run(worktree, suites, settings, mode=mode, base=session.base_commit,
                       record_dir=run_dir / "validation", echo=lambda *_: None)

    def branch_with(slug, minutes, *files):
        return nightbuild.work_branch(repo, session, slug, created + dt.timedelta(minutes=minutes),
                                      {f: f"{slug}\n" for f in files})

    ok = branch_with("ok", 5, "a.txt")
    validate(ok, passing)
    staged = branch_with("staged", 10, "b.txt")
    git(worktree, "switch", "-q", staged)
    (worktree / "b2.txt").write_text("more\n")
    git(worktree, "add", "b2.txt")
    validate(staged, passing, mode="staged")
    nightbuild.git_at(worktree, created + dt.timedelta(minutes=11), "commit", "-q", "-m", "feat: b2")
    stale = branch_with("stale", 20, "c.txt")
    validate(stale, passing)
    git(worktree, "switch", "-q", stale)
    nightbuild.commit_file(worktree, created + dt.timedelta(minutes=21), "c2.txt", "later\n", "feat: c2")
    failed = branch_with("failed", 30, "d.txt")
    validate(failed, passing)
    validate(failed, failing)
    never = branch_with("never", 40, "e.txt")
    git(worktree, "switch", "-q", session.session_branch)

    view = status.collect(tmp_path / "run" / "session.json")
    verdicts = {b.name: (b.validation, len(b.validations), b.needs_review) for b in view.branches}
    assert verdicts == {session.session_branch: ("none", 0, False), ok: ("passed", 1, False),
                        staged: ("passed", 1, False), stale: ("stale", 1, True),
                        failed: ("failed", 2, True), never: ("none", 0, True)}, verdicts
    text = status.render(view)
    assert "validation: passed on its tip (1 run)" in text
    assert "validation: FAILED (last of 2 runs)" in text and "FAILED (base): unit failed" in text
    assert "validation: stale: passed before the newest commits (1 run)" in text
    assert f"NOT VALIDATED: {stale}, {failed}, {never}" in text
    data = json.loads(status.dumps(view))
    by_name = {b["name"]: b for b in data["branches"]}
    assert by_name[never]["needs_review"] is True and by_name[ok]["needs_review"] is False
    assert by_name[failed]["validations"][-1]["suites"] == [
        {"name": "unit", "status": "failed", "seconds": by_name[failed]["validations"][-1]["suites"][0]["seconds"]}]
    md, html = report.write(tmp_path / "run" / "session.json", run_dir)
    markdown = md.read_text()
    assert f"**Validation:** 3 of 5 branches with commits NOT VALIDATED on their tip: {stale}, {failed}, {never}" in markdown
    assert "Validation: passed on its tip (1 run)" in markdown and "| FAILED (base): unit failed |" in markdown
    page = html.read_text()
    assert page.count("not validated: ") == 3 and 'class="validation bad"' in page


# --- gc ---------------------------------------------------------------------------------------------

def _listing(base: Path, repo: Path) -> dict:
    return {"refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
            "worktrees": git(repo, "worktree", "list", "--porcelain"),
            "files": sorted(str(p.relative_to(base)) for p in (base / "run").rglob("*"))}


def test_gc_removes_only_what_old_nights_made_and_is_a_dry_run_by_default(tmp_path):
    base = tmp_path
    repo = helpers.make_repo(base / "repo")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    a_start, b_start = now - dt.timedelta(days=30), now - dt.timedelta(days=20)
    c_start, d_start = now - dt.timedelta(days=10), now - dt.timedelta(days=1)

    # Night A (30 days ago): one branch merged since, one never merged.
    a = nightbuild.new_night(base, repo, "A_night", a_start)
    a_merged = nightbuild.work_branch(repo, a, "merged-fix", a_start + dt.timedelta(minutes=5),
                                      {"a1.txt": "a1\n"})
    a_open = nightbuild.work_branch(repo, a, "open-idea", a_start + dt.timedelta(minutes=20),
                                    {"a2.txt": "a2\n"})
    nightbuild.merge_into_main(repo, a_merged, now - dt.timedelta(days=25))
    # Night B (20 days ago): its worktree holds uncommitted work.
    b = nightbuild.new_night(base, repo, "B_night", b_start)
    (Path(b.session_worktree) / "wip.txt").write_text("unfinished\n")
    # Night C (10 days ago, the current session.json): everything merged.
    c = nightbuild.new_night(base, repo, "C_night", c_start, current=True)
    c_done = nightbuild.work_branch(repo, c, "done", c_start + dt.timedelta(minutes=3), {"c1.txt": "c1\n"})
    nightbuild.merge_into_main(repo, c_done, now - dt.timedelta(days=9))
    # Night D (yesterday): too recent for --older-than 7.
    d = nightbuild.new_night(base, repo, "D_night", d_start)
    d_done = nightbuild.work_branch(repo, d, "recent", d_start + dt.timedelta(minutes=3), {"d1.txt": "d1\n"})
    nightbuild.merge_into_main(repo, d_done, now - dt.timedelta(hours=2))
    # Not recorded by any night: a merged overnight/* branch of the operator's, a stray folder.
    # (one from before every night, one made today from a main that holds the nights' merged work)
    nightbuild.git_at(repo, now - dt.timedelta(days=60), "branch", "overnight/operator-own", "main~3")
    nightbuild.git_at(repo, now, "branch", "overnight/operator-today", "main")
    (base / "run" / "runs" / "stray").mkdir(parents=True)
    (base / "run" / "runs" / "stray" / "notes.txt").write_text("mine\n")
    cfg = helpers.write_config(base / "overnight.yaml", base)
    args = ("--repo", str(repo), "--config", str(cfg))

    before = _listing(base, repo)
    dry = helpers.run_cli("gc", "--older-than", "7", *args)
    assert dry.returncode == 0, dry.stderr
    assert _listing(base, repo) == before, "a dry run changes nothing"
    out = dry.stdout
    assert f"would remove worktree {a.session_worktree}" in out
    assert f"would delete branch {a_merged}" in out and f"would delete branch {c_done}" in out
    assert f"keep: branch {a_open}: not merged into main" in out
    assert f"keep: worktree {b.session_worktree}: has uncommitted changes" in out
    assert "pass --apply" in out
    planned = [line for line in out.splitlines() if line.startswith("would")]
    for untouched in (d.session_worktree, d_done, d.session_branch, "operator-own", "operator-today",
                      "ops-journal", "runs/stray", "runs/D_night"):
        assert not [line for line in planned if untouched in line], untouched

    done = helpers.run_cli("gc", "--older-than", "7", "--apply", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    worktrees = gitops_paths(repo)
    # Night A: worktree and merged branches gone; the unmerged one kept, with its record.
    assert a.session_worktree not in worktrees and not Path(a.session_worktree).exists()
    assert a_merged not in branches and a.session_branch not in branches and a_open in branches
    assert sorted(p.name for p in (base / "run" / "runs" / "A_night").iterdir()) == ["session.json"]
    # Night B: the dirty worktree and its branch stay, its logs go, its record stays.
    assert b.session_worktree in worktrees and (Path(b.session_worktree) / "wip.txt").exists()
    assert b.session_branch in branches
    assert sorted(p.name for p in (base / "run" / "runs" / "B_night").iterdir()) == ["session.json"]
    # Night C (current): all gone but base/run/session.json itself.
    assert c.session_worktree not in worktrees and c_done not in branches and c.session_branch not in branches
    assert not (base / "run" / "runs" / "C_night").exists() and (base / "run" / "session.json").exists()
    # Untouched: the recent night, the operator's branch, the ops journal, the stray folder, main.
    assert d.session_worktree in worktrees and d_done in branches and d.session_branch in branches
    assert (base / "run" / "runs" / "D_night" / "codex_start.log").exists()
    assert "overnight/operator-own" in branches and "overnight/operator-today" in branches
    assert "overnight/ops-journal" in branches
    assert str(base / "worktrees" / "ops") in worktrees
    assert (base / "run" / "runs" / "stray" / "notes.txt").read_text() == "mine\n"
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"

    again = helpers.run_cli("gc", "--older-than", "7", "--apply", *args)
    assert again.returncode == 0 and "done:" not in again.stdout


def gitops_paths(repo: Path):
    return [line[len("worktree "):] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_gc_leaves_a_night_that_may_still_run(tmp_path):
    repo = helpers.make_repo(tmp_path / "repo")
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    live = nightbuild.new_night(tmp_path, repo, "L_night", created, hours=24 * 5, current=True,
                                state_name=state.RUNNING)
    the_plan = gc.plan(tmp_path / "run", tmp_path / "run" / "session.json", 0)
    assert the_plan.actions == [] and any("may still run" in line for line in the_plan.kept)
    assert Path(live.session_worktree).exists()
    bad = helpers.run_cli("gc", "--older-than", "-1", "--repo", str(repo), "--config",
                          str(helpers.write_config(tmp_path / "c.yaml", tmp_path)))
    assert bad.returncode == 2 and "--older-than" in bad.stderr


# --- the size cap of a night's logs ---------------------------------------------------------------

def test_log_cap_counts_what_is_there_and_what_is_written(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    (run_dir / "agent").mkdir(parents=True)
    (run_dir / "codex_start.log").write_bytes(b"a" * 600)
    (run_dir / "agent" / "heartbeat").write_bytes(b"b" * 300)
    assert capture.folder_bytes(run_dir) == 900
    cap = capture.LogCap(run_dir, 1000)
    assert cap.used == 900 and not cap.exceeded and cap.notice() == b""
    assert cap.allow(50) == 50 and cap.allow(200) == 50 and cap.exceeded
    assert cap.allow(10) == 0
    notice = cap.notice()
    assert b"retention.max_log_bytes" in notice and cap.notice() == b""
    (run_dir / "codex_resume.log").write_bytes(b"c" * 200)
    assert capture.folder_bytes(run_dir) == 1100 and capture.LogCap(run_dir, 1000).exceeded


def test_retention_config_reads_sizes_and_refuses_nonsense():
    assert config.parse("version: 2\n", "t").retention.max_log_bytes == 200_000_000
    assert config.parse("version: 2\nretention:\n  max_log_bytes: 1GiB\n", "t").retention.max_log_bytes == 2 ** 30
    assert config.parse("version: 2\nretention:\n  max_log_bytes: 5000\n", "t").retention.max_log_bytes == 5000
    with pytest.raises(Exception, match=r"retention\.max_log_bytes: 'lots' is not a size"):
        config.parse("version: 2\nretention:\n  max_log_bytes: lots\n", "t")

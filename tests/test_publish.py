"""The opt-in publish step, for real: nights with the scripted codex push to a bare repository in a
temp dir (a path remote: no network), and only the night's own branches and ops journal arrive.

Pure ref selection and porcelain parsing are in tests/unit/test_publish_choice.py.
"""
import json
import subprocess
import sys

import psutil

import helpers
from helpers import git

from overnight_agent import publish

WORK = "overnight/work-item"
MAKE_WORK = (f"git switch -q -c {WORK} && echo done > done.txt && git add done.txt && "
             "git commit -qm 'feat: done'")
NIGHT = ("--hours", str(3 / 3600))


def bare_remote(tmp_path, name="remote.git"):
    path = tmp_path / name
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def remote_refs(bare) -> dict:
    out = git(bare, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in out.splitlines()) if out else {}


def with_publish(night, remote, **extra):
    helpers.write_config(night.config, night.base, publish={"enabled": True, "remote": str(remote), **extra})


def decoys(repo):
    """Refs a night must never push: a tag, the operator's branch, an earlier night's branch."""
    git(repo, "tag", "-a", "-m", "release", "v1.0")
    git(repo, "tag", "light")
    git(repo, "branch", "feature/operator")
    git(repo, "branch", "overnight/earlier-night")


def events(session, name):
    return [e for e in session["events"] if e["event"] == name]


def test_a_night_pushes_its_branches_and_journal_and_nothing_else(night, tmp_path):
    bare = bare_remote(tmp_path)
    decoys(night.repo)
    # A named remote set up to mirror: a plain `git push origin` would force-push every ref
    # and delete the remote's others. The publish step overrides it.
    git(night.repo, "remote", "add", "origin", str(bare))
    git(night.repo, "config", "remote.origin.mirror", "true")
    subprocess.run(["git", "push", "-q", str(bare), "main:refs/heads/someone-elses"], cwd=night.repo, check=True)
    with_publish(night, "origin")
    night.scenario([{"shell": MAKE_WORK}, {"hang": True}])
    code, _, err = helpers.finish(night.start(*NIGHT), timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished"
    session_branch, journal = session["session_branch"], session["ops_journal_branch"]
    expected = {f"refs/heads/{b}" for b in (session_branch, WORK, journal)} | {"refs/heads/someone-elses"}
    refs = remote_refs(bare)
    assert set(refs) == expected, refs
    for branch in (session_branch, WORK, journal):
        assert refs[f"refs/heads/{branch}"] == git(night.repo, "rev-parse", f"refs/heads/{branch}")
    # The journal that arrived holds the morning report, committed before the push.
    assert f"{session['run_id']}_report.md" in git(bare, "ls-tree", "-r", "--name-only", journal)
    [pushed] = events(session, publish.PUSHED)
    assert sorted(pushed["pushed"]) == sorted([session_branch, WORK, journal])
    assert pushed["remote"] == "origin" and not events(session, publish.FAILED)
    status = helpers.run_cli("status", "--repo", str(night.repo), "--config", str(night.config))
    assert status.returncode == 0, status.stderr
    assert "published to origin: 3 pushed" in status.stdout


def test_an_unreachable_remote_is_recorded_and_the_next_start_pushes_that_night(night, tmp_path):
    missing = tmp_path / "no" / "such" / "remote.git"
    with_publish(night, missing)
    night.scenario([{"shell": MAKE_WORK}, {"hang": True}])
    code, _, err = helpers.finish(night.start(*NIGHT), timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished"
    [failed] = events(session, publish.FAILED)
    assert failed["pushed"] == [] and failed["error"], failed
    assert not events(session, publish.PUSHED)
    # Nothing lost: the work is on its local branch, the report on the journal.
    assert git(night.repo, "log", "-1", "--format=%s", WORK) == "feat: done"
    assert not missing.exists()
    log = night.run_root / "runs" / session["run_id"] / "supervisor.log"
    assert any(json.loads(line)["event"] == publish.FAILED for line in log.read_text().splitlines())
    # The remote is back: the next night's start pushes the unpublished night first, then its own.
    bare = bare_remote(tmp_path)
    with_publish(night, bare)
    night.scenario([{"hang": True}])
    code, _, err = helpers.finish(night.start(*NIGHT), timeout=40)
    assert code == 0, err
    archived = json.loads((night.run_root / "runs" / session["run_id"] / "session.json").read_text())
    [retried] = events(archived, publish.PUSHED)
    assert sorted(retried["pushed"]) == sorted([session["session_branch"], WORK, session["ops_journal_branch"]])
    second = night.session()
    assert second["run_id"] != session["run_id"] and events(second, publish.PUSHED)
    assert set(remote_refs(bare)) == {f"refs/heads/{b}" for b in (
        session["session_branch"], WORK, session["ops_journal_branch"], second["session_branch"])}


def test_an_earlier_nights_branch_the_agent_writes_into_the_branches_file_stays_local(night, tmp_path):
    """The branches file lies in the agent's own folder: an agent that names an earlier night's
    branch there (and so gets past the hook) and moves it still cannot have it pushed. The
    `overnight/*` branches there when the night began are in session.json, out of its reach."""
    bare = bare_remote(tmp_path)
    git(night.repo, "branch", "overnight/earlier-night")
    before = git(night.repo, "rev-parse", "overnight/earlier-night")
    forge = ("python3 -c \"import json, os; p = os.environ['OVERNIGHT_AGENT_HEARTBEAT'].rsplit('/', 1)[0] + "
             "'/branches.json'; d = json.load(open(p)); d['branches']['overnight/earlier-night'] = {'by': 'hook'}; "
             "json.dump(d, open(p, 'w'))\" && git switch -q overnight/earlier-night && echo x > x.txt && "
             "git add x.txt && git commit -qm 'feat: moved an earlier night' && git switch -q -")
    with_publish(night, bare)
    night.scenario([{"shell": forge}, {"shell": MAKE_WORK}, {"hang": True}])
    code, _, err = helpers.finish(night.start(*NIGHT), timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["branches_at_start"] == ["overnight/earlier-night"]
    moved = git(night.repo, "rev-parse", "overnight/earlier-night")
    assert moved != before, "the forged record did not get the agent past the hook: the test shows nothing"
    refs = remote_refs(bare)
    assert "refs/heads/overnight/earlier-night" not in refs, refs
    assert f"refs/heads/{WORK}" in refs and f"refs/heads/{session['session_branch']}" in refs
    [pushed] = events(session, publish.PUSHED)
    assert "overnight/earlier-night" not in pushed["pushed"]


def test_a_diverged_remote_branch_is_refused_never_forced(night, tmp_path):
    bare = bare_remote(tmp_path)
    # Someone else's commit on the remote under the name the night will use.
    other = helpers.make_repo(tmp_path / "other", {"other.txt": "theirs\n"})
    git(other, "push", "-q", str(bare), f"main:refs/heads/{WORK}")
    theirs = git(bare, "rev-parse", f"refs/heads/{WORK}")
    with_publish(night, bare)
    night.scenario([{"shell": MAKE_WORK}, {"hang": True}])
    code, _, err = helpers.finish(night.start(*NIGHT), timeout=40)
    assert code == 0, err
    session = night.session()
    assert session["state"] == "finished"
    [failed] = events(session, publish.FAILED)
    assert list(failed["rejected"]) == [WORK] and "rejected" in failed["rejected"][WORK]
    assert git(bare, "rev-parse", f"refs/heads/{WORK}") == theirs          # not forced
    refs = remote_refs(bare)
    assert refs[f"refs/heads/{session['session_branch']}"] == git(night.repo, "rev-parse", session["session_branch"])
    assert f"refs/heads/{session['ops_journal_branch']}" in refs
    status = helpers.run_cli("status", "--repo", str(night.repo), "--config", str(night.config))
    assert f"FAILED: {WORK} refused" in status.stdout


def test_credentials_in_a_push_url_never_reach_a_message(tmp_path):
    """A URL with a token, to a closed port on 127.0.0.1: the failure names the remote without it."""
    repo = helpers.make_repo(tmp_path / "repo")
    git(repo, "branch", "overnight/session_x")
    token = "s3cretTok3nValue42"
    outcome = publish.push(repo, f"http://operator:{token}@127.0.0.1:9/repo.git", ["overnight/session_x"],
                           timeout=20)
    assert not outcome.ok and outcome.error
    assert token not in json.dumps(outcome.fields())
    assert outcome.remote == "http://***@127.0.0.1:9/repo.git"


def test_a_push_past_its_timeout_is_stopped_with_everything_it_started(tmp_path):
    """A remote whose receive-pack never answers: the push is killed at the timeout, nothing left."""
    repo = helpers.make_repo(tmp_path / "repo")
    git(repo, "branch", "overnight/session_x")
    bare = bare_remote(tmp_path)
    stall = tmp_path / "stall-receive-pack"
    stall.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    stall.chmod(0o755)
    git(repo, "remote", "add", "slow", str(bare))
    git(repo, "config", "remote.slow.receivepack", str(stall))
    outcome = publish.push(repo, "slow", ["overnight/session_x"], timeout=1.0)
    assert outcome.error and "no answer after 1s" in outcome.error
    helpers.wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                   if str(stall) in " ".join(p.info["cmdline"] or [])],
                     timeout=3, what="the stalled receive-pack gone")
    assert remote_refs(bare) == {}

"""A planted secret in every form, printed by the agent to stdout and stderr and written into a
summary and a question, reaches no file under run_root (codex's own session store aside, which
stays private), no journal file and no git object."""
import json
import subprocess
import sys
from pathlib import Path

import helpers
from secretkit import ENV, FORMS

TOOL = f"{sys.executable} -m overnight_agent"
LEAK = '''import json, sys
forms = json.load(open(sys.argv[1]))
for form in forms:
    print(form, flush=True)
'''


def all_files(root: Path, skip: Path):
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            yield path


def git_objects(repo: Path) -> bytes:
    return subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo,
                          capture_output=True, check=True).stdout


def test_planted_secrets_reach_no_log_journal_or_git_object(night):
    forms = [form for form, _, _ in FORMS]
    shapes = [form for form, _, kind in FORMS if not kind.startswith("env:")]
    (night.base / "forms.json").write_text(json.dumps(forms))
    (night.base / "shapes.json").write_text(json.dumps(shapes))
    (night.base / "leak.py").write_text(LEAK)
    leak = f"python3 {night.base / 'leak.py'}"
    one_line = f"\"$(python3 {night.base / 'leak.py'} {night.base / 'shapes.json'} | tr '\\n' ' ')\""
    night.scenario([
        {"shell": f"{leak} {night.base / 'forms.json'}"},
        {"shell": f"{leak} {night.base / 'forms.json'} 1>&2"},
        {"message": FORMS[0][0]},
        {"shell": f"{TOOL} journal summary {one_line}"},
        {"shell": f"{TOOL} journal question {one_line}"},
        {"crash": 1},
    ], [{"hang": True}])
    env = {k: v for k, v in ENV.items() if k == "MY_SERVICE_TOKEN"}
    proc = night.start("--hours", str(6 / 3600), env_extra=env)
    code, out, err = helpers.finish(proc, timeout=60)
    assert code == 0, err[-3000:]
    session = night.session()
    assert session["state"] == "finished"
    secrets = [secret for _, secret, _ in FORMS]
    codex_home = night.run_root / "codex_home"
    assert oct(codex_home.stat().st_mode & 0o777) == "0o700"
    checked = 0
    for path in all_files(night.run_root, codex_home):
        data = path.read_bytes()
        checked += 1
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} leaked into {path}"
    assert checked >= 5
    for text in (out, err):
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the supervisor's own output"
    # The agent's output did arrive, redacted, in its log.
    codex_log = (night.run_root / "runs" / session["run_id"] / "codex_start.log").read_text()
    assert codex_log.count("[REDACTED:") >= 2 * len(FORMS)
    journal_dir = Path(session["ops_journal_worktree"])
    summary = Path(session["exec_summary_log"]).read_text()
    assert "[REDACTED:" in summary
    questions = list(Path(session["reports_dir"]).glob("*_questions_for_operator.md"))
    assert questions and "[REDACTED:" in questions[0].read_text()
    objects = git_objects(night.repo)
    for _, secret, kind in FORMS:
        if kind.startswith("env:"):
            continue  # the agent's journal commands never see the supervisor's environment
        assert secret.encode() not in objects, f"{secret!r} reached a git object"
        for path in all_files(journal_dir, journal_dir / ".git"):
            assert secret.encode() not in path.read_bytes(), f"{secret!r} in {path}"
    redacted = [e for e in session["events"] if e["event"] == "redacted"]
    assert redacted and redacted[0]["count"] >= 2 * len(FORMS)


def test_the_deadline_checkpoint_leaves_out_a_file_holding_a_secret_and_the_report_says_so(night):
    """Field defect: the checkpoint at the deadline ran `git add -A` and `commit --no-verify`,
    committing an uncommitted creds.ini with an AWS-shaped key, and the report said 0 refused.
    The checkpoint now screens the staged set: a file holding a secret (a token shape, or the
    value of a secret in the supervisor's environment) stays uncommitted in the work tree, and
    the state, the journal and the report say which file and what kind, never the value."""
    key_id, key = "AKIA5HXQ2Z3K7PLM4RTW", "9s8Kd7Lm2Np4Qr6St8Uv0Wx2Yz4Ab6Cd8Ef0Gh2I"
    provider_key = "q7Hs9Lk2Mn4Pb6Vc8Xz0Rt3Wy5Ue1Io"  # no known shape: found as the variable's value
    creds = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {key}\n"
    night.scenario([{"write_file": {"path": "notes.md", "text": "work in progress\n"}},
                    {"write_file": {"path": "creds.ini", "text": creds}},
                    {"write_file": {"path": "src/settings.py", "text": f"KEY = '{provider_key}'\n"}},
                    {"hang": True}])
    proc = night.start("--hours", str(4 / 3600), env_extra={"MY_SERVICE_TOKEN": provider_key})
    code, out, err = helpers.finish(proc, timeout=60)
    assert code == 0, err[-3000:]
    session = night.session()
    worktree = Path(session["session_worktree"])
    committed = helpers.git(worktree, "show", "--name-only", "--format=%s", "HEAD").splitlines()
    assert committed[0].startswith("checkpoint:") and "notes.md" in committed
    assert "creds.ini" not in committed and "src/settings.py" not in committed
    # Left where the agent wrote them, untouched and uncommitted.
    assert (worktree / "creds.ini").read_text() == creds
    assert (worktree / "src" / "settings.py").read_text() == f"KEY = '{provider_key}'\n"
    status = helpers.git(worktree, "status", "--porcelain", "--untracked-files=all")
    assert "?? creds.ini" in status and "?? src/settings.py" in status
    objects = git_objects(night.repo)
    for secret in (key_id, key, provider_key):
        assert secret.encode() not in objects
    refused = [e for e in session["events"] if e["event"] == "checkpoint.refused"]
    assert len(refused) == 1 and refused[0]["files"] == ["creds.ini", "src/settings.py"], refused
    assert "aws_access_key_id" in refused[0]["kinds"] and "env:MY_SERVICE_TOKEN" in refused[0]["kinds"], refused
    summary = Path(session["exec_summary_log"]).read_text()
    assert "checkpoint left out 2 file(s) that hold a secret" in summary and "creds.ini" in summary
    report = (night.run_root / "runs" / session["run_id"] / "report.md").read_text()
    assert "1 refused" in report and "checkpoint.refused" in report and "creds.ini" in report
    for text in (report, summary, out, err, json.dumps(session)):
        for secret in (key_id, key, provider_key):
            assert secret not in text


def test_the_checkpoint_takes_every_other_change_by_its_literal_path(tmp_path):
    from overnight_agent import gitops, secretguard
    repo = helpers.make_repo(tmp_path / "repo", {"README.md": "# r\n", "old.txt": "old\n", "keep.py": "x = 1\n"})
    helpers.git(repo, "switch", "-q", "-c", "overnight/work")
    (repo / "keep.py").write_text("x = 2\n")
    (repo / "old.txt").unlink()
    (repo / "we[i]rd *name.txt").write_text("glob characters\n")
    (repo / "a b").mkdir()
    (repo / "a b" / "c.txt").write_text("spaces\n")
    (repo / "*.txt").write_text("a literal star\n")
    (repo / "staged.env").write_text("GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")
    helpers.git(repo, "add", "staged.env")  # the agent staged it itself
    sha, left_out = gitops.checkpoint(repo, "r1", {"name": "T", "email": "t@example.invalid"},
                                      screen=lambda tree, paths: secretguard.changed_secrets(tree, paths, {}))
    assert left_out == {"staged.env": ["github"]}
    assert helpers.git(repo, "rev-parse", "HEAD") == sha
    changed = helpers.git(repo, "show", "--name-status", "--format=", "HEAD").splitlines()
    assert sorted(changed) == sorted(["M\tkeep.py", "D\told.txt", "A\twe[i]rd *name.txt", "A\ta b/c.txt",
                                      "A\t*.txt"]), changed
    assert helpers.git(repo, "status", "--porcelain") == "?? staged.env"
    assert gitops.checkpoint(repo, "r1", {"name": "T", "email": "t@example.invalid"},
                             screen=lambda tree, paths: secretguard.changed_secrets(tree, paths, {})) \
        == (None, {"staged.env": ["github"]})

"""A planted secret in every form, printed by the agent to stdout and stderr and written into a
summary and a question, reaches no file under run_root (codex's own session store aside, which
stays private), no journal file and no git object."""
import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
from test_redact import ENV, FORMS

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

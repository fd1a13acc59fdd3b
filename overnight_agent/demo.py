"""`overnight-agent demo`: a whole short night on a throwaway sample repository.

Owns: the sample repository, the demo config and the scripted agent's scenario, and the closing
tour of every output. Must not: touch anything outside its own folder, or leave a process behind.
The night itself runs through the same `night.run` as a real one; only codex is the scripted
stand-in (`fakecodex`), because the demo must work without a model or a network.
"""
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Optional

import yaml

from . import gitops, night, state, timeparse

SAMPLE_FILES = {
    "README.md": "# slugkit\n\nTurns titles into URL slugs. See [the docs](docs/index.md).\n",
    "docs/index.md": "# Documentation index\n\n- [Installing](instal.md)\n- [Usage](usage.md)\n",
    "docs/install.md": "# Installing\n\n    pip install -e .\n",
    "docs/usage.md": "# Usage\n\n    from slugkit import slugify\n    slugify('Hello World')  # 'hello-world'\n",
    "slugkit/__init__.py": "from .slug import slugify\n",
    "slugkit/slug.py": (
        "import re\n\n\ndef slugify(title):\n"
        "    return re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')\n"),
    "AGENTS.md": "# Rules for agents\n\nRun `python3 -m unittest` after touching `slugkit/`.\n",
    ".gitignore": "__pycache__/\n",
}


def _git(repo: Path, *args: str) -> None:
    gitops.run(args, repo, identity={"name": "Sample", "email": "sample@example.invalid"})


def make_sample_repo(repo: Path) -> None:
    for rel, text in SAMPLE_FILES.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Initial sample project")


def write_fake_codex(path: Path) -> Path:
    """An executable `codex` at `path` that runs the scripted stand-in with this interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m overnight_agent.fakecodex \"$@\"\n")
    path.chmod(0o755)
    return path


def scenario(tool: str) -> dict:
    """What the scripted agent does on each invocation: real work in the worktree, a crash, a
    clean early exit, and a hang the deadline has to stop."""
    strategy = ("# Strategy\\n\\n1. Fix the broken link in docs/index.md (docs audit).\\n"
                "2. Add a unit test for slugify.\\n\\nStop conditions: anything needing a product "
                "decision goes to the operator.\\n")
    test = ("import unittest\n\nfrom slugkit import slugify\n\n\nclass SlugTest(unittest.TestCase):\n"
            "    def test_spaces(self):\n        self.assertEqual(slugify('Hello World'), 'hello-world')\n")
    return {"invocations": [
        {"steps": [
            {"reasoning": "Plan: audit the docs first, then add a missing test."},
            {"message": "Starting the documentation audit."},
            {"shell": f"printf '{strategy}' | {tool} journal strategy -"},
            {"shell": f"{tool} branch fix-docs-link && sed -i 's/(instal.md)/(install.md)/' docs/index.md"
                      " && git commit -qam 'docs: fix broken link in docs/index.md'"},
            {"shell": f"{tool} journal summary 'Fixed the broken Installing link in docs/index.md.'"},
            {"sleep": 1},
            {"crash": 1},
        ]},
        {"steps": [
            {"message": "Resumed after the crash; next task: a unit test for slugify."},
            {"shell": f"{tool} branch add-slugify-test"},
            {"write_file": {"path": "tests/test_slug.py", "text": test}},
            {"shell": "python3 -m unittest -q 2>&1 | tail -1 && git add tests"
                      " && git commit -qm 'feat: unit test for slugify'"},
            {"shell": f"{tool} journal summary 'Added tests/test_slug.py; python3 -m unittest passes.'"},
            {"shell": f"{tool} journal question 'Should slugify keep non-ASCII letters (e.g. é) "
                      "instead of dropping them?'"},
            {"shell": f"{tool} heartbeat"},
            {"message": "Turn done; more after a short break."},
        ]},
        {"steps": [
            {"message": "Looking at the usage docs."},
            {"write_file": {"path": "docs/usage.md",
                            "text": "# Usage\n\n    from slugkit import slugify\n    "
                                    "slugify('Hello World')  # 'hello-world'\n\nWork in progress.\n"}},
            {"hang": True},
        ]},
    ]}


def run(directory: Optional[Path], seconds: float) -> int:
    base = (directory or Path(tempfile.mkdtemp(prefix="overnight-agent-demo-"))).resolve()
    repo = base / "sample-repo"
    if repo.exists():
        print(f"overnight-agent demo: {repo} exists; pass an empty --dir", file=sys.stderr)
        return 2
    make_sample_repo(repo)
    fake = write_fake_codex(base / "bin" / "codex")
    codex_home = base / "run" / "codex_home"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "fake_codex_scenario.yaml").write_text(
        yaml.safe_dump(scenario(night.tool_command()), sort_keys=False, allow_unicode=True))
    config_path = base / "overnight_agent.yaml"
    config_path.write_text(yaml.safe_dump({
        "version": 2,
        "repo": {"session_worktree_root": str(base / "worktrees" / "session"),
                 "ops_journal_worktree": str(base / "worktrees" / "ops_journal"),
                 "run_root": str(base / "run")},
        "codex": {"codex_bin": str(fake), "codex_home": str(codex_home)},
        "schedule": {"wrap_up": f"{max(seconds / 4, 1):.0f}s"},
        "restart": {"backoff_initial": "0.5s", "backoff_max": "5s", "healthy_after": "20s"},
        "stop": {"sigint_grace": "2s", "sigterm_grace": "2s"},
    }, sort_keys=False))
    print(f"overnight-agent demo: a {seconds:.0f}-second night in {base}", file=sys.stderr)
    result = night.run(night.RunRequest(repo=repo, config_path=config_path, hours=seconds / 3600))
    _tour(base, repo, config_path, result.session)
    return result.exit_code


def _tour(base: Path, repo: Path, config_path: Path, session: Optional[state.Session]) -> None:
    if session is None:
        print("no session was written", file=sys.stderr)
        return
    branches = gitops.git(["for-each-ref", "--format=%(refname:short) %(objectname:short) %(subject)",
                           "refs/heads/overnight/"], repo, check=False, raw=True)
    outcomes = ", ".join(f"{a.number}:{a.kind}:{a.outcome}" for a in session.attempts)
    layout = state.RunLayout.of_session(session)
    run_dir = layout.root
    print(f"""
Night {session.run_id} is {session.state}. Attempts: {outcomes}.
Thread {session.thread_id} (resumed by id after every exit).

Where everything is:
  sample repository (untouched)  {repo}
  session worktree               {session.session_worktree}
  ops-journal worktree           {session.ops_journal_worktree}
  executive summary              {session.exec_summary_log}
  strategy and questions         {session.reports_dir}
  session state                  {base / 'run' / 'session.json'}
  codex output logs              {run_dir / 'codex_start.log'}, {run_dir / 'codex_resume.log'}
  supervisor events (JSON)       {layout.supervisor_log}
  morning report                 {layout.report_html} (and report.md)
  config used                    {config_path}
  codex session store            {base / 'run' / 'codex_home' / 'sessions'}

Branches made tonight (git -C {repo} log <branch>):
{branches.rstrip()}

Finished at {timeparse.iso(timeparse.local_now())}.""")

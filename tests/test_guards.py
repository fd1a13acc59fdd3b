"""The staged-set guards (perf-cycle retention, change scope, doc sprawl, line endings,
secrets), each with a passing and a failing case on a real repository, through the agent's
pre-commit hook (what the agent meets when it commits) and `overnight-agent validate`."""
import json
import sys

import pytest

from guardkit import git, make_night
from overnight_agent import guards

TOOL = f"{sys.executable} -m overnight_agent"
CONFIG = """version: 2
validation:
  max_changed_files: 3
  docs_exempt: ["**/SKILL.md"]
  perf_cycle_dirs: benchmarks/perf_cycles/*
  perf_cycle_complete_file: cycle_delta.md
"""
SECRET = "sk-proj-" + "Zx81qLmN4vB7tR2wYp0sKd9fGh3jCe6u"


@pytest.fixture
def night(tmp_path):
    return make_night(tmp_path / "n", config_text=CONFIG)


def commit(night, script, cwd=None):
    return night.agent(script + " && git commit -q -m change", cwd=cwd)


def refused(result, guard):
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"commit refused: {guard}" in result.stderr, result.stderr
    return result.stderr


def test_perf_cycle_one_per_branch(night):
    ok = commit(night, "mkdir -p benchmarks/perf_cycles/c1 && echo pre > benchmarks/perf_cycles/c1/pre.json && "
                       "echo post > benchmarks/perf_cycles/c1/post.json && echo d > benchmarks/perf_cycles/c1/cycle_delta.md "
                       "&& git add benchmarks")
    assert ok.returncode == 0, ok.stderr
    second = commit(night, "mkdir -p benchmarks/perf_cycles/c2 && echo pre > benchmarks/perf_cycles/c2/pre.json && "
                           "echo d > benchmarks/perf_cycles/c2/cycle_delta.md && git add benchmarks")
    text = refused(second, "perf cycle retention")
    assert "benchmarks/perf_cycles/c1, benchmarks/perf_cycles/c2" in text
    assert "exactly one pre/post cycle per branch" in text and "ask the operator" in text
    # even left untracked, a second cycle directory in the worktree counts
    untracked = commit(night, "git reset -q && echo x >> README.md && git add README.md")
    refused(untracked, "perf cycle retention")


def test_perf_cycle_must_be_finished(night):
    pre_only = commit(night, "mkdir -p benchmarks/perf_cycles/c1 && echo pre > benchmarks/perf_cycles/c1/pre.json "
                             "&& git add benchmarks")
    assert "has no cycle_delta.md: a pre without its post" in refused(pre_only, "perf cycle retention")


def test_change_scope_counts_files_and_says_ask_the_operator(night):
    ok = commit(night, "for f in a b c; do echo $f > $f.txt; done && git add a.txt b.txt c.txt")
    assert ok.returncode == 0, ok.stderr
    wide = commit(night, "for f in d e f g; do echo $f > $f.txt; done && git add -A")
    text = refused(wide, "change scope")
    assert "4 files changed, more than validation.max_changed_files (3)" in text
    assert "ask the operator" in text and "format more" not in text and "fmt" not in text


def test_change_scope_keeps_a_work_item_inside_its_declared_paths(night):
    made = night.agent(f"{TOOL} branch docs-fix --paths 'docs/**'")
    assert made.returncode == 0, made.stderr
    ok = commit(night, "echo more >> docs/guide.md && git add docs/guide.md")
    assert ok.returncode == 0, ok.stderr
    outside = commit(night, "echo x >> src/app.py && git add src/app.py")
    text = refused(outside, "change scope")
    assert "src/app.py lie outside the paths this work item declared (docs/**)" in text
    assert "ask the operator" in text


def test_doc_sprawl_new_markdown_must_be_linked_from_the_index(night):
    lone = commit(night, "echo '# New' > docs/new.md && git add docs/new.md")
    text = refused(lone, "doc sprawl")
    assert "docs/new.md is a new Markdown file not linked from docs/index.md" in text
    linked = commit(night, "echo '- [New](new.md)' >> docs/index.md && git add docs/index.md docs/new.md")
    assert linked.returncode == 0, linked.stderr
    exempt = commit(night, "mkdir -p tools && echo '# skill' > tools/SKILL.md && git add tools")
    assert exempt.returncode == 0, exempt.stderr


def test_doc_sprawl_exempts_journal_files_only_on_the_ops_journal_branch(night):
    journal = "mkdir -p docs/meta/logs/ops && echo '# q' > docs/meta/logs/ops/2030-01-01_questions_for_operator.md && git add docs"
    ok = commit(night, journal, cwd=night.ops_wt)
    assert ok.returncode == 0, ok.stderr
    refused(commit(night, journal), "doc sprawl")  # the same file on a work-item branch


def test_line_endings_crlf_into_an_lf_file_is_refused(night):
    bad = commit(night, "printf 'print(1)\\r\\n' >> src/app.py && git add src/app.py")
    assert "CRLF line endings introduced into src/app.py" in refused(bad, "line endings")
    night.agent("git reset -q && git show HEAD:src/app.py > src/app.py")
    crlf_file = commit(night, "printf 'more\\r\\n' >> win.txt && git add win.txt")
    assert crlf_file.returncode == 0, crlf_file.stderr
    attrs = commit(night, "echo '*.bat eol=crlf' > .gitattributes && printf 'echo\\r\\n' > run.bat && "
                          "git add .gitattributes run.bat")
    assert attrs.returncode == 0, attrs.stderr


def test_a_secret_is_refused_on_every_branch_and_never_printed(night):
    for cwd in (night.session_wt, night.ops_wt):
        bad = commit(night, f"echo 'OPENAI_API_KEY={SECRET}' > settings.env && git add settings.env", cwd=cwd)
        text = refused(bad, "secrets")
        assert "settings.env (openai)" in text and SECRET not in text and SECRET not in bad.stdout
        skipped = night.agent("git commit -q --no-verify -m sneak", cwd=cwd)
        assert skipped.returncode != 0 and "add what looks like a secret" in skipped.stderr
        assert SECRET not in skipped.stderr
        night.agent("git rm -q --cached settings.env && rm settings.env", cwd=cwd)
    clean = commit(night, "echo 'OPENAI_API_KEY=${OPENAI_API_KEY}' > settings.env && git add settings.env")
    assert clean.returncode == 0, clean.stderr


def test_guards_api_on_a_staged_set(night):
    wt = night.session_wt
    (wt / "docs" / "orphan.md").write_text("# Orphan\n")
    git(wt, "add", "docs/orphan.md")
    settings = guards.GuardSettings(max_changed_files=5, base=night.session.base_commit)
    results = {r.name: r for r in guards.run_all(settings, guards.staged(wt))}
    assert not results["doc_sprawl"].ok and results["secrets"].ok and results["change_scope"].ok
    assert results["perf_cycle"].skipped == "validation.perf_cycle_dirs is not set"
    assert guards.index_links("docs/index.md", "[a](guide.md#x) [b](../README.md) [c]: sub/c.md\n"
                              "[d](https://example.invalid/x.md)") == {"docs/guide.md", "README.md"}


def test_validate_staged_runs_the_guards_and_exits_3(night, tmp_path):
    night.agent("echo '# lone' > docs/lone.md && git add docs/lone.md")
    out = tmp_path / "v.json"
    result = night.agent(f"{TOOL} validate --staged --out {out}")
    assert result.returncode == 3, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert record["ok"] is False and record["touched"] == ["docs/lone.md"]
    assert [g["name"] for g in record["guards"] if not g["ok"]] == ["doc_sprawl"]
    assert "guard doc_sprawl: FAILED" in result.stdout

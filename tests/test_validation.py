"""The validation policy: the `validation:` config section, choosing suites from touched paths,
running them under time limits, and `overnight-agent validate` on a synthetic repository shaped
like excel_diff, wired with the example config shipped in docs/examples/."""
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import require
from guardkit import git, make_night, operator_env
from overnight_agent import config, guards, pathglob, validation
from overnight_agent.config import Suite
from overnight_agent.exitcodes import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "excel_diff_overnight_agent.yaml"
TOOL = [sys.executable, "-m", "overnight_agent"]


# --- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("suites, message", [
    ("[{name: a, command: x, paths: [src/**], timeout: soon}]",
     "validation.suites[0].timeout: 'soon' is not a duration"),
    ("[{name: a, command: x, paths: always}, {name: b, paths: always}]",
     "validation.suites[1].command: missing"),
    ("[{name: a, command: x, paths: always}, {name: a, command: y, paths: always}]",
     "validation.suites[1].name: 'a' is used by two suites"),
    ("[{name: a, command: x, paths: [/abs]}]",
     "validation.suites[0].paths[0]: '/abs': globs are relative to the repository root"),
    ("[{name: a, command: x, paths: []}]", "validation.suites[0].paths: expected `always` or a non-empty list"),
    ("[{name: a, command: x, paths: always, when: never}]", "validation.suites[0].when: unknown key"),
    ("[just-a-string]", "validation.suites[0]: expected a mapping"),
    ("{name: a}", "validation.suites: expected a list of suites"),
])
def test_a_bad_suite_is_one_line_naming_its_key(suites, message):
    with pytest.raises(ConfigError) as err:
        config.parse(f"version: 2\nvalidation:\n  suites: {suites}\n", "x.yaml")
    text = str(err.value)
    assert text.startswith(f"x.yaml: {message}"), text
    assert "\n" not in text


def test_other_validation_and_guard_keys_are_checked():
    for body, message in [("validation: {max_changed_files: 0}", "validation.max_changed_files"),
                          ("validation: {perf_cycle_dirs: /x/*}", "validation.perf_cycle_dirs"),
                          ("guard: {forbidden_commands: ['']}", "guard.forbidden_commands"),
                          ("guard: {agent_identity: maybe}", "guard.agent_identity")]:
        with pytest.raises(ConfigError, match=message):
            config.parse(f"version: 2\n{body}\n", "x.yaml")


def test_check_config_prints_the_example_resolved(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    result = subprocess.run([*TOOL, "check-config", str(EXAMPLE), "--repo", str(repo)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "name: perf-gate" in result.stdout and "always: true" in result.stdout


def test_globs():
    assert pathglob.match("src/**", "src/a/b.py") and not pathglob.match("src/**", "srcx/a")
    assert pathglob.match("**/*.rs", "lib.rs") and pathglob.match("**/*.rs", "core/src/a.rs")
    assert not pathglob.match("*.md", "docs/a.md") and pathglob.match("*.md", "README.md")
    assert pathglob.match("core/src/**/grid*", "core/src/x/grid_ops.rs")
    assert pathglob.match("benchmarks/perf_cycles/*", "benchmarks/perf_cycles/c1")
    assert not pathglob.match("benchmarks/perf_cycles/*", "benchmarks/perf_cycles/c1/x")
    assert guards.cycle_dir_of("benchmarks/perf_cycles/*", "benchmarks/perf_cycles/c1/a/b") == "benchmarks/perf_cycles/c1"


# --- choosing suites: the excel_diff wiring -----------------------------------------------------

@pytest.mark.parametrize("paths, expected", [
    (["README.md"], ["docs-index"]),
    (["tabulensis-api/src/index.js"], ["docs-index", "api-tests"]),
    (["desktop/backend/src/ui.rs"], ["docs-index", "rust-format", "rust-tests", "perf-quick"]),
    (["core/src/diff/engine.rs"], ["docs-index", "rust-format", "rust-tests", "perf-quick", "perf-cycle"]),
    (["core/src/grid/mod.rs"], ["docs-index", "rust-format", "rust-tests", "perf-quick", "perf-gate", "perf-cycle"]),
    (["desktop/backend/src/diff_runner.rs"], ["docs-index", "rust-format", "rust-tests", "perf-quick", "perf-cycle"]),
    (["Cargo.lock"], ["docs-index", "rust-tests", "perf-cycle"]),
])
def test_the_example_config_chooses_the_seeds_suites(paths, expected):
    suites = config.load(EXAMPLE, ROOT).config.validation.suites
    assert [s.name for s, _ in validation.select(suites, paths)] == expected


# --- running suites --------------------------------------------------------------------------------

def _with_mark(mark):
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("TEST_SUITE_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_suite_past_its_timeout_is_killed_with_everything_it_started(tmp_path):
    mark = uuid.uuid4().hex
    env = dict(os.environ, TEST_SUITE_MARK=mark)
    suite = Suite(name="slow", command="sleep 300 & (setsid sleep 301 &) ; sleep 302",
                  timeout=1.0, paths=(), always=True)
    t0 = time.monotonic()
    result = validation.run_suite(suite, tmp_path, env, tmp_path / "slow.log", ["always"])
    assert result.status == "timed_out" and time.monotonic() - t0 < 10
    assert "killed after 1s" in result.output_tail
    assert not _with_mark(mark)


def test_background_jobs_do_not_outlive_a_passing_suite(tmp_path):
    mark = uuid.uuid4().hex
    env = dict(os.environ, TEST_SUITE_MARK=mark)
    suite = Suite(name="bg", command="(setsid sleep 300 &); echo fine", timeout=30, paths=(), always=True)
    result = validation.run_suite(suite, tmp_path, env, None, ["always"])
    assert result.status == "passed" and "fine" in result.output_tail
    assert not _with_mark(mark)


# --- `overnight-agent validate` on a repository shaped like excel_diff ---------------------------

STUB = """import os, sys
log = os.environ.get("STUB_LOG")
if log:
    with open(log, "a") as f:
        f.write(os.path.basename(sys.argv[0]) + " " + " ".join(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("STUB_FAIL_" + os.path.basename(sys.argv[0]).split(".")[0].upper(), "0")))
"""


def excel_diff_repo(path: Path) -> Path:
    files = {
        "Cargo.toml": "[workspace]\nmembers = [\"core\"]\n", "Cargo.lock": "# lock\n",
        "rust-toolchain.toml": "[toolchain]\nchannel = \"stable\"\n", "core/Cargo.toml": "[package]\n",
        "core/src/diff/engine.rs": "pub fn diff() {}\n", "core/src/grid/mod.rs": "pub fn grid() {}\n",
        "desktop/backend/src/diff_runner.rs": "fn run() {}\n", "desktop/backend/src/ui.rs": "fn ui() {}\n",
        "ui_payload/src/lib.rs": "\n", "benchmarks/baselines/quick.json": "{}\n",
        "tabulensis-api/package.json": json.dumps({"name": "api", "version": "1.0.0", "private": True,
                                                   "scripts": {"test": "node test.js"}}),
        "tabulensis-api/test.js": "const fs = require('fs');\n"
                                  "if (process.env.STUB_LOG) fs.appendFileSync(process.env.STUB_LOG, "
                                  "'api-test ' + process.argv.slice(2).join(' ') + '\\n');\n",
        "tabulensis-api/src/index.js": "module.exports = 1;\n",
        "docs/index.md": "# Index\n", "README.md": "# excel_diff\n",
        "docs/meta/automation/overnight_agent.yaml": EXAMPLE.read_text(),
    }
    for name in ("update_docs_index_checklists", "safe_rustfmt", "dev_test", "check_perf_thresholds",
                 "check_perf_cycle_scope"):
        files[f"scripts/{name}.py"] = STUB
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    env = operator_env()
    git(path, "init", "-q", "-b", "main", env=env)
    git(path, "config", "user.name", "Op", env=env)
    git(path, "config", "user.email", "op@example.invalid", env=env)
    git(path, "add", "-A", env=env)
    git(path, "commit", "-q", "-m", "initial", env=env)
    git(path, "switch", "-q", "-c", "work", env=env)
    return path


def validate(repo, *args, env_extra=None, timeout=120):
    env = operator_env()
    env.update(env_extra or {})
    return subprocess.run([*TOOL, "validate", *args], cwd=str(repo), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_validate_runs_what_the_touched_paths_call_for_on_an_excel_diff_shaped_repo(tmp_path):
    require("npm", "the example's api-tests suite runs `npm test`")
    repo = excel_diff_repo(tmp_path / "excel_diff")
    log = tmp_path / "stubs.log"
    env = {"STUB_LOG": str(log)}
    # An API change: the always-run docs index check and the API tests.
    (repo / "tabulensis-api" / "src" / "index.js").write_text("module.exports = 2;\n")
    out = tmp_path / "api.json"
    result = validate(repo, "--out", str(out), env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert [s["name"] for s in record["suites"]] == ["docs-index", "api-tests"]
    assert record["touched"] == ["tabulensis-api/src/index.js"] and record["ok"] is True
    assert record["base"] == "main" and record["mode"] == "base"
    assert "api-test --run" in log.read_text()
    git(repo, "commit", "-qam", "api", env=operator_env())
    # A major perf-risk Rust change without its perf cycle: the perf-cycle suite fails.
    (repo / "core" / "src" / "diff" / "engine.rs").write_text("pub fn diff() { /* faster */ }\n")
    out = tmp_path / "rust.json"
    result = validate(repo, "--out", str(out), env_extra=env)
    assert result.returncode == 3, result.stdout + result.stderr
    record = json.loads(out.read_text())
    status = {s["name"]: s["status"] for s in record["suites"]}
    assert status == {"docs-index": "passed", "rust-format": "passed", "api-tests": "passed",
                      "rust-tests": "passed", "perf-quick": "passed", "perf-cycle": "failed"}
    assert "without its perf cycle" in result.stdout
    assert "dev_test.py" in log.read_text() and "--suite quick" in log.read_text()
    # With its one finished cycle committed on the branch, it passes.
    cycle = repo / "benchmarks" / "perf_cycles" / "20300101_abc"
    cycle.mkdir(parents=True)
    for name in ("pre.json", "post.json", "cycle_delta.md"):
        (cycle / name).write_text("x\n")
    git(repo, "add", "-A", env=operator_env())
    git(repo, "commit", "-qm", "perf: cycle", env=operator_env())
    result = validate(repo, "--out", str(tmp_path / "ok.json"), env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # A failing suite fails the run, and --staged looks at the staged set only.
    (repo / "README.md").write_text("# excel_diff\nmore\n")
    git(repo, "add", "README.md", env=operator_env())
    (repo / "core" / "src" / "grid" / "mod.rs").write_text("pub fn grid() { }\n")  # unstaged
    result = validate(repo, "--staged", "--out", str(tmp_path / "staged.json"),
                      env_extra={**env, "STUB_FAIL_UPDATE_DOCS_INDEX_CHECKLISTS": "1"})
    assert result.returncode == 3
    record = json.loads((tmp_path / "staged.json").read_text())
    assert record["touched"] == ["README.md"] and [s["name"] for s in record["suites"]] == ["docs-index"]
    assert record["suites"][0]["status"] == "failed" and record["suites"][0]["exit_code"] == 1


def test_validate_in_a_night_writes_its_record_under_the_run_folder(tmp_path):
    config_text = """version: 2
validation:
  suites:
    - {name: quick, command: "echo checked $OVERNIGHT_AGENT_VALIDATION", timeout: 30s, paths: ["src/**"]}
    - {name: slow, command: "sleep 30", timeout: 1s, paths: ["docs/**"]}
"""
    night = make_night(tmp_path / "n", config_text=config_text)
    night.agent("echo 'print(2)' > src/app.py")
    result = night.agent(f"{sys.executable} -m overnight_agent validate")
    assert result.returncode == 0, result.stdout + result.stderr
    records = sorted((night.run_dir / "validation").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["run_id"] == night.session.run_id and record["base"] == night.session.base_commit
    assert record["suites"][0]["name"] == "quick" and "checked base" in record["suites"][0]["output_tail"]
    assert Path(record["suites"][0]["log"]).read_text().strip() == "checked base"
    night.agent("echo more >> docs/guide.md")
    t0 = time.monotonic()
    result = night.agent(f"{sys.executable} -m overnight_agent validate")
    assert result.returncode == 3 and time.monotonic() - t0 < 15
    assert "slow: TIMED_OUT" in result.stdout


def test_validate_with_a_bad_base_is_a_usage_error(tmp_path):
    repo = excel_diff_repo(tmp_path / "r")
    result = validate(repo, "--base", "no-such-ref")
    assert result.returncode == 2 and "'no-such-ref' is not a commit" in result.stderr


# --- the forbidden commands: extended, not replaced by accident ----------------------------------

def loaded_from(tmp_path, text: str) -> config.Loaded:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config.load(path, tmp_path)


def test_forbidden_commands_extend_the_defaults_with_extras_or_a_default_entry(tmp_path):
    defaults = config.DEFAULT_FORBIDDEN_COMMANDS
    extra = loaded_from(tmp_path, "version: 2\nguard:\n  extra_forbidden_commands: [python3 scripts/release.py]\n")
    assert extra.config.guard.forbidden() == [*defaults, "python3 scripts/release.py"]
    entry = loaded_from(tmp_path, "version: 2\nguard:\n  forbidden_commands: [default, ./ship.sh, npm publish]\n")
    assert entry.config.guard.forbidden() == [*defaults, "./ship.sh"]  # each once, in order
    for loaded in (extra, entry):
        assert config.warnings(loaded) == []


def test_a_forbidden_list_that_drops_defaults_is_warned_about(tmp_path):
    loaded = loaded_from(tmp_path, "version: 2\nguard:\n  forbidden_commands: [npm publish, ./ship.sh]\n")
    assert loaded.config.guard.forbidden() == ["npm publish", "./ship.sh"]  # what was asked for
    (warning,) = config.warnings(loaded)
    dropped = len(config.DEFAULT_FORBIDDEN_COMMANDS) - 1
    assert warning.startswith(f"{tmp_path / 'c.yaml'}: guard.forbidden_commands: drops {dropped} of its "
                              f"{dropped + 1} default entries (npm unpublish, yarn publish, ")
    assert "guard.extra_forbidden_commands" in warning and "`- default`" in warning
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    result = subprocess.run([*TOOL, "check-config", str(tmp_path / "c.yaml"), "--repo", str(repo)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == f"overnight-agent: warning: {warning}\n", result.stderr


def test_the_example_config_keeps_every_default_forbidden_command(tmp_path):
    loaded = config.load(EXAMPLE, tmp_path)
    forbidden = loaded.config.guard.forbidden()
    assert forbidden[:len(config.DEFAULT_FORBIDDEN_COMMANDS)] == config.DEFAULT_FORBIDDEN_COMMANDS
    assert forbidden[-1] == "python3 scripts/release.py"
    assert config.warnings(loaded) == []

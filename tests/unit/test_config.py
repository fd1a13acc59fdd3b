"""The config schema: the seed's file loads unchanged; every bad input gives one exact line."""
import textwrap
from pathlib import Path

import pytest

from overnight_agent import config
from overnight_agent.exitcodes import ConfigError

import helpers

SEED_CONFIG = textwrap.dedent("""\
    version: 2

    repo:
      base_branch: main
      session_worktree_root: ../excel_diff_worktrees/overnight_session
      ops_journal_branch: overnight/ops-journal
      ops_journal_worktree: ../excel_diff_worktrees/overnight_ops_journal
      run_root: tmp/overnight_agent
      session_state: tmp/overnight_agent/session.json
      exec_summary_log: docs/meta/logs/ops/executive_summary.log
      reports_dir: docs/meta/logs/ops
      git_identity:
        name: Overnight Agent
        email: overnight-agent@localhost

    codex:
      codex_bin: codex
      codex_home: tmp/overnight_agent/codex_home
      model: gpt-5.3-codex
      model_reasoning_effort: xhigh
      full_auto: true
      sandbox: workspace-write
    """)


def test_the_seed_config_loads_unchanged_and_resolves_against_the_repo(tmp_path):
    repo = tmp_path / "excel_diff"
    repo.mkdir()
    cfg = config.parse(SEED_CONFIG, "seed.yaml")
    assert cfg.codex.model == "gpt-5.3-codex" and cfg.codex.model_reasoning_effort == "xhigh"
    paths = config.resolve_paths(cfg, repo)
    assert paths.session_state == repo / "tmp/overnight_agent/session.json"
    assert paths.session_worktree_root == tmp_path / "excel_diff_worktrees/overnight_session"
    assert paths.codex_home == repo / "tmp/overnight_agent/codex_home"
    assert paths.lock_file.parent == repo / "tmp/overnight_agent"
    assert cfg.schedule.deadline == "05:00" and cfg.schedule.wrap_up == 1800


def test_defaults_fill_everything_but_the_version(tmp_path):
    cfg = config.parse("version: 2\n", "x.yaml")
    paths = config.resolve_paths(cfg, tmp_path / "proj")
    assert paths.session_worktree_root == tmp_path / "proj_worktrees/overnight_session"
    assert paths.session_state == tmp_path / "proj/tmp/overnight_agent/session.json"
    assert cfg.restart.backoff_initial == 2 and cfg.stop.sigint_grace == 10
    keys = [row[0] for row in config.describe()]
    assert "codex.model_reasoning_effort" in keys and "schedule.deadline" in keys


BAD = [
    ("repo:\n  base_branch: main\n", "x.yaml: version: missing; add `version:`"),
    ("version: 3\n", "x.yaml: version: 3 is not supported; expected 2"),
    ("version: 2\nrepo:\n  bogus: 1\n", "x.yaml: repo.bogus: unknown key; expected one of base_branch,"),
    ("version: 2\ncolour: blue\n", "x.yaml: colour: unknown key; expected one of agent, budget, claude, codex,"),
    ("version: 2\ncodex:\n  model_reasoning_effort: extreme\n",
     "x.yaml: codex.model_reasoning_effort: 'extreme' is not allowed; expected one of none, minimal, low, medium, high, xhigh"),
    ("version: 2\ncodex:\n  sandbox: yolo\n", "x.yaml: codex.sandbox: 'yolo' is not allowed; expected one of read-only,"),
    ("version: 2\ncodex:\n  full_auto: yes please\n", "x.yaml: codex.full_auto: expected true or false"),
    ("version: 2\ncodex:\n  full_auto: true\n  sandbox: read-only\n",
     "x.yaml: codex.sandbox: 'read-only' contradicts codex.full_auto: true"),
    ("version: 2\ncodex:\n  model: 5\n", "x.yaml: codex.model: expected a non-empty string"),
    ("version: 2\ncodex:\n  extra_config: [nokey]\n",
     "x.yaml: codex.extra_config: 'nokey' is not a codex -c override; expected key=value"),
    ("version: 2\nschedule:\n  wrap_up: 5 parsecs\n",
     "x.yaml: schedule.wrap_up: '5 parsecs' is not a duration like 45s, 10m, 1h30m or a number of seconds"),
    ("version: 2\nschedule:\n  deadline: 25:00\n",
     "x.yaml: schedule.deadline: '25:00' is not a time of day; expected HH:MM between 00:00 and 23:59"),
    ("version: 2\nschedule:\n  deadline: 5am\n", "x.yaml: schedule.deadline: '5am' is not a time of day; expected HH:MM"),
    ("version: 2\nrestart:\n  backoff_initial: -1\n", "x.yaml: restart.backoff_initial: expected a duration"),
    ("version: 2\nrestart:\n  backoff_initial: 10m\n  backoff_max: 1m\n",
     "x.yaml: restart.backoff_max: must not be below restart.backoff_initial"),
    ("version: 2\nrepo:\n  ops_journal_branch: main\n", "x.yaml: repo.ops_journal_branch: must differ from repo.base_branch"),
    ("version: 2\nrepo:\n  base_branch: ../evil\n", "x.yaml: repo.base_branch: '../evil' is not a usable branch name"),
    ("version: 2\nrepo: [1, 2]\n", "x.yaml: repo: expected a mapping of keys"),
    ("version: [\n", "x.yaml: line 2: not valid YAML"),
    ("", "x.yaml: empty file; expected at least `version: 2`"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1].split(":")[1].strip() + str(i) for i, b in enumerate(BAD)])
def test_each_bad_config_gives_one_exact_line(text, expected):
    with pytest.raises(ConfigError) as info:
        config.parse(text, "x.yaml")
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_unquoted_clock_times_are_times_not_base_60_numbers():
    cfg = config.parse("version: 2\nschedule:\n  deadline: 05:30\n  window_start: 19:00\n", "x.yaml")
    assert (cfg.schedule.deadline, cfg.schedule.window_start) == ("05:30", "19:00")


@pytest.mark.parametrize("section, key", [("prompts", "boot"), ("codex", "prompt_template")])
def test_a_prompt_template_with_an_unknown_placeholder_is_refused(tmp_path, section, key):
    template = tmp_path / "boot.md"
    template.write_text("Work until $deadline, then $dance.\n")
    (tmp_path / "c.yaml").write_text(f"version: 2\n{section}:\n  {key}: {template}\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "c.yaml", tmp_path)
    assert f"{section}.{key}" in str(info.value) and "$dance" in str(info.value)


def test_prompt_templates_live_under_prompts_for_every_agent_and_the_old_names_still_work(tmp_path):
    for kind in ("boot", "resume", "wrap_up"):
        (tmp_path / f"{kind}.md").write_text(f"{kind} until $deadline\n")
    (tmp_path / "new.yaml").write_text("version: 2\nagent: gemini\nprompts:\n  boot: boot.md\n"
                                       "  resume: resume.md\n  wrap_up: wrap_up.md\n")
    loaded = config.load(tmp_path / "new.yaml", tmp_path)
    assert {k: loaded.prompt_template(k) for k in ("boot", "resume", "wrap_up")} == {
        k: tmp_path / f"{k}.md" for k in ("boot", "resume", "wrap_up")}
    assert config.warnings(loaded) == []
    # The old names, from before other agents came: read for any agent, with a warning to move them.
    (tmp_path / "old.yaml").write_text("version: 2\nagent: claude\ncodex:\n  resume_prompt_template: resume.md\n")
    old = config.load(tmp_path / "old.yaml", tmp_path)
    assert old.prompt_template("resume") == tmp_path / "resume.md" and old.prompt_template("boot") is None
    [warning] = config.warnings(old)
    assert warning.startswith(f"{tmp_path / 'old.yaml'}: codex.resume_prompt_template: ") and "prompts.resume" in warning
    # Both names at once: which one was meant is not ours to guess.
    (tmp_path / "both.yaml").write_text("version: 2\ncodex:\n  prompt_template: boot.md\n"
                                        "prompts:\n  boot: resume.md\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "both.yaml", tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'both.yaml'}: codex.prompt_template: ")
    assert "drop codex.prompt_template" in str(info.value)


def test_check_config_cli_exit_codes_and_output(tmp_path):
    repo = helpers.make_repo(tmp_path / "repo")
    (repo / "good.yaml").write_text(SEED_CONFIG)
    (repo / "bad.yaml").write_text("version: 2\ncodex:\n  model_reasoning_effort: bogus\n")
    good = helpers.run_cli("check-config", str(repo / "good.yaml"), "--repo", str(repo))
    assert good.returncode == 0, good.stderr
    assert "model_reasoning_effort: xhigh" in good.stdout and str(repo / "tmp/overnight_agent") in good.stdout
    bad = helpers.run_cli("check-config", str(repo / "bad.yaml"), "--repo", str(repo))
    assert bad.returncode == 78
    assert bad.stderr.strip().splitlines() == [
        f"overnight-agent: {repo / 'bad.yaml'}: codex.model_reasoning_effort: 'bogus' is not allowed; "
        "expected one of none, minimal, low, medium, high, xhigh"]
    missing = helpers.run_cli("check-config", str(repo / "nope.yaml"), "--repo", str(repo))
    assert missing.returncode == 78 and "cannot read config" in missing.stderr
    usage = helpers.run_cli("run", "--hours", "soon")
    assert usage.returncode == 2 and "not a number of hours" in usage.stderr
    not_repo = helpers.run_cli("check-config", "--repo", str(tmp_path))
    assert not_repo.returncode == 78 and "not inside a git repository" in not_repo.stderr


def test_the_configuration_reference_lists_every_key_with_its_default():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert config.reference_table() in doc, (
        "docs/configuration.md is stale: regenerate its table with `make docs`")

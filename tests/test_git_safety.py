"""Git safety for the agent's processes: codex rules, the agent's hooks, and the after-attempt
check, on real repositories; and the operator's own git, untouched.

The scripted agent (`fakecodex`) does not enforce codex's `.rules`, so with it the hooks and
the after-attempt compare/restore are what hold; the real codex (loopback mock model) is
refused by the rules before anything runs.
"""
import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

import guardkit
from guardkit import git, make_night, protected
from overnight_agent import fences, hookrun

FAKE_CODEX = [sys.executable, "-m", "overnight_agent.fakecodex"]
TOOL = f"{sys.executable} -m overnight_agent"


def refused_operations(night):
    """Every operation the seed forbids, as the agent would type it in its session worktree."""
    return [
        ("reset --hard", "git reset --hard HEAD"),
        ("reset -q --hard", "git reset -q --hard"),
        ("-C reset --hard", f"git -C {night.session_wt} reset --hard HEAD"),
        ("push", "git push origin main"),
        ("push overnight", "git push origin HEAD:refs/heads/overnight/pushed"),
        ("push --force", "git push --force origin HEAD:feature"),
        ("clean -f", "git clean -fdx"),
        ("clean -d -f", "git clean -d -f"),
        ("checkout --", "git checkout -- README.md"),
        ("checkout .", "git checkout ."),
        ("restore", "git restore README.md"),
        ("switch --discard-changes", "git switch --discard-changes feature"),
        ("branch -D operator's", "git branch -D feature"),
        ("branch -d earlier night's", "git branch -d overnight/2020-01-01_0000_old-night"),
        ("branch -M over operator's", "git branch -M feature"),
        ("update-ref -d branch", "git update-ref -d refs/heads/feature"),
        ("update-ref -d tag", "git update-ref -d refs/tags/v1"),
        ("update-ref move main", "git update-ref refs/heads/main HEAD"),
        ("tag -d", "git tag -d v1"),
        ("stash drop", "git stash drop"),
        ("stash pop", "git stash pop"),
        ("stash clear", "git stash clear"),
        ("rebase shared branch", f"git rebase {night.session.session_branch} feature"),
        ("worktree remove", f"git worktree remove --force {night.operator_wt}"),
        ("gc --prune=now", "git gc --prune=now"),
        ("reflog expire", "git reflog expire --expire=now --all"),
        ("commit --no-verify", "git commit --no-verify -m skip"),
        ("hooks off", "git -c core.hooksPath=/dev/null commit -m skip"),
        ("npm publish", "npm publish"),
        ("cargo publish", "cargo publish --allow-dirty"),
        ("twine upload", "twine upload dist/x.whl"),
        ("docker push", "docker push registry.example.invalid/app:1"),
        ("kubectl apply", "kubectl apply -f deploy.yaml"),
        ("terraform apply", "terraform apply -auto-approve"),
        ("gh release create", "gh release create v9"),
        ("npx deploy", "npx vercel deploy --prod"),
    ]


def allowed_operations(night):
    return ["git status", "git switch -c overnight/2030-01-01_0000_x", "git commit -m ok",
            "git branch -D overnight/2030-01-01_0000_x", "git reset -q -- README.md", "git stash",
            "git stash apply", "git rebase main", "npm test", "cargo test", "git log --oneline",
            f"{TOOL} branch fix-links"]


# --- rules (codex's own checker) ---------------------------------------------------------------

@pytest.mark.realcodex
def test_rules_file_refuses_every_operation_in_common_option_orders(tmp_path):
    import realcodex as rc
    binary = rc.require_codex()
    night = make_night(tmp_path / "n")
    rules = night.guard.rules_file
    assert rules == night.codex_home / "rules" / fences.rules_name(night.repo)
    assert rules.name.startswith(f"overnight-agent-{night.repo.name}-")
    checked = 0

    def decision(command: str) -> dict:
        proc = subprocess.run([binary, "execpolicy", "check", "--rules", str(rules), "--", *command.split()],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    variants = []
    for name, command in refused_operations(night):
        variants.append(command)
        if command.startswith("git "):
            rest = command[4:]
            variants += [f"git -C {night.session_wt} {rest}", f"git --no-pager {rest}", f"env git {rest}",
                         f"/usr/bin/git {rest}", f"git -C . {rest}", f"git -C {night.repo} {rest}"]
    for command in variants:
        result = decision(command)
        checked += 1
        assert result.get("decision") == "forbidden", f"{command!r} was not refused: {result}"
        why = result["matchedRules"][0]["prefixRuleMatch"]["justification"]
        assert why.startswith("overnight-agent guard: "), why
    for command in allowed_operations(night):
        assert decision(command).get("decision") != "forbidden", command
    assert checked > 150


def test_prepare_touches_only_its_own_files_and_is_idempotent(tmp_path):
    night = make_night(tmp_path / "n")
    theirs = night.codex_home / "rules" / "default.rules"
    theirs.write_text('prefix_rule(pattern = ["rm"], decision = "prompt")\n')
    before = protected(night.repo)
    first = night.guard.rules_file.read_text()
    guard = night.prepare()
    assert protected(night.repo) == before  # no config, hook or ref of the repository changed
    assert theirs.read_text() == 'prefix_rule(pattern = ["rm"], decision = "prompt")\n'
    assert guard.rules_file.read_text() == first
    assert guard.hooks_dir == night.run_dir / "guard" / "hooks"
    env = guard.env
    keys = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert keys["core.hooksPath"] == str(guard.hooks_dir)
    assert keys["user.email"] == "overnight-agent@localhost"
    assert env["OVERNIGHT_AGENT_GUARD"] == str(guard.spec_file)
    assert fences.rules_name(night.repo) not in night.operator("config", "--list", "--show-origin")


# --- the scripted agent: hooks and the after-attempt check hold ----------------------------------

def _fake_codex(night, commands, timeout=120):
    home = night.codex_home
    home.mkdir(parents=True, exist_ok=True)
    steps = [{"shell": c} for c in commands] + [{"message": "done"}]
    (home / "fake_codex_scenario.yaml").write_text(yaml.safe_dump({"invocations": [{"steps": steps}]}))
    env = night.agent_env()
    env["CODEX_HOME"] = str(home)
    proc = subprocess.run([*FAKE_CODEX, "exec", "--json", "--sandbox", "workspace-write", "go"],
                          cwd=str(night.session_wt), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)
    outputs = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        item = event.get("item") or {}
        if event.get("type") == "item.completed" and item.get("type") == "command_execution":
            outputs[item["command"]] = (item["exit_code"], item["aggregated_output"])
    return proc, outputs


def _agent_processes(night):
    import psutil
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("OVERNIGHT_AGENT_GUARD") == str(night.guard.spec_file):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_scripted_agent_tries_every_refused_operation_and_nothing_outside_overnight_changes(tmp_path):
    night = make_night(tmp_path / "n")
    start = protected(night.repo)
    before = night.guard.audit.snapshot()
    setup = ["echo agent > agent.txt && git add agent.txt && git commit -qm 'feat: agent work'",
             "echo scratch > scratch.txt"]
    ops = [c for name, c in refused_operations(night)
           if name not in ("worktree remove",)  # no hook sees it: only codex's sandbox and rules stop it
           and not c.split()[0] in ("npm", "cargo", "twine", "docker", "kubectl", "terraform", "gh", "npx")]
    back = f"git rebase --abort 2>/dev/null; git switch -q {night.session.session_branch} 2>/dev/null; true"
    steps = setup + [step for op in ops for step in (op, back)]
    t0 = time.monotonic()
    proc, outputs = _fake_codex(night, steps)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]

    def out(cmd):
        return outputs[f"/bin/bash -lc {shlex.quote(cmd)}"]

    assert out(setup[0])[0] == 0

    hook_refused = ["git push origin main", "git push origin HEAD:refs/heads/overnight/pushed",
                    "git push --force origin HEAD:feature", "git branch -D feature",
                    "git branch -d overnight/2020-01-01_0000_old-night", "git update-ref -d refs/heads/feature",
                    "git update-ref -d refs/tags/v1", "git update-ref refs/heads/main HEAD", "git tag -d v1",
                    "git stash clear", f"git rebase {night.session.session_branch} feature"]
    for cmd in hook_refused:
        code, text = out(cmd)
        assert code != 0 and "overnight-agent guard: refused" in text, (cmd, code, text)
    check = night.guard.audit.after_attempt(before, attempt=1)
    assert protected(night.repo) == start, check.actions
    assert not [c for c in check.changes if not c.restorable], check.changes
    assert all(a.startswith("restored") for a in check.actions), check.actions
    # the agent's own work is still there
    assert git(night.repo, "log", "-1", "--format=%s", night.session.session_branch) == "feat: agent work"
    assert elapsed < 60
    assert not _agent_processes(night)


def test_after_attempt_restores_refs_changed_behind_the_hooks_and_reports_the_rest(tmp_path):
    night = make_night(tmp_path / "n")
    start = protected(night.repo)
    before = night.guard.audit.snapshot()
    common = night.repo / ".git"
    main = git(night.repo, "rev-parse", "main")
    bypass = "git -c core.hooksPath=/dev/null"
    result = night.agent(
        "echo w > w.txt && git add w.txt && git commit -qm work && "
        f"{bypass} update-ref refs/heads/main HEAD && {bypass} tag v2 && {bypass} branch -D feature && "
        f"{bypass} update-ref refs/tags/v1 HEAD && env -u GIT_CONFIG_COUNT git branch made-by-agent && "
        f"git rev-parse HEAD > {common}/refs/heads/written-directly && "
        f"{bypass} stash drop -q")
    assert result.returncode == 0, result.stderr
    check = night.guard.audit.after_attempt(before, attempt=3)
    kinds = {c.name for c in check.changes}
    assert {"refs/heads/main", "refs/tags/v2", "refs/heads/feature", "refs/tags/v1",
            "refs/heads/made-by-agent", "refs/heads/written-directly", "refs/stash"} <= kinds
    assert protected(night.repo) == start, check.actions
    assert git(night.repo, "rev-parse", "main") == main
    rescued = git(night.repo, "for-each-ref", "--format=%(refname:short)",
                  f"refs/heads/overnight/rescued_{night.session.run_id}/").split()
    assert f"overnight/rescued_{night.session.run_id}/heads/main" in rescued
    assert Path(check.record).is_file() and "refs/heads/main" in Path(check.record).read_text()
    assert "restored" in check.summary()
    # the primary tree itself cannot be restored safely: reported, never touched
    before = night.guard.audit.snapshot()
    (night.repo / "src" / "app.py").write_text("changed by someone\n")
    check = night.guard.audit.after_attempt(before, attempt=4)
    assert [c.kind for c in check.changes] == ["primary_tree"]
    assert check.actions[0].startswith("not restored: the primary working tree changed: src/app.py")
    assert (night.repo / "src" / "app.py").read_text() == "changed by someone\n"


def test_an_operator_change_during_an_attempt_is_left_alone(tmp_path):
    night = make_night(tmp_path / "n")
    before = night.guard.audit.snapshot()
    time.sleep(1.1)  # reflog times have a one-second resolution
    night.operator("branch", "-f", "feature", "HEAD~0")
    git(night.operator_wt, "commit", "-q", "--allow-empty", "-m", "operator at 2am", env=guardkit.operator_env())
    moved = git(night.repo, "rev-parse", "op-branch")
    check = night.guard.audit.after_attempt(before, attempt=1)
    assert any(a.startswith("left as is: refs/heads/op-branch") for a in check.actions), check.actions
    assert git(night.repo, "rev-parse", "op-branch") == moved


def test_the_operators_own_git_is_unchanged_and_the_repository_hooks_run_for_both(tmp_path):
    night = make_night(tmp_path / "n")
    hooks = night.repo / ".git" / "hooks"
    marker = tmp_path / "markers.txt"
    for name in ("pre-commit", "reference-transaction", "post-commit"):
        (hooks / name).write_text(f"#!/bin/sh\ncat > /dev/null 2>&1 || true\necho \"{name} $1\" >> {marker}\n")
        (hooks / name).chmod(0o755)
    night.prepare()
    # the agent: its commit runs the repository's own hooks after its guards
    result = night.agent("echo a > a.txt && git add a.txt && git commit -qm a")
    assert result.returncode == 0, result.stderr
    ran = marker.read_text()
    assert "pre-commit" in ran and "reference-transaction prepared" in ran and "post-commit" in ran
    marker.unlink()
    # the operator: exactly as before, no guard, and their hooks run
    night.operator("branch", "-D", "feature")
    night.operator("tag", "-d", "v1")
    night.operator("stash", "drop", "-q")
    night.operator("commit", "-q", "-am", "operator commit")
    ran = marker.read_text()
    assert "pre-commit" in ran and "reference-transaction committed" in ran
    assert night.operator("rev-parse", "--verify", "--quiet", "refs/heads/feature", check=False) == ""
    assert "hooksPath" not in night.operator("config", "--list")


def test_a_relative_core_hookspath_of_the_repository_is_chained(tmp_path):
    night = make_night(tmp_path / "n")
    night.operator("config", "core.hooksPath", ".githooks")
    marker = tmp_path / "relative.txt"
    for wt in (night.repo, night.session_wt):
        (wt / ".githooks").mkdir(exist_ok=True)
        hook = wt / ".githooks" / "pre-commit"
        hook.write_text(f"#!/bin/sh\necho \"$PWD\" >> {marker}\n")
        hook.chmod(0o755)
    night.prepare()
    result = night.agent("echo a > a.txt && git add a.txt && git commit -qm a")
    assert result.returncode == 0, result.stderr
    assert marker.read_text().strip() == str(night.session_wt)


def test_work_item_branches_are_recorded_and_only_they_may_be_deleted(tmp_path):
    night = make_night(tmp_path / "n")
    made = night.agent(f"{TOOL} branch fix-links --paths 'docs/**' 'README.md'")
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    assert name.startswith("overnight/") and name.endswith("_fix-links")
    record = hookrun.created_branches(str(night.guard.branches_file))
    assert record[name]["paths"] == ["docs/**", "README.md"]
    direct = night.agent("git switch -q -c overnight/made-by-hand && git switch -q -")
    assert direct.returncode == 0, direct.stderr
    assert "overnight/made-by-hand" in hookrun.created_branches(str(night.guard.branches_file))
    gone = night.agent("git branch -D overnight/made-by-hand")
    assert gone.returncode == 0, gone.stderr
    kept = night.agent("git branch -D overnight/2020-01-01_0000_old-night")
    assert kept.returncode != 0 and "did not create it" in kept.stderr
    bad = night.agent(f"{TOOL} branch x --paths /etc")
    assert bad.returncode == 2 and "relative to the repository root" in bad.stderr


def test_a_commit_in_the_operators_worktree_is_refused_by_the_hooks(tmp_path):
    night = make_night(tmp_path / "n")
    start = protected(night.repo)
    for cwd in (night.repo, night.operator_wt):
        result = night.agent("git commit -q --allow-empty -m sneaky", cwd=cwd)
        assert result.returncode != 0 and "is not yours" in result.stderr, result.stderr
        result = night.agent("git commit -q --no-verify --allow-empty -m sneaky", cwd=cwd)
        assert result.returncode != 0 and "is not yours" in result.stderr, result.stderr
    assert protected(night.repo) == start


# --- the real codex: refused before anything runs -------------------------------------------------

@pytest.mark.realcodex
def test_real_codex_is_refused_every_operation_and_the_repository_is_untouched():
    import realcodex as rc
    from mock_model_server import MockModelServer
    binary = rc.require_codex()
    base = rc.scratch_dir("guard")
    tag = f"guard-{uuid.uuid4().hex[:8]}"
    try:
        night = make_night(base / "n")
        start = protected(night.repo)
        before = night.guard.audit.snapshot()
        ops = refused_operations(night)
        # Forms a prefix rule cannot see (a redirection): the hooks refuse them instead.
        escaped = ["git update-ref refs/heads/main HEAD 2>&1", "git branch -D feature 2>&1",
                   "git tag v9 2>&1"]
        work = "echo x > x.txt && git add x.txt && git commit -qm 'feat: x'"
        steps = ([{"shell": work}] + [{"shell": c} for _, c in ops] + [{"shell": c} for c in escaped]
                 + [{"message": "done"}])
        with MockModelServer(steps) as server:
            rc.write_codex_home(night.codex_home, server.port)
            roots = rc.worktree_writable_roots(night.session_wt) + [str(night.run_dir / "agent")]
            env = rc.codex_env(night.codex_home, tag=tag, extra=night.guard.env)
            t0 = time.monotonic()
            run = rc.run_codex([binary, "exec", "--json", "--sandbox", "workspace-write", "-m", "gpt-5.3-codex",
                                "-c", rc.writable_roots_override(roots), "go"],
                               cwd=night.session_wt, env=env, timeout=120)
            elapsed = time.monotonic() - t0
            assert run.returncode == 0 and not run.timed_out, run.describe()
            last = [r for r in server.requests if r["path"].endswith("/responses")][-1]["body"]["input"]
        calls = {item["call_id"]: json.loads(item["arguments"])["cmd"] for item in last
                 if item.get("type") == "function_call"}
        outputs = {calls[item["call_id"]]: item["output"] for item in last
                   if item.get("type") == "function_call_output"}
        for name, command in ops:
            text = outputs[command]
            assert "rejected" in text and "overnight-agent guard: " in text, (name, text[:400])
        for command in escaped:
            text = outputs[command]
            assert "Process exited with code 0" not in text, text[:400]
            # Deleting a packed ref needs .git/packed-refs.lock, which the sandbox already refuses.
            assert "overnight-agent guard: refused" in text or (
                "branch -D" in command and "packed-refs.lock': Read-only file system" in text), text[:400]
        assert "Process exited with code 0" in outputs[work]
        check = night.guard.audit.after_attempt(before, attempt=1)
        assert check.clean, check.actions
        assert protected(night.repo) == start
        assert git(night.repo, "log", "-1", "--format=%s", night.session.session_branch) == "feat: x"
        assert elapsed < 90
        assert not rc.processes_with_tag(tag)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_tools_own_journal_commits_pass_the_guards(tmp_path):
    night = make_night(tmp_path / "n")
    before = night.guard.audit.snapshot()
    result = night.agent(f"{TOOL} journal summary 'Fixed two links.' && {TOOL} journal question 'Ship it?'")
    assert result.returncode == 0, result.stderr
    log = git(night.repo, "log", "--format=%s", "overnight/ops-journal")
    assert "ops: summary (agent)" in log and "ops: question for the operator" in log
    assert night.guard.audit.after_attempt(before).clean


def test_extra_forbidden_commands_join_the_defaults_in_codex_rules(tmp_path):
    night = make_night(tmp_path / "n", config_text=(
        "version: 2\nguard:\n  extra_forbidden_commands: [python3 scripts/release.py]\n"))
    rules = night.guard.rules_file.read_text()
    assert 'forbid(["python3", "scripts/release.py"], ' in rules
    assert 'forbid(["npm", "publish"], ' in rules and 'forbid(["terraform", "destroy"], ' in rules

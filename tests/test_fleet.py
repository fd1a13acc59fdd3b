"""Many nights at once: ten repositories on one machine, ten nights side by side, no cross-talk.

Each of ten git repositories gets a night of its own with the scripted Codex CLI, all running at
the same time: as ten instances of the template units `overnight-agent@<repo>.service` under a
real `systemd --user` manager (tests/systemd_lab.py), and as ten plain `run` processes. Every
agent commits a file naming its repository, writes ops-journal lines and touches its heartbeat,
then waits at a barrier the test opens once all ten are waiting (so all ten agents are alive at
once). While they wait: one night is stopped, one supervisor is killed with SIGKILL (systemd
restarts it; in the plain variant it is started again by hand) and resumes its thread, and the
test proves the other eight agents were not disturbed. After the barrier three codex processes
crash and are resumed. Nine nights end `finished` (their token budget spent), one `stopped`.

Then, per repository: its own session.json, lock, run folder, log, report, heartbeat, codex
home (one rollout, its own thread, its own worktree as cwd), its own session branch holding only
its own commit, its own ops-journal lines, every agent process it ran tagged with its own tag and
environment (and, under systemd, inside its own unit's cgroup), its own journald entries; no
other repository's run id, name or path in any of its files or its git history; the primary tree
byte-identical; nothing left running.

Half of the repositories pass `--config` (their paths under the test's folder), half use the
repository's own `.overnight-agent.yaml` with the default paths (`run_root` inside the
repository, worktrees beside it).

Last, the one cross-talk found: pids wrap (pid_max is 32768 on many machines), so the process
group id of a codex that has exited can be another night's codex's. A night still stopping the
rest of its agent's tree signalled that group (`killpg`), killing the other night's agent; it
no longer does (`procs.group_is_ours`), proved at the `procs` level and end to end.
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import psutil
import yaml

import helpers
from overnight_agent import config as oa_config
from overnight_agent import lock as oa_lock
from overnight_agent import procs, units

N = 10
CRASH = (1, 4, 7)   # codex exits 1 after the barrier; the resumed thread finishes the night
KILLED = 5          # its supervisor is SIGKILLed at the barrier; the next one resumes the thread
STOPPED = 8         # stopped at the barrier: `stopped`, the others go on
BUDGET = 1000       # budget.max_tokens: the turn that spends it ends the night (`finished`)
PY = sys.executable
OA = str(Path(PY).parent / "overnight-agent")


@dataclass
class Member:
    index: int
    base: Path
    repo: Path
    config: Optional[Path]          # --config, or None: the repository's own config file
    paths: oa_config.Paths
    fingerprint: dict = field(default_factory=dict)
    proc: Optional[subprocess.Popen] = None   # the plain variant's supervisor

    @property
    def name(self) -> str:
        return f"fleet-{self.index:02d}"

    @property
    def units(self) -> Dict[str, str]:
        return units.instance_units(units.escape_path(str(self.repo)))

    @property
    def prefix(self) -> str:
        return helpers.tag_prefix(self.paths.run_root)

    def session(self) -> Optional[dict]:
        try:
            return json.loads(self.paths.session_state.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def config_args(self) -> List[str]:
        return ["--config", str(self.config)] if self.config else []


def scenario(member: Member, barrier: Path) -> List[List[dict]]:
    """Invocation 0: commit, journal, heartbeat, wait at the barrier, then crash or spend the
    budget. Invocation 1 (a resume): one more journal line, then spend the budget."""
    name = member.name
    tool = f"{PY} -m overnight_agent"
    spend = {"usage": {"input": 2 * BUDGET, "output": 10}}
    first = [
        {"message": f"{name} starts"},
        {"shell": f"printf '%s\\n' '{name} was here' > FLEET.txt && git add FLEET.txt && "
                  f"git commit -q -m '{name}: identifiable commit'"},
        {"shell": f"{tool} journal summary '{name} committed FLEET.txt'"},
        {"shell": f"{tool} heartbeat"},
        {"shell": f"touch {barrier}/arrived-{name} && while [ ! -e {barrier}/go ]; do sleep 0.05; done"},
        {"crash": 1} if member.index in CRASH else spend,
    ]
    resumed = [{"shell": f"{tool} journal summary '{name} resumed'"}, spend]
    return [first, resumed]


def make_fleet(root: Path, barrier: Path, schedule: Optional[dict] = None) -> List[Member]:
    barrier.mkdir(parents=True)
    members = []
    for index in range(1, N + 1):
        base = root / f"n{index:02d}"
        repo = helpers.make_repo(base / f"project-{index:02d}",
                                 {"README.md": f"# project {index:02d}\n", "src/app.py": "print('hi')\n"})
        settings = {"budget": {"max_tokens": BUDGET}, **({"schedule": schedule} if schedule else {})}
        if index % 2:   # the repository's own config file, default paths
            data = {"version": 2, "codex": {"codex_bin": str(helpers.fake_codex_bin(root))},
                    "schedule": {"wrap_up": "2s", **(schedule or {})},
                    "restart": {"backoff_initial": "0.1s", "backoff_max": "1s", "healthy_after": "30s"},
                    "stop": {"sigint_grace": "1s", "sigterm_grace": "1s"},
                    "budget": {"max_tokens": BUDGET}}
            (repo / ".overnight-agent.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            cfg = None
        else:
            cfg = helpers.write_config(base / "overnight.yaml", base, **settings)
        paths = oa_config.load(cfg, repo).paths
        member = Member(index=index, base=base, repo=repo, config=cfg, paths=paths)
        home = paths.codex_home
        home.mkdir(parents=True, exist_ok=True)
        doc = {"invocations": [{"steps": steps} for steps in scenario(member, barrier)]}
        (home / "fake_codex_scenario.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        member.fingerprint = fingerprint(repo)
        members.append(member)
    # Every member's folders are its own: nothing of one lies inside another's.
    for member in members:
        for other in members:
            if other is not member:
                assert not str(member.paths.run_root).startswith(str(other.base) + os.sep)
    return members


def fingerprint(repo: Path) -> dict:
    """`helpers.primary_fingerprint`, but for the default `run_root` (`tmp/overnight_agent`, inside
    the repository): the night lists it in .git/info/exclude on purpose, so `git status` stops
    showing what was untracked there before the night (the scenario file) and is otherwise equal."""
    taken = helpers.primary_fingerprint(repo)
    taken["status"] = "\n".join(line for line in taken["status"].splitlines() if not line.startswith("?? tmp/"))
    return taken


def wait_arrived(members: List[Member], barrier: Path, timeout: float = 40.0) -> None:
    helpers.wait_for(lambda: all((barrier / f"arrived-{m.name}").exists() for m in members),
                     timeout=timeout, interval=0.1, what="all ten agents at the barrier")


def agent_pid(member: Member) -> int:
    """The pid of the codex that runs this member's current attempt (from its session.json)."""
    session = member.session()
    return session["attempts"][-1]["pid"]


def check_agent_processes(members: List[Member]) -> Dict[int, set]:
    """Every process that carries an agent tag belongs, by every variable of its environment,
    to exactly one member: its tag, run id, session file, heartbeat and CODEX_HOME (the fake
    codex and the commands it runs inherit them). Returns each member's tagged pids."""
    sessions = {m.index: m.session() for m in members}
    owned: Dict[int, set] = {m.index: set() for m in members}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        tag = env.get(procs.TAG_VAR)
        if not tag or proc.pid == os.getpid():
            continue
        mine = [m for m in members if tag.startswith(m.prefix)]
        if not mine:
            continue  # another test's, or another run_root's
        assert len(mine) == 1, f"pid {proc.pid}: tag {tag} matches {[m.name for m in mine]}"
        member, session = mine[0], sessions[mine[0].index]
        assert tag == session["tag"], (member.name, tag, session["tag"])
        assert env.get("OVERNIGHT_AGENT_RUN_ID") == session["run_id"], (member.name, proc.pid)
        assert env.get("OVERNIGHT_AGENT_SESSION") == str(member.paths.session_state), (member.name, proc.pid)
        assert env.get("OVERNIGHT_AGENT_HEARTBEAT") == session["heartbeat_file"], (member.name, proc.pid)
        assert env.get("CODEX_HOME") == str(member.paths.codex_home), (member.name, proc.pid)
        owned[member.index].add(proc.pid)
    for member in members:
        assert agent_pid(member) in owned[member.index], f"{member.name}: its codex is not tagged"
    return owned


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def check_member(member: Member, members: List[Member]) -> None:
    """Everything of one night is its own (see the module's docstring)."""
    session = member.session()
    run_id, name = session["run_id"], member.name
    others = [m for m in members if m is not member]
    other_ids = [m.session()["run_id"] for m in others]
    expected = "stopped" if member.index == STOPPED else "finished"
    assert session["state"] == expected, (name, session["state"], session["events"][-3:])
    assert session["repo_root"] == str(member.repo)
    assert session["tag"] == member.prefix + run_id
    assert Path(session["heartbeat_file"]) == member.paths.run(run_id).heartbeat
    assert Path(session["heartbeat_file"]).exists(), f"{name}: the agent's heartbeat never arrived"
    assert Path(session["session_worktree"]).parent == member.paths.session_worktree_root
    assert Path(session["ops_journal_worktree"]) == member.paths.ops_journal_worktree
    # Attempts: who crashed, who was resumed after its supervisor died, all on one thread.
    kinds = [(a["kind"], a["outcome"]) for a in session["attempts"]]
    if member.index in CRASH:
        assert kinds == [("start", "crashed"), ("resume", "completed")], (name, kinds)
    elif member.index == KILLED:
        assert kinds == [("start", "supervisor_lost"), ("resume", "completed")], (name, kinds)
        assert session["restarts"] == 1
    elif member.index == STOPPED:
        assert kinds == [("start", "stopped")], (name, kinds)
    else:
        assert kinds == [("start", "completed")], (name, kinds)
    if member.index != KILLED:
        assert session["restarts"] == 0, (name, session["restarts"])
    assert "night.failed" not in [e["event"] for e in session["events"]], name
    threads = {a["thread_id"] for a in session["attempts"]}
    assert threads == {session["thread_id"]}, (name, threads)
    # The lock: this night's supervisor held this run_root's lock, and nobody holds it now.
    lock = member.paths.lock_file
    assert lock.exists() and not oa_lock.is_held(lock)
    # codex home: one rollout, this night's thread, this night's worktree as its cwd.
    rollouts = sorted((member.paths.codex_home / "sessions").rglob("rollout-*.jsonl"))
    assert [p.name.endswith(f"-{session['thread_id']}.jsonl") for p in rollouts] == [True], (name, rollouts)
    cwds = {json.loads(line)["payload"].get("cwd") for line in rollouts[0].read_text().splitlines()
            if json.loads(line)["type"] in ("session_meta", "turn_context")}
    assert cwds == {session["session_worktree"]}, (name, cwds)
    # The run folder: one, this night's, its log all this night's.
    runs = sorted(p.name for p in (member.paths.run_root / "runs").iterdir())
    assert runs == [run_id], (name, runs)
    layout = member.paths.run(run_id)
    events = [json.loads(line) for line in layout.supervisor_log.read_text().splitlines()]
    assert events and {e.get("run_id", run_id) for e in events} == {run_id}, name
    assert any(e["event"] == "thread.started" and e.get("thread_id") == session["thread_id"] for e in events)
    assert (layout.root / "codex_start.log").exists()
    if expected == "finished":
        report = (layout.root / "report.md").read_text()
        assert run_id in report and not any(other in report for other in other_ids), name
    # git: the session branch holds exactly this agent's commit; no other night's branch.
    repo = member.repo
    branches = set(helpers.git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split())
    assert branches == {"main", session["session_branch"], session["ops_journal_branch"]}, (name, branches)
    log = helpers.git(repo, "log", "--format=%s", f"main..{session['session_branch']}").splitlines()
    assert log == [f"{name}: identifiable commit"], (name, log)
    assert helpers.git(repo, "show", f"{session['session_branch']}:FLEET.txt") == f"{name} was here"
    # The ops journal: this agent's lines, committed on this repository's ops-journal branch.
    summary_rel = Path(session["exec_summary_log"]).relative_to(session["ops_journal_worktree"])
    committed = helpers.git(repo, "show", f"{session['ops_journal_branch']}:{summary_rel.as_posix()}")
    lines = committed.splitlines()
    assert any(line.endswith(f" {name} committed FLEET.txt") for line in lines), (name, committed)
    resumed = member.index in CRASH or member.index == KILLED
    assert any(line.endswith(f" {name} resumed") for line in lines) == resumed, (name, committed)
    assert all(f" {session['session_branch']} " in line for line in lines), (name, committed)
    # Nothing of another night anywhere: file names, file bytes, git history of every ref.
    needles = [n.encode() for m in others for n in (m.name, m.session()["run_id"], f"{m.base}{os.sep}")]
    history = subprocess.run(["git", "log", "--all", "-p", "--format=%H %s%n%b"], cwd=repo,
                             capture_output=True, check=True).stdout
    assert not [n for n in needles if n in history], (name, [n for n in needles if n in history])
    for path in member.base.rglob("*"):
        assert not any(n in str(path).encode() for n in needles), (name, path)
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found = [n for n in needles if n in data]
            assert not found, f"{name}: {path} holds {found}"
    # The primary tree: byte-identical.
    assert fingerprint(repo) == member.fingerprint, name


# --- ten template instances under a real systemd --user ------------------------------------------

def test_ten_nights_as_template_instances_under_systemd_do_not_cross_talk(lab, tmp_path):
    from test_systemd import window_around_now
    barrier = tmp_path / "barrier"
    members = make_fleet(tmp_path, barrier, schedule=window_around_now())
    mark = uuid.uuid4().hex
    def install(member: Member) -> None:   # four at a time: the manager takes them one by one
        out = lab.run([OA, "install", "--systemd", "--instance", "--repo", str(member.repo),
                       *member.config_args()]).stdout
        assert f"enable --now {member.units['timer']}" in out, out
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(install, members))
    # One drop-in for every instance: the test's mark, and a short RestartSec.
    lab.drop_in(units.T_SERVICE, "test", f"[Service]\nRestartSec=0.5s\nEnvironment={helpers.TEST_MARK}={mark}\n")
    lab.systemctl("daemon-reload")
    services = [m.units["service"] for m in members]
    timers = lab.systemctl("list-timers", "--all", "overnight-agent@*").stdout
    assert all(m.units["timer"] in timers for m in members), timers
    lab.systemctl("start", "--no-block", *services)
    try:
        wait_arrived(members, barrier)
        owned = check_agent_processes(members)
        pids = {m.index: lab.unit_pids(m.units["service"]) for m in members}
        for member in members:
            # Each agent process runs in its own unit's cgroup, none in another's.
            assert owned[member.index] <= set(pids[member.index]) | {p for p in owned[member.index]
                                                                     if not alive(p)}, member.name
            main = int(lab.show(member.units["service"], "MainPID")["MainPID"])
            assert main == member.session()["supervisor_pid"], member.name
            for other in members:
                if other is not member:
                    assert not (owned[member.index] & set(pids[other.index])), (member.name, other.name)
        codex = {m.index: agent_pid(m) for m in members}
        stopped, killed = members[STOPPED - 1], members[KILLED - 1]
        # Stop one night mid-turn: the others' agents go on.
        lab.systemctl("stop", stopped.units["service"], timeout=60)
        assert stopped.session()["state"] == "stopped"
        assert lab.unit_pids(stopped.units["service"]) == []
        helpers.assert_no_agent_processes(None, stopped.prefix)
        # Kill one supervisor: systemd kills its cgroup, restarts it, and it resumes its thread.
        first = int(lab.show(killed.units["service"], "MainPID")["MainPID"])
        lab.systemctl("kill", "--kill-who=main", "--signal=SIGKILL", killed.units["service"])
        lab.wait_state(killed.units["service"], "1", prop="NRestarts", timeout=20)
        helpers.wait_for(lambda: (killed.session() or {}).get("restarts") == 1
                         and killed.session()["state"] == "running", timeout=20, what="the resumed night")
        assert int(lab.show(killed.units["service"], "MainPID")["MainPID"]) not in (0, first)
        for member in members:
            if member not in (stopped, killed):
                assert alive(codex[member.index]), f"{member.name}: its agent was disturbed"
                assert member.session()["state"] == "running" and len(member.session()["attempts"]) == 1
                assert lab.show(member.units["service"], "ActiveState", "NRestarts") == {
                    "ActiveState": "active", "NRestarts": "0"}, member.name
        (barrier / "go").touch()
        for member in members:
            if member is not stopped:
                lab.wait_state(member.units["service"], "inactive", timeout=40)
                shown = lab.show(member.units["service"], "Result", "ExecMainStatus")
                assert shown == {"Result": "success", "ExecMainStatus": "0"}, (member.name, shown)
    finally:
        (barrier / "go").touch()
        lab.systemctl("stop", *services, check=False, timeout=60)
    everyone = lab.journal("--user-unit", "overnight-agent@*", "-o", "json", "OVERNIGHT_EVENT=night.created")
    created = {json.loads(line)["OVERNIGHT_RUN_ID"] for line in everyone.splitlines() if line.strip()}
    assert created == {m.session()["run_id"] for m in members}   # the guide's filter for all of them
    for member in members:
        check_member(member, members)
        # No night was taken for failed: OnFailure= never ran, not even for the killed one.
        assert lab.show(member.units["failed"], "InactiveExitTimestampMonotonic") == {
            "InactiveExitTimestampMonotonic": "0"}, member.name
        assert lab.unit_pids(member.units["service"]) == []
        helpers.assert_no_agent_processes(mark, member.prefix)
        check_journal(lab, member, members)


def check_journal(lab, member: Member, members: List[Member]) -> None:
    """The journal's entries of this instance are this night's, and this night's entries are
    all this instance's."""
    run_id, unit = member.session()["run_id"], member.units["service"]
    out = lab.journal("--user-unit", unit, "-o", "json", "SYSLOG_IDENTIFIER=overnight-agent")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    ours = [e for e in entries if "OVERNIGHT_EVENT" in e]
    assert ours and all(e.get("OVERNIGHT_RUN_ID", run_id) == run_id for e in ours), member.name
    assert {"night.created", "attempt.started", "thread.started"} <= {e["OVERNIGHT_EVENT"] for e in ours}
    tagged = lab.journal("-o", "json", f"OVERNIGHT_RUN_ID={run_id}")
    units_seen = {json.loads(line).get("_SYSTEMD_USER_UNIT") for line in tagged.splitlines() if line.strip()}
    assert units_seen == {unit}, (member.name, units_seen)


# --- the same with ten plain `run` processes ---------------------------------------------------------

def start_plain(member: Member, mark: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "overnight_agent", "run", "--repo", str(member.repo),
                             *member.config_args(), *args],
                            env=helpers.supervisor_env(mark), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_ten_plain_nights_side_by_side_do_not_cross_talk(tmp_path):
    barrier = tmp_path / "barrier"
    members = make_fleet(tmp_path, barrier)
    mark = uuid.uuid4().hex
    try:
        for member in members:
            member.proc = start_plain(member, mark, "--hours", "1")
        wait_arrived(members, barrier)
        check_agent_processes(members)
        codex = {m.index: agent_pid(m) for m in members}
        stopped, killed = members[STOPPED - 1], members[KILLED - 1]
        stopped.proc.send_signal(signal.SIGTERM)
        code, _, err = helpers.finish(stopped.proc)
        assert code == 0 and stopped.session()["state"] == "stopped", err[-2000:]
        helpers.assert_no_agent_processes(None, stopped.prefix)
        # SIGKILL leaves its codex running (a session of its own); the next `run` stops it first.
        os.kill(killed.proc.pid, signal.SIGKILL)
        killed.proc.wait()
        assert alive(codex[KILLED])
        killed.proc = start_plain(killed, mark)   # before the deadline: resumes
        helpers.wait_for(lambda: (killed.session() or {}).get("restarts") == 1
                         and killed.session()["state"] == "running", timeout=20, what="the resumed night")
        assert not alive(codex[KILLED])
        for member in members:
            if member not in (stopped, killed):
                assert alive(codex[member.index]), f"{member.name}: its agent was disturbed"
                assert member.session()["state"] == "running" and len(member.session()["attempts"]) == 1
        (barrier / "go").touch()
        for member in members:
            if member is not stopped:
                code, _, err = helpers.finish(member.proc, timeout=40)
                assert code == 0, (member.name, err[-2000:])
    finally:
        (barrier / "go").touch()
        for member in members:
            if member.proc is not None and member.proc.poll() is None:
                os.killpg(member.proc.pid, signal.SIGKILL)
                member.proc.communicate()
    for member in members:
        check_member(member, members)
        helpers.assert_no_agent_processes(mark, member.prefix)


# --- a process group id another night's process now holds is not signalled ------------------------

def test_a_stale_process_group_recycled_by_another_night_is_left_alone(tmp_path):
    """pid_max is 32768 on many machines: with many nights spawning commands, the pid (and so the
    process group id) of a codex that has exited can be given to another night's codex, which
    leads a group of its own. A supervisor still stopping the first attempt's survivors (a
    command in a session of its own that ignores SIGINT) must not signal that group."""
    tag = f"oa-{uuid.uuid4().hex[:12]}:run"
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)   # another night's codex
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True,    # our survivor, tagged
                            env={**os.environ, procs.TAG_VAR: tag})
    try:
        created = psutil.Process(other.pid).create_time()
        # Our codex ran at that pid before and is gone: same pid and group, an older start time.
        stale = procs.ProcRef(other.pid, other.pid, created - 5.0)
        found = helpers.wait_for(lambda: procs.tree(stale, tag), what="our tagged survivor")
        assert [p.pid for p in found] == [ours.pid], "the other night's group was taken for ours"
        procs.signal_all(found, signal.SIGKILL, group=stale.pgid)
        assert ours.wait(timeout=5) == -signal.SIGKILL
        time.sleep(0.2)
        assert other.poll() is None, "killpg reached another night's process group"
        # While our codex lives, its group is ours: a member of it is found and signalled.
        mine = procs.ref_of(other)
        assert other.pid in [p.pid for p in procs.tree(mine, tag)]
        procs.signal_all([], signal.SIGTERM, group=mine.pgid)   # nothing known in it: no killpg
        time.sleep(0.2)
        assert other.poll() is None
        procs.signal_all(procs.tree(mine, tag), signal.SIGTERM, group=mine.pgid)
        assert other.wait(timeout=5) == -signal.SIGTERM
    finally:
        for proc in (other, ours):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_stopping_night_does_not_signal_another_nights_codex_that_got_its_old_pid(tmp_path):
    """The same, end to end: night A is stopped; its codex exits at once on SIGINT, but a command
    it started in a session of its own ignores SIGINT and SIGTERM, so A goes on escalating with
    SIGTERM, then SIGKILL. Meanwhile the old codex's pid is given (as root, through
    /proc/sys/kernel/ns_last_pid) to a process leading its own session and group, as another
    night's codex would be on a machine whose pids wrap. A's escalation must not reach it."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            raise AssertionError("needs root to set ns_last_pid (CI=true: a skip is a failure)")
        import pytest
        pytest.skip("needs root to set /proc/sys/kernel/ns_last_pid")
    base = tmp_path / "a"
    repo = helpers.make_repo(base / "repo")
    cfg = helpers.write_config(base / "overnight.yaml", base, stop={"sigint_grace": "3s", "sigterm_grace": "3s"})
    helpers.write_scenario(base, [[
        {"shell": "setsid bash -c 'trap \"\" INT TERM; exec sleep 60' </dev/null >/dev/null 2>&1 &"},
        {"message": "started a command that ignores SIGINT and SIGTERM"},
        {"hang": True},
    ]])
    mark = uuid.uuid4().hex
    night = helpers.start_run(repo, cfg, mark, "--hours", "1")
    victim = None
    try:
        session = helpers.wait_session(base, lambda s: s["thread_id"] and s["state"] == "running",
                                       what="the first attempt")
        codex = session["attempts"][-1]["pid"]
        prefix = helpers.tag_prefix(base / "run")
        helpers.wait_for(lambda: any(c.startswith("sleep 60") for c in helpers.cmdlines(prefix)),
                         what="the command that ignores signals")
        night.send_signal(signal.SIGTERM)
        helpers.wait_for(lambda: not os.path.exists(f"/proc/{codex}"), timeout=2.5,
                         interval=0.01, what="the old codex gone (reaped)")
        for _ in range(2000):   # another night's codex, given the old pid
            with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
                handle.write(str(codex - 1))
            candidate = subprocess.Popen(["sleep", "60"], start_new_session=True)
            if candidate.pid == codex:
                victim = candidate
                break
            candidate.kill()
            candidate.wait()
        assert victim is not None, f"pid {codex} could not be given again"
        assert os.getpgid(victim.pid) == codex
        code, _, err = helpers.finish(night, timeout=30)   # SIGTERM at 3 s, SIGKILL at 6 s
        assert code == 0, err[-2000:]
        assert victim.poll() is None, f"night A's stop reached pid {codex}'s new group: {victim.returncode}"
        assert helpers.read_session(base)["state"] == "stopped"
        helpers.assert_no_agent_processes(mark, prefix)
    finally:
        if night.poll() is None:
            os.killpg(night.pid, signal.SIGKILL)
            night.communicate()
        if victim is not None:
            victim.kill()
            victim.wait()

"""Fault injection: the real supervisor, real git and the scripted agent through hundreds of
faults, checked after each, with the figures written to docs/reliability.md.

    python tests/chaos.py [--faults 240] [--jobs 4] [--seed 1] [--write docs/reliability.md]

`make chaos` runs the whole campaign; `tests/test_chaos.py` runs a short one inside `make test`.
Every case builds its own repository, config and run folder in a temp dir, runs nights with
`overnight-agent run` (short ones: a few seconds to the deadline), injects one fault, lets a
supervisor recover where recovery is the promise, and checks what must hold afterwards:

- session.json (current and archived) loads, and names the same night and thread it did;
- every line of the ops journal written before the fault is there exactly once, none is torn,
  and all are committed on the ops-journal branch by the end;
- every line of each supervisor.log is whole JSON;
- the thread the night had is the one resumed, and never two agents ran on it at once;
- the primary working tree is byte-identical;
- every night that ended has its report committed;
- no process of the case is left.

A case's recovery time runs from the fault to the first sign the night is whole again: an
attempt running on the right thread, or the night's end (report committed) when the fault
hit after the deadline.
"""
import argparse
import concurrent.futures
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import psutil  # noqa: E402
import yaml  # noqa: E402

import helpers  # noqa: E402
from overnight_agent import exitcodes, state  # noqa: E402

NIGHT = 6.0                # seconds from start to deadline
TOOL = f"{sys.executable} -m overnight_agent"
SUMMARY_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ \S+ .+$")


def scenario(tag: str, work_branch: bool = False) -> List[List[dict]]:
    """Each invocation writes a journal line, changes a file, talks, then works silently until
    stopped: a night of a few seconds passes every phase (journal commits, a stall or two, the
    deadline's stop, checkpoint and report). `work_branch`: first it switches the session
    worktree to a work-item branch, as the prompt tells a real agent to."""
    branch = f"overnight/2026-01-01_0000_chaos-{tag}"
    switch = [{"shell": f"git switch -q {branch} 2>/dev/null || git switch -q -c {branch}"}] if work_branch else []

    def turn(n: int) -> List[dict]:
        return switch + [{"message": f"turn {n}"},
                {"shell": f"{TOOL} journal summary 'chaos {tag} turn {n}'"},
                {"write_file": {"path": f"work/{tag}_{n}.txt", "text": f"turn {n}\n"}},
                {"message": f"turn {n} wrote a file"},
                {"sleep": 30}]
    return [turn(n) for n in range(1, 6)]


@dataclasses.dataclass
class Result:
    family: str
    fault: str
    injected: bool = True            # False: the fault point was never reached (not counted)
    survived: bool = False
    lines_lost: int = 0
    torn_lines: int = 0
    states_corrupted: int = 0
    orphans: int = 0
    two_agents: int = 0
    recovery: Optional[float] = None
    detail: str = ""
    problems: List[str] = dataclasses.field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


class Case:
    """One temp dir: a repository, a config, a run folder, the supervisors started in it."""

    def __init__(self, base: Path, name: str, liveness: str = "2s",
                 turns: Optional[List[List[dict]]] = None, work_branch: bool = False, **config):
        self.base, self.name = base, name
        self.run_root = base / "run"
        self.repo = helpers.make_repo(base / "repo")
        overrides = {"liveness": {"model_silent": liveness, "command_silent": liveness},
                     "schedule": {"wrap_up": "1s"},
                     "restart": {"backoff_initial": "0.1s", "backoff_max": "0.5s", "healthy_after": "30s",
                                 "max_per_hour": 10000},
                     "stop": {"sigint_grace": "0.5s", "sigterm_grace": "0.5s"}}
        plain = {key: value for key, value in config.items() if not isinstance(value, dict)}
        for section, values in config.items():
            if isinstance(values, dict):
                overrides.setdefault(section, {}).update(values)
        self.config = helpers.write_config(base / "overnight.yaml", base, **overrides)
        if plain:  # top-level keys (`agent: command`)
            data = yaml.safe_load(self.config.read_text())
            data.update(plain)
            self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.mark = f"chaos-{name}-{os.getpid()}-{random.getrandbits(32):08x}"
        self.prefix = helpers.tag_prefix(self.run_root)
        self.fingerprint = helpers.primary_fingerprint(self.repo)
        # The scripted agent reads its scenario from its home (the agent sees no other variable).
        home = Path(yaml.safe_load(self.config.read_text())["codex"]["codex_home"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "fake_codex_scenario.yaml").write_text(yaml.safe_dump(
            {"invocations": [{"steps": steps} for steps in (turns or scenario(name, work_branch))]},
            sort_keys=False))
        self.procs: List[subprocess.Popen] = []
        self.agents_seen: Dict[int, str] = {}
        self.overlaps = 0
        self._watching = True
        self._watcher = threading.Thread(target=self._watch_agents, daemon=True)
        self._watcher.start()

    # --- supervisors ------------------------------------------------------------------------

    def start(self, *args: str, faults: str = "", env: Optional[Dict[str, str]] = None,
              hours: Optional[float] = None) -> subprocess.Popen:
        extra = dict(env or {})
        if faults:
            extra["OVERNIGHT_AGENT_FAULTS"] = faults
        argv = list(args) or ["--hours", f"{(hours or NIGHT) / 3600:.6f}"]
        proc = helpers.start_run(self.repo, self.config, self.mark, *argv, env_extra=extra)
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen, timeout: float = 60.0):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return None, err
        return proc.returncode, err

    def session(self) -> Optional[dict]:
        try:
            return json.loads((self.run_root / "session.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_for(self, predicate: Callable[[], object], timeout: float, interval: float = 0.02):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        return None

    # --- what is checked -----------------------------------------------------------------------

    def journal_path(self) -> Path:
        return self.base / "worktrees" / "ops" / "docs/meta/logs/ops/executive_summary.log"

    def journal_text(self) -> str:
        try:
            return self.journal_path().read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def live_agents(self) -> List[psutil.Process]:
        """Agent CLIs of this case alive now (tagged processes whose parent is not tagged)."""
        found = helpers.processes_marked(None, self.prefix)
        pids = {p.pid for p in found}
        roots = []
        for proc in found:
            try:
                if proc.ppid() not in pids and "codex" in " ".join(proc.cmdline()):
                    roots.append(proc)
            except psutil.Error:
                pass
        return roots

    def _watch_agents(self) -> None:
        """Never two agents at once: a look every 50 ms for the whole case."""
        while self._watching:
            try:
                agents = self.live_agents()
            except Exception:
                agents = []
            if len(agents) > 1:
                self.overlaps += 1
            time.sleep(0.05)

    def check(self, result: Result, journal_before: str, thread_before: Optional[str]) -> None:
        """Everything that must hold once the case is over (every supervisor gone)."""
        self._watching = False
        self._watcher.join()
        result.two_agents = self.overlaps
        # session.json, current and archived
        sessions = []
        for path in [self.run_root / "session.json", *sorted(self.run_root.glob("runs/*/session.json"))]:
            if not path.exists():
                continue
            try:
                loaded = state.load(path)
                sessions.append(loaded)
            except exitcodes.OvernightError as exc:
                result.states_corrupted += 1
                result.fail(f"unreadable {path.name}: {exc}")
        for session in sessions:
            wrong = inconsistent(session)
            if wrong:
                result.states_corrupted += 1
                result.fail(f"session {session.run_id} inconsistent: {wrong}")
        busy = [a for s in sessions for a in s.attempts if a.outcome == "thread_busy"]
        if busy:
            result.two_agents += len(busy)
            result.fail(f"{len(busy)} attempt(s) found their thread busy")
        if thread_before:
            threads = {s.thread_id for s in sessions}
            if thread_before not in threads:
                result.fail(f"the thread {thread_before} was not resumed (threads: {threads})")
        # the journal: append-only, whole lines, all committed
        after = self.journal_text()
        if not after.startswith(journal_before):
            before_lines = journal_before.splitlines()
            result.lines_lost += sum(1 for line in before_lines if line not in after.splitlines())
            result.fail("the journal is not the same file grown (lines lost or rewritten)")
        lines = after.splitlines()
        torn = [line for line in lines if not line.startswith("#") and not SUMMARY_RE.match(line)]
        if after and not after.endswith("\n"):
            torn.append("(no final newline)")
        if torn:
            result.torn_lines += len(torn)
            result.fail(f"torn journal lines: {torn[:3]}")
        before_lines = journal_before.splitlines()
        again = [line for line in set(before_lines) if lines.count(line) > before_lines.count(line)]
        if again:
            result.lines_lost += len(again)
            result.fail(f"{len(again)} journal line(s) written before the fault appended again: {again[:2]}")
        committed = helpers.git(self.repo, "show", "overnight/ops-journal:docs/meta/logs/ops/executive_summary.log",
                                check=False)
        missing = [line for line in lines if line not in committed.splitlines()]
        if missing:
            result.lines_lost += len(missing)
            result.fail(f"{len(missing)} journal line(s) never committed: {missing[:2]}")
        # supervisor logs: whole JSON lines
        for log in self.run_root.glob("runs/*/supervisor.log"):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    json.loads(line)
                except ValueError:
                    result.torn_lines += 1
                    result.fail(f"torn line in {log.parent.name}/supervisor.log: {line[:80]!r}")
        # every night that ended has its report committed
        for session in sessions:
            if session.state in ("finished", "failed"):
                name = f"docs/meta/logs/ops/{session.run_id}_report.md"
                if not helpers.git(self.repo, "ls-tree", "overnight/ops-journal", "--", name, check=False):
                    result.fail(f"night {session.run_id} ({session.state}) has no committed report")
        # the primary tree
        if helpers.primary_fingerprint(self.repo) != self.fingerprint:
            result.fail("the primary working tree changed")
        # nothing left
        left = helpers.processes_marked(self.mark, self.prefix)
        if left:
            result.orphans += len(left)
            result.fail(f"{len(left)} process(es) left: {[' '.join(p.cmdline())[:80] for p in left if p.is_running()]}")
        if not result.problems:
            result.survived = True

    def close(self) -> None:
        self._watching = False
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
        for proc in helpers.processes_marked(self.mark, self.prefix):
            try:
                proc.kill()
            except psutil.Error:
                pass


def inconsistent(session) -> Optional[str]:
    """What in a loaded session contradicts itself (None: nothing)."""
    numbers = [a.number for a in session.attempts]
    if numbers != list(range(1, len(numbers) + 1)):
        return f"attempts numbered {numbers}"
    open_ = [a.number for a in session.attempts if a.outcome is None]
    final = state.Phase(session.state).final
    if open_ and (final or open_ != numbers[-1:]):
        return f"attempts {open_} have no outcome in state {session.state}"
    announced = [a.thread_id for a in session.attempts if a.thread_id]
    if session.thread_id and announced and session.thread_id not in announced:
        return f"thread {session.thread_id} is no attempt's"
    return None


# --- the recovery every case but the bad-world ones needs ----------------------------------

def recovered_at(case: Case, thread: Optional[str], run_id: Optional[str], restarts: int) -> Optional[float]:
    """When the night was whole again, seen from here: an attempt the new supervisor started
    running on the night's thread (or a thread, if it had none yet), or the night's report
    committed."""
    session = case.session()
    if not session:
        return None
    if session["run_id"] == run_id and session.get("restarts", 0) <= restarts:
        return None   # still what the dead supervisor left
    if session["run_id"] != run_id and run_id is not None:
        old = case.run_root / "runs" / run_id / "session.json"
        if old.exists() and _reported(case, run_id):
            return time.monotonic()
        return None
    if session["state"] in ("finished", "failed", "stopped") and session["run_id"] == run_id:
        return time.monotonic() if _reported(case, run_id) or session["state"] == "stopped" else None
    attempts = session.get("attempts") or []
    if session["state"] == "running" and attempts and attempts[-1].get("thread_id") and not attempts[-1].get("outcome"):
        if thread is None or attempts[-1]["thread_id"] == thread:
            if helpers_pid_alive(attempts[-1].get("pid")):
                return time.monotonic()
    return None


def _reported(case: Case, run_id: str) -> bool:
    name = f"docs/meta/logs/ops/{run_id}_report.md"
    return bool(helpers.git(case.repo, "ls-tree", "overnight/ops-journal", "--", name, check=False))


def helpers_pid_alive(pid) -> bool:
    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_then_restart(case: Case, result: Result, first: subprocess.Popen, killed_at: float) -> None:
    """The supervisor died at `killed_at`: note what was, restart, time the recovery, let the
    night (and any night the restart begins) finish."""
    before = case.session()
    thread = before.get("thread_id") if before else None
    run_id = before.get("run_id") if before else None
    restarts = before.get("restarts", 0) if before else 0
    journal = case.journal_text()
    second = case.start()
    at = case.wait_for(lambda: recovered_at(case, thread, run_id, restarts), timeout=NIGHT + 30)
    result.recovery = None if at is None else at - killed_at
    if at is None:
        result.fail("never recovered")
    code, err = case.wait(second, timeout=NIGHT * 2 + 40)
    if code != 0:
        result.fail(f"the restarted supervisor exited {code}: {err.strip().splitlines()[-1:] if err else ''}")
    case.check(result, journal, thread)


# --- families ----------------------------------------------------------------------------------

POINTS = [  # (point, occurrences worth aiming at)
    ("setup.after_session_json", [1]), ("setup.between_worktrees", [1]), ("setup.after_worktrees", [1]),
    ("state.before_rename", [1, 2, 3, 5, 8, 12]), ("state.before_rename.thread", [1]),
    ("attempt.after_spawn", [1, 2]), ("loop.tick", [3, 10, 30, 60, 120]),
    ("journal.appended", [1, 2, 3]), ("journal.committed", [1, 2, 3]),
    ("checkpoint.staged", [1]), ("shutdown.loop_ended", [1]), ("report.written", [1]),
    ("shutdown.reported", [1]),
]


def kill_at_point(case: Case, point: str, nth: int) -> Result:
    result = Result("supervisor SIGKILL at a named point", f"{point}:{nth}")
    first = case.start(faults=f"{point}:{nth}")
    code, err = case.wait(first, timeout=NIGHT + 30)
    killed_at = time.monotonic()
    if code != -signal.SIGKILL:
        result.injected = False
        result.detail = f"not reached (exit {code})"
        case.check(result, case.journal_text(), None)
        return result
    kill_then_restart(case, result, first, killed_at)
    return result


def kill_at_random(case: Case, rng: random.Random) -> Result:
    delay = rng.uniform(0.2, NIGHT + 0.8)
    result = Result("supervisor SIGKILL at a random instant", f"after {delay:.2f}s")
    first = case.start()
    time.sleep(delay)
    if first.poll() is not None:
        result.injected = False
        result.detail = "the night was over"
        case.check(result, case.journal_text(), None)
        return result
    phase = (case.session() or {}).get("state", "before session.json")
    result.fault += f" ({phase})"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    kill_then_restart(case, result, first, time.monotonic())
    return result


def agent_signal(case: Case, sig: signal.Signals, target: str) -> Result:
    """SIGKILL or SIGSTOP the agent CLI, or the command it runs; the same supervisor recovers."""
    result = Result(f"agent {sig.name}", f"{sig.name} to the {target}")
    proc = case.start(hours=NIGHT + 4)
    session = case.wait_for(lambda: _running_with_thread(case), timeout=20)
    if not session:
        result.fail("the night never ran an attempt")
        case.wait(proc)
        case.check(result, case.journal_text(), None)
        return result
    thread, attempts = session["thread_id"], len(session["attempts"])
    journal = case.journal_text()
    pid = session["attempts"][-1]["pid"]
    if target == "command":
        victim = case.wait_for(lambda: _child_command(pid), timeout=10)
        if victim is None:
            result.injected = False
            result.detail = "no command was running"
            case.wait(proc, timeout=NIGHT + 40)
            case.check(result, journal, thread)
            return result
        pid = victim
    hit = time.monotonic()
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        result.injected = False
    at = case.wait_for(lambda: _resumed(case, thread, attempts), timeout=30)
    result.recovery = None if at is None else at - hit
    if at is None and target == "agent":
        result.fail("no new attempt on the same thread")
    code, err = case.wait(proc, timeout=NIGHT + 40)
    if code != 0:
        result.fail(f"the supervisor exited {code}: {err.strip().splitlines()[-1:] if err else ''}")
    case.check(result, journal, thread)
    return result


def _running_with_thread(case: Case) -> Optional[dict]:
    session = case.session()
    if session and session["state"] == "running" and session.get("thread_id") and session["attempts"]:
        last = session["attempts"][-1]
        if not last.get("outcome") and helpers_pid_alive(last.get("pid")):
            return session
    return None


def _resumed(case: Case, thread: str, attempts: int) -> Optional[float]:
    session = case.session()
    if session and len(session["attempts"]) > attempts:
        last = session["attempts"][-1]
        if last.get("thread_id") == thread and not last.get("outcome") and last["kind"] == "resume":
            return time.monotonic()
    return None


def _child_command(agent_pid: int) -> Optional[int]:
    """A command the agent runs (`sleep` in the scenario's silent work)."""
    try:
        for child in psutil.Process(agent_pid).children(recursive=True):
            if "bash" in child.name() or "python" in child.name():
                return child.pid
    except psutil.Error:
        return None
    return None


FLOOD_BYTES = 100 * 1000 * 1000
# The flood must reach the log before the deadline stops the agent: about 3 s alone, more than
# 12 s with three other cases on two busy cores (seen in CI). The flood's night is this long.
FLOOD_NIGHT = 30.0


def flood(case_of: Callable[..., Case], how: str) -> Result:
    """100 MB in a burst: in one event line (a command's output, as codex reports it) or as
    plain lines. The supervisor's memory stays bounded, the log takes it, the night goes on."""
    result = Result("agent floods 100 MB", how)
    if how == "one event line":
        case = case_of(turns=[[{"message": "flooding"},
                               {"shell": f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x"},
                               {"message": "flooded"}, {"sleep": 90}]])
    else:
        writer = (f"import sys\nline = b'x' * 99 + b'\\n'\nfor _ in range({FLOOD_BYTES // 100}): "
                  "sys.stdout.buffer.write(line)\nimport time; time.sleep(90)\n")
        case = case_of(agent="command", command={"argv": [sys.executable, "-c", writer]},
                       retention={"max_log_bytes": "1GB"})
    try:
        proc = case.start(hours=FLOOD_NIGHT)
        peak, done = [0], threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], psutil.Process(proc.pid).memory_info().rss)
                except psutil.Error:
                    pass
                time.sleep(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        logged = case.wait_for(lambda: _log_bytes(case) >= FLOOD_BYTES, timeout=FLOOD_NIGHT + 10, interval=0.1)
        result.recovery = None if logged is None else time.monotonic() - started
        code, err = case.wait(proc, timeout=FLOOD_NIGHT + 40)
        done.set()
        sampler.join()
        mb = peak[0] / 1e6
        result.detail = f"supervisor peak RSS {mb:.0f} MB"
        if logged is None:
            result.fail(f"the run log never held the {FLOOD_BYTES // 10**6} MB (has {_log_bytes(case)} bytes)")
        if mb > 150:
            result.fail(f"supervisor memory not bounded: peak RSS {mb:.0f} MB")
        if code != 0:
            result.fail(f"the supervisor exited {code}: {err.strip().splitlines()[-1:] if err else ''}")
        session = case.session() or {}
        if session.get("state") != "finished":
            result.fail(f"the night ended {session.get('state')}, not finished")
        case.check(result, "", None)
    finally:
        case.close()
    return result


def _log_bytes(case: Case) -> int:
    return max([p.stat().st_size for p in case.run_root.glob("runs/*/*_start.log")] or [0])


DISK_SCRIPT = r"""
set -u
if [ "$MODE" = tmpfs ]; then mount -n -t tmpfs -o size=$SIZE tmpfs "$RUN" || exit 90; fi
$WRAP "$PY" -m overnight_agent run --repo "$REPO" --config "$CONFIG" --hours "$HOURS" 2> "$OUT/first.err"
echo $? > "$OUT/first.rc"
cp "$RUN/session.json" "$OUT/session_full.json" 2>/dev/null
find "$RUN/runs" -name '*.log' -size +1M -delete        # the operator frees space
$WRAP "$PY" -m overnight_agent run --repo "$REPO" --config "$CONFIG" --hours "$HOURS" 2> "$OUT/second.err"
echo $? > "$OUT/second.rc"
mkdir -p "$OUT/run" && cp -a "$RUN/." "$OUT/run/"
"""


def disk_full(case_of: Callable[..., Case]) -> Result:
    """run_root on a 6 MB filesystem (a tmpfs in a private mount namespace as root, else a
    6 MB file size limit) and an agent whose output fills it: exit 74 with one line naming the
    file, the agent stopped, session.json whole; with space freed, the night resumes its thread."""
    as_root = os.geteuid() == 0 and shutil.which("unshare")
    result = Result("disk full under run_root", "6 MB tmpfs" if as_root else "6 MB file size limit")
    if as_root:
        case = case_of(turns=[[{"message": "filling the disk"},
                               {"shell": "head -c 20000000 /dev/zero | tr '\\0' x"},
                               {"message": "done"}, {"sleep": 30}]] + scenario("disk")[1:],
                       codex={"codex_home": str(case_of.base / "codex_home")})
    else:  # the limit binds the agent too: its output must not pass through a file of its own
        marker = case_of.base / "flooded"      # one flood: the resumed night works quietly
        writer = (f"import os, sys, time\nif not os.path.exists({str(marker)!r}):\n"
                  f"    open({str(marker)!r}, 'w').close()\n"
                  "    [sys.stdout.buffer.write(b'y' * 999 + b'\\n') for _ in range(20000)]\n"
                  "print('working', flush=True)\ntime.sleep(30)\n")
        case = case_of(agent="command", command={"argv": [sys.executable, "-c", writer]})
    out = case.base / "out"
    out.mkdir()
    case.run_root.mkdir(parents=True, exist_ok=True)
    env = {**helpers.supervisor_env(case.mark), "MODE": "tmpfs" if as_root else "limit", "SIZE": "6m", "RUN": str(case.run_root),
           "PY": sys.executable, "REPO": str(case.repo), "CONFIG": str(case.config),
           "HOURS": f"{(NIGHT + 8) / 3600:.6f}", "OUT": str(out),
           "WRAP": "" if as_root else "prlimit --fsize=6000000"}
    argv = (["unshare", "-m", "--propagation", "private", "sh", "-c", DISK_SCRIPT] if as_root
            else ["sh", "-c", DISK_SCRIPT])
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                              start_new_session=True)
        if proc.returncode == 90:
            result.injected = False
            result.detail = "no tmpfs could be mounted"
            return result
        first_rc = _read(out / "first.rc")
        first_err = _read(out / "first.err").strip().splitlines()
        if first_rc != str(exitcodes.DISK_FULL):
            result.fail(f"exit {first_rc} on a full disk, not {exitcodes.DISK_FULL}: {first_err[-3:]}")
        # stderr carries the night's log events, then the one line for the operator
        said = [line for line in first_err if line.startswith("overnight-agent:")]
        if (len(said) != 1 or not said[0].startswith("overnight-agent: disk full: cannot write ")
                or any("Traceback" in line for line in first_err)):
            result.fail(f"not one clear line on stderr: {said or first_err[-3:]}")
        try:
            kept = state.load(out / "session_full.json")
            result.detail = f"kept state: {kept.state if kept else None}"
        except exitcodes.OvernightError as exc:
            result.states_corrupted += 1
            result.fail(f"session.json after the full disk: {exc}")
            kept = None
        if _read(out / "second.rc") != "0":
            result.fail(f"with space freed, `run` exited {_read(out / 'second.rc')}: "
                        f"{_read(out / 'second.err').strip().splitlines()[-2:]}")
        case.run_root = out / "run"
        final = case.session() or {}
        if kept and kept.thread_id and final.get("thread_id") != kept.thread_id:
            result.fail(f"resumed thread {final.get('thread_id')}, not {kept.thread_id}")
        case.check(result, "", kept.thread_id if kept else None)
    finally:
        case.close()
    return result


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


# --- a bad state of the world -------------------------------------------------------------------

def one_line_error(err: str, *needles: str) -> Optional[str]:
    """What is wrong with a refusal's stderr (None: one `overnight-agent:` line holding every
    needle, and no traceback)."""
    said = [line for line in err.splitlines() if line.startswith("overnight-agent:")]
    if "Traceback" in err:
        return f"a traceback: {err.strip().splitlines()[-1]}"
    if len(said) != 1:
        return f"{len(said)} lines for the operator: {said[:3]}"
    missing = [n for n in needles if n not in said[0]]
    return f"the line does not name {missing}: {said[0]}" if missing else None


def refused(case: Case, result: Result, code: int, *needles: str, args=()) -> None:
    """`run` must refuse with `code` and one line naming `needles`, changing no state (its
    lock file and logs aside)."""
    before = {p: p.read_bytes() for p in case.run_root.rglob("*")
              if p.is_file() and p.suffix not in (".lock", ".log")}
    started = time.monotonic()
    proc = case.start(*args)
    got, err = case.wait(proc, timeout=60)
    result.recovery = time.monotonic() - started
    if got != code:
        result.fail(f"exit {got}, not {code}: {err.strip().splitlines()[-1:] if err else ''}")
    problem = one_line_error(err or "", *needles)
    if problem:
        result.fail(problem)
    after = {p: p.read_bytes() for p in before if p.exists()}
    if after != before:
        result.states_corrupted += 1
        result.fail("a refused start changed files under run_root")


def night_survives(case: Case, result: Result, proc: subprocess.Popen, thread: Optional[str],
                   journal: str, since: float, note: str = "") -> None:
    """The night goes on to its deadline: recovery is the first attempt started after `since`
    that runs (on `thread` when given); the supervisor exits 0 with the night finished."""
    def attempt_after():
        session = case.session() or {}
        for attempt in session.get("attempts") or []:
            started = attempt.get("started_at")
            if started and _iso_to_epoch(started) >= since and attempt.get("thread_id") \
                    and (thread is None or attempt["thread_id"] == thread):
                return time.time()
        return None
    at = case.wait_for(attempt_after, timeout=NIGHT + 20)
    result.recovery = None if at is None else at - since
    code, err = case.wait(proc, timeout=NIGHT + 40)
    if code != 0:
        result.fail(f"the supervisor exited {code}: {err.strip().splitlines()[-1:] if err else ''}")
    session = case.session() or {}
    if session.get("state") != "finished":
        result.fail(f"the night ended {session.get('state')}{note}")
    case.check(result, journal, thread)


def _iso_to_epoch(text: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(text).timestamp()


def first_attempt(case: Case, proc: subprocess.Popen) -> Optional[dict]:
    return case.wait_for(lambda: _running_with_thread(case), timeout=20)


def bad_world(case_of: Callable[..., Case], what: str) -> Result:
    result = Result("a bad state of the world", what)
    if what.startswith("clock jumps"):
        return _clock_jump(case_of, result, forward=what.endswith("forward"))
    if what == "codex_home unwritable":
        home = case_of.base / "readonly_home"
        case = case_of(codex={"codex_home": str(home)})
        return _unwritable_home(case, result, home)
    case = case_of()
    session_path = case.run_root / "session.json"
    if what in ("truncated session.json", "foreign session.json", "another repository's session.json"):
        proc = case.start(hours=NIGHT)
        first_attempt(case, proc)
        proc.send_signal(signal.SIGTERM)   # a night stopped before its deadline: resumable
        case.wait(proc)
        text = session_path.read_text()
        if what == "truncated session.json":
            session_path.write_text(text[:len(text) // 2])
        elif what == "foreign session.json":
            session_path.write_text(json.dumps({"name": "something else", "version": 3}))
        else:
            data = json.loads(text)
            data["repo_root"] = str(case.base / "elsewhere")
            session_path.write_text(json.dumps(data))
        refused(case, result, exitcodes.CONFIG, str(session_path))
        # What the message says to do: move it aside; then a night runs.
        session_path.rename(session_path.with_name("session.json.bad"))
        journal = case.journal_text()
        night_survives(case, result, case.start(), None, journal, time.time() - 1)
        return result
    if what == "lock naming a reused pid":
        case.run_root.mkdir(parents=True, exist_ok=True)
        (case.run_root / "overnight-agent.lock").write_text(f"{os.getpid()}\n")   # alive, not ours
        proc = case.start()
        night_survives(case, result, proc, None, case.journal_text(), time.time() - 1)
        return result
    if what == "two concurrent starts":
        procs = [case.start(), case.start()]
        codes = [case.wait(p, timeout=NIGHT + 40) for p in procs]
        exits = sorted(c for c, _ in codes)
        if exits != [0, exitcodes.LOCKED]:
            result.fail(f"exits {exits}, not one night and one refusal (0 and {exitcodes.LOCKED})")
        else:
            problem = one_line_error(next(e for c, e in codes if c == exitcodes.LOCKED), "lock")
            if problem:
                result.fail(problem)
        case.check(result, "", None)
        return result
    if what.startswith("codex binary"):
        return _codex_binary(case, result, what)
    if what == "stale index.lock":
        proc = case.start(hours=NIGHT)
        session = first_attempt(case, proc)
        os.kill(proc.pid, signal.SIGKILL)
        case.wait(proc)
        for tree in ("session", "ops"):
            git_dir = Path(helpers.git(case.base / "worktrees" / (f"session/{session['run_id']}" if tree == "session" else "ops"),
                                       "rev-parse", "--path-format=absolute", "--git-dir"))
            lock = git_dir / "index.lock"
            lock.write_text("")
            os.utime(lock, (time.time() - 60, time.time() - 60))
        journal = case.journal_text()
        since = time.time()
        proc = case.start()
        night_survives(case, result, proc, session["thread_id"], journal, since)
        return result
    if what in ("session worktree deleted", "session branch deleted", "ops worktree deleted"):
        proc = case.start(hours=NIGHT + 3)
        session = first_attempt(case, proc)
        if session is None:
            result.fail("the night never ran an attempt")
            case.wait(proc)
            case.check(result, "", None)
            return result
        journal = case.journal_text()
        time.sleep(0.5)
        since = time.time()
        if what == "session worktree deleted":
            shutil.rmtree(session["session_worktree"])
            # the agent, still running in it, writes on: the folder comes back without .git
            stray = Path(session["session_worktree"]) / "work" / "written_after.txt"
            stray.parent.mkdir(parents=True)
            stray.write_text("written after the worktree was deleted\n")
        elif what == "ops worktree deleted":
            shutil.rmtree(session["ops_journal_worktree"])
            journal = ""   # the file is gone with its worktree; the branch keeps what was committed
        else:
            worktree = Path(session["session_worktree"])
            helpers.git(worktree, "commit", "-q", "--allow-empty", "-m", "the night's work so far")
            session_head = helpers.git(worktree, "rev-parse", "HEAD")
            helpers.git(case.repo, "update-ref", "-d", f"refs/heads/{session['session_branch']}")
        night_survives(case, result, proc, session["thread_id"], journal if what != "ops worktree deleted" else "", since)
        final = case.session() or {}
        repaired = [e for e in final.get("events", []) if e.get("event") == "worktree.repaired"]
        if not repaired:
            result.fail("no worktree.repaired event in session.json")
        if what == "session worktree deleted":
            kept = list(Path(session["session_worktree"]).parent.glob("*.leftover-*/work/written_after.txt"))
            if not kept:
                result.fail("what was written in the deleted worktree was not kept aside")
        if what == "session branch deleted":   # recreated where it was, its commits kept
            head = helpers.git(case.repo, "rev-parse", f"refs/heads/{final['session_branch']}", check=False)
            kept = subprocess.run(["git", "merge-base", "--is-ancestor", session_head, head], cwd=case.repo,
                                  capture_output=True).returncode == 0
            if not head or not kept:
                result.fail(f"the recreated branch ({head or 'missing'}) lost {session_head[:12]}")
        return result
    raise ValueError(what)


def _unwritable_home(case: Case, result: Result, home: Path) -> Result:
    """codex_home read-only (a read-only bind mount in a private namespace as root, else mode
    0500): `run` refuses with 78 and one line naming codex.codex_home."""
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and shutil.which("unshare"):
        script = ('mount -n --bind "$HOME_RO" "$HOME_RO" && mount -n -o remount,bind,ro "$HOME_RO" || exit 90; '
                  'exec "$@"')
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", sys.executable, "-m",
                "overnight_agent", "run", "--repo", str(case.repo), "--config", str(case.config),
                "--hours", f"{NIGHT / 3600:.6f}"]
        env = {**helpers.supervisor_env(case.mark), "HOME_RO": str(home)}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, start_new_session=True)
        code, err = proc.returncode, proc.stderr
        if code == 90:
            result.injected = False
            return result
    else:
        home.chmod(0o500)
        code, err = case.wait(case.start(), timeout=60)
        home.chmod(0o700)
    if code != exitcodes.CONFIG:
        result.fail(f"exit {code}, not {exitcodes.CONFIG}: {err.strip().splitlines()[-1:]}")
    problem = one_line_error(err, "codex.codex_home", str(home))
    if problem:
        result.fail(problem)
    case.check(result, "", None)
    return result


def _clock_jump(case_of: Callable[..., Case], result: Result, forward: bool) -> Result:
    """The wall clock jumps mid-night (an NTP step, a suspended laptop): forward past the
    deadline, the night ends at once and cleanly; back, it runs to the deadline by the clock it
    now reads. Neither is taken for a stall (liveness runs on the monotonic clock)."""
    case = case_of(liveness="30s")
    skew = case.base / "clock_skew"
    skew.write_text("0")
    proc = case.start(hours=NIGHT, env={"OVERNIGHT_AGENT_CLOCK_SKEW_FILE": str(skew)})
    session = first_attempt(case, proc)
    if session is None:
        result.fail("the night never ran an attempt")
    jump = 3600 if forward else -6
    started = time.monotonic()
    skew.write_text(str(jump))
    code, err = case.wait(proc, timeout=NIGHT + 40)
    took = time.monotonic() - started
    result.recovery = took if forward else None
    final = case.session() or {}
    if code != 0 or final.get("state") != "finished":
        result.fail(f"exit {code}, night {final.get('state')}: {err.strip().splitlines()[-1:] if err else ''}")
    if forward and took > 5:
        result.fail(f"the night ended {took:.1f}s after the clock passed its deadline")
    if not forward and took < NIGHT - 1:
        result.fail(f"the night ended {took:.1f}s after the clock went back 6s (its deadline was ~{NIGHT}s away)")
    stalls = [e for e in final.get("events", []) if e.get("event") == "stall"]
    if stalls:
        result.fail(f"the jump was taken for a stall: {stalls[0]}")
    case.check(result, "", session["thread_id"] if session else None)
    return result


def _codex_binary(case: Case, result: Result, what: str) -> Result:
    config = yaml.safe_load(case.config.read_text())
    binary = Path(config["codex"]["codex_bin"])
    if what == "codex binary missing":
        binary.rename(binary.with_name("codex.moved"))
        refused(case, result, exitcodes.CONFIG, "codex.codex_bin")
        case.check(result, "", None)
        return result
    if what == "codex binary broken":
        binary.write_text("#!/bin/sh\necho 'codex: cannot load its runtime' >&2\nexit 127\n")
        code, err = case.wait(case.start(), timeout=NIGHT + 40)
        final = case.session() or {}
        if code != 0 or final.get("state") not in ("finished", "failed"):
            result.fail(f"exit {code}, night {final.get('state')}")
        attempts = final.get("attempts") or []
        if not attempts or not any("cannot load its runtime" in (a.get("detail") or "") for a in attempts):
            result.fail(f"the attempts do not say why codex failed: {[a.get('detail') for a in attempts[:2]]}")
        case.check(result, "", None)
        return result
    # removed mid-night: attempts cannot start; the night says so and goes on to its deadline
    proc = case.start(hours=NIGHT)
    session = first_attempt(case, proc)
    moved = binary.with_name("codex.moved")
    binary.rename(moved)
    os.kill(session["attempts"][-1]["pid"], signal.SIGKILL)   # the next attempt needs the binary
    time.sleep(1.5)
    moved.rename(binary)   # put back: the night resumes its thread
    code, err = case.wait(proc, timeout=NIGHT + 40)
    final = case.session() or {}
    if code != 0 or final.get("state") not in ("finished", "failed"):
        result.fail(f"exit {code}, night {final.get('state')}: {err.strip().splitlines()[-1:] if err else ''}")
    spawn_failed = [a for a in final.get("attempts", []) if "cannot start" in (a.get("detail") or "")]
    if not spawn_failed:
        result.fail("no attempt says the binary could not be started")
    case.check(result, "", session["thread_id"] if session else None)
    return result


BAD_WORLD = ["truncated session.json", "foreign session.json", "another repository's session.json",
             "lock naming a reused pid", "two concurrent starts", "clock jumps forward", "clock jumps back",
             "codex binary missing", "codex binary broken", "codex binary removed mid-night",
             "codex_home unwritable", "stale index.lock", "session worktree deleted",
             "session branch deleted", "ops worktree deleted"]


# --- the campaign ------------------------------------------------------------------------------

def plan(total: int, rng: random.Random) -> List[Callable[[Callable[..., Case]], Result]]:
    """`total` faults: every bad state of the world and a full disk once, both floods (a short
    campaign: one), then named points, random instants and agent signals."""
    cases: List[Callable[[Callable[..., Case]], Result]] = []
    worlds = BAD_WORLD
    floods = ["one event line", "plain lines"] if total >= 60 else [rng.choice(["one event line", "plain lines"])]
    for what in worlds:
        cases.append(lambda of, w=what: bad_world(of, w))
    for how in floods:
        cases.append(lambda of, h=how: flood(of, h))
    cases.append(disk_full)
    rest = max(3, total - len(cases))
    points = [(p, n) for p, ns in POINTS for n in ns]
    agent = [(signal.SIGKILL, "agent"), (signal.SIGSTOP, "agent"), (signal.SIGKILL, "command"),
             (signal.SIGSTOP, "command")]
    n_points, n_agent = int(rest * 0.5), max(1, int(rest * 0.2))
    n_random = rest - n_points - n_agent
    order = points if n_points >= len(points) else rng.sample(points, n_points)
    for i in range(n_points):
        point, nth = order[i % len(order)]
        # every other one with the agent on a work-item branch (a restart must reuse its worktree)
        cases.append(lambda of, p=point, n=nth, w=i % 2 == 1: kill_at_point(of(work_branch=w), p, n))
    for i in range(n_agent):
        sig, target = agent[i % len(agent)]
        cases.append(lambda of, s=sig, t=target: agent_signal(of(), s, t))
    for i in range(n_random):
        seed = rng.getrandbits(32)
        cases.append(lambda of, s=seed, w=i % 2 == 1: kill_at_random(of(work_branch=w), random.Random(s)))
    rng.shuffle(cases)
    return cases


def run_case(index: int, make: Callable[[Callable[..., Case]], Result], root: Path) -> Result:
    """`make(case_of)`: a family, given the way to build its case (`case_of(**config)`)."""
    base = Path(tempfile.mkdtemp(prefix=f"case{index:03d}-", dir=root))
    made: List[Case] = []

    def case_of(**config) -> Case:
        made.append(Case(base, f"c{index}", **config))
        return made[-1]
    case_of.base = base
    started = time.monotonic()
    try:
        result = make(case_of)
    except Exception as exc:  # a harness failure is a failed case, with its reason
        result = Result("harness", f"case {index}")
        result.fail(f"{type(exc).__name__}: {exc}")
    finally:
        for case in made:
            case.close()
    result.detail = (result.detail + f" [{time.monotonic() - started:.1f}s]").strip()
    if result.survived:
        shutil.rmtree(base, ignore_errors=True)
    else:
        result.detail += f" kept: {base}"
    return result


def campaign(total: int, jobs: int, seed: int, root: Path, progress=print) -> List[Result]:
    rng = random.Random(seed)
    cases = plan(total, rng)
    results: List[Result] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_case, i, make, root) for i, make in enumerate(cases)]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            mark = "ok " if result.survived else ("-- " if not result.injected else "FAIL")
            progress(f"[{len(results):3d}/{len(cases)}] {mark} {result.family}: {result.fault} "
                     f"{result.detail} {'; '.join(result.problems)}")
    return results


def figures(results: List[Result]) -> dict:
    injected = [r for r in results if r.injected]
    times = sorted(r.recovery for r in injected if r.recovery is not None)
    return {
        "injected": len(injected), "survived": sum(r.survived for r in injected),
        "not_reached": len(results) - len(injected),
        "lines_lost": sum(r.lines_lost for r in injected), "torn": sum(r.torn_lines for r in injected),
        "corrupted": sum(r.states_corrupted for r in injected), "orphans": sum(r.orphans for r in results),
        "two_agents": sum(r.two_agents for r in results),
        "median_recovery": statistics.median(times) if times else None,
        "worst_recovery": times[-1] if times else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=240)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", type=Path, help="write the figures to this Markdown file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oa-chaos-"))
    started = time.monotonic()
    results = campaign(args.faults, args.jobs, args.seed, root)
    figs = figures(results)
    print(json.dumps(figs, indent=1))
    if args.write:
        import chaos_report
        args.write.write_text(chaos_report.markdown(results, figs, args, time.monotonic() - started))
    failed = [r for r in results if r.injected and not r.survived]
    if not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

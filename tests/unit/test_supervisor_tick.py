"""The supervisor's tick(now), replayed through scripted histories (honcho style).

No agent runs: a hand-written FakeClock (monotonic and wall time together), FakeProcesses (a
spawn that makes FakeProc children, a process tree that holds them while they live, signals
that each FakeProc answers as scripted) and a FakeBackend (a tiny line protocol and typing).
The state file, the run folder and the session worktree (a git repository) are real, in
tmp_path. Each history checks the phases the night passes through, in order, against the
transitions `state.TRANSITIONS` allows, what was signalled, and what session.json holds.
"""
import datetime as dt
import json
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from overnight_agent import policy, prompt, state
from overnight_agent.agents import base
from overnight_agent.agents.base import AttemptView, Capabilities, Event, Outcome
from overnight_agent.liveness import Limits
from overnight_agent.state import Phase
from overnight_agent.supervisor import Supervisor
from overnight_agent.tuning import Settings

UTC = dt.timezone.utc
START = dt.datetime(2026, 12, 1, 23, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic and wall time that move together, only when a test says so."""

    def __init__(self):
        self.mono = 1000.0
        self.wall = START

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> dt.datetime:
        return self.wall

    def advance(self, seconds: float) -> float:
        self.mono += seconds
        self.wall += dt.timedelta(seconds=seconds)
        return self.mono


class FakeProc:
    """A child that exists only here: its pid lies beyond any kernel's pid_max, so a real sweep
    or signal could never reach another process by mistake."""

    next_pid = 5_000_000

    def __init__(self, argv: List[str], on_signal: Dict[int, int]):
        FakeProc.next_pid += 1
        self.pid = FakeProc.next_pid
        self.args = argv
        self.returncode: Optional[int] = None
        self.stdout = self.stderr = None
        self.on_signal = on_signal        # signal -> the exit status it causes (absent: ignored)
        self.received: List[int] = []

    def poll(self) -> Optional[int]:
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code


class FakeProcesses:
    """The supervisor's process seam: spawn, the agent's tree, signals, sweeps."""

    def __init__(self, on_signal: Optional[Dict[int, int]] = None):
        self.on_signal = on_signal if on_signal is not None else {signal.SIGINT: 1}
        self.spawned: List[FakeProc] = []
        self.fail_spawn = False

    def spawn(self, argv, cwd, env, stdout, stderr):
        if self.fail_spawn:
            raise FileNotFoundError(2, "No such file or directory")
        proc = FakeProc(list(argv), self.on_signal)
        self.spawned.append(proc)
        return proc

    def tree(self, ref, tag):
        return [p for p in self.spawned if p.pid == ref.pid and p.returncode is None]

    def tagged(self, prefix):
        return []

    def signal_all(self, procs, sig, group=None):
        for proc in procs:
            proc.received.append(sig)
            if sig in proc.on_signal and proc.returncode is None:
                proc.exit(proc.on_signal[sig])

    def stop_blocking(self, procs, grace=3.0, signals=()):
        return []

    @property
    def last(self) -> FakeProc:
        return self.spawned[-1]


class FakeBackend:
    """Lines: `thread ID`, `turn done`, `turn failed TEXT`, `retry`, `network`, `command start`,
    `command end`; anything else is output that is not an event."""

    name = "fake"

    def __init__(self, picks_thread_id: bool = False):
        self.calls: List[tuple] = []
        self.capabilities = Capabilities(threads=True, event_stream=True, picks_thread_id=picks_thread_id)
        self.picked = 0

    def new_thread_id(self) -> Optional[str]:
        if not self.capabilities.picks_thread_id:
            return None
        self.picked += 1
        return f"picked-{self.picked}"

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]:
        self.calls.append(("start", thread_id, prompt))
        return ["fake-agent", "start", *([thread_id] if thread_id else []), prompt]

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]:
        self.calls.append(("resume", thread_id, prompt))
        return ["fake-agent", "resume", thread_id, prompt]

    def parse_line(self, line: str) -> Optional[Event]:
        word, _, rest = line.partition(" ")
        if word == "thread":
            return Event("thread_started", thread_id=rest)
        if line == "turn done":
            return Event("turn_completed", usage={"input_tokens": 100, "output_tokens": 10})
        if word == "turn" and rest.startswith("failed "):
            return Event("turn_failed", message=rest[len("failed "):])
        if line == "network":
            return Event("error", message="waiting for network", network_wait=True)
        if word == "command":
            return Event("item", item_type="command", phase="started" if rest == "start" else "completed",
                         command=True)
        return Event("other")

    def classify(self, view: AttemptView) -> Outcome:
        if view.stopped_for:
            return base.stopped_outcome(view)
        if view.turn_failed is not None:
            kind = base.USAGE_LIMIT if "usage limit" in view.turn_failed else base.TURN_FAILED
            return Outcome(kind, view.turn_failed)
        if view.turn_completed:
            return Outcome(base.COMPLETED, f"exit {view.returncode}")
        if view.thread_id is None:
            return Outcome(base.CRASHED_BEFORE_THREAD, f"exit {view.returncode}")
        return Outcome(base.CRASHED, f"exit {view.returncode}")

    def environment(self, env):
        return dict(env)

    def progress_files(self, thread_id):
        return []

    def find_thread(self, cwd):
        return None

    def after_attempt(self, worktree):
        return ()


class Log:
    """structlog's interface, keeping the events."""

    def __init__(self):
        self.events: List[tuple] = []

    def _add(self, level):
        return lambda event, **fields: self.events.append((level, event, fields))

    def __getattr__(self, level):
        return self._add(level)

    def named(self, event) -> List[dict]:
        return [fields for _, name, fields in self.events if name == event]


class Rig:
    def __init__(self, tmp_path: Path, *, hours: float = 8.0, wrap_up: float = 1800.0,
                 processes: Optional[FakeProcesses] = None, picks_thread_id: bool = False, **settings):
        self.clock = FakeClock()
        self.processes = processes or FakeProcesses()
        self.backend = FakeBackend(picks_thread_id)
        self.log = Log()
        worktree = tmp_path / "worktree"
        worktree.mkdir()
        subprocess.run(["git", "init", "-q", str(worktree)], check=True)
        self.run_dir = tmp_path / "run" / "runs" / "r1"
        (self.run_dir / "agent").mkdir(parents=True)
        self.state_path = tmp_path / "run" / "session.json"
        deadline = START + dt.timedelta(hours=hours)
        self.session = state.Session(
            run_id="r1", repo_root=str(worktree), deadline=deadline.isoformat(),
            wrap_up_at=(deadline - dt.timedelta(seconds=wrap_up)).isoformat(),
            session_worktree=str(worktree), session_branch="overnight/session_r1",
            ops_journal_worktree=str(tmp_path / "ops"), ops_journal_branch="overnight/ops-journal",
            base_branch="main", base_commit="0" * 40, agent="fake", model="m", model_reasoning_effort="high",
            sandbox="workspace-write", created_at=START.isoformat(), tag="oa-test-tick:r1",
            heartbeat_file=str(self.run_dir / "agent" / "heartbeat"))
        values = dict(sigint_grace=10.0, sigterm_grace=10.0, kill_grace=2.0,
                      budgets=policy.Budgets(initial=2.0, factor=2.0, maximum=300.0, healthy_after=600.0,
                                             max_per_hour=30, rate_limit_backoff=60.0,
                                             usage_limit_margin=120.0, max_tokens=0),
                      limits=Limits(model_silent=900, command_silent=1800, agent_cpu_floor=0.05,
                                    agent_cpu_ceiling=0.25, command_cpu_floor=0.005),
                      sample_interval=5.0, network_down_limit=600.0, resume_failures_before_fresh=2,
                      redact_output=False)
        values.update(settings)
        prompts = {"boot": "BOOT $run_id", "resume": "RESUME $run_id", "wrap_up": "WRAP UP by $deadline"}
        values_of_prompts = {**{name: "-" for name in prompt.PLACEHOLDERS}, "run_id": "r1",
                             "deadline": self.session.deadline}
        self.sup = Supervisor(session=self.session, state_path=self.state_path, layout=state.RunLayout(self.run_dir),
                              backend=self.backend, settings=Settings(**values), prompts=prompts,
                              prompt_values=lambda: values_of_prompts, env={}, log=self.log,
                              identity={"name": "T", "email": "t@example.invalid"},
                              clock=self.clock.monotonic, now=self.clock.now, processes=self.processes)
        self.phases: List[Phase] = []

    def start(self) -> "Rig":
        self.sup.begin()
        self.phases.append(self.sup.phase)
        return self

    def tick(self, seconds: float = 0.0) -> Phase:
        """Let `seconds` pass, then one pass of the loop; the phase it left the night in."""
        self.clock.advance(seconds)
        self.sup.tick(self.clock.monotonic())
        if self.sup.phase != self.phases[-1]:
            self.phases.append(self.sup.phase)
        return self.sup.phase

    def say(self, *lines: str) -> None:
        for line in lines:
            self.sup.on_output_line(line)

    def saved(self) -> dict:
        return json.loads(self.state_path.read_text())

    def outcomes(self) -> List[str]:
        return [a.outcome for a in self.session.attempts]


def assert_allowed(phases: List[Phase]) -> None:
    for old, new in zip(phases, phases[1:]):
        assert new in state.TRANSITIONS[old], f"{old} -> {new}"


# --- histories ------------------------------------------------------------------------------------

def test_a_crash_loop_backs_off_harder_each_time_then_pauses_for_the_hourly_budget(tmp_path):
    rig = Rig(tmp_path, budgets=policy.Budgets(initial=2.0, factor=2.0, maximum=300.0, healthy_after=600.0,
                                                max_per_hour=4, rate_limit_backoff=60.0,
                                                usage_limit_margin=120.0, max_tokens=0)).start()
    waits = []
    for _ in range(4):
        assert rig.tick() == Phase.RUNNING
        rig.processes.last.exit(1)          # dies before announcing a thread
        assert rig.tick(0.5) == Phase.BACKOFF
        waits.append(round(rig.sup.next_start - rig.clock.monotonic(), 3))
        assert rig.tick(waits[-1] - 0.01) == Phase.BACKOFF  # not a moment early
        rig.clock.advance(0.01)
    assert waits[:3] == [2.0, 4.0, 8.0]
    assert waits[3] > 3000  # four starts in the hour: paused until the first leaves it
    assert rig.outcomes() == [base.CRASHED_BEFORE_THREAD] * 4
    pause = [e for e in rig.session.events if e["event"] == "pause"]
    assert len(pause) == 1 and "restart budget spent" in pause[0]["reason"]
    assert [c[0] for c in rig.backend.calls] == ["start"] * 4  # never a thread to resume
    assert_allowed(rig.phases)
    assert rig.saved()["state"] == "backoff" and len(rig.saved()["attempts"]) == 4


def test_a_stall_is_stopped_with_sigint_and_the_same_thread_resumed_at_once(tmp_path):
    rig = Rig(tmp_path).start()
    assert rig.tick() == Phase.RUNNING
    rig.say("thread T1", "command start", "command end")
    assert rig.saved()["thread_id"] == "T1"  # written the moment it was announced
    assert rig.tick(899.0) == Phase.RUNNING      # silent, but not for the whole limit
    assert rig.tick(1.0) == Phase.STOPPING       # 900 s without evidence
    first = rig.processes.last
    assert first.received == [signal.SIGINT] and first.returncode == 1
    assert rig.saved()["state"] == "stopping"
    assert rig.tick() == Phase.BACKOFF
    assert rig.session.attempts[0].outcome == base.STALLED
    assert "no evidence of life for 900.0s (limit 900s" in rig.session.attempts[0].detail
    assert rig.tick() == Phase.RUNNING           # a stall resumes without a wait
    assert rig.backend.calls[-1][:2] == ("resume", "T1")
    assert rig.phases == [Phase.BACKOFF, Phase.RUNNING, Phase.STOPPING, Phase.BACKOFF, Phase.RUNNING]
    assert_allowed(rig.phases)


def test_resumes_that_hang_before_naming_the_thread_give_way_to_a_fresh_session(tmp_path):
    """A resume that never names its thread and sits silent to the stall limit is a failed resume
    (the CLI is stuck on its own state, not on the model): after two, a fresh session starts."""
    rig = Rig(tmp_path).start()
    assert rig.tick() == Phase.RUNNING
    rig.say("thread T1")
    rig.processes.last.exit(1)
    assert rig.tick() == Phase.BACKOFF
    for _ in range(2):
        rig.tick(rig.sup.next_start - rig.clock.monotonic())
        assert rig.sup.phase == Phase.RUNNING and rig.backend.calls[-1][:2] == ("resume", "T1")
        assert rig.tick(900.0) == Phase.STOPPING     # not a word, not even the thread
        assert rig.tick() == Phase.BACKOFF
    assert rig.outcomes() == [base.CRASHED, base.STALLED, base.STALLED]
    rig.tick(rig.sup.next_start - rig.clock.monotonic())
    assert rig.sup.phase == Phase.RUNNING
    assert rig.backend.calls[-1][:2] == ("start", None)
    assert rig.session.fresh_starts == 1
    fresh = [e for e in rig.session.events if e["event"] == "fresh_start"]
    assert fresh and "hung before the thread started" in fresh[0]["reason"], rig.session.events
    assert_allowed(rig.phases)


def test_a_resume_that_named_its_thread_and_then_stalled_is_resumed_again(tmp_path):
    rig = Rig(tmp_path).start()
    rig.tick()
    rig.say("thread T1")
    for _ in range(3):
        assert rig.tick(900.0) == Phase.STOPPING
        assert rig.tick() == Phase.BACKOFF
        assert rig.tick() == Phase.RUNNING
        assert rig.backend.calls[-1][:2] == ("resume", "T1")
        rig.say("thread T1")
    assert rig.session.fresh_starts == 0


def test_a_stalled_agent_that_ignores_sigint_gets_sigterm_then_sigkill_half_a_second_apart(tmp_path):
    rig = Rig(tmp_path, processes=FakeProcesses(on_signal={signal.SIGKILL: -9})).start()
    rig.tick()
    rig.say("thread T1")
    assert rig.tick(900.0) == Phase.STOPPING
    assert rig.processes.last.received == [signal.SIGINT]
    assert rig.tick(0.4) == Phase.STOPPING and rig.processes.last.received == [signal.SIGINT]
    rig.tick(0.1)
    assert rig.processes.last.received == [signal.SIGINT, signal.SIGTERM]
    rig.tick(0.5)
    assert rig.processes.last.received == [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    assert rig.tick() == Phase.BACKOFF and rig.session.attempts[0].outcome == base.STALLED


def test_the_deadline_stops_the_attempt_and_finishes_the_night(tmp_path):
    rig = Rig(tmp_path, hours=1.0).start()
    rig.tick()
    rig.say("thread T1", "command start")  # a long command: its own limit is 30 minutes
    for _ in range(12):
        assert rig.tick(299.0) == Phase.RUNNING
        rig.say("command end", "command start")
    assert rig.tick(13.0) == Phase.STOPPING   # 3601 s: past the deadline
    assert rig.processes.last.received == [signal.SIGINT]
    assert rig.tick() == Phase.FINISHED
    saved = rig.saved()
    assert saved["state"] == "finished" and saved["attempts"][0]["outcome"] == base.STOPPED
    assert saved["attempts"][0]["detail"] == "deadline"
    assert saved["events"][-1] == {"event": "night.finished", "at": saved["events"][-1]["at"], "reason": "deadline"}
    assert_allowed(rig.phases)


def test_a_usage_limit_sleeps_until_the_reset_and_then_resumes(tmp_path):
    rig = Rig(tmp_path).start()
    rig.tick()
    rig.say("thread T1", "turn failed You’ve hit your usage limit. ... try again at 1:57 AM.")
    rig.processes.last.exit(1)
    assert rig.tick() == Phase.BACKOFF
    assert rig.outcomes() == [base.USAGE_LIMIT]
    wait = rig.sup.next_start - rig.clock.monotonic()
    assert wait == pytest.approx(2 * 3600 + 57 * 60 + 120)  # 23:00 -> 01:57, plus the margin
    assert "usage limit: sleeping until" in rig.sup.pause_reason
    assert [e["event"] for e in rig.session.events].count("pause") == 1
    assert rig.tick(wait - 1) == Phase.BACKOFF
    assert rig.tick(1) == Phase.RUNNING and rig.backend.calls[-1][:2] == ("resume", "T1")
    assert_allowed(rig.phases)


def test_a_usage_limit_that_resets_after_the_deadline_ends_the_night_failed(tmp_path):
    rig = Rig(tmp_path, hours=1.0).start()
    rig.tick()
    rig.say("thread T1", "turn failed You’ve hit your usage limit. ... try again at 1:57 AM.")
    rig.processes.last.exit(1)
    assert rig.tick() == Phase.FAILED
    assert rig.phases == [Phase.BACKOFF, Phase.RUNNING, Phase.FAILED]
    assert "after the deadline" in rig.saved()["events"][-1]["reason"]


def test_the_first_resume_after_wrap_up_time_carries_the_wrap_up_prompt_once(tmp_path):
    rig = Rig(tmp_path, hours=1.0, wrap_up=600.0).start()
    rig.tick()
    rig.say("thread T1", "turn done")
    rig.processes.last.exit(0)
    assert rig.tick() == Phase.BACKOFF
    assert rig.tick(2.0) == Phase.RUNNING
    assert rig.backend.calls[-1][2].startswith("RESUME")   # before wrap-up time
    rig.say("turn done")
    rig.clock.advance(3000.0)                               # now inside the last 10 minutes
    rig.processes.last.exit(0)
    rig.tick()
    rig.tick(2.0)
    assert rig.backend.calls[-1][2].startswith("WRAP UP by ")
    rig.say("turn done")
    rig.processes.last.exit(0)
    rig.tick()
    rig.tick(5.0)
    assert rig.backend.calls[-1][2].startswith("RESUME")   # once only
    assert rig.session.wrap_up_sent and [e["event"] for e in rig.session.events].count("prompt.wrap_up") == 1


def test_a_signal_in_the_backoff_stops_the_night_and_one_while_running_stops_the_agent_first(tmp_path):
    rig = Rig(tmp_path).start()
    rig.sup.signals.pending.append(signal.SIGTERM)
    assert rig.tick() == Phase.STOPPED
    assert rig.processes.spawned == [] and rig.saved()["state"] == "stopped"
    (tmp_path / "b").mkdir()
    other = Rig(tmp_path / "b", processes=FakeProcesses(on_signal={signal.SIGKILL: -9})).start()
    other.tick()
    other.sup.signals.pending.append(signal.SIGINT)
    assert other.tick() == Phase.STOPPING and other.processes.last.received == [signal.SIGINT]
    other.sup.signals.pending.append(signal.SIGTERM)  # asked again: straight to the last step
    other.tick()
    assert other.processes.last.received == [signal.SIGINT, signal.SIGKILL]


def test_a_spawn_that_fails_is_an_attempt_that_never_started(tmp_path):
    rig = Rig(tmp_path).start()
    rig.processes.fail_spawn = True
    assert rig.tick() == Phase.BACKOFF
    assert rig.outcomes() == [base.NOT_STARTED]
    assert "cannot start fake-agent: No such file or directory" in rig.session.attempts[0].detail
    assert rig.phases == [Phase.BACKOFF]


def test_a_backend_that_names_its_thread_gets_the_name_saved_before_the_spawn_and_resumed(tmp_path):
    """claude and gemini take --session-id: the id is in session.json before any process runs
    (a supervisor killed right after the spawn resumes it), a crash resumes it, and a CLI that
    announces another conversation is stopped as a mismatch."""
    saved_at_spawn = []
    rig = Rig(tmp_path, picks_thread_id=True)
    spawn = rig.processes.spawn
    rig.processes.spawn = lambda *a, **k: (saved_at_spawn.append(rig.saved()["thread_id"]), spawn(*a, **k))[1]
    rig.start()
    assert rig.tick() == Phase.RUNNING
    assert saved_at_spawn == ["picked-1"]
    assert rig.processes.last.args == ["fake-agent", "start", "picked-1", "BOOT r1"]
    rig.say("thread picked-1")
    rig.processes.last.exit(1)
    assert rig.tick(0.5) == Phase.BACKOFF
    assert rig.outcomes() == [base.CRASHED]
    assert rig.tick(3.0) == Phase.RUNNING
    assert rig.processes.last.args[:3] == ["fake-agent", "resume", "picked-1"]
    rig.say("thread someone-else")
    assert rig.tick(0.1) == Phase.STOPPING
    rig.processes.last.exit(1)   # answers the SIGINT
    rig.tick(0.1)
    assert rig.outcomes()[-1] == base.THREAD_MISMATCH
    assert rig.tick(5.0) == Phase.RUNNING   # a fresh start names a new conversation
    assert rig.processes.last.args[:3] == ["fake-agent", "start", "picked-2"]
    assert rig.saved()["thread_id"] == "picked-2"
    assert_allowed(rig.phases)


def test_every_transition_the_supervisor_makes_is_in_the_table():
    with pytest.raises(ValueError, match="finished -> running is not a transition"):
        session = state.Session(
            run_id="r", repo_root="/", deadline=START.isoformat(), wrap_up_at=START.isoformat(),
            session_worktree="/", session_branch="b", ops_journal_worktree="/", ops_journal_branch="o",
            base_branch="main", base_commit="0", agent="fake", model="m", model_reasoning_effort="high",
            sandbox="s", created_at=START.isoformat(), state="finished")
        state.transition(session, Phase.RUNNING, "a test")


def test_docs_show_the_transition_table():
    text = (Path(__file__).resolve().parents[2] / "docs" / "how-it-works.md").read_text()
    assert state.transition_table() in text

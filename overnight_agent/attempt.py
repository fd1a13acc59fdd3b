"""One run of the agent CLI, from its spawn to its typed end.

Owns: starting it (its run log, its pipes or the log itself, a pidfd that wakes the loop when
it exits, its evidence sampler), what was seen of it (its events: the thread it announced, the
commands it runs, its waits for the network, its output as evidence of life), and its end
(closing the output, the backend's verdict, the attempt record filled in). Must not: decide
what comes next (the supervisor asks `policy`), stop processes, or write session.json.
"""
import os
import selectors
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from . import capture, procs, redact, state
from .agents import base
from .agents.base import AttemptView, Backend, Event
from .liveness import Limits, Liveness
from .sampler import Sampler


@dataclass(frozen=True)
class Plan:
    """What to run: everything the supervisor decided before the spawn."""

    number: int
    kind: str                    # "start" | "resume"
    prompt_kind: str             # "boot" | "resume" | "wrap_up"
    argv: List[str]
    thread_id: Optional[str]     # the thread a resume asks for, or a start names (picks_thread_id)
    started_at: str              # ISO time


class SpawnFailed(Exception):
    def __init__(self, record: state.Attempt):
        super().__init__(record.detail)
        self.record = record


@dataclass
class LiveAttempt:
    record: state.Attempt
    popen: subprocess.Popen
    ref: procs.ProcRef
    view: AttemptView
    output: capture.Output
    started: float                   # monotonic
    liveness: Liveness
    sampler: Sampler
    direct: bool = False             # the command writes its stdout into the log itself
    pidfd: Optional[int] = None      # readable when the agent exits (its pipes may close first)
    open_commands: int = 0           # command items started and not completed
    network_since: Optional[float] = None  # first "waiting for network" notice in a row

    @classmethod
    def spawn(cls, plan: Plan, *, backend: Backend, run_dir: Path, cwd: str, env, cap: capture.LogCap,
              redactor: Optional[redact.Redactor], watch: capture.LogWatch,
              selector: selectors.BaseSelector, limits: Limits, sample_interval: float,
              heartbeat: Optional[Path], started: float, started_wall: float,
              spawn: Callable = procs.spawn) -> "LiveAttempt":
        """Start the agent in its own session and process group; `SpawnFailed` (with the
        attempt's record) when it cannot be started."""
        log_path = run_dir / f"{backend.name}_{'start' if plan.number == 1 else 'resume'}.log"
        of_thread = f" of {plan.thread_id}" if plan.kind == "resume" and plan.thread_id else ""
        output = capture.Output(log_path, f"=== overnight-agent attempt {plan.number} ({plan.kind}{of_thread}, "
                                          f"prompt {plan.prompt_kind}) started {plan.started_at} ===\n",
                                cap, redactor, events_on_stdout=backend.capabilities.event_stream)
        # A plain command whose output needs no redaction writes the log itself: no copy through
        # us can be as fast as that, and inotify tells us of each write.
        direct = output.direct_stdout(watch)
        try:
            popen = spawn(plan.argv, cwd=cwd, env=env, stderr=subprocess.PIPE,
                          stdout=subprocess.PIPE if direct is None else direct)
        except OSError as exc:
            detail = f"cannot start {plan.argv[0]}: {exc.strerror}"
            output.finish(detail + "\n")
            raise SpawnFailed(state.Attempt(number=plan.number, kind=plan.kind, started_at=plan.started_at,
                                            log=str(log_path), ended_at=plan.started_at,
                                            outcome=base.NOT_STARTED, detail=detail)) from None
        finally:
            if direct is not None:
                os.close(direct)
        ref = procs.ref_of(popen)
        record = state.Attempt(number=plan.number, kind=plan.kind, started_at=plan.started_at, log=str(log_path),
                               pid=popen.pid, pgid=ref.pgid, proc_create_time=ref.create_time,
                               thread_id=plan.thread_id)
        liveness = Liveness(limits, started=started)
        sampler = Sampler(popen.pid, liveness, sample_interval, started=started, started_wall=started_wall,
                          heartbeat=heartbeat, progress_files=backend.progress_files)
        live = cls(record=record, popen=popen, ref=ref, output=output, started=started, liveness=liveness,
                   view=AttemptView(kind=plan.kind, expected_thread=plan.thread_id), sampler=sampler,
                   direct=direct is not None)
        output.attach(popen, selector)
        live.pidfd = _watch_exit(popen.pid, selector)
        return live

    # --- while it runs ------------------------------------------------------------------------------

    def observe(self, event: Event, now: float) -> None:
        """What one event tells: the view's facts, commands running, evidence, network waits."""
        self.view.observe(event)
        if event.network_wait:  # a CLI waiting for the network retries forever
            self.network_since = self.network_since or now
        elif event.progress:
            self.liveness.saw("stdout", now)
            self.network_since = None
        if event.command:
            delta = 1 if event.phase == "started" else -1 if event.phase == "completed" else 0
            self.open_commands = max(0, self.open_commands + delta)
            self.liveness.command_running = self.open_commands > 0

    def read(self, fd: int, selector: selectors.BaseSelector, now: float, event_stream: bool) -> List[str]:
        """Take what `fd` holds; returns the whole stdout lines of an event stream."""
        lines, said = self.output.read(fd, selector)
        # A plain command: any output is evidence. An event stream: its events are (see
        # `observe`), and so are bytes of a line still arriving (one event can be 100 MB long).
        if said and (not event_stream or not lines):
            self.liveness.saw("stdout", now)
        return lines

    def written(self, now: float) -> None:
        """The command wrote the log it was given (inotify said so)."""
        if self.output.account_direct():
            self.liveness.saw("stdout", now)

    def forget_pidfd(self, selector: selectors.BaseSelector) -> None:
        """Once the agent is reaped: its pidfd would stay readable and spin the loop."""
        if self.pidfd is not None:
            selector.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    # --- the end --------------------------------------------------------------------------------------

    def close(self, selector: selectors.BaseSelector) -> List[str]:
        """Stop reading it: the last partial line of its events, if any."""
        self.forget_pidfd(selector)
        return self.output.close(selector, self.popen)

    def end(self, backend: Backend, redactor: Optional[redact.Redactor], ended_at: str) -> base.Outcome:
        """Its typed outcome, written into the attempt record and at the foot of its run log."""
        view = self.view
        view.returncode = self.popen.returncode
        view.stderr_tail = self.output.stderr_tail
        outcome = backend.classify(view)
        if redactor is not None:  # the detail quotes the agent's own words
            outcome = base.Outcome(outcome.kind, redactor.text(outcome.detail))
        record = self.record
        record.ended_at, record.exit_code = ended_at, view.returncode
        record.outcome, record.detail = outcome.kind, outcome.detail
        record.usage = view.usage
        record.thread_id = view.thread_id or record.thread_id
        self.output.finish(f"=== attempt {record.number} ended: {outcome.kind} ({outcome.detail}) ===\n")
        return outcome


def _watch_exit(pid: int, selector) -> Optional[int]:
    """A pidfd for `pid`, registered to wake the loop when it exits. An exit is otherwise seen
    through end-of-file on its pipes, which the kernel closes before the process can be reaped,
    so the wait that follows could miss it and the loop sleep on. Without pidfds (Linux < 5.3),
    SIGCHLD wakes the loop instead (see the supervisor's signal handlers)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    selector.register(fd, selectors.EVENT_READ, "exit")
    return fd

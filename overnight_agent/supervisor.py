"""The main loop of a night: start or resume the agent, watch it, stop it, decide what is next.

Owns: the loop and its phases, the live attempt (process, pipes, log file), turning signals into
events, escalating a stop over ticks. Must not: set up worktrees or take the lock (`night`
does), contain policy (`policy` does), or reap any child but its own agent.

One pass of the loop, top to bottom:
    dispatch queued signals -> act on the phase -> ping the watchdog -> wait for output or a tick
Phases: BACKOFF (no agent; start one when due), RUNNING (agent live), STOPPING (escalating
SIGINT -> SIGTERM -> SIGKILL to the whole tree), DONE.
"""
import collections
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional

from . import (faults, filewatch, gc, gitops, journal, policy, procs, prompt, redact, secretguard, state,
               tell, timeparse)
from .agents import base
from .agents.base import AttemptView, Backend
from .agents.codex import is_network_wait
from .liveness import Limits, Liveness
from .notify import Notifier

BACKOFF, RUNNING, STOPPING, DONE = "backoff", "running", "stopping", "done"
STDERR_TAIL = 8192
READ_CHUNK = 1 << 20  # matches the widened pipe: one read per wake-up under heavy output
MAX_WAIT = 5.0       # the longest the loop sleeps when nothing is due
GUARD_CHECK_SLACK = 0.5  # a backoff at least this long has room for the after-attempt git check
# In a crash loop with no backoff the check (tens of ms of git) runs at most this often; it
# compares with the night's snapshot, so nothing between two checks escapes it.
GUARD_CHECK_EVERY = 5.0
# After a look at a log the command writes itself, the next waits this long: a flood of writes
# then costs a few hundred wake-ups a second, not one per write (the cap is kept at each look).
WATCH_PAUSE = 0.01
# A stalled attempt gets this long after SIGINT, then after SIGTERM, before SIGKILL.
STALL_GRACE = 0.5


@dataclass
class Live:
    """The attempt in flight: its process, its pipes and what we saw of it."""

    attempt: state.Attempt
    popen: subprocess.Popen
    ref: procs.ProcRef
    view: AttemptView
    log: object                      # binary file, append mode
    started: float                   # monotonic
    liveness: Liveness
    buffers: Dict[int, bytearray] = field(default_factory=dict)
    redactors: Dict[int, "redact.StreamRedactor"] = field(default_factory=dict)
    open_fds: List[int] = field(default_factory=list)
    pidfd: Optional[int] = None      # readable when the agent exits (its pipes may close first)
    open_commands: int = 0           # command items started and not completed
    network_since: Optional[float] = None  # first "waiting for network" notice in a row
    next_sample: float = 0.0
    sampled_at: float = 0.0
    agent_cpu: Dict = field(default_factory=dict)
    command_cpu: Dict = field(default_factory=dict)
    file_marks: Dict[str, tuple] = field(default_factory=dict)
    # A plain command with nothing to redact writes its stdout into the log itself (see
    # _start_attempt); we watch the file for its writes and keep the size cap by cutting it back.
    direct: bool = False
    direct_size: int = 0             # the log's size as last accounted for
    cut_at: Optional[int] = None     # past the cap: the size the log is held to


@dataclass
class Settings:
    """What the loop needs from the config, as plain numbers."""

    sigint_grace: float
    sigterm_grace: float
    kill_grace: float
    budgets: policy.Budgets
    limits: Limits
    sample_interval: float
    network_down_limit: float
    resume_failures_before_fresh: int
    redact_output: bool = True
    max_log_bytes: int = 200 * 1000 * 1000
    tick: float = 0.2


class Supervisor:
    def __init__(self, *, session: state.Session, state_path: Path, run_dir: Path,
                 backend: Backend, settings: Settings, prompts: Dict[str, str],
                 prompt_values: Callable[[], Dict[str, str]], env: Dict[str, str], log,
                 identity: Dict[str, str], notifier: Optional[Notifier] = None, guard=None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable = timeparse.local_now):
        self.session = session
        self.state_path = state_path
        self.run_dir = run_dir
        self.backend = backend
        self.settings = settings
        self.prompts = prompts
        self.prompt_values = prompt_values
        self.env = env
        self.log = log
        self.identity = identity
        self.notifier = notifier or Notifier({})
        self.guard = guard                # gitsafety.AgentGuard: refs and primary tree checks
        # Secrets the agent prints never reach a log: token shapes and this environment's values.
        self.redactor = redact.Redactor({**os.environ, **env}) if settings.redact_output else None
        self.log_cap = gc.LogCap(run_dir, settings.max_log_bytes)
        self.guard_before = None
        self.guard_pending: Optional[int] = None  # an attempt whose refs are still to be checked
        self.guard_checked = -GUARD_CHECK_EVERY
        self.clock = clock
        self.now = now
        self.phase = BACKOFF
        self.live: Optional[Live] = None
        self.next_start = clock()
        self.stop_reason: Optional[str] = None
        self.stop_steps: List[tuple] = []
        self.step_due = 0.0
        self.signals: Deque[int] = collections.deque()
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.watch: Optional[filewatch.FileWatch] = None  # the logs commands write themselves
        self.watch_resume: Optional[float] = None  # the watch is off the selector until then
        self.durations: List[policy.AttemptSummary] = []
        self.starts: List[float] = []    # monotonic start of each attempt, for the hourly cap
        self.pause_reason = ""

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        previous = self._install_signal_handlers()
        try:
            if self.guard is not None:
                # The night's snapshot: a restarted supervisor compares with the one taken before
                # it died, so nothing done while nobody watched goes unnoticed.
                self.guard_before = (self.session.restarts and self.guard.last_snapshot()) or self.guard.snapshot()
            if procs.ss_binary() is None:
                self.log.warning("liveness.no_network_evidence", missing="ss",
                                 hint="install iproute2: a slowly streaming model may look stalled")
            self._journal("resumed after a supervisor restart" if self.session.restarts
                          else f"night started; deadline {self.session.deadline}")
            self._save(state.BACKOFF)
            # Set up (lock, worktrees, leftovers stopped): systemd may call the unit active.
            self.notifier.ready(self._status_text())
            while self.phase != DONE:
                self._dispatch_signals()
                faults.point("loop.tick")
                now = self.clock()
                if self.phase == BACKOFF:
                    self._tick_backoff(now)
                elif self.phase == RUNNING:
                    self._tick_running(now)
                elif self.phase == STOPPING:
                    self._tick_stopping(now)
                self.notifier.tick(self.clock())
                if self.phase != DONE:
                    self._wait(self._timeout(now))
        except BaseException:
            self._emergency_stop()
            raise
        finally:
            self._restore_signal_handlers(previous)
            self.notifier.stopping()
            self.selector.close()
            if self.watch is not None:
                self.watch.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return 0

    def _timeout(self, now: float) -> float:
        """Sleep until the next thing is due, exactly: output and signals wake us anyway, so an
        idle night costs next to nothing, and no verdict or deadline waits for a tick."""
        due = [now + MAX_WAIT, now + (self.session.deadline_dt - self.now()).total_seconds()]
        if self.notifier.watchdog_interval is not None:
            due.append(self.notifier.next_ping)
        if self.phase == BACKOFF:
            due.append(self.next_start)
        elif self.phase == RUNNING and self.live is not None:
            due += [self.live.next_sample, self.live.liveness.due()]
            if self.watch_resume is not None:
                due.append(self.watch_resume)
        elif self.phase == STOPPING:
            due += [self.step_due, now + self.settings.tick]  # survivors are polled while stopping
        return max(0.0, min(due) - now)

    def _emergency_stop(self) -> None:
        """The loop itself failed: stop the agent tree before the exception leaves, so nothing
        outlives us (a restarted supervisor resumes the thread)."""
        survivors = procs.tree(self.live.ref, self.session.tag) if self.live else procs.tagged(self.session.tag)
        if survivors:
            left = procs.stop_blocking(survivors, grace=1.0,
                                       signals=(signal.SIGINT, signal.SIGTERM, signal.SIGKILL))
            self.log.error("supervisor.emergency_stop", pids=[p.pid for p in survivors],
                           survivors=[p.pid for p in left])
        if self.live is not None:
            self.live.popen.poll()

    # --- signals: handlers only queue; the loop acts ------------------------------------------

    def _install_signal_handlers(self):
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        # A handler (even one that does nothing) makes SIGCHLD write to the wakeup fd: an agent's
        # exit wakes the loop where pidfds are missing.
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        previous["wakeup"] = signal.set_wakeup_fd(self._wake_w)
        return previous

    def _restore_signal_handlers(self, previous) -> None:
        signal.set_wakeup_fd(previous.pop("wakeup"))
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            name = signal.Signals(signum).name
            self.log.info("signal.received", signal=name, phase=self.phase)
            if self.phase == STOPPING and self.stop_reason in ("deadline", "signal"):
                # Asked again while stopping for good: go straight to the last step.
                self.step_due = self.clock()
                self.stop_steps = self.stop_steps[-1:]
            elif self.phase == STOPPING:
                # Stopping to resume (a stall, a wrong thread): now the night ends instead.
                self.stop_reason = self.live.view.stopped_for = "signal"
            elif self.phase == RUNNING:
                self._begin_stop("signal")
            elif self.phase == BACKOFF:
                self._finish_night(state.STOPPED, "signal")

    # --- phases -----------------------------------------------------------------------------------

    def _tick_backoff(self, now: float) -> None:
        budget = self.settings.budgets.max_tokens
        spent = policy.tokens_used(self.session.attempts) if budget else 0
        if self.now() >= self.session.deadline_dt:
            self._finish_night(state.FINISHED, "deadline")
        elif budget and spent >= budget:
            self._finish_night(state.FINISHED, f"token budget spent: {spent} of {budget}")
        elif now >= self.next_start:
            self._start_attempt()

    def _tick_running(self, now: float) -> None:
        live = self.live
        if live.popen.poll() is not None:
            self._drain(live)
            self._end_attempt(now)
            return
        if self.now() >= self.session.deadline_dt:
            self._begin_stop("deadline")
            return
        if (live.view.kind == "resume" and live.view.thread_id
                and live.view.thread_id != live.view.expected_thread):
            self.log.warning("resume.thread_mismatch", expected=live.view.expected_thread,
                             got=live.view.thread_id)
            self._begin_stop("thread_mismatch")
            return
        if now >= live.next_sample or now >= live.liveness.due():
            self._sample(live, now)  # always look once more before calling it a stall
        verdict = live.liveness.verdict(now)
        if verdict.stalled and self._network_evidence(live, now):
            verdict = live.liveness.verdict(now)
        if verdict.stalled:
            self.session.note("stall", timeparse.iso(self.now()), attempt=live.attempt.number,
                              reason=verdict.reason)
            self._begin_stop(f"stall: {verdict.reason}")  # first: the signal goes out at once
            self.log.warning("attempt.stalled", attempt=live.attempt.number, reason=verdict.reason)
            self._journal(f"attempt {live.attempt.number} stalled and was stopped: {verdict.reason}")
        elif live.network_since is not None and now - live.network_since >= self.settings.network_down_limit:
            waited = now - live.network_since
            self.log.warning("attempt.network_down", attempt=live.attempt.number, seconds=round(waited))
            self._begin_stop(f"network_down: waiting for the network for {waited:.0f}s")

    def _sample(self, live: Live, now: float) -> None:
        """Read the evidence that is not pushed to us: files and CPU."""
        liveness = live.liveness
        if live.direct:
            self._account_direct(live)  # a write whose wake-up is still queued counts too
        paths = {"heartbeat": [Path(self.session.heartbeat_file)] if self.session.heartbeat_file else [],
                 "rollout": self.backend.progress_files(live.view.thread_id or live.view.expected_thread)}
        for source, files in paths.items():
            for path in files:
                try:
                    info = path.stat()
                except OSError:
                    continue
                mark = (info.st_mtime_ns, info.st_size)
                key = f"{source}:{path}"
                previous = live.file_marks.get(key)
                # Date the evidence by the file's own mtime, moved onto the monotonic clock.
                when = min(now, now - (time.time() - info.st_mtime))
                if previous is not None and previous != mark:
                    liveness.saw(source, when)
                elif previous is None and source == "heartbeat" and info.st_mtime >= self._attempt_epoch(live):
                    liveness.saw(source, max(when, live.started))  # touched since this attempt began
                live.file_marks[key] = mark
        kids = procs.descendants(live.popen.pid)
        agent = procs.thread_cpu_ns(live.popen.pid)
        commands = {}
        for pid in kids:
            for tid, ns in procs.thread_cpu_ns(pid).items():
                commands[(pid, tid)] = ns
        window = now - live.sampled_at if live.sampled_at else 0.0
        if window > 0:
            liveness.cpu(procs.cpu_delta(live.agent_cpu, agent), procs.cpu_delta(live.command_cpu, commands),
                         window, now)
        live.agent_cpu, live.command_cpu, live.sampled_at = agent, commands, now
        liveness.command_running = live.open_commands > 0 or bool(kids)
        live.next_sample = now + self.settings.sample_interval

    def _network_evidence(self, live: Live, now: float) -> bool:
        """Before calling it a stall: has the agent received data lately? True if that moved
        the evidence."""
        pids = [live.popen.pid, *procs.descendants(live.popen.pid)]
        if not procs.has_sockets(pids):
            return False  # nothing to ask `ss` about
        ago = procs.last_data_received(pids)
        if ago is None:
            return False
        before = live.liveness.last_evidence()
        live.liveness.saw("network", now - ago)
        return live.liveness.last_evidence() > before

    def _attempt_epoch(self, live: Live) -> float:
        return timeparse.parse_iso(live.attempt.started_at).timestamp() - 1.0

    def _tick_stopping(self, now: float) -> None:
        live = self.live
        if live is not None and live.popen.poll() is not None:
            self._forget_pidfd(live)
            self._drain(live)
        survivors = self._agent_tree()
        child_gone = live is None or live.popen.returncode is not None
        if child_gone and not survivors:
            if live is not None:
                self._end_attempt(now)
            return
        if now >= self.step_due:
            if not self.stop_steps:
                # SIGKILL did not take within its grace (a process in uninterruptible sleep):
                # say so and go on rather than hang the night.
                self.log.error("stop.survivors", pids=[p.pid for p in survivors])
                self.step_due = now + self.settings.kill_grace
                if live is not None and live.popen.returncode is not None:
                    self._end_attempt(now)
                return
            sig, grace = self.stop_steps.pop(0)
            self.log.info("stop.signal", signal=sig.name, processes=len(survivors),
                          reason=self.stop_reason)
            procs.signal_all(survivors, sig, group=live.ref.pgid if live else None)
            self.step_due = now + grace

    # --- attempts ---------------------------------------------------------------------------------

    def _start_attempt(self) -> None:
        session = self.session
        decision = policy.next_attempt(
            session.thread_id, self.durations,
            resume_failures_before_fresh=self.settings.resume_failures_before_fresh)
        kind = "start" if decision.fresh else "resume"
        if not self.backend.has_threads:
            decision = policy.NextAttempt(not session.attempts, "no threads: start, then restart")
            kind = "start" if not session.attempts else "resume"
        if self.backend.has_threads and decision.fresh and session.thread_id is not None:
            self._journal(f"started a fresh session: {decision.reason}")
            session.fresh_starts += 1
            session.note("fresh_start", timeparse.iso(self.now()), reason=decision.reason,
                         old_thread=session.thread_id)
            self.log.warning("attempt.fresh_start", reason=decision.reason, old_thread=session.thread_id)
            session.thread_id = None
        number = len(session.attempts) + 1
        values = self.prompt_values()
        if kind == "start":
            text, prompt_kind = prompt.render(self.prompts["boot"], values), "boot"
        else:
            wrap = not session.wrap_up_sent and self.now() >= session.wrap_up_dt
            prompt_kind = "wrap_up" if wrap else "resume"
            text = prompt.render(self.prompts[prompt_kind], values)
            if wrap:
                session.wrap_up_sent = True
                session.note("prompt.wrap_up", timeparse.iso(self.now()))
        messages = self._pending_messages()
        text = tell.with_messages(text, messages)
        argv = (self.backend.start_argv(text) if kind == "start"
                else self.backend.resume_argv(session.thread_id, text))
        log_path = self.run_dir / f"{self.backend.name}_{'start' if number == 1 else 'resume'}.log"
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_APPEND
        log_file = open(os.open(log_path, flags, 0o644), "wb", buffering=0)  # unbuffered: on disk at once
        started_at = timeparse.iso(self.now())
        of_thread = f" of {session.thread_id}" if kind == "resume" and session.thread_id else ""
        header = (f"=== overnight-agent attempt {number} ({kind}{of_thread}, prompt {prompt_kind}) "
                  f"started {started_at} ===\n")
        log_file.write(header.encode())
        log_file.flush()
        # A plain command whose output needs no redaction writes the log itself: no copy through
        # us can be as fast as that, and the kernel's inotify tells us of each write. Otherwise
        # (codex, redaction, no inotify) its output comes through a pipe and we write it.
        direct = not self.backend.has_threads and self.redactor is None and self._watch_log(log_path)
        # The command's own open file (not a copy of ours): our offset stays ours.
        stdout = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if direct else subprocess.PIPE
        try:
            popen = procs.spawn(argv, cwd=session.session_worktree, env=self.env,
                                stdout=stdout, stderr=subprocess.PIPE)
        except OSError as exc:
            log_file.write(f"cannot start {argv[0]}: {exc.strerror}\n".encode())
            log_file.close()
            self.log.error("attempt.spawn_failed", argv0=argv[0], error=exc.strerror)
            attempt = state.Attempt(number=number, kind=kind, started_at=started_at,
                                    log=str(log_path), ended_at=started_at,
                                    outcome=base.CRASHED_BEFORE_THREAD,
                                    detail=f"cannot start {argv[0]}: {exc.strerror}")
            session.attempts.append(attempt)
            self._after_attempt(attempt, 0.0)
            return
        finally:
            if direct:
                os.close(stdout)
        ref = procs.ref_of(popen)
        self._delivered(messages, number)
        self.starts.append(self.clock())
        attempt = state.Attempt(number=number, kind=kind, started_at=started_at, log=str(log_path),
                                pid=popen.pid, pgid=ref.pgid, proc_create_time=ref.create_time,
                                thread_id=session.thread_id if kind == "resume" else None)
        session.attempts.append(attempt)
        view = AttemptView(kind=kind, expected_thread=session.thread_id if kind == "resume" else None)
        started = self.clock()
        self.live = Live(attempt=attempt, popen=popen, ref=ref, view=view, log=log_file,
                         started=started, liveness=Liveness(self.settings.limits, started=started),
                         next_sample=started)
        if direct:
            self.live.direct, self.live.direct_size = True, os.fstat(log_file.fileno()).st_size
        for stream in (popen.stdout, popen.stderr):
            if stream is None:
                continue  # stdout given the log itself
            fd = stream.fileno()
            os.set_blocking(fd, False)
            procs.widen_pipe(fd)
            self.live.buffers[fd] = bytearray()
            if self.redactor is not None:
                json_lines = stream is popen.stdout and self.backend.has_threads  # codex's --json events
                self.live.redactors[fd] = redact.StreamRedactor(self.redactor, json_lines=json_lines)
            self.live.open_fds.append(fd)
            self.selector.register(fd, selectors.EVENT_READ, "out" if stream is popen.stdout else "err")
        self.live.pidfd = _watch_exit(popen.pid, self.selector)
        self.phase = RUNNING
        faults.point("attempt.after_spawn")
        self._save(state.RUNNING)
        if self.clock() - self.guard_checked >= GUARD_CHECK_EVERY:
            self._check_guard()  # the last attempt's, if the restart did not wait (the agent is starting)
        self.log.info("attempt.started", attempt=number, kind=kind, prompt=prompt_kind,
                      thread_id=session.thread_id, pid=popen.pid,
                      output="written by the agent" if direct else "piped")

    def _pending_messages(self) -> List[dict]:
        """The operator's messages not yet put into a prompt (see `tell`)."""
        return tell.told(self.run_dir)[self.session.messages_delivered:]

    def _delivered(self, messages: List[dict], attempt: int) -> None:
        """Count `messages` as delivered; saved with the attempt's state write (a supervisor
        killed before that delivers them again)."""
        if messages:
            self.session.messages_delivered += len(messages)
            self.session.note("messages.delivered", timeparse.iso(self.now()), attempt=attempt,
                              count=len(messages))
            self.log.info("messages.delivered", attempt=attempt, count=len(messages))

    def _end_attempt(self, now: float) -> None:
        live = self.live
        self._close_pipes(live)
        view = live.view
        view.returncode = live.popen.returncode
        outcome = self.backend.classify(view)
        if self.redactor is not None:  # the detail quotes the agent's own words
            outcome = base.Outcome(outcome.kind, self.redactor.text(outcome.detail))
        attempt = live.attempt
        attempt.ended_at = timeparse.iso(self.now())
        attempt.exit_code = view.returncode
        attempt.outcome, attempt.detail = outcome.kind, outcome.detail
        attempt.usage = view.usage
        attempt.thread_id = view.thread_id or attempt.thread_id
        live.log.write(f"=== attempt {attempt.number} ended: {outcome.kind} ({outcome.detail}) ===\n"
                       .encode())
        live.log.close()
        self.live = None
        orphans = procs.tagged(self.session.tag)
        if orphans:
            # The agent is gone but something it started lives on (e.g. a setsid'd server).
            survivors = procs.stop_blocking(orphans, grace=min(self.settings.sigterm_grace, 3.0))
            self.log.warning("attempt.orphans_stopped", pids=[p.pid for p in orphans],
                             survivors=[p.pid for p in survivors])
        removed = self.backend.after_attempt(Path(self.session.session_worktree))
        if removed:
            self.log.info("worktree.stubs_removed", names=list(removed))
        self.guard_pending = attempt.number
        self.log.info("attempt.ended", attempt=attempt.number, outcome=outcome.kind,
                      detail=outcome.detail, exit_code=view.returncode, thread_id=view.thread_id)
        if self.phase == STOPPING and self.stop_reason in ("deadline", "signal"):
            self._finish_night(state.FINISHED if self.stop_reason == "deadline" else state.STOPPED,
                               self.stop_reason)
            return
        self._after_attempt(attempt, now - live.started)

    def _after_attempt(self, attempt: state.Attempt, duration: float) -> None:
        self.durations.append(policy.AttemptSummary(attempt.kind, duration, attempt.outcome))
        if attempt.outcome == base.THREAD_BUSY:
            leftovers = procs.tagged(self.session.tag)
            if leftovers:
                self.log.warning("thread.busy_sweep", pids=[p.pid for p in leftovers])
                procs.stop_blocking(leftovers, grace=self.settings.sigterm_grace)
        now = self.clock()
        decision = policy.decide(
            attempt.outcome, attempt.detail or "", self.durations, self.starts, now, self.now(),
            self.session.deadline_dt, policy.tokens_used(self.session.attempts), self.settings.budgets)
        self.stop_reason = None
        if decision.wait >= GUARD_CHECK_SLACK or decision.action == policy.END_NIGHT:
            self._check_guard()  # in the wait; with no wait, after a later spawn (see _check_guard)
        if decision.action == policy.END_NIGHT:
            self.log.warning("night.ending", reason=decision.reason)
            self._finish_night(decision.final_state, decision.reason)
            return
        self.next_start = now + decision.wait
        self.pause_reason = decision.reason
        self.phase = BACKOFF
        quick = decision.wait < GUARD_CHECK_SLACK  # the next start saves it all a moment later
        if "budget" in decision.reason or "usage limit" in decision.reason:
            self.session.note("pause", timeparse.iso(self.now()), reason=decision.reason,
                              seconds=round(decision.wait))
            self._journal(f"paused for {timeparse.format_duration(decision.wait)}: {decision.reason}")
        if quick:
            self.session.state = state.BACKOFF
        else:
            self._save(state.BACKOFF)
        self.log.info("attempt.backoff", seconds=round(decision.wait, 3), reason=decision.reason,
                      next_attempt=attempt.number + 1)

    def _check_guard(self) -> None:
        """Compare refs outside overnight/* and the primary tree with the night's snapshot after
        the attempt in `guard_pending`; restore what can be, and say so in the log, the state and
        the journal. Costs a few git commands, so it runs while nothing waits for it: in the
        backoff, or just after a restart without backoff has spawned the next attempt."""
        attempt, self.guard_pending = self.guard_pending, None
        if self.guard is None or self.guard_before is None or attempt is None:
            return
        self.guard_checked = self.clock()
        try:
            check = self.guard.after_attempt(self.guard_before, attempt=attempt)
        except Exception as exc:  # a failed check must not end the night; it is reported
            self.log.error("guard.check_failed", error=str(exc))
            return
        if check.clean:
            return
        changes = [c.describe() for c in check.changes]
        self.log.warning("guard.changes", attempt=attempt, changes=changes, actions=check.actions,
                         record=check.record)
        self.session.note("guard", timeparse.iso(self.now()), attempt=attempt, changes=changes,
                          actions=check.actions)
        self._journal(check.summary())
        self.guard_before = self.guard.snapshot()  # report each change once

    def _journal(self, text: str) -> None:
        """A summary line by the supervisor itself; never fatal to the night."""
        if not self.session.exec_summary_log:
            return
        try:
            journal.summary(self.session, f"[supervisor] {text}", author="supervisor")
        except Exception as exc:
            self.log.warning("journal.write_failed", error=str(exc))

    def _begin_stop(self, reason: str) -> None:
        self.stop_reason = reason
        if self.live is not None:
            self.live.view.stopped_for = reason
        self.phase = STOPPING
        if reason in ("deadline", "signal"):
            self.notifier.stopping()
        graces = (self.settings.sigint_grace, self.settings.sigterm_grace)
        if reason.startswith("stall"):
            # An agent that showed no life for its whole limit will not answer a signal any
            # better given ten seconds; one that is alive (codex) exits on SIGINT in ~50 ms.
            graces = tuple(min(g, STALL_GRACE) for g in graces)
        self.stop_steps = [(signal.SIGINT, graces[0]), (signal.SIGTERM, graces[1]),
                           (signal.SIGKILL, self.settings.kill_grace)]
        self.step_due = self.clock()
        self.log.info("stop.begin", reason=reason)
        self._tick_stopping(self.step_due)  # the first signal now, the state write after it
        if self.phase == STOPPING:
            self._save(state.STOPPING)

    def _finish_night(self, final_state: str, reason: str) -> None:
        session = self.session
        self._check_guard()
        worktree = Path(session.session_worktree)
        if final_state in (state.FINISHED, state.FAILED):
            self._checkpoint(worktree)
        if self.redactor is not None and self.redactor.count:
            session.note("redacted", timeparse.iso(self.now()), where="agent output and logs",
                         count=self.redactor.count, kinds=sorted(self.redactor.counts))
        session.note(f"night.{final_state}", timeparse.iso(self.now()), reason=reason)
        self._journal(f"night {final_state}: {reason}; {len(session.attempts)} attempts, "
                      f"{session.restarts} supervisor restarts")
        self._save(final_state)
        self.notifier.status(f"night {final_state}: {reason}")
        self.log.info(f"night.{final_state}", reason=reason, attempts=len(session.attempts),
                      thread_id=session.thread_id)
        self.phase = DONE

    def _checkpoint(self, worktree: Path) -> None:
        """Commit what the agent left uncommitted, except files holding a secret: those stay in
        the work tree, uncommitted, and are recorded (names and kinds, never values)."""
        session = self.session
        env = {**os.environ, **self.env}  # the provider's key among the secrets looked for
        try:
            sha, left_out = gitops.checkpoint(
                worktree, session.run_id, self.identity,
                screen=lambda tree, paths: secretguard.changed_secrets(tree, paths, env))
        except gitops.GitError as exc:
            self.log.error("checkpoint.failed", error=str(exc))
            return
        if left_out:
            files = sorted(left_out)
            kinds = sorted({kind for found in left_out.values() for kind in found})
            # Recorded once, in the state (the report counts it there); the log line says so too.
            session.note("checkpoint.refused", timeparse.iso(self.now()), files=files, kinds=kinds)
            self.log.warning("checkpoint.left_out", files=files, kinds=kinds)
            self._journal(f"checkpoint left out {len(files)} file(s) that hold a secret "
                          f"({', '.join(kinds)}): {', '.join(files)}; they stay uncommitted in "
                          f"{worktree}")
        if sha:
            session.note("checkpoint", timeparse.iso(self.now()), commit=sha,
                         branch=gitops.current_branch(worktree))
            self.log.info("checkpoint.committed", commit=sha)

    # --- the agent's output ------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Block until output, a signal, or the timeout; handle what arrived."""
        if self.watch_resume is not None and self.clock() >= self.watch_resume:
            self.watch_resume = None
            self.selector.register(self.watch.fileno(), selectors.EVENT_READ, "written")
        for key, _ in self.selector.select(timeout):
            if key.data == "wake":
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "exit":
                pass  # the agent exited: the loop's next pass reaps it
            elif key.data == "written":
                self._on_written()
            elif self.live is not None:
                self._read(self.live, key.fd, key.data)

    def _read(self, live: Live, fd: int, which: str) -> bool:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            self.selector.unregister(fd)
            live.open_fds.remove(fd)
            self._flush_partial(live, fd, which)
            return False
        self._log_output(live, fd, chunk)
        if which == "out" and not self.backend.has_threads:
            live.liveness.saw("stdout", self.clock())  # a plain command: any output is evidence
            return True  # and none of it is an event: no lines to parse
        if which == "err":
            live.view.stderr_tail = (live.view.stderr_tail + chunk.decode("utf-8", "replace"))[-STDERR_TAIL:]
            return True
        buffer = live.buffers[fd]
        buffer += chunk
        *lines, rest = buffer.split(b"\n")
        live.buffers[fd] = bytearray(rest)
        for line in lines:
            self._on_line(live, line.decode("utf-8", "replace"))
        return True

    def _log_output(self, live: Live, fd: int, chunk: bytes, final: bool = False) -> None:
        """Write the agent's output to the run log: redacted, and within the night's size cap."""
        stream = live.redactors.get(fd)
        if stream is not None:
            chunk = stream.feed(chunk) + (stream.flush() if final else b"")
        if live.direct:
            self._account_direct(live)  # what the command wrote itself counts first
        keep = self.log_cap.allow(len(chunk))
        if keep:
            live.log.write(chunk[:keep] if keep < len(chunk) else chunk)
            live.direct_size += keep
        if self.log_cap.exceeded:
            notice = self.log_cap.notice()
            live.log.write(notice)
            if live.direct and live.cut_at is None:
                live.cut_at = os.lseek(live.log.fileno(), 0, os.SEEK_CUR)

    def _watch_log(self, path: Path) -> bool:
        """Have the loop woken by writes to `path`; False where that cannot be (no inotify).
        One watch for the supervisor's life (closing one is slow), registered once."""
        if self.watch is None:
            self.watch = filewatch.open_watch()
            if self.watch is None:
                return False
            self.selector.register(self.watch.fileno(), selectors.EVENT_READ, "written")
        return self.watch.add(str(path))

    def _on_written(self) -> None:
        """A watched log was written to (by the command, or by us): account for it, then look
        away for WATCH_PAUSE."""
        self.watch.drain()
        if self.live is not None and self.live.direct:
            self._account_direct(self.live)
        self.selector.unregister(self.watch.fileno())
        self.watch_resume = self.clock() + WATCH_PAUSE

    def _account_direct(self, live: Live) -> None:
        """The command writes the log itself: its writes are evidence and count against the
        night's cap. Past the cap the file is cut back to it (with the notice after it) each time
        it grows; the command appends, so it goes on writing at the new end, into nothing kept."""
        fd = live.log.fileno()
        size = os.fstat(fd).st_size
        if size > live.direct_size:
            live.liveness.saw("stdout", self.clock())
        if live.cut_at is not None:
            if size > live.cut_at:
                os.ftruncate(fd, live.cut_at)
            live.direct_size = live.cut_at
            return
        grown = max(0, size - live.direct_size)
        keep = self.log_cap.allow(grown)
        live.direct_size = size
        if keep < grown or self.log_cap.exceeded:
            os.ftruncate(fd, size - grown + keep)
            notice = self.log_cap.notice()
            live.log.write(notice)  # appended: lands at the end, wherever that is now
            live.cut_at = os.lseek(fd, 0, os.SEEK_CUR) if notice else size - grown + keep
            live.direct_size = live.cut_at

    def _flush_partial(self, live: Live, fd: int, which: str) -> None:
        if fd in live.redactors:
            self._log_output(live, fd, b"", final=True)
        rest = live.buffers.get(fd)
        if which == "out" and rest:
            self._on_line(live, rest.decode("utf-8", "replace"))
        live.buffers[fd] = bytearray()

    def _drain(self, live: Live) -> None:
        """Read what is left in the pipes of an exited agent (bounded: a grandchild may hold them)."""
        end = self.clock() + 1.0
        while live.open_fds and self.clock() < end:
            ready = self.selector.select(0.05)
            for key, _ in ready:
                if key.data in ("out", "err"):
                    self._read(live, key.fd, key.data)
            if not ready:
                break

    def _forget_pidfd(self, live: Live) -> None:
        """Once the agent is reaped: its pidfd would stay readable and spin the loop."""
        if live.pidfd is not None:
            self.selector.unregister(live.pidfd)
            os.close(live.pidfd)
            live.pidfd = None

    def _close_pipes(self, live: Live) -> None:
        self._forget_pidfd(live)
        for fd in list(live.open_fds):
            self._flush_partial(live, fd, "err" if fd == live.popen.stderr.fileno() else "out")
            self.selector.unregister(fd)
        live.open_fds.clear()
        for stream in (live.popen.stdout, live.popen.stderr):
            if stream is not None:
                stream.close()
        if live.direct:
            self._account_direct(live)  # the last writes, before the closing line

    def _on_line(self, live: Live, line: str) -> None:
        event = self.backend.parse_line(line)
        if event is None:
            return
        live.view.observe(event)
        now = self.clock()
        if event.kind == "error":
            # Retry notices are not progress; a CLI waiting for the network retries forever.
            if is_network_wait(event.message or ""):
                live.network_since = live.network_since or now
        else:
            live.liveness.saw("stdout", now)
            live.network_since = None
        if event.kind == "item" and event.item_type == "command_execution":
            delta = 1 if event.phase == "started" else -1 if event.phase == "completed" else 0
            live.open_commands = max(0, live.open_commands + delta)
            live.liveness.command_running = live.open_commands > 0
        if event.kind == "thread_started" and event.thread_id:
            if live.view.kind == "start" or event.thread_id == live.view.expected_thread:
                if self.session.thread_id != event.thread_id:
                    self.session.thread_id = event.thread_id
                live.attempt.thread_id = event.thread_id
                self._save(label="thread")  # the thread id makes a restart resumable: keep it at once
                self.log.info("thread.started", thread_id=event.thread_id, attempt=live.attempt.number)
        elif event.kind == "turn_failed":
            self.log.warning("turn.failed", message=event.message, attempt=live.attempt.number)
        elif event.kind == "turn_completed":
            self.log.info("turn.completed", usage=event.usage, attempt=live.attempt.number)

    # --- helpers -------------------------------------------------------------------------------------

    def _agent_tree(self):
        ref = self.live.ref if self.live is not None else None
        if ref is None:
            return procs.tagged(self.session.tag)
        return procs.tree(ref, self.session.tag)

    def _status_text(self) -> str:
        left = (self.session.deadline_dt - self.now()).total_seconds()
        text = (f"{self.phase} attempt {len(self.session.attempts)} thread {self.session.thread_id} "
                f"deadline in {timeparse.format_duration(left)}")
        if self.live is not None:
            text += f" last evidence {timeparse.format_duration(self.live.liveness.age(self.clock()))} ago"
        elif self.phase == BACKOFF and self.pause_reason:
            text += f" ({self.pause_reason})"
        return text

    def _save(self, new_state: Optional[str] = None, label: str = "") -> None:
        if new_state is not None:
            self.session.state = new_state
        state.save(self.state_path, self.session, label or (new_state or ""))
        self.notifier.status(self._status_text())


def _ignore(signum, frame) -> None:
    pass


def _watch_exit(pid: int, selector) -> Optional[int]:
    """A pidfd for `pid`, registered to wake the loop when it exits. An exit is otherwise seen
    through end-of-file on its pipes, which the kernel closes before the process can be reaped,
    so the wait that follows could miss it and the loop sleep on. Without pidfds (Linux < 5.3),
    SIGCHLD wakes the loop instead (see _install_signal_handlers)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    selector.register(fd, selectors.EVENT_READ, "exit")
    return fd


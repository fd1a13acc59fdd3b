"""The main loop of a night: start or resume the agent, watch it, stop it, decide what is next.

Owns: the loop, the night's phase (one `state.Phase`, written to session.json by `_enter` and
nowhere else), the live attempt, turning signals into events, sending a stop's signals over
ticks (their schedule is `stopping.Escalation`).
Must not: set up worktrees or take the lock (`night`), decide policy (`policy`), judge liveness
(`liveness`), read evidence (`sampler`) or handle output bytes (`capture`), know which agent CLI
it runs (a `Backend` and its capabilities), or reap any child but its own agent.

    run():  set up -> while the phase is not final: tick(now); ping the watchdog; wait
    tick(): queued signals -> the phase's own tick -> at most one transition each, by `_enter`

| phase    | its tick                                                          | leaves for              |
|----------|-------------------------------------------------------------------|-------------------------|
| backoff  | the deadline or the token budget end the night; when due, spawn   | running, finished, ...  |
| running  | exit -> classify and decide; deadline, wrong thread, stall, no net | stopping, backoff, ...  |
| stopping | SIGINT -> SIGTERM -> SIGKILL to the whole tree, one step per grace | backoff, stopped, ...   |
"""
import errno
import os
import selectors
import signal
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from . import capture, faults, gitops, policy, procs, prompt, redact, state, tell, timeparse
from .agents import base
from .agents.base import Backend, StopReason
from .attempt import LiveAttempt, Plan, SpawnFailed
from .chronicle import Chronicle
from .exitcodes import DiskFull
from .notify import Notifier, status_line
from .signals import SignalQueue
from .stopping import Escalation
from .state import Phase, Step
from .tuning import Settings

MAX_WAIT = 5.0       # the longest the loop sleeps when nothing is due
GUARD_CHECK_SLACK = 0.5  # a backoff at least this long has room for the after-attempt git check
# In a crash loop with no backoff the check (tens of ms of git) runs at most this often; it
# compares with the night's snapshot, so nothing between two checks escapes it.
GUARD_CHECK_EVERY = 5.0
# Writes that fail for want of space (a full disk, a quota, the file size limit).
DISK_FULL_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Supervisor:
    def __init__(self, *, session: state.Session, state_path: Path, layout: state.RunLayout,
                 backend: Backend, settings: Settings, prompts: Dict[str, str],
                 prompt_values: Callable[[], Dict[str, str]], env: Dict[str, str], log,
                 identity: Dict[str, str], notifier: Optional[Notifier] = None, audit=None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable = timeparse.local_now, processes=procs.Processes()):
        self.session = session
        self.state_path = state_path
        self.layout = layout
        self.backend = backend
        self.settings = settings
        self.prompts = prompts
        self.prompt_values = prompt_values
        self.env = env
        self.log = log
        self.notifier = notifier or Notifier({})
        self.clock, self.now, self.processes = clock, now, processes   # seams: tests pass fakes
        self.chronicle = Chronicle(session, log, now, audit=audit, identity=identity, env=env)
        # Secrets the agent prints never reach a log: token shapes and this environment's values.
        self.redactor = redact.Redactor({**os.environ, **env}) if settings.redact_output else None
        self.log_cap = capture.LogCap(layout.root, settings.max_log_bytes)
        self.guard_pending: Optional[int] = None  # an attempt whose refs are still to be checked
        self.guard_checked = -GUARD_CHECK_EVERY
        self.phase = Phase(session.state)
        self.live: Optional[LiveAttempt] = None
        self.next_start = clock()
        self.stop: Optional[Escalation] = None   # while stopping: why, and the next signal
        self.selector = selectors.DefaultSelector()
        self.signals = SignalQueue()
        self.selector.register(self.signals.fileno(), selectors.EVENT_READ, "wake")
        self.watch = capture.LogWatch(self.selector)  # the logs commands write themselves
        self.durations: List[policy.AttemptSummary] = []
        self.starts: List[float] = []    # monotonic start of each attempt, for the hourly cap
        self.pause_reason = ""
        self._ticks = {Phase.BACKOFF: self._tick_backoff, Phase.RUNNING: self._tick_running,
                       Phase.STOPPING: self._tick_stopping}

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        try:
            self.begin()
            while not self.phase.final:
                self.tick(self.clock())
                self.notifier.tick(self.clock())
                if not self.phase.final:
                    self._wait(self._timeout(self.clock()))
        except OSError as exc:
            self._emergency_stop()
            if exc.errno not in DISK_FULL_ERRORS:
                raise
            raise self._disk_full(exc) from None
        except BaseException:
            self._emergency_stop()
            raise
        finally:
            self.signals.close()
            self.notifier.stopping()
            self.selector.close()
            self.watch.close()
        return 0

    def begin(self) -> None:
        """Set up (lock, worktrees, leftovers stopped by `night`): the loop starts."""
        if self.chronicle.audit is not None:
            self.chronicle.audit.begin(restarted=bool(self.session.restarts))
        self.chronicle.journal("resumed after a supervisor restart" if self.session.restarts
                      else f"night started; deadline {self.session.deadline}")
        self._enter(Step(Phase.BACKOFF, "set up"))
        self.notifier.ready(self._status_text())  # systemd may call the unit active now

    def tick(self, now: float) -> None:
        """One pass: queued signals, then the phase's own work; each may ask for a transition."""
        for signum in self.signals.take():
            self._go(self._on_signal(signum))
        faults.point("loop.tick")
        if not self.phase.final:
            self._go(self._ticks[self.phase](now))

    def _go(self, step: Optional[Step]) -> None:
        if step is not None:
            self._enter(step)

    def _enter(self, step: Step) -> None:
        """The one place the night's phase changes: checked against `state.TRANSITIONS`, its
        entry action run, then written to session.json (unless it can wait a moment)."""
        old = state.transition(self.session, step.phase, step.reason)
        self.phase = step.phase
        if step.phase == Phase.STOPPING and old != Phase.STOPPING:
            self._begin_stop(step.reason)
        elif step.phase.final:
            self._finish_night(step.phase, step.reason)
        if step.durable:
            self._save()
        if step.phase == Phase.RUNNING and self.clock() - self.guard_checked >= GUARD_CHECK_EVERY:
            self._check_guard()  # the last attempt's, if the restart did not wait (the agent is starting)
        if old != step.phase:
            self.log.info("phase", phase=step.phase.value, was=old.value, reason=step.reason)
        if step.phase.final:
            self.notifier.status(f"night {step.phase}: {step.reason}")

    def _timeout(self, now: float) -> float:
        """Sleep until the next thing is due, exactly: output and signals wake us anyway, so an
        idle night costs next to nothing, and no verdict or deadline waits for a tick."""
        due = [now + MAX_WAIT, now + (self.session.deadline_dt - self.now()).total_seconds()]
        if self.notifier.watchdog_interval is not None:
            due.append(self.notifier.next_ping)
        if self.phase == Phase.BACKOFF:
            due.append(self.next_start)
        elif self.phase == Phase.RUNNING and self.live is not None:
            due += [self.live.sampler.next_sample, self.live.liveness.due()]
            if self.watch.resume_at is not None:
                due.append(self.watch.resume_at)
        elif self.phase == Phase.STOPPING:
            due += [self.stop.due, now + self.settings.tick]  # survivors are polled while stopping
        return max(0.0, min(due) - now)

    def _emergency_stop(self) -> None:
        """The loop itself failed: stop the agent tree before the exception leaves, so nothing
        outlives us (a restarted supervisor resumes the thread)."""
        survivors = self._agent_tree()
        if survivors:
            left = self.processes.stop_blocking(survivors, grace=1.0,
                                       signals=(signal.SIGINT, signal.SIGTERM, signal.SIGKILL))
            self.log.error("supervisor.emergency_stop", pids=[p.pid for p in survivors],
                           survivors=[p.pid for p in left])
        if self.live is not None:
            self.live.popen.poll()

    def _disk_full(self, exc: OSError) -> DiskFull:
        """A write failed for want of space: the agent is stopped already (see `state`)."""
        reason = f"disk full: cannot write {exc.filename or self.layout.root} ({exc.strerror})"
        kept = state.fail_for_want_of_space(self.state_path, self.session, reason,
                                            timeparse.iso(self.now()), self.live is not None)
        self.log.error("night.disk_full", error=reason, state=kept)
        return DiskFull(f"{reason}; the agent was stopped and {kept}; free space under "
                        f"{self.state_path.parent} and run again before {self.session.deadline} "
                        "to resume the night")

    def _on_signal(self, signum: int) -> Optional[Step]:
        """A signal the handlers queued (see `signals`): here the loop acts on it."""
        self.log.info("signal.received", signal=signal.Signals(signum).name, phase=self.phase.value)
        if self.phase == Phase.STOPPING:
            self.stop.asked_again(self.clock())
            if self.live is not None:
                self.live.view.stopped_for = self.stop.reason
        elif self.phase == Phase.RUNNING:
            return Step(Phase.STOPPING, StopReason.SIGNAL.value)
        elif self.phase == Phase.BACKOFF:
            return Step(Phase.STOPPED, StopReason.SIGNAL.value)
        return None

    # --- phases -----------------------------------------------------------------------------------

    def _tick_backoff(self, now: float) -> Optional[Step]:
        budget = self.settings.budgets.max_tokens
        spent = policy.tokens_used(self.session.attempts) if budget else 0
        if self.now() >= self.session.deadline_dt:
            return Step(Phase.FINISHED, StopReason.DEADLINE.value)
        if budget and spent >= budget:
            return Step(Phase.FINISHED, f"token budget spent: {spent} of {budget}")
        if now >= self.next_start:
            return self._start_attempt()
        return None

    def _tick_running(self, now: float) -> Optional[Step]:
        live = self.live
        if live.popen.poll() is not None:
            self._drain()
            return self._end_attempt(now)
        if self.now() >= self.session.deadline_dt:
            return Step(Phase.STOPPING, StopReason.DEADLINE.value)
        view = live.view
        if view.expected_thread and view.thread_id and view.thread_id != view.expected_thread:
            self.log.warning("resume.thread_mismatch", expected=view.expected_thread, got=view.thread_id)
            return Step(Phase.STOPPING, StopReason.THREAD_MISMATCH.value)
        if now >= live.sampler.next_sample or now >= live.liveness.due():
            live.sampler.sample(now, view.thread_id or view.expected_thread, live.open_commands)
        verdict = live.liveness.verdict(now)
        if verdict.stalled and live.sampler.network(now):  # always look once more before calling it a stall
            verdict = live.liveness.verdict(now)
        if verdict.stalled:
            view.stop_detail = verdict.reason
            return Step(Phase.STOPPING, StopReason.STALL.value)
        if live.network_since is not None and now - live.network_since >= self.settings.network_down_limit:
            view.stop_detail = f"waiting for the network for {now - live.network_since:.0f}s"
            return Step(Phase.STOPPING, StopReason.NETWORK_DOWN.value)
        return None

    def _tick_stopping(self, now: float) -> Optional[Step]:
        live = self.live
        if live.popen.poll() is not None:
            live.forget_pidfd(self.selector)
            self._drain()
        survivors = self._agent_tree()
        if live.popen.returncode is not None and not survivors:
            return self._end_attempt(now)
        if self.stop.gave_up(now):   # SIGKILL did not take (uninterruptible sleep): go on
            self.log.error("stop.survivors", pids=[p.pid for p in survivors])
            return self._end_attempt(now) if live.popen.returncode is not None else None
        self._escalate(now, survivors)
        return None

    def _escalate(self, now: float, survivors) -> None:
        """The next stop signal to the whole tree, when its step is due."""
        sig = self.stop.next_signal(now) if survivors else None
        if sig is not None:
            self.log.info("stop.signal", signal=sig.name, processes=len(survivors), reason=self.stop.reason.value)
            self.processes.signal_all(survivors, sig, group=self.live.ref.pgid)

    def _begin_stop(self, reason: str) -> None:
        """Entering STOPPING: the first signal goes out at once, before the state is written."""
        settings, live = self.settings, self.live
        self.stop = Escalation.begin(StopReason(reason), self.clock(), settings.sigint_grace,
                                     settings.sigterm_grace, settings.kill_grace)
        if live is not None:
            live.view.stopped_for = self.stop.reason
        if self.stop.reason.ends_night:
            self.notifier.stopping()
        self.log.info("stop.begin", reason=reason)
        self._escalate(self.stop.due, self._agent_tree())
        if self.stop.reason == StopReason.STALL and live is not None:
            self.chronicle.stalled(live.record.number, live.view.stop_detail)
        elif self.stop.reason == StopReason.NETWORK_DOWN and live is not None:
            self.log.warning("attempt.network_down", attempt=live.record.number, detail=live.view.stop_detail)

    def _finish_night(self, final: Phase, reason: str) -> None:
        """Entering a final phase: the guard's last check, the checkpoint, the journal's line."""
        self._check_guard()
        if final in (Phase.FINISHED, Phase.FAILED):
            self.chronicle.checkpoint()
        self.chronicle.night_ended(final, reason, self.redactor)

    # --- attempts ---------------------------------------------------------------------------------

    def _start_attempt(self) -> Step:
        session = self.session
        threads = self.backend.capabilities.threads
        decision = policy.next_attempt(session.thread_id, self.durations,
                                       resume_failures_before_fresh=self.settings.resume_failures_before_fresh)
        fresh = decision.fresh if threads else not session.attempts
        if threads and fresh and session.thread_id is not None:
            self.chronicle.fresh_start(decision.reason, session.thread_id)
            session.fresh_starts += 1
            session.thread_id = None
        kind = "start" if fresh else "resume"
        if fresh and self.backend.capabilities.picks_thread_id:
            # Named before it exists, and saved before the spawn: a supervisor killed from here on
            # resumes this conversation, and no second process is ever started on it.
            session.thread_id = self.backend.new_thread_id()
            self._save(label="thread")
        self.chronicle.repair_worktrees()   # deleted by hand since the last attempt?
        text, prompt_kind = self._prompt(kind)
        messages = tell.told(self.layout)[session.messages_delivered:]
        text = tell.with_messages(text, messages)
        plan = Plan(number=len(session.attempts) + 1, kind=kind, prompt_kind=prompt_kind,
                    argv=(self.backend.start_argv(text, session.thread_id) if fresh
                          else self.backend.resume_argv(session.thread_id, text)),
                    thread_id=session.thread_id,
                    started_at=timeparse.iso(self.now()))
        try:
            self.live = LiveAttempt.spawn(
                plan, backend=self.backend, run_dir=self.layout.root, cwd=session.session_worktree, env=self.env,
                cap=self.log_cap, redactor=self.redactor, watch=self.watch, selector=self.selector,
                limits=self.settings.limits, sample_interval=self.settings.sample_interval,
                heartbeat=Path(session.heartbeat_file) if session.heartbeat_file else None,
                started=self.clock(), started_wall=self.now().timestamp(), spawn=self.processes.spawn)
        except SpawnFailed as failed:
            self.log.error("attempt.spawn_failed", argv0=plan.argv[0], error=failed.record.detail)
            session.attempts.append(failed.record)
            return self._after_attempt(failed.record, 0.0)
        session.attempts.append(self.live.record)
        if messages:
            session.messages_delivered += len(messages)
            session.note("messages.delivered", plan.started_at, attempt=plan.number, count=len(messages))
        self.starts.append(self.clock())
        self.log.info("attempt.started", attempt=plan.number, kind=kind, prompt=prompt_kind,
                      thread_id=session.thread_id, pid=self.live.popen.pid, messages=len(messages),
                      output="written by the agent" if self.live.direct else "piped")
        faults.point("attempt.after_spawn")  # spawned, not yet in session.json
        return Step(Phase.RUNNING, f"attempt {plan.number} ({kind})")

    def _prompt(self, kind: str) -> Tuple[str, str]:
        """The text of the next attempt's prompt, and which one it is."""
        which = prompt.choose(kind, self.session.wrap_up_sent, self.now() >= self.session.wrap_up_dt)
        if which == "wrap_up":
            self.session.wrap_up_sent = True
            self.session.note("prompt.wrap_up", timeparse.iso(self.now()))
        return prompt.render(self.prompts[which], self.prompt_values()), which

    def _end_attempt(self, now: float) -> Step:
        live = self.live
        for line in live.close(self.selector):
            self.on_output_line(line)
        outcome = live.end(self.backend, self.redactor, timeparse.iso(self.now()))
        attempt, view = live.record, live.view
        self.live = None
        # The agent is gone; something it started may live on (e.g. a setsid'd server).
        self._sweep("attempt.orphans_stopped", grace=min(self.settings.sigterm_grace, 3.0))
        removed = self.backend.after_attempt(Path(self.session.session_worktree))
        if removed:  # sandbox stubs in the worktree, a lock the CLI left in its home
            self.log.info("agent.leftovers_removed", names=list(removed))
        locks = gitops.clear_locks_left((self.session.session_worktree, self.session.ops_journal_worktree))
        if locks:  # a git of the agent's killed mid-commit: the next one would fail on them
            self.log.warning("git.stale_locks_removed", paths=locks)
        self.guard_pending = attempt.number
        self.log.info("attempt.ended", attempt=attempt.number, outcome=outcome.kind,
                      detail=outcome.detail, exit_code=view.returncode, thread_id=view.thread_id)
        reason = self.stop.reason if self.stop is not None else None
        self.stop = None
        if reason is not None and reason.ends_night:
            return Step(Phase.FINISHED if reason == StopReason.DEADLINE else Phase.STOPPED, reason.value)
        return self._after_attempt(attempt, now - live.started, announced=view.thread_id is not None)

    def _after_attempt(self, attempt: state.Attempt, duration: float, announced: bool = False) -> Step:
        """What comes after an attempt that ended by itself (or was stopped to be resumed)."""
        self.durations.append(policy.AttemptSummary(attempt.kind, duration, attempt.outcome, announced))
        if attempt.outcome == base.THREAD_BUSY:
            self._sweep("thread.busy_sweep", grace=self.settings.sigterm_grace)
        now = self.clock()
        decision = policy.decide(
            attempt.outcome, attempt.detail or "", self.durations, self.starts, now, self.now(),
            self.session.deadline_dt, policy.tokens_used(self.session.attempts), self.settings.budgets)
        if decision.wait >= GUARD_CHECK_SLACK or decision.action == policy.END_NIGHT:
            self._check_guard()  # in the wait; with no wait, after a later spawn (see _check_guard)
        if decision.action == policy.END_NIGHT:
            self.log.warning("night.ending", reason=decision.reason)
            return Step(decision.final_state, decision.reason)
        self.next_start = now + decision.wait
        self.pause_reason = decision.reason
        if decision.pause:
            self.chronicle.paused(decision.wait, decision.reason)
        self.log.info("attempt.backoff", seconds=round(decision.wait, 3), reason=decision.reason,
                      next_attempt=attempt.number + 1)
        return Step(Phase.BACKOFF, decision.reason, durable=decision.wait >= GUARD_CHECK_SLACK)

    def _check_guard(self) -> None:
        """The after-attempt guard check (see `chronicle`). A few git commands, so it runs while
        nothing waits for it: in the backoff, or just after a restart without backoff has
        spawned the next attempt."""
        attempt, self.guard_pending = self.guard_pending, None
        if attempt is not None:
            self.guard_checked = self.clock()
            self.chronicle.guard_check(attempt)

    # --- the agent's output ------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Block until output, a signal, or the timeout; handle what arrived."""
        self.watch.resume(self.clock())
        for key, _ in self.selector.select(timeout):
            if key.data == "wake":
                self.signals.woken()
            elif key.data == "written":  # a log a command writes itself
                self.watch.looked(self.clock())
                if self.live is not None:
                    self.live.written(self.clock())
            elif key.data in ("out", "err") and self.live is not None:
                for line in self.live.read(key.fd, self.selector, self.clock(),
                                           self.backend.capabilities.event_stream):
                    self.on_output_line(line)
            # "exit": the agent exited; the loop's next pass reaps it

    def _drain(self) -> None:
        """Read what is left in the pipes of an exited agent (bounded: a grandchild may hold them)."""
        for line in self.live.output.drain(self.selector, self.clock() + 1.0, self.clock):
            self.on_output_line(line)

    def on_output_line(self, line: str) -> None:
        """One whole line of the agent's stdout (what `_wait` reads; tests feed it)."""
        live = self.live
        event = self.backend.parse_line(line)
        if event is None:
            return
        live.observe(event, self.clock())
        number = live.record.number
        if event.kind == "thread_started" and event.thread_id:
            if live.view.expected_thread in (None, event.thread_id):
                self.session.thread_id = live.record.thread_id = event.thread_id
                self._save(label="thread")  # the thread id makes a restart resumable: keep it at once
                self.log.info("thread.started", thread_id=event.thread_id, attempt=number)
        elif event.kind == "turn_failed":
            self.log.warning("turn.failed", message=event.message, attempt=number)
        elif event.kind == "turn_completed":
            self.log.info("turn.completed", usage=event.usage, attempt=number)

    # --- helpers -------------------------------------------------------------------------------------

    def _sweep(self, event: str, grace: float) -> None:
        """Stop whatever still carries this night's tag (no agent is live)."""
        left = self.processes.tagged(self.session.tag)
        if left:
            survivors = self.processes.stop_blocking(left, grace=grace)
            self.log.warning(event, pids=[p.pid for p in left], survivors=[p.pid for p in survivors])

    def _agent_tree(self):
        if self.live is None:
            return self.processes.tagged(self.session.tag)
        return self.processes.tree(self.live.ref, self.session.tag)

    def _status_text(self) -> str:
        age = self.live.liveness.age(self.clock()) if self.live is not None else None
        return status_line(self.phase.value, len(self.session.attempts), self.session.thread_id,
                           (self.session.deadline_dt - self.now()).total_seconds(), age,
                           self.pause_reason if self.phase == Phase.BACKOFF else "")

    def _save(self, label: str = "") -> None:
        state.save(self.state_path, self.session, label or self.phase.value)
        self.notifier.status(self._status_text())

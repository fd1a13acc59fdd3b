"""Starting or resuming a night: everything between `overnight-agent run` and the main loop.

Owns: the order of setup (lock -> session state -> leftovers swept -> worktrees -> loop), the
fresh-or-resume decision for a whole night, deadlines and the night window, archiving an old
`session.json`. Must not: run the loop itself (`supervisor`), or touch the primary working tree.

Restart safety comes from the order: `session.json` is written before anything else is made,
every later step is idempotent (worktrees are reused, not recreated), and whatever an earlier
supervisor left running is found by its tag and stopped before an agent starts.
"""
import datetime as dt
import hashlib
import os
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from . import config, faults, fences, gitops, logs, procs, prompt, publish, state, timeparse
from . import agents, tuning
from .exitcodes import ConfigError, OvernightError
from .lock import InstanceLock
from .notify import Notifier
from .supervisor import Supervisor


@dataclass(frozen=True)
class NightResult:
    """What `run` hands back: the night's state as this process left it (None when no night ran:
    a start outside the night window), and the exit status."""

    session: Optional[state.Session]
    exit_code: int


@dataclass(frozen=True)
class RunRequest:
    repo: Optional[Path] = None
    config_path: Optional[Path] = None
    until: Optional[str] = None          # HH:MM
    hours: Optional[float] = None
    no_resume: bool = False
    # Started by an operator through a service manager (`systemctl start` with no timer behind
    # it): runs now, to the configured deadline, even outside the night window that guards a
    # timer catching up on a missed start.
    by_hand: bool = False


def tool_command() -> str:
    """How the agent calls us back: by absolute path, because codex's login shell resets PATH."""
    return f"{shlex.quote(sys.executable)} -m overnight_agent"


def tag_prefix(paths: config.Paths) -> str:
    """Every agent process of this run_root carries a tag starting with this."""
    return "oa-" + hashlib.sha256(str(paths.run_root).encode()).hexdigest()[:12] + ":"


def compute_deadline(now: dt.datetime, cfg: config.Config, request: RunRequest) -> dt.datetime:
    if request.hours is not None:
        return now + dt.timedelta(hours=request.hours)
    clock = request.until or cfg.schedule.deadline
    return timeparse.next_occurrence(now, timeparse.parse_clock(clock))


def load_for(request: RunRequest) -> config.Loaded:
    repo_root = gitops.primary_root((request.repo or Path.cwd()).resolve())
    return config.load(request.config_path, repo_root)


def run(request: RunRequest, log=None, loaded: Optional[config.Loaded] = None) -> NightResult:
    loaded = loaded or load_for(request)
    log = log or logs.get()
    for warning in config.warnings(loaded):
        log.warning("config.warning", message=warning)
    paths = loaded.paths
    with InstanceLock(paths.lock_file):
        now = timeparse.local_now()
        session = _resume_or_create(loaded, request, now, log)
        if session is None:
            return NightResult(None, 0)
        faults.point("setup.after_session_json")
        log = log.bind(run_id=session.run_id)
        layout = paths.run(session.run_id)
        try:
            _set_up_worktrees(loaded, session, layout, log)
            supervisor = _make_supervisor(loaded, session, layout, log)
            _clear_leftovers(supervisor, session, log)
            if procs.ss_binary() is None:
                log.warning("liveness.no_network_evidence", missing="ss",
                            hint="install iproute2: a slowly streaming model may look stalled")
            if session.restarts and session.thread_id is None:
                # Killed after codex started a thread but before we saved its id: find it.
                found = supervisor.backend.find_thread(Path(session.session_worktree))
                if found:
                    session.thread_id = found
                    session.note("thread.recovered", timeparse.iso(timeparse.local_now()), thread_id=found)
                    state.save(paths.session_state, session)
                    log.info("thread.recovered", thread_id=found, source="session store")
            code = supervisor.run()
            faults.point("shutdown.loop_ended")
            if session.state in (state.FINISHED, state.FAILED):
                _write_report(loaded, session, layout, log)
                faults.point("shutdown.reported")
                _publish(loaded, session, log)
            return NightResult(session, code)
        finally:
            logs.tee.close()


def _resume_or_create(loaded: config.Loaded, request: RunRequest, now: dt.datetime,
                      log) -> Optional[state.Session]:
    paths = loaded.paths
    existing = state.load(paths.session_state)
    if existing is not None and Path(existing.repo_root).resolve() != paths.repo_root.resolve():
        raise ConfigError(f"{paths.session_state}: repo_root: the night in it belongs to {existing.repo_root}, "
                          f"not {paths.repo_root} (two repositories share one run_root); give this "
                          "repository its own repo.run_root, or move the file aside")
    _stop_leftovers(tag_prefix(paths), log, loaded.config.stop)
    if existing is not None and not request.no_resume and now < existing.deadline_dt:
        existing.restarts += 1
        existing.supervisor_pid = os.getpid()
        existing.state = state.STARTING  # until the loop runs again
        _attempt_lost(existing, now)
        existing.note("supervisor.restarted", timeparse.iso(now), restarts=existing.restarts)
        state.save(paths.session_state, existing)
        logs.tee.open(paths.run(existing.run_id).supervisor_log)
        log.info("night.resumed", run_id=existing.run_id, restarts=existing.restarts,
                 thread_id=existing.thread_id, deadline=existing.deadline)
        return existing
    explicit = request.until is not None or request.hours is not None or request.by_hand
    schedule = loaded.config.schedule
    if not explicit and not timeparse.in_night_window(
            now, timeparse.parse_clock(schedule.window_start), timeparse.parse_clock(schedule.deadline)):
        opens = timeparse.next_occurrence(now, timeparse.parse_clock(schedule.window_start))
        log.info("night.outside_window", now=timeparse.iso(now), next_window=timeparse.iso(opens),
                 hint="pass --until HH:MM or --hours H to run now")
        said = (f"outside the night window ({schedule.window_start}-{schedule.deadline}); the next "
                f"one opens at {timeparse.iso(opens)}")
        print(f"overnight-agent: {said}. Use --until or --hours to run now.", file=sys.stderr)
        Notifier().stopping(said)  # a timer catching up by day: a clean exit, not a failed start
        return None
    if existing is not None:
        _close(loaded, existing, now, log)
        _archive(paths, existing, log)
    return _create(loaded, request, now, log)


def _attempt_lost(session: state.Session, now: dt.datetime) -> None:
    last = session.last_attempt()
    if last is not None and last.outcome is None:
        last.outcome, last.ended_at = "supervisor_lost", timeparse.iso(now)
        last.detail = "the supervisor died while this attempt ran; its processes were stopped"


def _close(loaded: config.Loaded, old: state.Session, now: dt.datetime, log) -> None:
    """Give a night that will not be resumed the end its supervisor did not: one killed after
    the deadline (or replaced with --no-resume) left it live, or ended without its report. Its
    work is checkpointed, its state made final, its report written, as the loop would have."""
    from .chronicle import Chronicle   # late: only a night closed by its successor needs it
    paths = loaded.paths
    logs.tee.open(paths.run(old.run_id).supervisor_log)
    try:
        live = state.Phase(old.state) in state.LIVE
        if live and not worktrees_exist(old):
            try:   # killed during setup: finish it, so that the night has its journal and report
                _make_worktrees(paths.repo_root, old, log)
            except gitops.GitError as exc:
                log.error("worktree.failed", run_id=old.run_id, error=str(exc))
        have_worktrees = worktrees_exist(old)
        if live:
            _attempt_lost(old, now)
            past = now >= old.deadline_dt
            final = state.FINISHED if past else state.STOPPED
            reason = ("the deadline passed while no supervisor ran" if past
                      else "replaced by a fresh night (--no-resume)")
            chronicle = Chronicle(old, log, timeparse.local_now, identity=old.git_identity)
            if have_worktrees and past:
                chronicle.checkpoint()
            state.transition(old, final, reason)
            if have_worktrees:
                chronicle.night_ended(final, reason)
            else:
                chronicle.note(f"night.{final}", reason=reason)
            state.save(paths.session_state, old)
            log.warning("night.closed", run_id=old.run_id, state=str(final), reason=reason)
        if old.state in (state.FINISHED, state.FAILED) and have_worktrees:
            if not _reported(old):
                _write_report(loaded, old, paths.run(old.run_id), log)
            _publish(loaded, old, log, only_if_pending=True)   # its supervisor did not, or failed to
    finally:
        logs.tee.close()


def worktrees_exist(session: state.Session) -> bool:
    return Path(session.session_worktree).is_dir() and Path(session.ops_journal_worktree).is_dir()


def _reported(session: state.Session) -> bool:
    """Whether the night's report is committed on the ops-journal branch."""
    target = Path(session.reports_dir) / f"{session.run_id}_report.md"
    worktree = Path(session.ops_journal_worktree)
    try:
        rel = target.relative_to(worktree)
    except ValueError:
        return target.exists()
    return gitops.succeeds(["cat-file", "-e", f"HEAD:{rel.as_posix()}"], worktree)


def _create(loaded: config.Loaded, request: RunRequest, now: dt.datetime, log) -> state.Session:
    cfg, paths = loaded.config, loaded.paths
    repo = paths.repo_root
    if not gitops.branch_exists(repo, cfg.repo.base_branch):
        raise ConfigError(f"{loaded.source or '<defaults>'}: repo.base_branch: "
                          f"{cfg.repo.base_branch!r} is not a branch of {repo}; set it to an existing branch")
    deadline = compute_deadline(now, cfg, request)
    if deadline <= now:
        raise ConfigError("--hours: the deadline must lie in the future")
    wrap_up = max(now, deadline - dt.timedelta(seconds=cfg.schedule.wrap_up))
    run_id = new_run_id(now)
    model, effort = loaded.agent_model()
    session = state.Session(
        run_id=run_id, repo_root=str(repo), deadline=timeparse.iso(deadline),
        wrap_up_at=timeparse.iso(wrap_up),
        session_worktree=str(paths.session_worktree_root / run_id),
        session_branch=f"overnight/session_{run_id}",
        ops_journal_worktree=str(paths.ops_journal_worktree),
        ops_journal_branch=cfg.repo.ops_journal_branch,
        base_branch=cfg.repo.base_branch, base_commit=gitops.rev(repo, cfg.repo.base_branch),
        agent=cfg.agent, model=model, model_reasoning_effort=effort,
        sandbox=loaded.sandbox, created_at=timeparse.iso(now), supervisor_pid=os.getpid(),
        tag=tag_prefix(paths) + run_id,
        exec_summary_log=str(paths.ops_journal_worktree / cfg.repo.exec_summary_log),
        reports_dir=str(paths.ops_journal_worktree / cfg.repo.reports_dir),
        heartbeat_file=str(paths.run(run_id).heartbeat),
        git_identity={"name": cfg.repo.git_identity.name, "email": cfg.repo.git_identity.email},
        branches_at_start=publish.night_branches(repo),
    )
    session.note("night.created", timeparse.iso(now), deadline=session.deadline)
    state.save(paths.session_state, session)  # first, so a kill during setup is resumable
    logs.tee.open(paths.run(run_id).supervisor_log)
    log.info("night.created", run_id=run_id, deadline=session.deadline, wrap_up_at=session.wrap_up_at)
    return session


def new_run_id(now: dt.datetime) -> str:
    """`YYYYmmdd_HHMMSS_xxxxxx`: sortable by start time, and unique even for two nights started
    within one second (another config on the same repository, a `--no-resume` right after an
    early end): the session branch and the run folder are named after it."""
    return f"{now.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"


def _write_report(loaded: config.Loaded, session: state.Session, layout: state.RunLayout, log) -> None:
    """The morning report, written when a night ends and its Markdown committed on the
    ops-journal branch. A failure is logged, never fatal: the night's work is already saved."""
    from . import report  # late: only a finished night needs it
    paths = loaded.paths
    try:
        md, html = report.write(paths.session_state, layout.root, session=session,
                                codex_home=paths.codex_home)
        faults.point("report.written")           # written in the run folder, not yet committed
        sha = report.commit_markdown(session, md)
        log.info("report.written", markdown=str(md), html=str(html), commit=sha)
    except (OvernightError, OSError) as exc:
        log.error("report.failed", error=str(exc))


def _publish(loaded: config.Loaded, session: state.Session, log, only_if_pending: bool = False) -> None:
    """The opt-in push of the night's branches and ops journal (`publish`), once the report is
    committed; its outcome noted in session.json. Never fatal: the work stays on the local branches.
    `only_if_pending`: not again when a push of this night has succeeded (a night closed by its
    successor)."""
    if not loaded.config.publish.enabled or (only_if_pending and not publish.pending(session)):
        return
    publish.publish(loaded.config.publish, session, log)
    try:
        state.save(loaded.paths.session_state, session)
    except OSError as exc:
        log.error("publish.unrecorded", error=str(exc))


def _archive(paths: config.Paths, old: state.Session, log) -> None:
    """Keep the previous night's state under its run folder before a new night starts."""
    target = paths.run(old.run_id).archived_session
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths.session_state, target)
    log.info("night.archived", old_run_id=old.run_id, to=str(target))


def _stop_leftovers(prefix: str, log, stop_cfg) -> None:
    """Stop every agent process an earlier supervisor of this run_root left behind."""
    leftovers = procs.tagged(prefix)
    if not leftovers:
        return
    pids = [p.pid for p in leftovers]
    survivors = procs.stop_blocking(leftovers, grace=stop_cfg.sigint_grace,
                                    signals=(signal.SIGINT, signal.SIGTERM, signal.SIGKILL))
    log.warning("leftovers.stopped", pids=pids, survivors=[p.pid for p in survivors])


def _set_up_worktrees(loaded: config.Loaded, session: state.Session, layout: state.RunLayout, log) -> None:
    paths = loaded.paths
    repo = paths.repo_root
    for inside in (paths.run_root, paths.session_worktree_root, paths.ops_journal_worktree):
        pattern = gitops.ensure_ignored(repo, inside)
        if pattern:
            log.info("repo.excluded", pattern=pattern, file=".git/info/exclude",
                     why="runtime files inside the repository stay out of git status")
    _make_worktrees(repo, session, log)
    faults.point("setup.after_worktrees")
    # Every git of an earlier supervisor's is gone (leftovers were stopped): its locks are stale.
    locks = gitops.clear_locks_left((session.session_worktree, session.ops_journal_worktree))
    if locks:
        log.warning("git.stale_locks_removed", paths=locks)
    _writable_home(loaded)
    layout.agent_dir.mkdir(parents=True, exist_ok=True)


def _make_worktrees(repo: Path, session: state.Session, log) -> None:
    """The session worktree and the ops-journal worktree, made or reused (idempotent)."""
    reused = gitops.ensure_worktree(repo, Path(session.session_worktree), session.session_branch,
                                    session.base_commit, agent_owned=True)
    log.info("worktree.ready", kind="session", path=session.session_worktree, reused=reused)
    faults.point("setup.between_worktrees")
    reused = gitops.ensure_worktree(repo, Path(session.ops_journal_worktree),
                                    session.ops_journal_branch, session.base_commit)
    log.info("worktree.ready", kind="ops_journal", path=session.ops_journal_worktree, reused=reused)


def _writable_home(loaded: config.Loaded) -> None:
    """The agent CLI keeps its sessions in its home (codex_home, claude.home, gemini.home): one
    it cannot write loses every thread, so the night does not start (a clear error, before any
    agent runs)."""
    home = loaded.paths.agent_home
    keys = loaded.agent_keys
    key = f"{keys.section}.{keys.home}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if home.stat().st_mode & 0o777 != 0o700:
            os.chmod(home, 0o700)
        probe = home / f".overnight-agent-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{loaded.source or '<defaults>'}: {key}: {home} is not writable "
                          f"({exc.strerror}); make it writable by this user or point {key} "
                          "elsewhere") from None


def _clear_leftovers(supervisor: Supervisor, session: state.Session, log) -> None:
    """What an earlier attempt left for the first one of this process (codex's sandbox stubs
    after a kill mid-command, a lock in gemini's home): every process of the night was stopped
    before setup, so the backend's after-attempt clean-up holds here as it does between attempts."""
    removed = supervisor.backend.after_attempt(Path(session.session_worktree))
    if removed:
        log.info("agent.leftovers_removed", names=list(removed))


def _make_supervisor(loaded: config.Loaded, session: state.Session, layout: state.RunLayout,
                     log) -> Supervisor:
    cfg, paths = loaded.config, loaded.paths
    worktree = Path(session.session_worktree)
    guard = fences.prepare(paths.repo_root, layout.root, paths.codex_home, session, cfg, tool=tool_command())
    writable = [*guard.writable_roots, *gitops.sandbox_writable_roots(worktree), Path(session.ops_journal_worktree),
                gitops.worktree_git_dir(Path(session.ops_journal_worktree)), layout.agent_dir]
    heartbeat = Path(session.heartbeat_file)
    backend = agents.create(cfg.agent, cfg, agents.NightFacts(
        run_id=session.run_id, worktree=worktree, run_dir=layout.root, heartbeat=heartbeat,
        state_home=paths.agent_home,
        binary=loaded.agent_binary(), model=session.model, effort=session.model_reasoning_effort,
        sandbox=session.sandbox, writable_roots=tuple(_unique(writable))))
    env = backend.environment(dict(os.environ))
    env.update(guard.env)  # after the allowlist, which drops every GIT_* variable
    env.update({procs.TAG_VAR: session.tag, "OVERNIGHT_AGENT_SESSION": str(paths.session_state),
                "OVERNIGHT_AGENT_HEARTBEAT": str(heartbeat), "OVERNIGHT_AGENT_RUN_ID": session.run_id})
    prompts = {kind: prompt.template_text(kind, loaded.prompt_template(kind)) for kind in prompt.KINDS}

    def values() -> Dict[str, str]:
        now = timeparse.local_now()
        return {
            "run_id": session.run_id, "deadline": session.deadline, "wrap_up_at": session.wrap_up_at,
            "time_left": timeparse.format_duration((session.deadline_dt - now).total_seconds()),
            "date": now.date().isoformat(), "base_branch": session.base_branch,
            "session_branch": session.session_branch, "session_worktree": session.session_worktree,
            "ops_journal_branch": session.ops_journal_branch,
            "ops_journal_worktree": session.ops_journal_worktree,
            "exec_summary_log": cfg.repo.exec_summary_log, "reports_dir": cfg.repo.reports_dir,
            "tool": tool_command(), "heartbeat_file": str(heartbeat),
        }

    settings = tuning.from_config(cfg)
    identity = {"name": cfg.repo.git_identity.name, "email": cfg.repo.git_identity.email}
    return Supervisor(session=session, state_path=paths.session_state, audit=guard.audit,
                      layout=layout, backend=backend, settings=settings,
                      prompts=prompts, prompt_values=values, env=env, log=log, identity=identity,
                      notifier=Notifier())




def _unique(items):
    seen, result = set(), []
    for item in items:
        if str(item) not in seen:
            seen.add(str(item))
            result.append(item)
    return result

"""Announcing a failed night: the reports and the operator's `notify.command`.

Owns: the failure report (`<run_root>/runs/<run_id>/failure_report.md`: why it failed, the
night's status, the last supervisor events, where to look next), bringing the morning report
(`report.md`, `report.html`, see `report`) up to date for the announcement, the command's argv
and environment, running it with a timeout, and `overnight-agent notify-failure`, what a unit's
`OnFailure=` runs: it also marks the night `failed` in session.json when no supervisor holds
the lock. Must not: decide a night's fate (the supervisor and systemd do), retry, or raise: an
announcement that cannot be made is logged and its exit status returned.

Who announces, so that each failure is announced once:
- under systemd, the unit's `OnFailure=` (`notify-failure`), once systemd gives up on the night:
  restarts exhausted, or an exit restarting cannot fix (75, 78);
- elsewhere (launchd, cron, a terminal), `run` itself when it exits with 1 or 78 and the config
  names a command;
- everywhere, `run` itself when the night ends in state `failed` (its exit status is 0, so no
  unit fails).

The command gets `REPORT RUN_ID STATE` appended to its argv (REPORT: the morning report's
`report.md`, or the failure report when there is no night to report on; RUN_ID `-` then), and
the same in `OVERNIGHT_AGENT_REPORT`, `OVERNIGHT_AGENT_RUN_ID`, `OVERNIGHT_AGENT_STATE`, plus
`OVERNIGHT_AGENT_FAILURE_REPORT`, `OVERNIGHT_AGENT_REASON`, `OVERNIGHT_AGENT_REPO` and, under
systemd, `OVERNIGHT_AGENT_UNIT`.
"""
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import config, logs, state, timeparse
from .exitcodes import OvernightError
from .lock import InstanceLock

LIVE_STATES = (state.STARTING, state.RUNNING, state.BACKOFF, state.STOPPING)
REPORT_NAME = "failure_report.md"
LOG_TAIL = 30


@dataclass
class Failure:
    """What failed and why, as the announcement tells it."""

    reason: str                       # one line: "systemd: result watchdog, 3 restarts", "exit 78: ..."
    unit: Optional[str] = None        # the systemd unit, under systemd
    repo: Optional[Path] = None
    morning_report: Optional[Path] = None


def report_path(paths: config.Paths, session: Optional[state.Session]) -> Path:
    if session is None:
        return paths.run_root / REPORT_NAME
    return paths.run_dir(session.run_id) / REPORT_NAME


def write_report(paths: config.Paths, session: Optional[state.Session], failure: Failure) -> Path:
    """Write the failure report; never raises (a report that cannot be written is still named)."""
    path = report_path(paths, session)
    lines = [f"# overnight-agent: the night {session.run_id if session else '(none)'} failed", "",
             f"- why: {failure.reason}",
             f"- repository: {failure.repo or paths.repo_root}",
             f"- written: {timeparse.iso(timeparse.local_now())}"]
    if failure.unit:
        lines.append(f"- unit: {failure.unit} (`journalctl --user -u {failure.unit}`, "
                     f"`systemctl --user status {failure.unit}`)")
    if failure.morning_report:
        lines.append(f"- morning report: {failure.morning_report} (and {failure.morning_report.with_suffix('.html')})")
    if session is not None:
        lines += [f"- state: {session.state}; deadline {session.deadline}; thread {session.thread_id or '-'}",
                  f"- session state: {paths.session_state}",
                  f"- run folder: {paths.run_dir(session.run_id)}",
                  "", "## Status", "", "```", _status_text(paths, session), "```"]
        tail = _tail(paths.run(session.run_id).supervisor_log, LOG_TAIL)
        if tail:
            lines += ["", f"## The last {len(tail)} supervisor events", "", "```", *tail, "```"]
    lines += ["", "## What next", "",
              "- `overnight-agent status` shows the night; `overnight-agent doctor` checks the setup.",
              "- Before the deadline, starting the unit again (or `overnight-agent run`) resumes the "
              "same night and thread.", ""]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines), encoding="utf-8")
    except OSError:
        pass
    return path


def _status_text(paths: config.Paths, session: state.Session) -> str:
    try:
        from . import status
        return status.render(status.collect(paths.session_state, session=session))
    except Exception:  # the report must be written even when the richer view cannot be
        last = session.last_attempt()
        return (f"run {session.run_id}: {session.state}; attempts {len(session.attempts)}; last "
                f"{(last.outcome or 'running') if last else 'none'}")


def _tail(path: Path, count: int) -> List[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:]
    except OSError:
        return []


def command_env(base: Dict[str, str], report: Path, failure_report: Path,
                session: Optional[state.Session], failure: Failure, repo: Path) -> Dict[str, str]:
    env = dict(base)
    env.update({"OVERNIGHT_AGENT_REPORT": str(report),
                "OVERNIGHT_AGENT_FAILURE_REPORT": str(failure_report),
                "OVERNIGHT_AGENT_RUN_ID": session.run_id if session else "",
                "OVERNIGHT_AGENT_STATE": session.state if session else "none",
                "OVERNIGHT_AGENT_REASON": failure.reason,
                "OVERNIGHT_AGENT_REPO": str(repo)})
    if failure.unit:
        env["OVERNIGHT_AGENT_UNIT"] = failure.unit
    return env


def morning_report(loaded: config.Loaded, session: Optional[state.Session]) -> Optional[Path]:
    """The night's morning report (`report.md`, beside `report.html`), written now; None if not."""
    if session is None:
        return None
    try:
        from . import report
        md_path, _ = report.write(loaded.paths.session_state, loaded.paths.run_dir(session.run_id),
                                  session=session, codex_home=loaded.paths.codex_home)
        return md_path
    except Exception:  # a failure must be announced even when the full report cannot be drawn
        return None


def announce(loaded: config.Loaded, session: Optional[state.Session], failure: Failure,
             log=None, env=None) -> int:
    """Write the reports and run `notify.command`; 0 when sent (or none is configured), else 1."""
    log = log or logs.get()
    failure.morning_report = morning_report(loaded, session)
    failure_report = write_report(loaded.paths, session, failure)
    report = failure.morning_report or failure_report
    argv = loaded.config.notify.command
    run_id = session.run_id if session else None
    if not argv:
        log.info("notify.skipped", reason=failure.reason, report=str(report), run_id=run_id,
                 why="notify.command is not set")
        return 0
    full = [*argv, str(report), run_id or "-", session.state if session else "none"]
    child_env = command_env(dict(os.environ if env is None else env), report, failure_report, session,
                            failure, loaded.paths.repo_root)
    try:
        proc = subprocess.run(full, env=child_env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=loaded.config.notify.timeout,
                              cwd=str(loaded.paths.repo_root))
    except subprocess.TimeoutExpired:
        log.error("notify.failed", command=argv[0], error=f"timed out after {loaded.config.notify.timeout:g}s",
                  run_id=run_id, report=str(report))
        return 1
    except OSError as exc:
        log.error("notify.failed", command=argv[0], error=exc.strerror or str(exc), run_id=run_id,
                  report=str(report))
        return 1
    output = (proc.stdout + proc.stderr).strip()[-500:]
    if proc.returncode != 0:
        log.error("notify.failed", command=argv[0], exit_code=proc.returncode, output=output,
                  run_id=run_id, report=str(report))
        return 1
    log.info("notify.sent", command=argv[0], reason=failure.reason, run_id=run_id, report=str(report))
    return 0


# --- what OnFailure= runs ---------------------------------------------------------------------------

def systemd_reason(unit: Optional[str], env=None, runner=None) -> str:
    """Why systemd gave up on `unit`: from OnFailure='s $MONITOR_* (systemd >= 251) or `show`."""
    env = os.environ if env is None else env
    result = env.get("MONITOR_SERVICE_RESULT")
    code, status = env.get("MONITOR_EXIT_CODE"), env.get("MONITOR_EXIT_STATUS")
    restarts = None
    if unit:
        try:
            out = (runner or subprocess.run)(
                ["systemctl", "--user", "show", unit, "--property=Result,ExecMainCode,"
                 "ExecMainStatus,NRestarts"], capture_output=True, text=True, timeout=20,
                stdin=subprocess.DEVNULL).stdout
            shown = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            result = result or shown.get("Result")
            status = status or shown.get("ExecMainStatus")
            restarts = shown.get("NRestarts")
        except (OSError, subprocess.SubprocessError):
            pass
    parts = [f"systemd gave up on {unit or 'the unit'}: result {result or 'unknown'}"]
    if code or status:
        parts.append(f"main process {code or 'ended'} {status or ''}".rstrip())
    if restarts not in (None, ""):
        parts.append(f"{restarts} restart{'s' if restarts != '1' else ''}")
    return ", ".join(parts)


def notify_failure(loaded: config.Loaded, unit: Optional[str], log=None) -> int:
    """`overnight-agent notify-failure`: mark the night failed (if nothing runs it) and announce."""
    log = log or logs.get()
    paths = loaded.paths
    session = state.load(paths.session_state)
    reason = systemd_reason(unit)
    if session is not None and session.state in LIVE_STATES:
        lock = InstanceLock(paths.lock_file)
        try:
            lock.acquire()
        except OvernightError:  # a supervisor holds it (started by hand?): the night is not over
            log.warning("night.failed_unmarked", run_id=session.run_id,
                        why="another supervisor holds the lock")
        else:
            try:
                was = session.state
                session.state = state.FAILED
                session.note("night.failed", timeparse.iso(timeparse.local_now()), reason=reason,
                             was=was, unit=unit)
                state.save(paths.session_state, session)
                log.warning("night.failed", run_id=session.run_id, reason=reason, was=was, unit=unit)
            finally:
                lock.release()
    return announce(loaded, session, Failure(reason=reason, unit=unit, repo=paths.repo_root), log)

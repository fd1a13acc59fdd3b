"""`overnight-agent run` under a service manager, or without one.

Owns: knowing which service manager runs us (systemd, launchd, or none), and what that changes
for a night: detaching (`--detach`, only without a manager), whether a start is the operator's
own (`systemctl start`: the night runs even outside the night window) or a timer's, who
announces a failed night (see `alerts`), and the exit status under launchd. Must not: run the night itself (`night`
does) or talk to the manager (`notify` sends systemd's READY/WATCHDOG, `journald` writes the
journal).

launchd cannot be told which exit statuses not to restart (systemd's units list 74, 75 and 78
in `RestartPreventExitStatus=`): with `KeepAlive: {SuccessfulExit: false}` a full disk, a held
lock or a bad config would be retried every ThrottleInterval all night. So under launchd `run` prints the
error as usual (and announces a config error), then exits 0.
"""
import dataclasses
import os
import sys
from typing import Optional

from . import alerts, config, exitcodes, journald, logs, night, state
from .exitcodes import OvernightError, UsageError

MANAGER_VAR = "OVERNIGHT_AGENT_SERVICE_MANAGER"   # set by our units and plist


def manager(env=None, stderr=None) -> Optional[str]:
    """"systemd", "launchd", or None (a terminal, cron)."""
    env = os.environ if env is None else env
    named = env.get(MANAGER_VAR, "").strip()
    if named:
        return named
    if env.get("NOTIFY_SOCKET") or journald.stream_is_journal(stderr or sys.stderr, env):
        return "systemd"
    if env.get("XPC_SERVICE_NAME", "0") not in ("", "0"):  # a launchd job (a Terminal says 0)
        return "launchd"
    return None


def run_night(request: night.RunRequest, detach: bool = False, env=None) -> int:
    env = os.environ if env is None else env
    under = manager(env)
    if under == "systemd" and not env.get("TRIGGER_UNIT"):
        # `systemctl start` by hand: systemd names the timer (or path unit) in TRIGGER_UNIT for
        # every start it triggers, automatic restarts of that start included.
        request = dataclasses.replace(request, by_hand=True)
    if detach and under:
        raise UsageError(f"--detach: refused under {under}, which runs `run` in the foreground "
                         "and tracks it (detaching would break Type=notify and the watchdog); "
                         "drop --detach")
    loaded = None
    try:
        loaded = night.load_for(request)
        if detach:
            from . import daemonize
            daemonize.detach(loaded)
        result = night.run(request, loaded=loaded)
    except OvernightError as exc:
        if exc.exit_code in (exitcodes.CONFIG, exitcodes.UNEXPECTED, exitcodes.DISK_FULL) and under != "systemd":
            _announce(loaded, f"exit {exc.exit_code}: {exc}")
        if under == "launchd" and exc.exit_code in (exitcodes.LOCKED, exitcodes.CONFIG, exitcodes.DISK_FULL):
            print(f"overnight-agent: {exc}", file=sys.stderr)
            print(f"overnight-agent: exiting 0, not {exc.exit_code}: launchd would retry it all night",
                  file=sys.stderr)
            return 0
        raise
    except Exception as exc:
        if under != "systemd":
            _announce(loaded, f"unexpected {type(exc).__name__}: {exc}")
        raise
    session = result.session
    if session is not None and session.state == state.FAILED:  # exit 0, so no unit fails
        last = session.last_attempt()
        why = f"the night gave up: last attempt {last.outcome}" if last else "the night gave up"
        alerts.announce(loaded, session, alerts.Failure(reason=why, repo=loaded.paths.repo_root))
    return result.exit_code


def _announce(loaded: Optional[config.Loaded], reason: str) -> None:
    """Announce a night that ended in an error (when the config names a notify.command). The
    night's state is read from disk: the process that wrote it did not get to hand it back."""
    if loaded is None or not loaded.config.notify.command:
        return  # nothing to announce with; the error itself stays the one line the terminal shows
    try:
        session = state.load(loaded.paths.session_state)
    except OvernightError:
        session = None
    if session is not None and session.supervisor_pid != os.getpid():
        session = None  # an older night's state: not this run's
    alerts.announce(loaded, session, alerts.Failure(reason=reason, repo=loaded.paths.repo_root), logs.get())

"""`run --detach`: a night in the background where no service manager runs it (cron, a shell).

Owns: python-daemon's `DaemonContext` with our settings (umask 022, the repository as working
directory, stdin from /dev/null, stdout and stderr appended to `<run_root>/overnight-agent.log`
and kept open, our own single-instance lock as the pidfile, so the lock file names the pid that
runs the night), and the checks made while a terminal can still see their errors (config, lock).
Must not: detach under systemd or launchd (`service.manager()` says; detaching there makes the
manager lose its main process, breaks Type=notify and closes the notify socket), or install a
SIGTERM handler of its own (the supervisor's handlers turn signals into a clean stop).
"""
import signal
import sys
from pathlib import Path

import daemon

from . import logs
from .config import Loaded
from .exitcodes import ConfigError, LockedError
from .lock import InstanceLock, holder_pid, is_held

UMASK = 0o022
LOG_NAME = "overnight-agent.log"


def log_path(loaded: Loaded) -> Path:
    return loaded.paths.run_root / LOG_NAME


def detach(loaded: Loaded, out=None) -> None:
    """Return in a detached grandchild that holds the lock; the calling process exits 0."""
    out = out or sys.stderr
    lock_file = loaded.paths.lock_file
    if is_held(lock_file):
        raise LockedError(f"{lock_file}: another overnight-agent run holds the lock "
                          f"(pid {holder_pid(lock_file) or '?'}); stop it first or wait for it to finish")
    path = log_path(loaded)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the log ({exc.strerror}); check repo.run_root is "
                          "writable") from None
    print(f"overnight-agent: the night goes on in the background; its log: {path}\n"
          f"overnight-agent: `overnight-agent status` shows it; `kill -TERM <pid in {lock_file}>` "
          "stops it", file=out, flush=True)
    context = daemon.DaemonContext(
        working_directory=str(loaded.paths.repo_root),
        umask=UMASK,
        detach_process=True,
        pidfile=InstanceLock(lock_file),
        stdout=log_file, stderr=log_file,
        files_preserve=[log_file],
        # Job-control signals from a terminal are ignored; SIGTERM keeps its default until the
        # supervisor installs its own handler (python-daemon's would raise SystemExit mid-setup).
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    context.open()  # returns in the daemon; the terminal's process has exited 0
    logs.configure()  # stderr is the log file now: JSON lines, no journal

"""Exit codes of every overnight-agent command, in one place.

Owns: the numbers and the exception types that carry them to `cli.main`.
Must not: print, log or decide anything; callers raise, the CLI maps.

| code | meaning                                                                  |
|------|--------------------------------------------------------------------------|
| 0    | success, a night finished, or nothing to do (outside the night window)   |
| 1    | unexpected failure (a bug, or git/codex failing in a way we cannot type) |
| 2    | usage error on the command line                                          |
| 3    | `validate`: a validation suite or a guard failed (see its JSON record)   |
| 65   | refused: the content to commit holds a secret (EX_DATAERR)               |
| 74   | disk full under run_root: the agent was stopped, the last state kept (EX_IOERR) |
| 75   | locked: another supervisor holds the lock (EX_TEMPFAIL)                  |
| 78   | configuration or state file error (EX_CONFIG)                            |

systemd units list 74, 75 and 78 in RestartPreventExitStatus: restarting cannot fix them.
"""

OK = 0
UNEXPECTED = 1
USAGE = 2
VALIDATION_FAILED = 3
SECRET = 65
DISK_FULL = 74
LOCKED = 75
CONFIG = 78


class OvernightError(Exception):
    """An error with a one-line message for the operator and an exit code."""

    exit_code = UNEXPECTED


class ConfigError(OvernightError):
    """A bad config file, state file, argument value or environment."""

    exit_code = CONFIG


class LockedError(OvernightError):
    """Another supervisor holds the single-instance lock."""

    exit_code = LOCKED


class DiskFull(OvernightError):
    """A write under run_root failed for want of space (or of quota, or of the file size limit)."""

    exit_code = DISK_FULL


class UsageError(OvernightError):
    exit_code = USAGE


class SecretRefused(OvernightError):
    """A commit was refused because what it would add looks like a secret (the value is never shown)."""

    exit_code = SECRET

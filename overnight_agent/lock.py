"""The single-instance lock: an flock-held file under `run_root` with the holder's pid in it.

Owns: taking and releasing the lock, and naming the holder when it is taken.
Must not: kill the holder or remove its file. A lock left by a killed supervisor needs no
cleanup: the kernel drops an flock with its last descriptor, so the next `run` simply takes it.
The descriptor is close-on-exec, so agents never inherit (and never keep) the lock.
"""
import errno
import fcntl
import os
from pathlib import Path
from typing import Dict, Optional

from .exitcodes import ConfigError, LockedError


_HELD: Dict[str, "InstanceLock"] = {}   # path -> the lock this process holds on it


class InstanceLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd: Optional[int] = None
        self._within: Optional["InstanceLock"] = None

    def acquire(self) -> "InstanceLock":
        held = _HELD.get(str(self.path))
        if held is not None:
            # This process holds it already (`run --detach` takes it as the daemon's pidfile
            # before the night starts): entering again is fine, the outer holder releases it.
            self._within = held
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create lock file ({exc.strerror}); "
                              "check repo.run_root is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f"pid {holder}" if holder else "another process"
                raise LockedError(f"{self.path}: another overnight-agent run holds the lock "
                                  f"({who}); stop it first or wait for it to finish") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self.fd = fd
        _HELD[str(self.path)] = self
        return self

    def release(self) -> None:
        if self._within is not None:
            self._within = None
            return
        if self.fd is not None:
            _HELD.pop(str(self.path), None)
            os.close(self.fd)  # the flock goes with it; the file stays (racing on unlink is worse)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def holder_pid(path: Path) -> Optional[int]:
    """The pid written by whoever holds (or last held) the lock, for status displays."""
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_held(path: Path) -> bool:
    """True while some process holds the lock (probed without taking it for long)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)

"""Being woken when a file is written to: Linux inotify, through ctypes.

Owns: one inotify descriptor watching files for writes, for the main loop's selector.
Must not: read or change the watched file, or block (the descriptor is non-blocking).

Used where a child writes a file itself (a plain command's stdout given the run log directly):
the write is evidence of life and may cross the log size cap, and the loop should know at once,
not at its next sample. Where inotify is missing (not Linux), `open_watch` returns None and the
caller keeps the pipe instead.
"""
import ctypes
import os
from typing import Optional

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc = None


def _lib():
    """The C library this process already has loaded (no `ldconfig` run to find it)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return _libc


class FileWatch:
    """An inotify descriptor that becomes readable when a watched file is written to.
    Unread events of the same kind merge in the kernel, so a flood of writes costs one wake-up
    per look, not one per write. Keep one for a process's life: closing an inotify descriptor
    waits for the kernel's RCU grace period (measured: up to 15 ms), too slow for a restart."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def add(self, path: str) -> bool:
        """Watch `path` too (again: no-op); False if the kernel refuses."""
        return _lib().inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY) >= 0

    def drain(self) -> bool:
        """Read the queued events; True if there were any."""
        seen = False
        while True:
            try:
                if not os.read(self.fd, 4096):
                    return seen
            except BlockingIOError:
                return seen
            seen = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_watch() -> Optional[FileWatch]:
    """A FileWatch watching nothing yet, or None where inotify is not available."""
    libc = _lib()
    if not libc or not hasattr(libc, "inotify_init1"):
        return None
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    return FileWatch(fd) if fd >= 0 else None

"""Signals turned into events early: handlers only queue, the main loop acts.

Owns: the handlers of SIGTERM, SIGINT and SIGHUP while the loop runs (and the ones they
replaced, put back after), the queue they fill, and the self-pipe that wakes the loop's selector
when a signal (SIGCHLD included: an agent's exit, where pidfds are missing) arrives.
Must not: do anything in a handler but queue (no logging, no I/O: gunicorn's rule).
"""
import collections
import os
import signal
from typing import Deque, Dict, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalQueue:
    def __init__(self):
        self.pending: Deque[int] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._previous: Dict = {}

    def fileno(self) -> int:
        """Readable when a signal arrived: register it with the loop's selector."""
        return self._wake_r

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._queue) for sig in STOP_SIGNALS}
        # A handler (even one that does nothing) makes SIGCHLD write to the wakeup fd.
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        self._previous["wakeup"] = signal.set_wakeup_fd(self._wake_w)

    def restore(self) -> None:
        if self._previous:
            signal.set_wakeup_fd(self._previous.pop("wakeup"))
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous = {}

    def woken(self) -> None:
        """Empty the self-pipe (the signals themselves are in `pending`)."""
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def take(self) -> Iterator[int]:
        while self.pending:
            yield self.pending.popleft()

    def close(self) -> None:
        self.restore()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _queue(self, signum, frame) -> None:
        self.pending.append(signum)


def _ignore(signum, frame) -> None:
    pass

"""sd_notify for systemd's Type=notify services: READY, WATCHDOG, STATUS, STOPPING.

Owns: talking to `$NOTIFY_SOCKET` and knowing when the next watchdog ping is due.
Must not: ping from anywhere but the main loop (a stuck loop must stop the pings), or fail a
night because systemd is absent: without `NOTIFY_SOCKET` every call is silent and harmless.
"""
import os
from typing import Optional

import sdnotify


class Notifier:
    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval: Optional[float] = (
            int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 and mine else None)
        self._next_ping = 0.0
        self.ready_sent = False

    def send(self, text: str) -> None:
        if self._sd is not None:
            self._sd.notify(text)

    def ready(self, status: str) -> None:
        """READY=1 once per process; a supervisor systemd restarted says it again (else `activating`)."""
        if not self.ready_sent:
            self.ready_sent = True
            self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, why: str = "stopping before the night started") -> None:
        # systemd fails a Type=notify unit whose process exits before READY=1, even with status 0
        # (result 'protocol'): a night that ends before its loop ran says READY=1 first.
        if not self.ready_sent:
            self.ready(why)
        self.send("STOPPING=1")

    @property
    def next_ping(self) -> float:
        return self._next_ping

    def tick(self, now: float) -> None:
        """Ping the watchdog when due; call once per main-loop pass with the monotonic time."""
        if self.watchdog_interval is not None and now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval


def status_line(phase: str, attempts: int, thread: Optional[str], seconds_left: float,
                evidence_age: Optional[float] = None, pause: str = "") -> str:
    """What systemd's STATUS= says of a night (`systemctl status` shows it)."""
    from .timeparse import format_duration   # late: keep this module light for the loop's imports
    text = f"{phase} attempt {attempts} thread {thread} deadline in {format_duration(seconds_left)}"
    if evidence_age is not None:
        return text + f" last evidence {format_duration(evidence_age)} ago"
    return text + (f" ({pause})" if pause else "")

"""Reading the evidence of life nobody pushes to us: files, CPU time and sockets.

Owns: for one attempt, when each watched file last changed (the heartbeat, the thread's session
file), the CPU time of the agent CLI and of every command it runs (per thread, in nanoseconds),
whether a command is running, and when a socket of theirs last received data (`ss`). It hands
what it reads to `liveness.Liveness`. Must not: judge (`liveness` does), stop anything, or read
more than it must: `ss` only when a verdict is due and a socket exists.
"""
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import procs
from .liveness import Liveness


class Sampler:
    def __init__(self, pid: int, liveness: Liveness, interval: float, *, started: float,
                 started_wall: float, heartbeat: Optional[Path],
                 progress_files: Callable[[Optional[str]], List[Path]]):
        self.pid = pid
        self.liveness = liveness
        self.interval = interval
        self.started = started              # monotonic
        self.started_wall = started_wall    # the attempt's start on the wall clock (files' mtimes)
        self.heartbeat = heartbeat
        self.progress_files = progress_files
        self.next_sample = started
        self.sampled_at = 0.0
        self.agent_cpu: Dict = {}
        self.command_cpu: Dict = {}
        self.file_marks: Dict[str, tuple] = {}

    def sample(self, now: float, thread_id: Optional[str], open_commands: int) -> None:
        """Look at the files and the CPU once; the next look is due an interval later."""
        self._files(now, thread_id)
        kids = procs.descendants(self.pid)
        agent = procs.thread_cpu_ns(self.pid)
        commands = {}
        for pid in kids:
            for tid, ns in procs.thread_cpu_ns(pid).items():
                commands[(pid, tid)] = ns
        window = now - self.sampled_at if self.sampled_at else 0.0
        if window > 0:
            self.liveness.cpu(procs.cpu_delta(self.agent_cpu, agent),
                              procs.cpu_delta(self.command_cpu, commands), window, now)
        self.agent_cpu, self.command_cpu, self.sampled_at = agent, commands, now
        self.liveness.command_running = open_commands > 0 or bool(kids)
        self.next_sample = now + self.interval

    def _files(self, now: float, thread_id: Optional[str]) -> None:
        """A file counts when its mtime or size changed, dated by its own mtime moved onto the
        monotonic clock; the heartbeat also when first seen, if touched since the attempt began."""
        watched = {"heartbeat": [self.heartbeat] if self.heartbeat else [],
                   "rollout": self.progress_files(thread_id)}
        for source, files in watched.items():
            for path in files:
                try:
                    info = path.stat()
                except OSError:
                    continue
                mark = (info.st_mtime_ns, info.st_size)
                key = f"{source}:{path}"
                previous = self.file_marks.get(key)
                when = min(now, now - (time.time() - info.st_mtime))
                if previous is not None and previous != mark:
                    self.liveness.saw(source, when)
                elif previous is None and source == "heartbeat" and info.st_mtime >= self.started_wall - 1.0:
                    self.liveness.saw(source, max(when, self.started))
                self.file_marks[key] = mark

    def network(self, now: float) -> bool:
        """Before calling it a stall: has the agent (or a command) received data lately? True
        when that moved the evidence."""
        pids = [self.pid, *procs.descendants(self.pid)]
        if not procs.has_sockets(pids):
            return False  # nothing to ask `ss` about
        ago = procs.last_data_received(pids)
        if ago is None:
            return False
        before = self.liveness.last_evidence()
        self.liveness.saw("network", now - ago)
        return self.liveness.last_evidence() > before

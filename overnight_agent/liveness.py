"""Deciding from evidence whether the agent is alive: pure bookkeeping, no I/O.

Owns: the evidence sources and when each last moved (monotonic time), the two stall limits, and
the verdict with a reason that says what was last seen and when. Must not: read files, /proc or
clocks (the supervisor samples and passes values and `now` in), or stop anything.

Evidence, each recorded when it changes:
- `stdout`: a new event line from the agent (retry notices do not count: a CLI that retries
  forever would otherwise look alive forever);
- `rollout`: the thread's session file grew (codex appends as items complete);
- `heartbeat`: the file the agent touches with `overnight-agent heartbeat` got a newer mtime;
- `network`: a TCP socket of the agent (or of its commands) received data: a model streaming its
  answer slowly prints nothing until it is done, but bytes arrive; one that never answers sends
  none. Read only when a verdict is due (it costs a few milliseconds);
- `agent_cpu`: the agent CLI itself used CPU, averaged over a few seconds, between a floor (idle
  timers are not work: codex idles at about 0.3% of a core) and a ceiling (a CLI pinned at a
  full core with nothing else moving is spinning);
- `command_cpu`: a command the agent runs (any descendant) used CPU: a quiet test suite or build
  is progress however long it takes; a command asleep is not.
The session is stalled when nothing moved for `command_silent` while a command runs, or for
`model_silent` otherwise (the model thinking or streaming prints nothing until it is done).
"""
import collections
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional, Tuple

SOURCES = ("stdout", "rollout", "heartbeat", "network", "agent_cpu", "command_cpu")
# The agent CLI's own CPU is judged over at least this many seconds: an idle CLI's timers make
# blips of a millisecond or so every few seconds, which a short window would take for work.
AGENT_CPU_WINDOW = 5.0


@dataclass(frozen=True)
class Limits:
    model_silent: float          # seconds without evidence while no command runs
    command_silent: float        # seconds without evidence while a command runs
    agent_cpu_floor: float       # fraction of a core; below it the agent's CPU is idle noise
    agent_cpu_ceiling: float     # fraction of a core; at or above it the agent is spinning
    command_cpu_floor: float     # fraction of a core a command must use to count


@dataclass
class Verdict:
    stalled: bool
    limit: float
    age: float                   # seconds since the last evidence
    reason: str


@dataclass
class Liveness:
    limits: Limits
    started: float                               # monotonic start of the attempt
    last: Dict[str, float] = field(default_factory=dict)
    command_running: bool = False
    agent_total: float = 0.0
    agent_active: Optional[float] = None     # the last sample in which the agent used CPU at the floor's rate
    agent_history: Deque[Tuple[float, float]] = field(default_factory=collections.deque)

    def saw(self, source: str, when: float) -> None:
        assert source in SOURCES, source
        self.last[source] = max(when, self.last.get(source, when))

    def cpu(self, agent_seconds: float, command_seconds: float, window: float, now: float) -> None:
        """CPU used in the last `window` seconds (since the previous sample) by the agent CLI
        and by its commands. Each counts as evidence dated by the sample in which it was used
        at the floor's rate or more, so a burst (a CLI starting up) keeps nothing alive past
        its own limit, and idle timers never count."""
        if window <= 0:
            return
        if command_seconds / window >= self.limits.command_cpu_floor:
            self.saw("command_cpu", now)
        if not self.agent_history:
            self.agent_history.append((now - window, 0.0))
        self.agent_total += agent_seconds
        if agent_seconds / window >= self.limits.agent_cpu_floor:
            self.agent_active = now
        self.agent_history.append((now, self.agent_total))
        while len(self.agent_history) > 2 and self.agent_history[1][0] <= now - AGENT_CPU_WINDOW:
            self.agent_history.popleft()
        since, total_then = self.agent_history[0]
        agent_share = (self.agent_total - total_then) / max(now - since, window)
        if self.limits.agent_cpu_floor <= agent_share < self.limits.agent_cpu_ceiling and self.agent_active:
            # Averaged over a few seconds (blips are not work), dated by the last sample that
            # was work itself, not by the end of the window that averages it.
            self.saw("agent_cpu", self.agent_active)

    def last_evidence(self) -> float:
        return max([self.started, *self.last.values()])

    def limit(self) -> float:
        return self.limits.command_silent if self.command_running else self.limits.model_silent

    def due(self) -> float:
        """The monotonic time at which, with no new evidence, the agent counts as stalled."""
        return self.last_evidence() + self.limit()

    def verdict(self, now: float) -> Verdict:
        age = now - self.last_evidence()
        limit = self.limit()
        return Verdict(stalled=age >= limit, limit=limit, age=age, reason=self.describe(now))

    def describe(self, now: float) -> str:
        waiting = "a command is running" if self.command_running else "no command is running"
        seen = ", ".join(f"{name} {now - self.last[name]:.1f}s ago" if name in self.last
                         else f"{name} never" for name in SOURCES)
        return (f"no evidence of life for {now - self.last_evidence():.1f}s "
                f"(limit {self.limit():g}s, {waiting}); last seen: {seen}")

    def age(self, now: float) -> float:
        return now - self.last_evidence()


def sample_every(limits: Limits, configured: float) -> float:
    """How often files and CPU are sampled: as configured, but at least five times per stall
    limit, so a verdict lands within a fifth of the limit of the last evidence (and never more
    often than every 0.1 s)."""
    return max(0.1, min(configured, limits.model_silent / 5, limits.command_silent / 5))

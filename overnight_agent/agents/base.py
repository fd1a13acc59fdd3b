"""What every agent backend provides, and the typed vocabulary of an attempt.

Owns: the `Backend` protocol (argv for a fresh start and a resume, event parsing, outcome
classification, environment, session-store lookups), the event and outcome types.
Must not: run processes or touch state; backends are pure apart from reading their own
session store.

Each CLI differs (exit codes, signals, resume, where sessions live), so everything CLI-specific
sits behind this seam: Codex now, Claude Code and Gemini CLI later.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence

# Outcome kinds: how an attempt ended. Stable strings: they are stored in session.json.
COMPLETED = "completed"                  # the turn completed normally
TURN_FAILED = "turn_failed"              # the agent reported a failed turn (any exit status)
USAGE_LIMIT = "usage_limit"              # quota exhausted
RATE_LIMITED = "rate_limited"            # HTTP 429 / too many requests
SERVER_ERROR = "server_error"            # 5xx / overloaded after the CLI's own retries
NETWORK_DOWN = "network_down"            # connection refused / network unreachable
UNKNOWN_THREAD = "unknown_thread"        # resume of a thread the CLI does not know
THREAD_BUSY = "thread_busy"              # another live process still writes the thread
THREAD_MISMATCH = "thread_mismatch"      # a resume printed another thread id than asked
CRASHED_BEFORE_THREAD = "crashed_before_thread"  # died before announcing a thread
EXITED_EARLY = "exited_early"            # exit 0 without a completed turn
CRASHED = "crashed"                      # non-zero exit after the thread started
KILLED = "killed"                        # died by a signal we did not send
STOPPED = "stopped"                      # we stopped it (deadline, operator signal)
STALLED = "stalled"                      # we stopped it: no evidence of life for too long
SUPERVISOR_LOST = "supervisor_lost"      # the supervisor died while this attempt ran


@dataclass(frozen=True)
class Event:
    """One parsed line of the agent's machine-readable output."""

    kind: str                      # thread_started | turn_started | item | turn_completed | turn_failed | error | other
    thread_id: Optional[str] = None
    message: Optional[str] = None
    usage: Optional[Dict[str, int]] = None
    item_type: Optional[str] = None
    phase: Optional[str] = None    # for items: "started" | "completed"


@dataclass
class AttemptView:
    """Everything the supervisor observed of one attempt, the input to classification."""

    kind: str                                  # "start" | "resume"
    expected_thread: Optional[str] = None
    thread_id: Optional[str] = None
    turn_completed: bool = False
    turn_failed: Optional[str] = None
    errors: List[str] = field(default_factory=list)
    usage: Optional[Dict[str, int]] = None
    stderr_tail: str = ""
    returncode: Optional[int] = None           # Popen style: negative = killed by that signal
    stopped_for: Optional[str] = None          # why we stopped it, if we did

    def observe(self, event: Event) -> None:
        if event.kind == "thread_started" and self.thread_id is None:
            self.thread_id = event.thread_id
        elif event.kind == "turn_completed":
            self.turn_completed = True
            self.usage = event.usage or self.usage
        elif event.kind == "turn_failed":
            self.turn_failed = event.message or "turn failed"
        elif event.kind == "error" and event.message:
            self.errors = (self.errors + [event.message])[-20:]


@dataclass(frozen=True)
class Outcome:
    kind: str
    detail: str = ""


class Backend(Protocol):
    name: str
    has_threads: bool              # False: no resumable conversation (a plain command)

    def start_argv(self, prompt: str) -> List[str]: ...

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]: ...

    def parse_line(self, line: str) -> Optional[Event]: ...

    def classify(self, view: AttemptView) -> Outcome: ...

    def environment(self, base: Dict[str, str]) -> Dict[str, str]: ...

    def progress_files(self, thread_id: Optional[str]) -> List[Path]: ...

    def find_thread(self, cwd: Path) -> Optional[str]: ...

    def after_attempt(self, worktree: Path) -> Sequence[str]: ...

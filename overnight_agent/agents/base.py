"""What every agent backend provides, and the typed vocabulary of an attempt.

Owns: the `Backend` protocol (argv for a fresh start and a resume, event parsing, outcome
classification, environment, session-store lookups) and what a backend can do (`Capabilities`),
the event, stop-reason and outcome types, how an attempt we stopped ended (`stopped_outcome`),
the environment every agent CLI may see (`ENV_ALLOWLIST`), and the small helpers the backends
read events and word outcomes with (`json_object`, `text_field`, `first_line`, `last_line`,
`first_match_line`, `failure_kind`).
Must not: run processes or touch state; backends are pure apart from reading their own
session store.

Each CLI differs (exit codes, signals, resume, where sessions live), so everything CLI-specific
sits behind this seam: Codex, Claude Code, Gemini CLI and any argv (`command`). The supervisor asks a
backend's capabilities, never its class.
"""
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Pattern, Protocol, Sequence, Tuple

# Passed through to an agent CLI when set; everything else in the supervisor's environment stays
# out (each backend adds what its CLI needs: provider keys, its home folder).
ENV_ALLOWLIST = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ",
                 "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS")
ENV_PREFIX_ALLOWLIST = ("LC_",)


def allowed_environment(base_env: Dict[str, str], extra: Sequence[str] = ()) -> Dict[str, str]:
    """The allowlisted part of `base_env`, plus the variables named in `extra` that are set."""
    return {k: v for k, v in base_env.items()
            if k in ENV_ALLOWLIST or k.startswith(ENV_PREFIX_ALLOWLIST) or k in extra}


class StopReason(str, enum.Enum):
    """Why the supervisor stopped an attempt (its value is what the attempt's detail says)."""

    DEADLINE = "deadline"                # the night is over
    SIGNAL = "signal"                    # the operator (or the service manager) stopped us
    STALL = "stall"                      # no evidence of life for the stall limit
    THREAD_MISMATCH = "thread_mismatch"  # a resume announced another thread than asked
    NETWORK_DOWN = "network_down"        # waiting for the network longer than its limit

    @property
    def ends_night(self) -> bool:
        return self in (StopReason.DEADLINE, StopReason.SIGNAL)


@dataclass(frozen=True)
class Capabilities:
    """What the supervisor may rely on a backend for."""

    threads: bool         # one conversation, resumed by id (and found in the CLI's session store)
    event_stream: bool    # stdout is machine-readable events, one per line
    # The supervisor names the conversation before a fresh start (`new_thread_id`, passed to
    # `start_argv`): claude --session-id, gemini --session-id. Codex names its own thread.
    picks_thread_id: bool = False

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
NOT_STARTED = "not_started"              # could not be started (binary missing, not executable)
AUTH_FAILED = "auth_failed"              # the provider refused the credentials (401, 403, no key)
REFUSED = "refused"                      # the CLI refuses a setting it will never accept (claude's bypass as root)
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
    command: bool = False          # the item is a command the agent runs
    network_wait: bool = False     # a retry notice: the CLI is waiting for the network

    @property
    def progress(self) -> bool:
        """Evidence of life: anything but a retry notice (a CLI that retries forever would
        otherwise look alive forever)."""
        return self.kind != "error"


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
    stopped_for: Optional[StopReason] = None   # why we stopped it, if we did
    stop_detail: str = ""                      # what the stop reason saw (a stall's evidence)

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


def stopped_outcome(view: AttemptView) -> Outcome:
    """How an attempt we stopped ended: the stop reason decides the kind."""
    reason, detail = view.stopped_for, view.stop_detail
    if reason == StopReason.STALL:
        return Outcome(STALLED, f"stall: {detail}")
    if reason == StopReason.NETWORK_DOWN:
        return Outcome(NETWORK_DOWN, f"network_down: {detail}")
    if reason == StopReason.THREAD_MISMATCH:
        return Outcome(THREAD_MISMATCH, "the resume announced another thread than asked")
    return Outcome(STOPPED, reason.value)


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def new_thread_id(self) -> Optional[str]: ...

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]: ...

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]: ...

    def parse_line(self, line: str) -> Optional[Event]: ...

    def classify(self, view: AttemptView) -> Outcome: ...

    def environment(self, base: Dict[str, str]) -> Dict[str, str]: ...

    def progress_files(self, thread_id: Optional[str]) -> List[Path]: ...

    def find_thread(self, cwd: Path) -> Optional[str]: ...

    def after_attempt(self, worktree: Path) -> Sequence[str]:
        """Once the attempt's processes are gone: remove what it left that would trouble the next
        one (codex's sandbox stubs in the worktree, a lock in gemini's home); return their names."""
        ...


# --- text helpers shared by the backends ----------------------------------------------------------

def json_object(line: str) -> Optional[Dict[str, Any]]:
    """The JSON object on one line of an agent's stdout; None for anything else (not JSON, nested
    too deep to parse, or not an object)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested a thousand levels deep
        return None
    return data if isinstance(data, dict) else None


def text_field(value) -> str:
    """A string field of an event; "" when it holds anything else (str() of a nested object could
    recurse as deep as the JSON did)."""
    return value if isinstance(value, str) else ""


def first_line(text: str) -> str:
    """The first line of `text`, stripped, at most 300 characters ("" when there is none)."""
    return (text.strip().splitlines() or [""])[0][:300]


def last_line(text: str) -> str:
    """The last non-blank line of `text`, at most 300 characters ("no output" when there is none)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def first_match_line(text: str, pattern: Pattern[str]) -> str:
    """The first line of `text` that `pattern` finds something in, stripped, at most 300
    characters ("" when none does)."""
    for line in text.splitlines():
        if pattern.search(line):
            return line.strip()[:300]
    return ""


def failure_kind(message: str, rules: Sequence[Tuple[Pattern[str], str]]) -> str:
    """The outcome kind of the first (pattern, kind) rule whose pattern finds something in a failed
    turn's message; `TURN_FAILED` when none does."""
    for pattern, kind in rules:
        if pattern.search(message):
            return kind
    return TURN_FAILED

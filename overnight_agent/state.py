"""The durable session state: `session.json`, the one source of truth about a night.

Owns: the state's shape, its phases and the transitions allowed between them (`Phase`,
`TRANSITIONS`, a requested `Step`), validating it on load, where a night's own files lie
(`RunLayout`), and writing it atomically (temp file, fsync, rename, fsync of the folder) so a
supervisor killed at any instant leaves either the old or the new file, never a torn one.
Must not: decide anything, run processes or git.
"""
import enum
import json
import os
import re
import reprlib
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import faults, timeparse
from .exitcodes import ConfigError

SCHEMA = 1

class Phase(str, enum.Enum):
    """Where a night is: `session.json`'s `state`, and the supervisor's phase, one and the same."""

    STARTING = "starting"      # setting up (lock, leftovers, worktrees); or restarted after a death
    BACKOFF = "backoff"        # between attempts, waiting for the next
    RUNNING = "running"        # an agent attempt is live
    STOPPING = "stopping"      # stopping the attempt (stall, wrong thread, no network, deadline, signal)
    STOPPED = "stopped"        # ended by a signal before the deadline: resumable
    FINISHED = "finished"      # the deadline was reached (or the token budget spent)
    FAILED = "failed"          # gave up before the deadline (see the last attempt's outcome)

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @property
    def final(self) -> bool:
        """The supervisor's loop ends here (a later `run` may resume the night)."""
        return self in (Phase.STOPPED, Phase.FINISHED, Phase.FAILED)


STARTING, BACKOFF, RUNNING, STOPPING = Phase.STARTING, Phase.BACKOFF, Phase.RUNNING, Phase.STOPPING
STOPPED, FINISHED, FAILED = Phase.STOPPED, Phase.FINISHED, Phase.FAILED
STATES = tuple(p.value for p in Phase)
LIVE = (STARTING, BACKOFF, RUNNING, STOPPING)

# Every change of a night's state, and why it may happen. `transition` refuses any other.
TRANSITIONS = {
    STARTING: {BACKOFF: "set up: the loop starts",
               FAILED: "the service manager gave up on a night no supervisor runs (notify-failure)",
               FINISHED: "closed by the next start: the deadline passed while no supervisor ran",
               STOPPED: "closed by the next start: replaced by a fresh night (--no-resume)"},
    BACKOFF: {RUNNING: "an attempt started",
              STOPPED: "a signal; or closed by the next start (--no-resume)",
              FINISHED: "the deadline, or the token budget spent; or closed by the next start past it",
              FAILED: "an attempt could not start and the night cannot go on, or the service "
                      "manager gave up on it (notify-failure)",
              STARTING: "a new supervisor took over after this one died"},
    RUNNING: {STOPPING: "a stall, a wrong thread, no network, the deadline or a signal",
              BACKOFF: "the attempt ended by itself; another will start",
              FINISHED: "the attempt ended and the token budget is spent; or closed by the next "
                        "start: the deadline passed while no supervisor ran",
              STOPPED: "closed by the next start: replaced by a fresh night (--no-resume)",
              FAILED: "the attempt ended and the night cannot go on (a usage limit past the deadline), "
                      "or notify-failure",
              STARTING: "a new supervisor took over after this one died"},
    STOPPING: {BACKOFF: "stopped to resume (a stall, a wrong thread, no network)",
               STOPPED: "stopped for a signal; or closed by the next start (--no-resume)",
               FINISHED: "stopped for the deadline; or closed by the next start past it",
               FAILED: "stopped, and the night cannot go on; or notify-failure",
               STARTING: "a new supervisor took over after this one died"},
    STOPPED: {STARTING: "`run` again before the deadline"},
    FINISHED: {STARTING: "`run` again before the deadline (a night that spent its budget ends at once)"},
    FAILED: {STARTING: "`run` again before the deadline"},
}


@dataclass(frozen=True)
class Step:
    """A transition a tick asks for: the phase, why, and whether the state must be on disk now
    (a restart with no wait is saved by the next attempt's write a moment later)."""

    phase: Phase
    reason: str
    durable: bool = True


def transition(session: "Session", new: Phase, why: str) -> Phase:
    """Move `session` to `new`, or raise ValueError when the table does not allow it; returns
    the state it left. Staying where it is is no change (and always allowed)."""
    old = Phase(session.state)
    if new != old and new not in TRANSITIONS[old]:
        raise ValueError(f"state: {old.value} -> {new.value} is not a transition of a night ({why})")
    session.state = new.value
    return old


def transition_table() -> str:
    """The table of transitions as Markdown (docs/how-it-works.md holds it; a test checks)."""
    rows = ["| from | to | when |", "|---|---|---|"]
    for old, targets in TRANSITIONS.items():
        for new, when in targets.items():
            rows.append(f"| `{old.value}` | `{new.value}` | {when} |")
    return "\n".join(rows) + "\n"


@dataclass
class Attempt:
    """One run of the agent CLI: a fresh start or a resume."""

    number: int
    kind: str                       # "start" | "resume"
    started_at: str
    log: str
    pid: Optional[int] = None
    pgid: Optional[int] = None
    proc_create_time: Optional[float] = None
    thread_id: Optional[str] = None
    ended_at: Optional[str] = None
    outcome: Optional[str] = None   # see agents.Outcome kinds
    detail: Optional[str] = None
    exit_code: Optional[int] = None
    usage: Optional[Dict[str, int]] = None


@dataclass
class Session:
    run_id: str
    repo_root: str
    deadline: str                   # ISO 8601 with UTC offset
    wrap_up_at: str
    session_worktree: str
    session_branch: str
    ops_journal_worktree: str
    ops_journal_branch: str
    base_branch: str
    base_commit: str
    agent: str
    model: str
    model_reasoning_effort: str
    sandbox: str
    created_at: str
    state: str = STARTING
    thread_id: Optional[str] = None
    restarts: int = 0               # supervisor (re)starts after the first
    supervisor_pid: Optional[int] = None
    tag: str = ""                   # environment tag carried by every agent descendant
    exec_summary_log: str = ""      # absolute, inside the ops-journal worktree
    reports_dir: str = ""           # absolute, inside the ops-journal worktree
    heartbeat_file: str = ""
    git_identity: Dict[str, str] = field(default_factory=dict)
    wrap_up_sent: bool = False
    messages_delivered: int = 0     # lines of runs/<run_id>/told.jsonl put into a prompt so far
    fresh_starts: int = 0           # new threads started because a resume failed
    branches_at_start: Optional[List[str]] = None  # overnight/* branches before the night (publish skips them)
    attempts: List[Attempt] = field(default_factory=list)
    events: List[Dict[str, Any]] = field(default_factory=list)  # notable decisions, for the report
    schema: int = SCHEMA

    @property
    def deadline_dt(self):
        return timeparse.parse_iso(self.deadline)

    @property
    def wrap_up_dt(self):
        return timeparse.parse_iso(self.wrap_up_at)

    def last_attempt(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    def note(self, event: str, when: str, **fields: Any) -> None:
        self.events.append({"event": event, "at": when, **fields})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunLayout:
    """Where one night's own files live: `<run_root>/runs/<run_id>/`. Built once per night;
    every module asks it rather than joining names of its own."""

    root: Path

    @property
    def agent_dir(self) -> Path:
        """The one folder under run_root the agent may write (its heartbeat, its records)."""
        return self.root / "agent"

    @property
    def heartbeat(self) -> Path:
        return self.agent_dir / "heartbeat"

    @property
    def secret_events(self) -> Path:
        """The journal's redactions and refusals (kinds and counts, never values)."""
        return self.agent_dir / "events.jsonl"

    @property
    def branches_file(self) -> Path:
        """The run's work-item branches (written by the agent's hooks and `branch`)."""
        return self.agent_dir / "branches.json"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def inbox(self) -> Path:
        """The operator's messages for the agent (`tell`)."""
        return self.root / "told.jsonl"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def guard_dir(self) -> Path:
        return self.root / "guard"

    @property
    def archived_session(self) -> Path:
        """Where a night's session.json is kept once another night starts."""
        return self.root / "session.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @classmethod
    def of_session(cls, session: "Session", session_path: Optional[Path] = None) -> Optional["RunLayout"]:
        """A night's layout from its state: the heartbeat it recorded lies in it (else the
        `runs/<run_id>` beside `session_path`; None without either)."""
        if session.heartbeat_file:
            return cls(Path(session.heartbeat_file).parent.parent)
        return cls(session_path.parent / "runs" / session.run_id) if session_path else None



_REQUIRED = ("run_id", "repo_root", "deadline", "wrap_up_at", "session_worktree", "session_branch",
             "ops_journal_worktree", "ops_journal_branch", "base_branch", "base_commit", "agent",
             "model", "model_reasoning_effort", "sandbox", "created_at", "state")


_NULL = type(None)
# What JSON holds in each other field (a missing one takes its default). A wrong type would not
# fail here but later, in whoever reads it: status, a resuming supervisor, the report.
_FIELDS = {"thread_id": (str, _NULL), "restarts": (int,), "supervisor_pid": (int, _NULL), "tag": (str,),
           "exec_summary_log": (str,), "reports_dir": (str,), "heartbeat_file": (str,),
           "wrap_up_sent": (bool,), "messages_delivered": (int,), "fresh_starts": (int,), "schema": (int,),
           "branches_at_start": (list, _NULL)}
_ATTEMPT_REQUIRED = ("number", "kind", "started_at", "log")
_ATTEMPT_FIELDS = {"number": (int,), "kind": (str,), "started_at": (str,), "log": (str,),
                   "pid": (int, _NULL), "pgid": (int, _NULL), "proc_create_time": (float, _NULL),
                   "thread_id": (str, _NULL), "ended_at": (str, _NULL), "outcome": (str, _NULL),
                   "detail": (str, _NULL), "exit_code": (int, _NULL), "usage": (dict, _NULL)}
_PIDS = ("supervisor_pid", "pid", "pgid")
_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
          dict: "an object", list: "a list", _NULL: "null"}
_ASIDE = "move the file aside (or use --no-resume) to start fresh"
_REPR = reprlib.Repr()   # bounded in depth too: a value may nest as deep as JSON lets it
_REPR.maxstring = _REPR.maxother = 80


def _shown(value: Any) -> str:
    """A value of the file as a one-line message quotes it: never longer than a reader needs."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else f"{text[:60]} ... {text[-56:]}"


def _check_fields(data: Dict[str, Any], fields: Dict[str, tuple], where: str, source: str) -> None:
    """Each field present holds its JSON type (a float field takes 1 for 1.0; an int one no `true`)."""
    for key, kinds in fields.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool):
            wrong = bool not in kinds
        else:
            wrong = not isinstance(value, kinds + ((int,) if float in kinds else ()))
        if key in _PIDS and not wrong and value is not None:
            wrong = not 0 < value < 2 ** 31
        if wrong:
            expected = "a process id" if key in _PIDS else " or ".join(_KINDS[kind] for kind in kinds)
            raise ConfigError(f"{source}: {where}{key}: expected {expected}; {_ASIDE}")


def from_dict(data: Any, source: str) -> Session:
    """Validate a loaded `session.json`; errors name the file and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object; move the file aside to start fresh")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise ConfigError(f"{source}: schema: {_shown(data.get('schema'))} is not {SCHEMA}; "
                          "written by another version: move it aside to start fresh")
    for key in _REQUIRED:
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{source}: {key}: missing or not a string; {_ASIDE}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", data["run_id"]):  # gc removes runs/<run_id>
        raise ConfigError(f"{source}: run_id: {_shown(data['run_id'])} is not a run id (a folder name "
                          f"like 20261201_230000_a1b2c3); {_ASIDE}")
    if data["state"] not in STATES:
        raise ConfigError(f"{source}: state: {_shown(data['state'])} is not one of {', '.join(STATES)}")
    for key in ("deadline", "wrap_up_at", "created_at"):
        try:
            year = timeparse.parse_iso(data[key]).year
        except ValueError:
            year = 0
        if not 1 < year < 9999:  # a day from either end of the calendar: any zone can show it
            raise ConfigError(f"{source}: {key}: {_shown(data[key])} is not an ISO 8601 time "
                              "with UTC offset")
    _check_fields(data, _FIELDS, "", source)
    for key in _REQUIRED + tuple(_FIELDS):
        if isinstance(data.get(key), str) and "\0" in data[key]:  # paths, branches, argv: all refuse it
            raise ConfigError(f"{source}: {key}: holds a NUL character; {_ASIDE}")
    if not all(isinstance(name, str) for name in data.get("branches_at_start") or ()):
        raise ConfigError(f"{source}: branches_at_start: expected a list of branch names; {_ASIDE}")
    identity = data.get("git_identity", {})
    if not isinstance(identity, dict) or not all(isinstance(v, str) for v in identity.values()):
        raise ConfigError(f"{source}: git_identity: expected an object of strings; {_ASIDE}")
    events = data.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ConfigError(f"{source}: events: expected a list of objects; {_ASIDE}")
    attempts = data.get("attempts", [])
    if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
        raise ConfigError(f"{source}: attempts: expected a list of objects; {_ASIDE}")
    for i, attempt in enumerate(attempts):
        for key in _ATTEMPT_REQUIRED:
            if key not in attempt:
                raise ConfigError(f"{source}: attempts[{i}].{key}: missing; {_ASIDE}")
        _check_fields(attempt, _ATTEMPT_FIELDS, f"attempts[{i}].", source)
        if not all(type(v) is int for v in (attempt.get("usage") or {}).values()):  # the budget adds them up
            raise ConfigError(f"{source}: attempts[{i}].usage: expected an object of whole numbers; "
                              f"{_ASIDE}")
    known = set(Session.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in known and k != "attempts"}
    try:
        values["attempts"] = [Attempt(**{k: v for k, v in a.items()
                                         if k in Attempt.__dataclass_fields__}) for a in attempts]
        return Session(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: attempts: {exc}") from None


def load(path: Path) -> Optional[Session]:
    """The session in `path`, None when there is none; a clear error when it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read session state ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); nothing was overwritten: "
                          f"{_ASIDE}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); nothing was overwritten: {_ASIDE}") from None
    except RecursionError:  # the decoder recurses once per level of [[[...
        raise ConfigError(f"{path}: not valid JSON (nested too deeply); nothing was overwritten: "
                          f"{_ASIDE}") from None
    return from_dict(data, str(path))


def write_atomic(path: Path, text: str, label: str = "") -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        faults.point("state.before_rename")
        if label:
            faults.point(f"state.before_rename.{label}")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: Path, session: Session, label: str = "") -> None:
    write_atomic(path, json.dumps(session.to_dict(), indent=2, sort_keys=False) + "\n", label)


def fail_for_want_of_space(path: Path, session: Session, reason: str, now_iso: str,
                           attempt_running: bool) -> str:
    """A write failed for want of space and the agent is stopped: the night is marked failed
    if session.json can still be written, else the last state written stands (a restart
    resumes from it). Says which, for the one-line message."""
    last = session.last_attempt()
    if attempt_running and last is not None and last.outcome is None:
        last.outcome, last.ended_at, last.detail = "stopped", now_iso, reason
    try:
        transition(session, Phase.FAILED, reason)
        session.note("night.failed", now_iso, reason=reason)
        save(path, session, Phase.FAILED.value)
        return "the night is marked failed in session.json"
    except OSError:
        return "session.json keeps the last state written"

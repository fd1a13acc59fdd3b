"""The Claude Code backend (`claude -p --output-format stream-json --verbose`, measured against
@anthropic-ai/claude-code 2.1.328 with a loopback Messages API).

Owns: the exact argv of a fresh start (`--session-id` chosen here, up front) and of a resume
(`--resume <id>`), with model, effort, permission mode and allowed tools on every call (the
permission mode is not stored with a session); mapping stream-json lines to events; typing how
an attempt ended (from the `result` line's `is_error`, never from the exit status alone); the
environment claude gets (its own CLAUDE_CONFIG_DIR, a per-run TMPDIR, no non-essential traffic,
bounded retries); the session transcript as evidence of progress; the root refusal of
`bypassPermissions` (`root_refusal`).
Must not: start processes, write state, or widen permissions behind the operator's back (as root
bypassPermissions is refused by the CLI; it is reported, never replaced or forced with
IS_SANDBOX=1).
"""
import datetime as dt
import os
import re
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import base
from .base import (AttemptView, Event, Outcome, first_line, first_match_line, last_line,
                   text_field)

VERSION = "2.1.328"
PROVIDER_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL")
# No DNS lookup or connection anywhere but ANTHROPIC_BASE_URL (measured with strace: only
# CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC removes them all; the others are belt and braces).
QUIET_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
             "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
# Bounded waits (the defaults: 10 retries, about 3 minutes for a 429/5xx/refused connection and
# up to an hour against a silent server). The supervisor backs off between attempts itself.
# An operator who passes one of these through (claude.env_passthrough) keeps their value.
RETRY_ENV = {"CLAUDE_CODE_MAX_RETRIES": "3", "API_TIMEOUT_MS": "300000",
             "CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS": "300000"}
BYPASS_FLAGS = ("--dangerously-skip-permissions", "--allow-dangerously-skip-permissions")

_SESSION_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UNKNOWN_SESSION = re.compile(r"No conversation found with session ID|--resume requires a valid session", re.I)
_SESSION_IN_USE = re.compile(r"Session ID \S+ is already in use", re.I)
_ROOT_REFUSAL = re.compile(r"cannot be used with root/sudo privileges", re.I)
_USAGE_LIMIT = re.compile(r"usage limit|limit reached|hit your (usage )?limit|out of (extra )?usage", re.I)
_RATE_LIMIT = re.compile(r"\b429\b|rate.?limit|too many requests", re.I)
_AUTH = re.compile(r"\b40[13]\b|invalid api key|not logged in|authentication|permission_error|"
                   r"oauth token", re.I)
_SERVER = re.compile(r"\b5\d\d\b|overloaded|internal server error|service unavailable|server-side", re.I)
_NETWORK = re.compile(r"ECONNREFUSED|ECONNRESET|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|connection (refused|dropped|error)|"
                      r"request timed out|stream idle timeout|network", re.I)
_RESET_EPOCH = re.compile(r"\|(\d{10})\b")
_RESET_CLOCK = re.compile(r"resets?\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap]m)\b", re.I)


def mangle(cwd: str) -> str:
    """The project folder name claude gives a cwd: every non-alphanumeric character a '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def root_refusal(permission_mode: str, extra_args: Sequence[str], euid: int,
                 env: Dict[str, str]) -> Optional[str]:
    """Why claude will refuse to start (running as root with a bypass of its permission checks,
    without IS_SANDBOX=1 passed through), or None. For `doctor` and the config check."""
    args = list(extra_args)
    asks = (permission_mode == "bypassPermissions" or any(arg in BYPASS_FLAGS for arg in args)
            or "--permission-mode=bypassPermissions" in args
            or any(a == "--permission-mode" and b == "bypassPermissions" for a, b in zip(args, args[1:])))
    if not asks or euid != 0 or env.get("IS_SANDBOX") == "1":
        return None
    return ("claude.permission_mode bypassPermissions is refused by Claude Code as root "
            "(\"--dangerously-skip-permissions cannot be used with root/sudo privileges\"); run the "
            "night as another user, or use acceptEdits with claude.allowed_tools (the default), or, "
            "only inside a throwaway sandbox, set IS_SANDBOX=1 and list it in claude.env_passthrough")


class ClaudeBackend:
    name = "claude"
    capabilities = base.Capabilities(threads=True, event_stream=True, picks_thread_id=True)

    def __init__(self, *, claude_bin: str, config_dir: Path, worktree: Path, run_dir: Path, model: str,
                 effort: Optional[str] = None, permission_mode: str = "acceptEdits",
                 allowed_tools: Sequence[str] = (), extra_args: Sequence[str] = (),
                 env_passthrough: Sequence[str] = ()):
        self.claude_bin = claude_bin
        self.config_dir = Path(config_dir)
        self.worktree = Path(worktree)
        self.run_dir = Path(run_dir)
        self.model = model
        self.effort = effort or None
        self.permission_mode = permission_mode
        self.allowed_tools = [tool for tool in allowed_tools if tool]
        self.extra_args = list(extra_args)
        self.env_passthrough = list(env_passthrough)
        self._transcripts: Dict[str, Path] = {}  # session id -> its transcript, once found
        self._bash_calls: List[str] = []          # tool_use ids of Bash calls not answered yet
        self._session: Optional[str] = None       # the session of the lines being parsed
        self._usage: Dict[str, Dict[str, int]] = {}  # session id -> usage summed over results

    @classmethod
    def for_night(cls, cfg, night) -> "ClaudeBackend":
        section = cfg.claude
        return cls(claude_bin=night.binary or section.bin, config_dir=night.state_home,
                   worktree=night.worktree, run_dir=night.run_dir, model=night.model or section.model,
                   effort=night.effort or section.effort, permission_mode=section.permission_mode,
                   allowed_tools=section.allowed_tools, extra_args=section.extra_args,
                   env_passthrough=section.env_passthrough)

    # --- argv -------------------------------------------------------------------------------

    def new_thread_id(self) -> str:
        return str(uuid.uuid4())

    def _pinned(self) -> List[str]:
        """Model, effort and permissions: repeated on every call. A resume restores the model
        but not the permission mode (measured: without it a resumed Bash write is denied)."""
        args = ["--model", self.model]
        if self.effort:
            args += ["--effort", self.effort]
        args += ["--permission-mode", self.permission_mode]
        if self.allowed_tools:
            # Variadic: one value per tool, ended by the next option (or the `--` before the prompt).
            args += ["--allowedTools", *self.allowed_tools]
        return args + self.extra_args

    def _argv(self, session_flag: str, session_id: str, prompt: str) -> List[str]:
        return [self.claude_bin, "-p", "--output-format", "stream-json", "--verbose",
                session_flag, session_id, *self._pinned(), "--", prompt]

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]:
        if not thread_id or not _SESSION_ID.fullmatch(thread_id):
            raise ValueError("claude needs the session id chosen up front (new_thread_id), "
                             f"got {thread_id!r}")
        return self._argv("--session-id", thread_id, prompt)

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]:
        if not _SESSION_ID.fullmatch(thread_id or ""):
            raise ValueError(f"not a Claude Code session id: {thread_id!r}")
        return self._argv("--resume", thread_id, prompt)

    # --- events and outcomes ------------------------------------------------------------------

    def parse_line(self, line: str) -> Optional[Event]:
        """The event on one stream-json line; None for a line that is not a JSON object. A field
        of the wrong type reads as absent."""
        data = base.json_object(line)
        if data is None:
            return None
        kind, subtype = data.get("type"), data.get("subtype")
        if kind == "system" and subtype == "init":
            session = text_field(data.get("session_id"))
            session = session if _SESSION_ID.fullmatch(session) else None
            self._session, self._bash_calls = session, []
            return Event("thread_started", thread_id=session)
        if kind == "system" and subtype == "api_retry":
            status = data.get("error_status")
            status = status if type(status) is int else None
            message = (f"API retry {_int(data.get('attempt'))}/{_int(data.get('max_retries'))}: "
                       f"{status if status is not None else 'no response'} {text_field(data.get('error'))}").strip()
            return Event("error", message=message, network_wait=status is None)
        if kind == "system" and subtype == "permission_denied":
            return Event("error", message=f"permission denied: {text_field(data.get('tool_name'))}: "
                                          f"{first_line(text_field(data.get('message')))}")
        if kind == "assistant":
            return self._assistant(data)
        if kind == "user":
            return self._user(data)
        if kind == "result":
            return self._result(data)
        return Event("other")

    def _blocks(self, data) -> list:
        message = data.get("message") if isinstance(data.get("message"), dict) else {}
        content = message.get("content")
        return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []

    def _assistant(self, data) -> Event:
        """One line per content block: text, thinking, or a tool call (Bash = a command)."""
        for block in self._blocks(data):
            if block.get("type") == "tool_use":
                name = text_field(block.get("name"))
                if name == "Bash":
                    self._bash_calls = (self._bash_calls + [text_field(block.get("id"))])[-50:]
                    command = block.get("input", {}).get("command") if isinstance(block.get("input"), dict) else ""
                    return Event("item", item_type="command_execution", phase="started", command=True,
                                 message=text_field(command)[:300] or None)
                return Event("item", item_type="tool_use", phase="started", message=name or None)
            if block.get("type") == "text":
                return Event("item", item_type="agent_message", phase="completed",
                             message=text_field(block.get("text"))[:300] or None)
            if block.get("type") in ("thinking", "redacted_thinking"):
                return Event("item", item_type="reasoning", phase="completed")
        return Event("item", item_type="assistant", phase="completed")

    def _user(self, data) -> Event:
        """Tool results (the answer to a call: a Bash call ends here) and interruption notes."""
        for block in self._blocks(data):
            if block.get("type") == "tool_result":
                call = text_field(block.get("tool_use_id"))
                if call and call in self._bash_calls:
                    self._bash_calls.remove(call)
                    return Event("item", item_type="command_execution", phase="completed", command=True)
                return Event("item", item_type="tool_result", phase="completed")
            if block.get("type") == "text" and text_field(block.get("text")).startswith("[Request interrupted"):
                # SIGINT: the result line that should follow is not guaranteed (measured: missing
                # in about 1 run in 12 mid-command, always while waiting on the API).
                return Event("turn_failed", message="interrupted: " + text_field(block.get("text"))[:200])
        return Event("other")

    def _result(self, data) -> Event:
        session = text_field(data.get("session_id"))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        counts = {k: v for k, v in usage.items() if type(v) is int and k.endswith("_tokens")}
        self._bash_calls = []
        if data.get("is_error") is False:
            # Each result counts this process's usage only: sum them per session, so the totals
            # are cumulative per thread as the budget expects (codex's are).
            key = session if _SESSION_ID.fullmatch(session) else (self._session or "")
            total = self._usage.setdefault(key, {})
            for name, count in counts.items():
                total[name] = total.get(name, 0) + count
            return Event("turn_completed", usage=dict(total) or None)
        return Event("turn_failed", message=_failure_text(data))

    def classify(self, view: AttemptView) -> Outcome:
        rc = view.returncode
        if view.stopped_for:
            return base.stopped_outcome(view)
        if view.thread_id and view.expected_thread and view.thread_id != view.expected_thread:
            return Outcome(base.THREAD_MISMATCH, f"asked {view.expected_thread}, got {view.thread_id}")
        stderr = view.stderr_tail
        if _ROOT_REFUSAL.search(stderr):
            return Outcome(base.REFUSED, "refused as root: " + first_match_line(stderr, _ROOT_REFUSAL)
                           + " (bypassPermissions needs a non-root user, or IS_SANDBOX=1 in a sandbox; "
                             "see docs/claude-code.md)")
        if _UNKNOWN_SESSION.search(view.turn_failed or "") or (
                view.thread_id is None and _UNKNOWN_SESSION.search(stderr)):
            return Outcome(base.UNKNOWN_THREAD, first_match_line((view.turn_failed or "") + "\n" + stderr,
                                                                  _UNKNOWN_SESSION))
        if view.thread_id is None and _SESSION_IN_USE.search(stderr):
            return Outcome(base.THREAD_BUSY, first_match_line(stderr, _SESSION_IN_USE)
                           + " (its transcript exists: resume it)")
        if view.turn_failed is not None:
            return _failed(view.turn_failed)
        if view.turn_completed:
            denied = [e for e in view.errors if e.startswith("permission denied:")]
            note = f"; {len(denied)} tool call(s) denied, last: {denied[-1][:200]}" if denied else ""
            return Outcome(base.COMPLETED, f"exit {rc}{note}")
        if rc is not None and rc < 0:
            return Outcome(base.KILLED, f"signal {-rc}")
        if view.thread_id is None:
            return Outcome(base.CRASHED_BEFORE_THREAD, f"exit {rc}: {last_line(stderr)}")
        if rc == 0:
            return Outcome(base.EXITED_EARLY, "exit 0 without a result line (interrupted while waiting "
                                              "on the API?)")
        if rc is not None and rc > 128 and rc - 128 in (1, 2, 9, 15):
            return Outcome(base.KILLED, f"signal {rc - 128} (exit {rc}, no result line)")
        if view.errors and _NETWORK.search(view.errors[-1]):
            return Outcome(base.NETWORK_DOWN, first_line(view.errors[-1]))
        return Outcome(base.CRASHED, f"exit {rc}: {last_line(stderr)}")

    # --- environment and session store ---------------------------------------------------------

    def environment(self, base_env: Dict[str, str]) -> Dict[str, str]:
        """The allowlist, the Anthropic variables, what the operator passes through; then the
        config dir, a TMPDIR of the run (claude creates it; sockets and per-project temp files
        go there), no non-essential traffic and bounded retries."""
        env = base.allowed_environment(base_env, (*PROVIDER_VARS, *self.env_passthrough))
        env["CLAUDE_CONFIG_DIR"] = str(self.config_dir)
        env["TMPDIR"] = str(self.run_dir / "tmp")
        env.update(QUIET_ENV)
        for key, value in RETRY_ENV.items():
            if key not in self.env_passthrough or key not in base_env:
                env[key] = value
        return env

    def find_thread(self, cwd: Path) -> Optional[str]:
        return None  # the supervisor names the session before starting it

    def after_attempt(self, worktree: Path) -> Sequence[str]:
        return ()

    def transcript_path(self, thread_id: str, cwd: Optional[Path] = None) -> Path:
        """Where claude writes the session: `$CLAUDE_CONFIG_DIR/projects/<cwd mangled>/<id>.jsonl`."""
        return self.config_dir / "projects" / mangle(str(cwd or self.worktree)) / f"{thread_id}.jsonl"

    def progress_files(self, thread_id: Optional[str]) -> List[Path]:
        """The session transcript: claude appends to it as messages and tool results arrive."""
        if not thread_id or not _SESSION_ID.fullmatch(thread_id):
            return []
        known = self._transcripts.get(thread_id)
        if known is not None and known.exists():
            return [known]
        for candidate in (self.transcript_path(thread_id),
                          self.transcript_path(thread_id, Path(os.path.realpath(self.worktree)))):
            if candidate.exists():
                self._transcripts[thread_id] = candidate
                return [candidate]
        projects = self.config_dir / "projects"
        found = sorted(projects.glob(f"*/{thread_id}.jsonl")) if projects.is_dir() else []
        if found:
            self._transcripts[thread_id] = found[0]
        return found[:1]


# --- the wording of failures ------------------------------------------------------------------------

def _failure_text(data) -> str:
    """A failed result as one line: `<terminal_reason or subtype> [<HTTP status>]: <text>`."""
    reason = text_field(data.get("terminal_reason")) or text_field(data.get("subtype")) or "error"
    status = data.get("api_error_status")
    text = text_field(data.get("result"))
    if not text:
        errors = data.get("errors") if isinstance(data.get("errors"), list) else []
        text = "; ".join(text_field(e) for e in errors if isinstance(e, str)) or "is_error: true"
    head = f"{reason} {status}" if type(status) is int else reason
    return f"{head}: {first_line(text)}"


def _failed(message: str) -> Outcome:
    """A failed turn's kind from its text (see `_failure_text`)."""
    if _USAGE_LIMIT.search(message):
        return Outcome(base.USAGE_LIMIT, usage_limit_detail(message))
    if _RATE_LIMIT.search(message):
        return Outcome(base.RATE_LIMITED, message[:300])
    if _AUTH.search(message):
        return Outcome(base.AUTH_FAILED, "authentication: " + message[:300])
    if _SERVER.search(message):
        return Outcome(base.SERVER_ERROR, message[:300])
    if _NETWORK.search(message):
        return Outcome(base.NETWORK_DOWN, message[:300])
    if message.startswith("aborted_tools"):
        return Outcome(base.TURN_FAILED, "interrupted: " + message[:300])
    if message.startswith("interrupted"):
        return Outcome(base.TURN_FAILED, message[:300])
    return Outcome(base.TURN_FAILED, message[:300])


_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _suffix(day: int) -> str:
    return "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def usage_limit_detail(message: str, now: Optional[dt.datetime] = None) -> str:
    """The message, with the reset moment restated in the words the policy reads (`try again at
    1:57 AM.`, or `try again at Sep 11th, 2026 12:26 AM.` on another day). Claude Code says it
    as `...|<epoch seconds>` or `... resets 3am`; without either, nothing is added (the night
    then ends: no reset time is known)."""
    head = message[:240]
    epoch = _RESET_EPOCH.search(message)
    if epoch:
        reset = dt.datetime.fromtimestamp(int(epoch.group(1))).astimezone()
        now = now or dt.datetime.now().astimezone()
        clock = f"{reset.hour % 12 or 12}:{reset.minute:02d} {'AM' if reset.hour < 12 else 'PM'}"
        if reset.date() != now.date():
            clock = f"{_MONTHS[reset.month - 1]} {reset.day}{_suffix(reset.day)}, {reset.year} {clock}"
        return f"{head}; try again at {clock}."
    clock = _RESET_CLOCK.search(message)
    if clock:
        hour, minute, half = int(clock.group(1)), int(clock.group(2) or 0), clock.group(3).upper()
        if 1 <= hour <= 12 and minute < 60:
            return f"{head}; try again at {hour}:{minute:02d} {half}."
    return head



def _int(value) -> str:
    return str(value) if type(value) is int else "?"

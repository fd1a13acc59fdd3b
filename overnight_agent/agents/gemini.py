"""The Gemini CLI backend (`gemini -p PROMPT -o stream-json`, measured against @google/gemini-cli
0.61.0 with a loopback mock of the Gemini API; see docs/gemini-cli.md).

Owns: the exact argv of a fresh start (`--session-id <uuid>` we pick) and of a resume
(`--resume <uuid>`, from the same cwd), the model and approval mode repeated on every call,
parsing the stream-json events, typing how an attempt ended (the last `result` event decides:
exit codes are HTTP statuses mod 256, and 0 on a cut stream or a signal), the environment the CLI
gets (its own home through GEMINI_CLI_HOME, one process, a per-run TMPDIR, trust), the keys of
its settings file that the night depends on (written into its home when the environment is
made and again after every attempt; the operator's other keys are kept), clearing the project
registry's lock a CLI left behind, and finding a session's chat files.
Must not: start processes or write anything but `<home>/.gemini/settings.json`, the per-run
TMPDIR folder and the removal of that left lock; stop the commands it runs (they live in sessions
of their own: the supervisor's tag sweep does, see procs.TAG_VAR).
"""
import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import procs
from . import base
from .base import (AttemptView, Event, Outcome, first_line, first_match_line, last_line,
                   text_field)

VERSION = "0.61.0"
PROVIDER_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")
# Either one makes the CLI strip every variable but its own allowlist from the commands it runs,
# our tag (procs.TAG_VAR) with them: the sweep would no longer find those commands.
STRICT_SANITIZING_VARS = ("GITHUB_SHA", "SURFACE")
MAX_ATTEMPTS_CAP = 10              # the CLI refuses more
SESSION_MAX_AGE = "30d"            # general.sessionRetention: far beyond any night
SHELL_TOOL = "run_shell_command"
# Every start takes `<home>/.gemini/projects.json.lock` (a folder, proper-lockfile) to look up the
# cwd's project. 0.61.0 can exit with it still there (seen after a clean rc 0 run, and after any
# SIGKILL). The next start then waits until it is 10 s old, retrying after 0.1, 0.2, 0.4 ... s:
# 13 to 51 s with no output. A holder that is alive touches it every 5 s.
REGISTRY_LOCK = "projects.json.lock"
REGISTRY_LOCK_STALE = 10.0

# Exit codes of 0.61.0 (ExitCodes in its source, and process.exit(HTTP status) for API errors).
RC_AUTH = 41
RC_INPUT = 42                      # unknown --resume id, or a --session-id that already exists
RC_CONFIG = 52
RC_TURN_LIMIT = 53

_SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
_UNKNOWN_SESSION = re.compile(r"Error resuming session|Invalid session identifier|"
                              r"No previous sessions found", re.I)
_SESSION_EXISTS = re.compile(r"Session ID .{0,140} already exists", re.I)
_AUTH = re.compile(r"\b40[13]\b|UNAUTHENTICATED|PERMISSION_DENIED|API key not valid|"
                   r"invalid auth method|must specify the GEMINI_API_KEY|auth(entication)? failed", re.I)
_USAGE_LIMIT = re.compile(r"exhausted your (daily )?quota|quota exceeded|QUOTA_EXHAUSTED|"
                          r"limit:\s*0(?![\d.])|INSUFFICIENT_G1_CREDITS", re.I)
_RATE_LIMIT = re.compile(r"\b429\b|RESOURCE_EXHAUSTED|Resource has been exhausted|rate.?limit|"
                         r"too many requests|Please wait and try again later", re.I)
_NETWORK = re.compile(r"fetch failed|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH|"
                      r"ECONNRESET|network is unreachable|socket hang up", re.I)
_SERVER = re.compile(r"\b5\d\d\b|INTERNAL|UNAVAILABLE|overloaded|high demand|"
                     r"ended without a finish reason|invalid stream|deadline exceeded|timed? ?out|"
                     r"exhausted your capacity|capacity exceeded", re.I)
# What a failed turn's message says, first match wins (`base.failure_kind`); none: turn_failed
# (auth (401/403), 400, the turn limit: the detail says which).
_FAILURE_KINDS = ((_USAGE_LIMIT, base.USAGE_LIMIT), (_RATE_LIMIT, base.RATE_LIMITED),
                  (_NETWORK, base.NETWORK_DOWN), (_SERVER, base.SERVER_ERROR))
# An API error with no `result` line (cut output): the exit status is the HTTP status & 0xFF.
_RC_HTTP = {429 & 0xFF: 429, **{code & 0xFF: code for code in (500, 502, 503, 504)}}


class GeminiBackend:
    name = "gemini"
    capabilities = base.Capabilities(threads=True, event_stream=True, picks_thread_id=True)

    def __init__(self, *, gemini_bin: str, home: Path, run_dir: Path, model: str,
                 approval_mode: str = "yolo", extra_args: Sequence[str] = (),
                 env_passthrough: Sequence[str] = (), max_attempts: int = 3):
        self.gemini_bin = gemini_bin
        self.home = Path(home)
        self.run_dir = Path(run_dir)
        self.model = model
        self.approval_mode = approval_mode
        self.extra_args = list(extra_args)
        self.env_passthrough = [name for name in env_passthrough if name not in STRICT_SANITIZING_VARS]
        self.max_attempts = max(1, min(int(max_attempts), MAX_ATTEMPTS_CAP))
        self._chats: Dict[str, Path] = {}  # session id -> its project's chats folder, once found
        self._session: Optional[str] = None  # the session the running attempt's `init` named

    @classmethod
    def for_night(cls, cfg, night) -> "GeminiBackend":
        section = cfg.gemini
        return cls(gemini_bin=night.binary or section.bin, home=night.state_home,
                   run_dir=night.run_dir, model=night.model or section.model,
                   approval_mode=section.approval_mode, extra_args=section.extra_args,
                   env_passthrough=section.env_passthrough,
                   max_attempts=section.max_attempts)

    # --- argv -------------------------------------------------------------------------------

    def new_thread_id(self) -> str:
        return str(uuid.uuid4())

    def _common(self, prompt: str) -> List[str]:
        """Prompt, model, output format and approval mode: nothing is stored with the session,
        so all of it goes on every call. `--prompt=` keeps a prompt that starts with `-` a value."""
        return [self.gemini_bin, f"--prompt={prompt}", "-m", self.model, "-o", "stream-json",
                "--approval-mode", self.approval_mode, *self.extra_args]

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]:
        argv = self._common(prompt)
        if thread_id is not None:
            argv += ["--session-id", _checked_id(thread_id)]
        return argv

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]:
        # By id, never `latest`: that silently starts a new session when the cwd has none.
        return self._common(prompt) + ["--resume", _checked_id(thread_id)]

    # --- events and outcomes ------------------------------------------------------------------

    def parse_line(self, line: str) -> Optional[Event]:
        """The event on one line of stdout; None for a line that is not a JSON object. A field of
        the wrong type reads as absent."""
        data = base.json_object(line)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "init":
            session = text_field(data.get("session_id"))
            self._session = session if _SESSION_ID.fullmatch(session) else None
            return Event("thread_started", thread_id=self._session)
        if kind == "message":
            if data.get("role") == "user":
                return Event("turn_started")
            return Event("item", item_type="agent_message", phase="completed",
                         message=text_field(data.get("content")) or None)
        if kind == "tool_use":
            shell = data.get("tool_name") == SHELL_TOOL
            params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
            return Event("item", item_type="command_execution" if shell else "tool_use", phase="started",
                         command=shell, message=text_field(params.get("command")) or None)
        if kind == "tool_result":
            shell = text_field(data.get("tool_id")).startswith(SHELL_TOOL + "__")
            return Event("item", item_type="command_execution" if shell else "tool_use",
                         phase="completed", command=shell)
        if kind == "error":
            return Event("error", message=text_field(data.get("message")))
        if kind == "result":
            if data.get("status") == "success":
                stats = data.get("stats") if isinstance(data.get("stats"), dict) else {}
                return Event("turn_completed", usage=self._cumulative(_usage(stats)))
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            return Event("turn_failed", message=text_field(error.get("message")) or text_field(error.get("type"))
                         or "result status error")
        return Event("other")

    def _cumulative(self, usage: Optional[Dict[str, int]]) -> Optional[Dict[str, int]]:
        """The session's usage so far. `stats` count this process's requests only, while the
        token budget counts each thread once at its largest total (as codex reports it): the
        chat files hold every request's tokens, so they are added up; never less than `stats`."""
        recorded = self.session_usage(self._session) if self._session else {}
        if not recorded:
            return usage
        merged = dict(usage or {})
        for key, count in recorded.items():
            merged[key] = max(merged.get(key, 0), count)
        merged["total_tokens"] = max(merged.get("total_tokens", 0),
                                     merged.get("input_tokens", 0) + merged.get("output_tokens", 0))
        return merged

    def session_usage(self, thread_id: str) -> Dict[str, int]:
        """Tokens of every model response recorded in the session's chat files (a record written
        twice, before and after its tool calls, counts once)."""
        tokens: Dict[str, Dict[str, Any]] = {}
        for path in self.progress_files(thread_id):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        if '"tokens"' not in line:
                            continue
                        try:
                            record = json.loads(line)
                        except (ValueError, RecursionError):
                            continue
                        if isinstance(record, dict) and record.get("type") == "gemini" \
                                and isinstance(record.get("tokens"), dict):
                            tokens[str(record.get("id"))] = record["tokens"]
            except OSError:
                continue
        total: Dict[str, int] = {}
        for theirs, ours in (("input", "input_tokens"), ("output", "output_tokens"),
                             ("cached", "cached_input_tokens")):
            counts = [t.get(theirs) for t in tokens.values() if type(t.get(theirs)) is int]
            if counts:
                total[ours] = sum(counts)
        return total

    def classify(self, view: AttemptView) -> Outcome:
        rc = view.returncode
        if view.stopped_for:
            return base.stopped_outcome(view)
        if view.thread_id and view.expected_thread and view.thread_id != view.expected_thread:
            return Outcome(base.THREAD_MISMATCH, f"asked {view.expected_thread}, got {view.thread_id}")
        if view.turn_failed is not None:
            message = view.turn_failed
            if message == "result status error" and view.errors:  # an invalid stream: error event first
                message = view.errors[-1]
            kind = base.failure_kind(message, _FAILURE_KINDS)
            if kind == base.TURN_FAILED and _AUTH.search(message):
                return Outcome(base.AUTH_FAILED, "auth: " + first_line(message))
            return Outcome(kind, first_line(message))
        if view.turn_completed:
            return Outcome(base.COMPLETED, f"exit {rc}")
        if rc is not None and rc < 0:
            return Outcome(base.KILLED, f"signal {-rc}")
        stderr = view.stderr_tail
        if view.thread_id is None:
            if rc == RC_INPUT and _SESSION_EXISTS.search(stderr):
                # Our id is taken: a process of an earlier supervisor made it. It is this night's
                # conversation (the id was saved before that spawn): sweep, then resume it.
                return Outcome(base.THREAD_BUSY, first_match_line(stderr, _SESSION_EXISTS))
            if rc == RC_INPUT or _UNKNOWN_SESSION.search(stderr):
                return Outcome(base.UNKNOWN_THREAD, first_match_line(stderr, _UNKNOWN_SESSION)
                               or f"exit {rc}: {last_line(stderr)}")
            if rc == RC_AUTH:
                return Outcome(base.AUTH_FAILED, f"auth: exit {rc}: {last_line(stderr)}")
            why = "config: " if rc == RC_CONFIG else ""
            return Outcome(base.CRASHED_BEFORE_THREAD, f"{why}exit {rc}: {last_line(stderr)}")
        if rc == 0:
            # No result: the CLI exits 0 when SIGINT/SIGTERM reach it, and when its output is cut.
            return Outcome(base.EXITED_EARLY, "exit 0 without a result event (a signal or a cut stream)")
        status = _RC_HTTP.get(rc)
        if status == 429:
            return Outcome(base.RATE_LIMITED, f"exit {rc} (HTTP 429) without a result event")
        if status:
            return Outcome(base.SERVER_ERROR, f"exit {rc} (HTTP {status}) without a result event")
        if _NETWORK.search(stderr):
            return Outcome(base.NETWORK_DOWN, first_match_line(stderr, _NETWORK))
        return Outcome(base.CRASHED, f"exit {rc}: {last_line(stderr)}")

    # --- environment, settings and session store -----------------------------------------------

    @property
    def tmpdir(self) -> Path:
        return self.run_dir / "tmp"

    def environment(self, base_env: Dict[str, str]) -> Dict[str, str]:
        """An explicit allowlist, the provider variables, and the CLI's own switches. Makes the
        per-run TMPDIR and writes the settings the night depends on (`ensure_settings`)."""
        env = base.allowed_environment(base_env, (*PROVIDER_VARS, *self.env_passthrough))
        env.update({
            "GEMINI_CLI_HOME": str(self.home),     # .gemini/ moves there; HOME stays the user's
            "GEMINI_CLI_NO_RELAUNCH": "1",         # one process: the launcher ignores INT/TERM
            "GEMINI_CLI_TRUST_WORKSPACE": "true",  # else --approval-mode yolo becomes "default"
            "TMPDIR": str(self.tmpdir),            # error reports, shell temp files: per run
        })
        self.ensure_settings()
        return env

    def settings_path(self) -> Path:
        return self.home / ".gemini" / "settings.json"

    def enforced_settings(self) -> Dict[str, Dict[str, Any]]:
        """The keys the night depends on (section -> key -> value)."""
        return {
            "general": {"maxAttempts": self.max_attempts, "enableAutoUpdate": False,
                        "enableAutoUpdateNotification": False,
                        "sessionRetention": {"enabled": True, "maxAge": SESSION_MAX_AGE}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
        }

    def ensure_settings(self) -> None:
        """Write the enforced keys into `<home>/.gemini/settings.json`, keeping the operator's
        others (an auth type of their own, MCP servers), atomically and only when they differ.
        Folder trust is off; the auth type defaults to an API key."""
        path = self.settings_path()
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = {}
        if not isinstance(current, dict):
            current = {}
        wanted = json.loads(json.dumps(current))
        for section, keys in self.enforced_settings().items():
            target = wanted.get(section) if isinstance(wanted.get(section), dict) else {}
            target.update(keys)
            wanted[section] = target
        security = wanted.get("security") if isinstance(wanted.get("security"), dict) else {}
        auth = security.get("auth") if isinstance(security.get("auth"), dict) else {}
        auth.setdefault("selectedType", "gemini-api-key")
        trust = security.get("folderTrust") if isinstance(security.get("folderTrust"), dict) else {}
        trust["enabled"] = False
        security.update(auth=auth, folderTrust=trust)
        wanted["security"] = security
        self.tmpdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if wanted == current and path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix="settings.json.", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(wanted, handle, indent=2)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def find_thread(self, cwd: Path) -> Optional[str]:
        return None  # the id is chosen and saved before the CLI starts

    def clear_left_lock(self, now=time.time) -> Sequence[str]:
        """Remove the registry lock a CLI left (see REGISTRY_LOCK) when nothing can hold it:
        it is stale by the CLI's own rule, or no live process has this home. Called (through
        `after_attempt`) once the attempt's processes are gone, and before a night's first
        attempt, so a lock of ours is always left over; another night's CLI sharing the home
        keeps a fresh one. Returns what it removed."""
        lock = self.home / ".gemini" / REGISTRY_LOCK
        try:
            age = now() - lock.stat().st_mtime
        except OSError:
            return ()
        if age < REGISTRY_LOCK_STALE and self._home_in_use():
            return ()
        try:
            lock.rmdir()
        except OSError:
            return ()  # gone meanwhile, or not the CLI's (a folder with something in it)
        return (str(lock),)

    def _home_in_use(self) -> bool:
        home = str(self.home)
        return bool(procs.tagged_pids(home, "GEMINI_CLI_HOME", exact=True)
                    or procs.tagged_pids(home, "HOME", exact=True))

    def after_attempt(self, worktree: Path) -> Sequence[str]:
        try:
            self.ensure_settings()  # the agent may have edited them; the next attempt gets ours
        except OSError:
            pass
        return self.clear_left_lock()

    def progress_files(self, thread_id: Optional[str]) -> List[Path]:
        """The session's chat files (`<home>/.gemini/tmp/<project>/chats/session-<time>-<id8>.jsonl`):
        the CLI appends each message as it is recorded. Every resume adds a small second file
        with the same id; all of them are returned."""
        if not thread_id or not _SESSION_ID.fullmatch(thread_id):
            return []
        known = self._chats.get(thread_id)
        if known is not None and known.is_dir():
            found = self._matching(known.glob(f"session-*-{thread_id[:8]}.jsonl"), thread_id)
            if found:
                return found
        found = self._matching((self.home / ".gemini" / "tmp").glob(f"*/chats/session-*-{thread_id[:8]}.jsonl"),
                               thread_id)
        if found:
            self._chats[thread_id] = found[0].parent
        return found

    @staticmethod
    def _matching(paths, thread_id: str) -> List[Path]:
        return sorted(path for path in paths if _session_id_of(path) == thread_id)


def _session_id_of(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            first = handle.read(4096).split(b"\n", 1)[0]
        record = json.loads(first)
    except (OSError, ValueError):
        return None
    return record.get("sessionId") if isinstance(record, dict) else None


def _checked_id(thread_id: str) -> str:
    """A session id goes into argv and a glob: refuse one that would read as an option or a
    pattern (ours are UUIDs)."""
    if not _SESSION_ID.fullmatch(thread_id or ""):
        raise ValueError(f"not a usable gemini session id: {thread_id!r}")
    return thread_id


def _usage(stats: Dict[str, Any]) -> Optional[Dict[str, int]]:
    names = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
             "total_tokens": "total_tokens", "cached": "cached_input_tokens"}
    counts = {ours: stats[theirs] for theirs, ours in names.items() if type(stats.get(theirs)) is int}
    return counts or None

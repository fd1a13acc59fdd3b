"""The stand-in's CODEX_HOME: session files, the active-writer lock, the queue, the turn counter,
config.toml and `-c` overrides.

Owns: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<ts>-<thread_id>.jsonl` (appended line by line,
folders 0700), finding a thread by id or by `--last` in a cwd, the active-writer lock of a
thread (an flock on `<rollout>.lock`), `fake_queue.json` (`codex queue`), the invocation counter
(which scenario step list plays), and reading config.toml with `-c`, `--enable`, `--disable` on
top. Must not: print (the command line does) or play a turn.
"""
import contextlib
import datetime as dt
import fcntl
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        _toml = None

from .common import StartupError, claim_invocation, ensure_private_dir, flocked, iso_now, read_json, write_json_atomic

VERSION = "0.169.0"
USAGE_KEYS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens",
              "output_tokens", "reasoning_output_tokens")
MSG_NO_ROLLOUT = ("Error: thread/resume: thread/resume failed: no rollout found for thread id {id}"
                  " (code -32600)")
# A resume of a thread another process still writes: two log lines, then the error (measured).
MSG_ACTIVE_WRITER = ("{ts} ERROR codex_core::session::session: failed to initialize thread persistence: "
                     "thread-store conflict: thread {id} already has an active writer\n"
                     "{ts} ERROR codex_core::session: Failed to create session: thread-store conflict: "
                     "thread {id} already has an active writer\n"
                     "Error: thread/resume: thread/resume failed: thread {id} already has an active "
                     "writer (code -32600)")
# What codex records when a message queued during a turn is taken up as that process exits: the
# message starts a turn that is aborted at once, with this note after it (measured).
MSG_TURN_ABORTED = ("<turn_aborted>\nThe user interrupted the previous turn on purpose. Any running "
                    "unified exec processes may still be running in the background. If any "
                    "tools/commands were aborted, they may have partially executed.\n</turn_aborted>")


# ----------------------------------------------------------------------------- small effects

def uuid7() -> str:
    """A UUIDv7 string (48-bit millisecond clock, version 7, random rest), as codex's thread ids."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((millis & (2**48 - 1)) << 80) | (0x7 << 76) | (((rand >> 68) & 0xFFF) << 64)
    value |= (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def _zero_usage() -> Dict[str, int]:
    return {key: 0 for key in USAGE_KEYS}


# ----------------------------------------------------------------------------- config

_NOT_TOML = object()


def parse_config_value(text: str) -> Any:
    """A `-c key=value` value: TOML if it parses (string, bool, number, list), else the raw text."""
    text = text.strip()
    value = _toml_value(text) if _toml is not None else _mini_toml_value(text)
    return text if value is _NOT_TOML else value


def _toml_value(text: str) -> Any:
    try:
        return _toml.loads(f"v = {text}")["v"]
    except Exception:  # any parse failure means "use the raw string", as codex does
        return _NOT_TOML


def _mini_toml_value(text: str) -> Any:
    """The TOML subset codex users pass with -c, for Pythons without tomllib."""
    if text in ("true", "false"):
        return text == "true"
    if text[:1].isdigit() or text[:1] in ("+", "-"):
        for convert in (int, float):
            with contextlib.suppress(ValueError):
                return convert(text)
    if text.startswith("[") and text.endswith("]"):
        return _mini_toml_list(text[1:-1])
    quoted = _mini_toml_string(text)
    return _NOT_TOML if quoted is None else quoted[0]


def _mini_toml_string(text: str):
    """A quoted string at the start of text -> (value, rest), else None."""
    if text[:1] == "'":
        end = text.find("'", 1)
        return None if end < 0 else (text[1:end], text[end + 1:])
    if text[:1] == '"':
        index = 1
        while index < len(text):
            if text[index] == "\\":
                index += 2
                continue
            if text[index] == '"':
                with contextlib.suppress(ValueError):
                    return json.loads(text[:index + 1]), text[index + 1:]
                return None
            index += 1
    return None


def _mini_toml_list(body: str) -> Any:
    items, rest = [], body.strip()
    while rest:
        parsed = _mini_toml_string(rest)
        if parsed is None:
            return _NOT_TOML
        items.append(parsed[0])
        rest = parsed[1].strip()
        if rest.startswith(","):
            rest = rest[1:].strip()
        elif rest:
            return _NOT_TOML
    return items


def _set_dotted(config: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        child = config.get(part)
        if not isinstance(child, dict):
            child = config[part] = {}
        config = child
    config[parts[-1]] = value


def _read_config_toml(home: str) -> Dict[str, Any]:
    path = os.path.join(home, "config.toml")
    if not os.path.exists(path):
        return {}
    if _toml is None:
        sys.stderr.write(f"WARNING: fake codex: no tomllib on this Python, ignoring {path}\n")
        return {}
    try:
        with open(path, "rb") as fh:
            return _toml.load(fh)
    except (OSError, ValueError) as exc:
        raise StartupError(f"Error loading config.toml: {exc}") from None


def load_config(home: str, args) -> Dict[str, Any]:
    """config.toml (unless --ignore-user-config) overridden by -c, --enable and --disable."""
    config = {} if args.ignore_user_config else _read_config_toml(home)
    for override in args.config:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise StartupError("Error parsing -c overrides: Invalid override (missing '='): "
                               + override)
        _set_dotted(config, key.strip(), parse_config_value(raw))
    for name in args.enable:
        _set_dotted(config, f"features.{name}", True)
    for name in args.disable:
        _set_dotted(config, f"features.{name}", False)
    return config


# ----------------------------------------------------------------------------- sessions

def codex_home() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get("CODEX_HOME") or "~/.codex"))


def rollout_files(home: str) -> List[str]:
    found = []
    for root, _dirs, names in os.walk(os.path.join(home, "sessions")):
        found.extend(os.path.join(root, name) for name in names
                     if name.startswith("rollout-") and name.endswith(".jsonl"))
    return sorted(found)


def find_rollout(home: str, thread_id: str) -> Optional[str]:
    suffix = f"-{thread_id}.jsonl"
    matches = [path for path in rollout_files(home) if path.endswith(suffix)]
    return matches[0] if matches and thread_id else None


@dataclass
class RolloutSummary:
    thread_id: str
    cwd: Optional[str]
    usage: Dict[str, int]


def _rollout_lines(path: str):
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("payload"), dict):
                    yield record["type"], record["payload"]


def read_rollout(path: str) -> RolloutSummary:
    """Thread id, latest recorded cwd and cumulative usage of a rollout (torn lines skipped)."""
    name = os.path.basename(path)[:-len(".jsonl")]
    summary = RolloutSummary(thread_id=name[-36:], cwd=None, usage=_zero_usage())
    for kind, payload in _rollout_lines(path):
        if kind == "session_meta" and payload.get("id"):
            summary.thread_id = payload["id"]
        if kind in ("session_meta", "turn_context") and payload.get("cwd"):
            summary.cwd = payload["cwd"]
        if kind == "event_msg" and payload.get("type") == "token_count":
            total = (payload.get("info") or {}).get("total_token_usage") or {}
            summary.usage = {key: int(total.get(key, 0)) for key in USAGE_KEYS}
    return summary


def find_last_rollout(home: str, cwd: str, any_cwd: bool) -> Optional[str]:
    """`resume --last`: the newest rollout (mtime) whose latest cwd is exactly `cwd`."""
    def mtime(path):
        try:
            return os.path.getmtime(path)
        except OSError:
            return 0.0
    for path in sorted(rollout_files(home), key=mtime, reverse=True):
        if any_cwd or read_rollout(path).cwd == cwd:
            return path
    return None


def new_rollout_path(home: str, thread_id: str) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    day_dir = os.path.join(home, "sessions", now.strftime("%Y"), now.strftime("%m"),
                           now.strftime("%d"))
    ensure_private_dir(day_dir)
    return os.path.join(day_dir, f"rollout-{now.strftime('%Y-%m-%dT%H-%M-%S')}-{thread_id}.jsonl")


def acquire_writer_lock(rollout_path: str) -> Optional[int]:
    """The active-writer lock of a thread: an flock on `<rollout>.lock`, or None if held."""
    fd = os.open(rollout_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Rollout:
    """Appends `{timestamp, type, payload}` lines to a session file, one flushed line at a time.
    `path=None` (--ephemeral) writes nothing."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._fh = None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, kind: str, payload: Dict[str, Any]) -> None:
        if self._fh is None:
            return
        record = {"timestamp": iso_now(), "type": kind, "payload": payload}
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


@dataclass
class Thread:
    thread_id: str
    rollout_path: Optional[str]
    lock_fd: Optional[int]
    usage: Dict[str, int]
    resumed: bool

    def release(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None


def _new_thread(home: str, ephemeral: bool) -> Thread:
    thread_id = uuid7()
    if ephemeral:
        return Thread(thread_id, None, None, _zero_usage(), resumed=False)
    path = new_rollout_path(home, thread_id)
    return Thread(thread_id, path, acquire_writer_lock(path), _zero_usage(), resumed=False)


def open_thread(home: str, args, cwd: str) -> Thread:
    """The thread this run writes: new, resumed by id, or `--last` (new when nothing matches)."""
    if not args.resume:
        return _new_thread(home, args.ephemeral)
    if args.last:
        path = find_last_rollout(home, cwd, args.all)
        if path is None:  # trap 3: silently a new thread, rc 0
            return _new_thread(home, args.ephemeral)
    else:
        path = find_rollout(home, args.session_id)
        if path is None:
            raise StartupError(MSG_NO_ROLLOUT.format(id=args.session_id))
    summary = read_rollout(path)
    lock_fd = acquire_writer_lock(path)
    if lock_fd is None:
        raise StartupError(MSG_ACTIVE_WRITER.format(id=summary.thread_id, ts=iso_now()))
    return Thread(summary.thread_id, path, lock_fd, summary.usage, resumed=True)


# ----------------------------------------------------------------------------- queue & counter

def _queue_path(home: str) -> str:
    return os.path.join(home, "fake_queue.json")


def queue_message(home: str, thread_id: str, message: str) -> str:
    """Append a message for the thread's next turn; returns the message's id (a UUIDv7)."""
    ensure_private_dir(home)
    path = _queue_path(home)
    message_id = uuid7()
    with flocked(path + ".lock"):
        queue = read_json(path, [])
        queue.append({"id": message_id, "thread_id": thread_id, "message": message,
                      "queued_at": iso_now()})
        write_json_atomic(path, queue)
    return message_id


def take_queued(home: str, thread_id: str) -> List[str]:
    """Remove and return the messages queued for the thread, oldest first."""
    path = _queue_path(home)
    if not os.path.exists(path):
        return []
    with flocked(path + ".lock"):
        queue = read_json(path, [])
        mine = [entry for entry in queue if entry.get("thread_id") == thread_id]
        if mine:
            write_json_atomic(path, [entry for entry in queue if entry not in mine])
    return [str(entry.get("message", "")) for entry in mine]


def next_invocation(home: str) -> int:
    """Claim the next turn number (0-based) of this CODEX_HOME, atomically under flock."""
    ensure_private_dir(home)
    return claim_invocation(os.path.join(home, "fake_codex_state.json"))



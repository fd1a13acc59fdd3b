"""The stand-in's home (`$GEMINI_CLI_HOME/.gemini`, else `~/.gemini`): projects, session files,
the invocation counter.

Owns: `projects.json` (cwd -> short project name) and its lock (a folder, taken on every start,
waited for as 0.61.0 does), `tmp/<project>/chats/session-<YYYY-MM-DDTHH-MM>-
<id8>.jsonl` (a header line, then message records and `$set` updates, appended line by line),
finding a session by id in the cwd's project, the stray second file every resume writes, and
`fake_gemini_state.json` (which scenario invocation plays). Must not: print or play a turn.
"""
import contextlib
import datetime as dt
import hashlib
import json
import os
import time
import uuid
from typing import Any, Dict, List, Optional

from ..fakecodex.common import claim_invocation, iso_now, read_json, write_json_atomic

VERSION = "0.61.0"
# proper-lockfile as 0.61.0 uses it for projects.json: mkdir `<file>.lock`; a lock whose mtime is
# more than 10 s old is stale and taken over; else retry after 0.1 s, doubling, 100 times.
LOCK_STALE = 10.0
LOCK_FIRST_DELAY = 0.1
LOCK_RETRIES = 100


def cli_home() -> str:
    """The folder that holds `.gemini/`: GEMINI_CLI_HOME, else HOME (as 0.61.0 reads them)."""
    return os.path.abspath(os.environ.get("GEMINI_CLI_HOME") or os.path.expanduser("~"))


def gemini_dir(home: str) -> str:
    return os.path.join(home, ".gemini")


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def load_settings(home: str) -> Dict[str, Any]:
    data = read_json(os.path.join(gemini_dir(home), "settings.json"), {})
    return data if isinstance(data, dict) else {}


def registry_lock_path(home: str) -> str:
    return os.path.join(gemini_dir(home), "projects.json.lock")


@contextlib.contextmanager
def registry_lock(home: str):
    """Hold `projects.json.lock` as 0.61.0 does (see LOCK_STALE): a lock another start left
    behind costs the wait until it is stale."""
    path = registry_lock_path(home)
    delay = LOCK_FIRST_DELAY
    for _ in range(LOCK_RETRIES + 1):
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            pass
        try:
            stale = os.stat(path).st_mtime < time.time() - LOCK_STALE
        except FileNotFoundError:
            continue
        if stale:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            continue
        time.sleep(delay)
        delay *= 2
    else:
        raise OSError(f"Lock file is already being held: {path}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def leave_registry_lock(home: str) -> None:
    """What 0.61.0 sometimes does on its way out: exit with the registry lock still taken."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(registry_lock_path(home))


def project_name(home: str, cwd: str, create: bool) -> Optional[str]:
    """The short name of the cwd's project (its basename, numbered when taken), from
    projects.json under its lock; None when the cwd has none and `create` is false."""
    root = gemini_dir(home)
    path = os.path.join(root, "projects.json")
    if not create and not os.path.isdir(root):
        return None
    _private_dir(root)
    with registry_lock(home):
        data = read_json(path, {})
        if not create:
            return (data.get("projects") or {}).get(cwd)
        projects = data.get("projects") if isinstance(data.get("projects"), dict) else {}
        if cwd not in projects:
            base = os.path.basename(cwd.rstrip("/")) or "root"
            name, number = base, 1
            while name in projects.values():
                name, number = f"{base}-{number}", number + 1
            projects[cwd] = name
            write_json_atomic(path, {"projects": projects}, indent=2, ensure_ascii=True)
        return projects[cwd]


def chats_dir(home: str, project: str) -> str:
    return os.path.join(gemini_dir(home), "tmp", project, "chats")


def session_files(chats: str) -> List[str]:
    try:
        names = os.listdir(chats)
    except OSError:
        return []
    return sorted(os.path.join(chats, n) for n in names if n.startswith("session-") and n.endswith(".jsonl"))


def header_of(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            record = json.loads(fh.readline())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def find_session(chats: str, session_id: str) -> Optional[str]:
    """The session's original file (the oldest one whose header names it)."""
    for path in session_files(chats):
        if path.endswith(f"-{session_id[:8]}.jsonl") and header_of(path).get("sessionId") == session_id:
            return path
    return None


def latest_session(chats: str) -> Optional[str]:
    best = None
    for path in session_files(chats):
        header = header_of(path)
        if header.get("sessionId") and (best is None or header.get("startTime", "") > best[0]):
            best = (header.get("startTime", ""), path)
    return best[1] if best else None


def _file_name(chats: str, session_id: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H-%M")
    path = os.path.join(chats, f"session-{stamp}-{session_id[:8]}.jsonl")
    number = 1
    while os.path.exists(path):  # the real CLI's names are per minute: a resume in the same minute
        path = os.path.join(chats, f"session-{stamp}-{session_id[:8]}-{number}.jsonl")
        number += 1
    return path


class SessionFile:
    """Appends records to a session's chat file, one flushed line at a time."""

    def __init__(self, path: str):
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, record: Dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def touch(self) -> None:
        self.append({"$set": {"lastUpdated": iso_now()}})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


def _header(session_id: str, cwd: str) -> Dict[str, Any]:
    now = iso_now()
    return {"sessionId": session_id, "projectHash": hashlib.sha256(cwd.encode()).hexdigest(),
            "startTime": now, "lastUpdated": now, "kind": "main"}


def _context_message(cwd: str) -> Dict[str, Any]:
    return {"id": uuid.uuid4().hex, "timestamp": iso_now(), "type": "user",
            "content": [{"text": f"<session_context>\nThis is the Gemini CLI (fake).\n"
                                 f"- **Workspace Directories:**\n  - {cwd}\n</session_context>"}]}


def new_session(chats: str, session_id: str, cwd: str) -> SessionFile:
    _private_dir(chats)
    session = SessionFile(_file_name(chats, session_id))
    session.append(_header(session_id, cwd))
    session.append({"$set": {"messages": [_context_message(cwd)], "lastUpdated": iso_now()}})
    return session


def resume_session(chats: str, path: str, session_id: str, cwd: str) -> SessionFile:
    """Append to the original file; like 0.61.0, also leave a second small file with the header
    and the context."""
    stray = SessionFile(_file_name(chats, session_id))
    stray.append(_header(session_id, cwd))
    stray.append({"$set": {"messages": [_context_message(cwd)], "lastUpdated": iso_now()}})
    stray.close()
    return SessionFile(path)


def next_invocation(home: str) -> int:
    """Claim the next turn number (0-based) of this home, atomically under flock."""
    root = gemini_dir(home)
    _private_dir(root)
    return claim_invocation(os.path.join(root, "fake_gemini_state.json"))

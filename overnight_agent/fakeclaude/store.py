"""The stand-in's CLAUDE_CONFIG_DIR: session transcripts, the invocation counter, the scenario's
location.

Owns: `$CLAUDE_CONFIG_DIR/projects/<cwd mangled>/<session id>.jsonl` (appended and flushed line
by line, folders 0700), finding a session by id in any project (resume is not cwd-scoped), the
model a session last used (a resume restores it; the permission mode is not stored), the turn
counter (`fake_claude_state.json`: which scenario invocation plays), and where the scenario is
(`$FAKE_CLAUDE_SCENARIO`, else `fake_claude_scenario.yaml` in the config dir).
Must not: print (the command line does) or play a turn.
"""
import contextlib
import json
import os
import re
from typing import Any, Dict, Optional

from ..fakecodex import common
from ..fakecodex.common import claim_invocation, ensure_private_dir, iso_now

VERSION = "2.1.328"


def config_dir() -> str:
    explicit = os.environ.get("CLAUDE_CONFIG_DIR")
    return os.path.abspath(os.path.expanduser(explicit or "~/.claude"))


def mangle(cwd: str) -> str:
    """claude's project folder for a cwd: every non-alphanumeric character becomes '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def transcript_path(home: str, cwd: str, session_id: str) -> str:
    return os.path.join(home, "projects", mangle(cwd), f"{session_id}.jsonl")


def find_transcript(home: str, session_id: str) -> Optional[str]:
    """The session's transcript in any project folder (`--resume <id>` is not cwd-scoped)."""
    projects = os.path.join(home, "projects")
    try:
        folders = sorted(os.listdir(projects))
    except OSError:
        return None
    for folder in folders:
        path = os.path.join(projects, folder, f"{session_id}.jsonl")
        if os.path.isfile(path):
            return path
    return None


def last_model(path: str) -> Optional[str]:
    """The model of the session's last assistant message (a resume without --model keeps it)."""
    model = None
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    message = record.get("message") if isinstance(record, dict) else None
                    if record.get("type") == "assistant" and isinstance(message, dict) and message.get("model"):
                        model = message["model"]
    return model


class Transcript:
    """Appends records to a session file, one flushed line at a time, each chained to the last
    by `parentUuid` as claude does."""

    def __init__(self, path: str, session_id: str, cwd: str):
        ensure_private_dir(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self.path, self.session_id, self.cwd = path, session_id, cwd
        self.parent: Optional[str] = None

    def raw(self, record: Dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def message(self, kind: str, uuid_: str, fields: Dict[str, Any]) -> None:
        self.raw({"parentUuid": self.parent, "isSidechain": False, "type": kind, **fields, "uuid": uuid_,
                  "timestamp": iso_now(), "userType": "external", "entrypoint": "sdk-cli", "cwd": self.cwd,
                  "sessionId": self.session_id, "version": VERSION})
        self.parent = uuid_

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def next_invocation(home: str) -> int:
    """Claim the next turn number (0-based) of this config dir, atomically under flock."""
    ensure_private_dir(home)
    return claim_invocation(os.path.join(home, "fake_claude_state.json"))


def scenario_path(home: str) -> Optional[str]:
    """`$FAKE_CLAUDE_SCENARIO`, else `fake_claude_scenario.yaml` in the config dir."""
    return common.scenario_path(home, "claude")

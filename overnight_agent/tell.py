"""Messages to the running agent: the operator's `tell` and the supervisor's wrap-up notice.

Owns: leaving a message for the agent's next turn without killing the current one (codex keeps
it with `codex queue --thread ID --message TEXT`, and the next `codex exec resume` sends it), and
recording what was told in `runs/<run_id>/told.jsonl` (append-only, whole lines) and the journal.
Must not: write session.json (the supervisor owns it while a night is live) or signal the agent.
"""
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

from . import journal, state, timeparse
from .exitcodes import ConfigError, OvernightError

QUEUE_TIMEOUT = 30.0


def queue_argv(codex_bin: str, thread_id: str, message: str) -> List[str]:
    return [codex_bin, "queue", "--thread", thread_id, "--message", message]


def queue(codex_bin: str, codex_home: Path, thread_id: str, message: str,
          env: Optional[Dict[str, str]] = None) -> str:
    """Queue `message` for the thread's next turn; codex's own reply, or an error."""
    full_env = dict(os.environ if env is None else env)
    full_env["CODEX_HOME"] = str(codex_home)
    try:
        proc = subprocess.run(queue_argv(codex_bin, thread_id, message), env=full_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=QUEUE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OvernightError(f"codex queue failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OvernightError(f"codex queue failed (exit {proc.returncode}): "
                             f"{detail[-1] if detail else 'no output'}")
    return proc.stdout.strip()


def record(run_dir: Path, who: str, message: str) -> None:
    """Append what was told, as one whole line (redacted by `journal.append_line`), for the report."""
    line = json.dumps({"at": timeparse.iso(timeparse.local_now()), "from": who, "message": message},
                      ensure_ascii=False)
    journal.append_line(run_dir / "told.jsonl", line)


def told(run_dir: Path) -> List[dict]:
    path = run_dir / "told.jsonl"
    if not path.exists():
        return []
    result = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result.append(json.loads(line))
        except ValueError:
            continue
    return result


def tell(session: state.Session, session_path: Path, codex_bin: str, codex_home: Path,
         message: str) -> str:
    """The operator's message to the agent of a live or resumable night."""
    if not message.strip():
        raise ConfigError("tell: the message is empty; say what the agent should know")
    if session.agent != "codex":
        raise ConfigError(f"tell: agent {session.agent!r} has no message queue; only codex nights take messages")
    if not session.thread_id:
        raise ConfigError(f"{session_path}: thread_id: none yet; wait until the agent has started its thread")
    if session.state in (state.FINISHED, state.FAILED):
        raise ConfigError(f"{session_path}: state: the night is {session.state}; there is no next turn to tell")
    reply = queue(codex_bin, codex_home, session.thread_id, message)
    run_dir = session_path.parent / "runs" / session.run_id
    record(run_dir, "operator", message)
    journal.summary(session, f"Operator told the agent: {message}", author="operator")
    return reply

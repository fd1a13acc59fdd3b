"""Messages to the agent: the operator's `tell`, delivered with the prompt of the agent's next turn.

Owns: the inbox of a night (`runs/<run_id>/told.jsonl`: append-only, one whole redacted line per
message, written by `tell` while the supervisor runs), reading what is not yet delivered, and
the text that carries it into a prompt. Must not: write session.json (the supervisor owns it
and counts what it delivered), signal the agent, or talk to the agent CLI.

Why not `codex queue`: in codex 0.169.0 a running `codex exec` does not see a queued message;
one queued meanwhile starts a turn as that process ends, which is aborted at once, and the
message is kept in the thread or lost, as the CLI's exit races with it. One queued while the
thread is idle starts the next resume's turn on its own, and the resume's prompt then steers
into it: the model request in flight is cancelled and sent again (a response thrown away). Both
are measured in `tests/test_conformance.py`. At best the message reaches the model with the
next resume, so the supervisor puts it into that resume's prompt itself: one request, nothing
answered twice or lost, no aborted turn, and the inbox survives a supervisor restart.
"""
import json
from pathlib import Path
from typing import List

from . import journal, state, timeparse
from .exitcodes import ConfigError

def record(layout: state.RunLayout, who: str, message: str) -> None:
    """Append one message as one whole line (redacted by `journal.append_line`)."""
    line = json.dumps({"at": timeparse.iso(timeparse.local_now()), "from": who, "message": message},
                      ensure_ascii=False)
    journal.append_line(layout.inbox, line)


def told(layout: state.RunLayout) -> List[dict]:
    """Every message of the night, oldest first (lines that do not parse are skipped)."""
    return journal.read_records(layout.inbox, "message")


def with_messages(prompt: str, messages: List[dict]) -> str:
    """`prompt` followed by the operator's messages, each with when it was left."""
    if not messages:
        return prompt
    lines = [f"- ({m.get('at', '?')}) {' '.join(m['message'].split())}" for m in messages]
    return (prompt.rstrip("\n") + "\n\nMessages from the operator, left with `tell` while you worked "
            "(oldest first):\n" + "\n".join(lines) + "\n")


def tell(session: state.Session, session_path: Path, layout: state.RunLayout, message: str) -> str:
    """Leave the operator's message for the agent of a live or resumable night."""
    if not message.strip():
        raise ConfigError("tell: the message is empty; say what the agent should know")
    if session.state in (state.FINISHED, state.FAILED):
        raise ConfigError(f"{session_path}: state: the night is {session.state}; there is no next turn to tell")
    record(layout, "operator", message)
    journal.summary(session, f"Operator told the agent: {message}", author="operator")
    return (f"Left for the agent of run {session.run_id}: it arrives with the prompt of its next "
            "turn (a turn already running is not interrupted).")


def command(loaded, text: str) -> str:
    """`overnight-agent tell TEXT` for the night of `loaded` (a config.Loaded)."""
    path = loaded.paths.session_state
    session = state.load(path)
    if session is None:
        raise ConfigError(f"{path}: no session state; start a night with `overnight-agent run`")
    command = loaded.config.command
    if session.agent == "command" and not any("{prompt}" in part for part in
                                              [*command.argv, *(command.resume_argv or command.argv)]):
        raise ConfigError(f"{loaded.source or '<defaults>'}: command.argv: has no {{prompt}}, so a message "
                          "cannot reach the agent; add '{prompt}' to command.argv and command.resume_argv")
    return tell(session, path, loaded.paths.run(session.run_id), text)

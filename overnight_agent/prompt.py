"""The prompts the agent receives: shipped templates, operator overrides, and filling them in.

Owns: the placeholder names, choosing boot / resume / wrap-up text, substitution.
Must not: decide *when* a prompt is sent (the supervisor does) or talk to the agent.
"""
import string
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

from .exitcodes import ConfigError

PLACEHOLDERS = (
    "run_id", "deadline", "wrap_up_at", "time_left", "date", "base_branch", "session_branch",
    "session_worktree", "ops_journal_branch", "ops_journal_worktree", "exec_summary_log",
    "reports_dir", "tool", "heartbeat_file",
)
KINDS = ("boot", "resume", "wrap_up")   # each replaceable with prompts.<kind> (config)


def shipped(kind: str) -> str:
    return resources.files(__package__).joinpath("prompts", f"{kind}.md").read_text(encoding="utf-8")


def template_text(kind: str, override: Optional[Path]) -> str:
    if override is None:
        return shipped(kind)
    try:
        return override.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{override}: cannot read prompt template ({exc.strerror})") from None


def choose(attempt_kind: str, wrap_up_sent: bool, wrap_up_due: bool) -> str:
    """Which prompt an attempt gets: `boot` for a fresh start; for a resume, `wrap_up` the first
    time after wrap-up time, else `resume`."""
    if attempt_kind == "start":
        return "boot"
    return "wrap_up" if wrap_up_due and not wrap_up_sent else "resume"


def render(text: str, values: Dict[str, str]) -> str:
    missing = set(PLACEHOLDERS) - set(values)
    assert not missing, f"prompt values lack {sorted(missing)}"
    return string.Template(text).safe_substitute(values)

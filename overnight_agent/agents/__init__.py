"""Agent backends: one adapter per coding-agent CLI behind the `base.Backend` seam.

Owns: which backends exist (`BACKENDS`, by the config's `agent:` name) and making the one a
night asks for (`create`). Nothing outside this package names a backend class.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .base import AttemptView, Backend, Capabilities, Event, Outcome, StopReason
from .claude import ClaudeBackend
from .codex import CodexBackend
from .command import CommandBackend
from .gemini import GeminiBackend

BACKENDS = {"codex": CodexBackend, "claude": ClaudeBackend, "command": CommandBackend, "gemini": GeminiBackend}


@dataclass(frozen=True)
class NightFacts:
    """What a backend may need of the night it runs in."""

    run_id: str
    worktree: Path
    run_dir: Path                  # the run's folder (a per-run TMPDIR goes in run_dir / "tmp")
    heartbeat: Path
    state_home: Path               # the CLI's own state folder (CODEX_HOME, CLAUDE_CONFIG_DIR, ...), mode 0700
    binary: Optional[str]          # the CLI executable, resolved (None: the argv names it)
    model: str
    effort: str
    sandbox: str
    writable_roots: Tuple[Path, ...] = ()


def create(agent: str, cfg, night: NightFacts) -> Backend:
    """The backend for `agent` (a key of BACKENDS), set up from the config and the night."""
    return BACKENDS[agent].for_night(cfg, night)


__all__ = ["AttemptView", "Backend", "BACKENDS", "Capabilities", "Event", "NightFacts", "Outcome",
           "StopReason", "create"]

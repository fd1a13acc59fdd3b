"""Agent backends: one adapter per coding-agent CLI behind the `base.Backend` seam."""
from .base import AttemptView, Backend, Event, Outcome
from .codex import CodexBackend

__all__ = ["AttemptView", "Backend", "CodexBackend", "Event", "Outcome"]

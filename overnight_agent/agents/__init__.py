"""Agent backends: one adapter per coding-agent CLI behind the `base.Backend` seam."""
from .base import AttemptView, Backend, Event, Outcome  # noqa: F401
from .codex import CodexBackend  # noqa: F401

"""The generic command backend: any argv in place of codex (`agent: command`).

Owns: filling the argv template, and typing an exit from its status alone (a plain command has
no event stream and no thread). Must not: assume anything about the command's output. It gets
the same liveness, stop and restart rules as codex: its evidence of life is its output, the
heartbeat file (`$OVERNIGHT_AGENT_HEARTBEAT`) and the CPU of the commands it runs.
"""
import string
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import base
from .base import AttemptView, Event, Outcome

FIELDS = ("prompt", "run_id", "worktree", "heartbeat_file")


class CommandBackend:
    name = "command"
    capabilities = base.Capabilities(threads=False, event_stream=False)

    def __init__(self, *, argv: Sequence[str], resume_argv: Optional[Sequence[str]],
                 values: Dict[str, str], env_passthrough: Sequence[str] = ()):
        self.argv = list(argv)
        self.resume = list(resume_argv) if resume_argv else list(argv)
        self.values = dict(values)
        self.env_passthrough = list(env_passthrough)

    @classmethod
    def for_night(cls, cfg, night) -> "CommandBackend":
        return cls(argv=cfg.command.argv, resume_argv=cfg.command.resume_argv,
                   values={"run_id": night.run_id, "worktree": str(night.worktree),
                           "heartbeat_file": str(night.heartbeat)},
                   env_passthrough=cfg.codex.env_passthrough)

    def _fill(self, template: List[str], prompt: str) -> List[str]:
        values = {**self.values, "prompt": prompt}
        return [_format(part, values) for part in template]

    def new_thread_id(self) -> Optional[str]:
        return None  # no threads

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]:
        return self._fill(self.argv, prompt)

    def resume_argv(self, thread_id: Optional[str], prompt: str) -> List[str]:
        return self._fill(self.resume, prompt)

    def parse_line(self, line: str) -> Optional[Event]:
        return Event("output")  # every line is evidence of life; none carries meaning

    def classify(self, view: AttemptView) -> Outcome:
        rc = view.returncode
        if view.stopped_for:
            return base.stopped_outcome(view)
        if rc is not None and rc < 0:
            return Outcome(base.KILLED, f"signal {-rc}")
        if rc == 0:
            return Outcome(base.COMPLETED, "exit 0")
        tail = [line for line in view.stderr_tail.strip().splitlines() if line.strip()]
        return Outcome(base.CRASHED, f"exit {rc}: {tail[-1][:300] if tail else 'no output'}")

    def environment(self, base_env: Dict[str, str]) -> Dict[str, str]:
        return base.allowed_environment(base_env, self.env_passthrough)

    def find_thread(self, cwd: Path) -> Optional[str]:
        return None

    def after_attempt(self, worktree: Path) -> Sequence[str]:
        return ()

    def progress_files(self, thread_id: Optional[str]) -> List[Path]:
        return []


def _format(part: str, values: Dict[str, str]) -> str:
    """`{name}` placeholders; `{{` and `}}` stay literal braces."""
    return string.Formatter().vformat(part, (), _Strict(values))


class _Strict(dict):
    def __missing__(self, key):
        raise KeyError(f"unknown placeholder {{{key}}} in command.argv; expected one of "
                       + ", ".join("{" + f + "}" for f in FIELDS))

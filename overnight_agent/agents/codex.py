"""The Codex CLI backend (`codex exec --json`, measured against codex-cli 0.169.0).

Owns: the exact argv of a fresh exec and of a resume (sandbox, model and reasoning effort on
every call, since none is stored with the thread), parsing the `--json` event stream, typing how
an attempt ended, the environment codex gets, and finding threads in `$CODEX_HOME/sessions/`.
Must not: start processes, write state, or touch the operator's `config.toml`.
"""
import json
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .. import gitops
from . import base
from .base import (AttemptView, Event, Outcome, first_line, first_match_line, last_line,
                   text_field)

PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "CODEX_API_KEY")

_UNKNOWN_THREAD = re.compile(r"no rollout found for thread id", re.I)
_THREAD_BUSY = re.compile(r"already has an active writer", re.I)
_USAGE_LIMIT = re.compile(r"usage limit|usage_limit_reached|quota", re.I)
_RATE_LIMIT = re.compile(r"\b429\b|rate.?limit|too many requests", re.I)
_SERVER = re.compile(r"\b5\d\d\b|high demand|overloaded|internal server error|service unavailable|"
                     r"stream disconnected|idle timeout", re.I)
# A thread id goes into `codex exec resume <id>` and a glob of the session store: refuse one that
# would read as an option, a path or a pattern there (codex's own are UUIDs).
_THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_NETWORK = re.compile(r"waiting for network|connection (failed|refused)|network is unreachable|"
                      r"error sending request|dns", re.I)
# What a failed turn's message says, first match wins (`base.failure_kind`).
_FAILURE_KINDS = ((_USAGE_LIMIT, base.USAGE_LIMIT), (_RATE_LIMIT, base.RATE_LIMITED),
                  (_NETWORK, base.NETWORK_DOWN), (_SERVER, base.SERVER_ERROR))


class CodexBackend:
    name = "codex"
    capabilities = base.Capabilities(threads=True, event_stream=True)

    def __init__(self, *, codex_bin: str, codex_home: Path, model: str, effort: str,
                 sandbox: str, writable_roots: Iterable[Path] = (), extra_config: Sequence[str] = (),
                 env_passthrough: Sequence[str] = ()):
        self.codex_bin = codex_bin
        self.codex_home = codex_home
        self.model = model
        self.effort = effort
        self.sandbox = sandbox
        self.writable_roots = [str(p) for p in writable_roots]
        self.extra_config = list(extra_config)
        self.env_passthrough = list(env_passthrough)
        self._rollouts: Dict[str, Path] = {}  # thread id -> its rollout file, once found

    @classmethod
    def for_night(cls, cfg, night) -> "CodexBackend":
        return cls(codex_bin=night.binary, codex_home=night.state_home, model=night.model,
                   effort=night.effort, sandbox=night.sandbox, writable_roots=night.writable_roots,
                   extra_config=cfg.codex.extra_config, env_passthrough=cfg.codex.env_passthrough)

    # --- argv -------------------------------------------------------------------------------

    def _pinned(self) -> List[str]:
        """Model, effort and sandbox settings: repeated on every call (trap 1 and 2)."""
        args = ["-m", self.model, "-c", f"model_reasoning_effort={self.effort}"]
        if self.sandbox == "workspace-write" and self.writable_roots:
            roots = ",".join(json.dumps(root) for root in self.writable_roots)
            args += ["-c", f"sandbox_workspace_write.writable_roots=[{roots}]"]
        for override in self.extra_config:
            args += ["-c", override]
        return args

    def new_thread_id(self) -> Optional[str]:
        return None  # codex names its thread in thread.started

    def start_argv(self, prompt: str, thread_id: Optional[str] = None) -> List[str]:
        return [self.codex_bin, "exec", "--json", "--sandbox", self.sandbox, *self._pinned(), prompt]

    def resume_argv(self, thread_id: str, prompt: str) -> List[str]:
        # `resume` has no --sandbox of its own and defaults to read-only: it goes before `resume`.
        return [self.codex_bin, "exec", "--sandbox", self.sandbox, "resume", thread_id,
                *self._pinned(), "--json", prompt]

    # --- events and outcomes ------------------------------------------------------------------

    def parse_line(self, line: str) -> Optional[Event]:
        """The event on one line of stdout; None for a line that is not a JSON object. A field of
        the wrong type reads as absent: its value would travel into argv, session.json, the budget."""
        data = base.json_object(line)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "thread.started":
            thread_id = text_field(data.get("thread_id"))
            return Event("thread_started", thread_id=thread_id if _THREAD_ID.fullmatch(thread_id) else None)
        if kind == "turn.started":
            return Event("turn_started")
        if kind == "turn.completed":
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            counts = {k: v for k, v in usage.items() if type(v) is int}  # not true, 1e400, "many"
            return Event("turn_completed", usage=counts or None)
        if kind == "turn.failed":
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            return Event("turn_failed", message=text_field(error.get("message")) or "turn failed")
        if kind == "error":
            message = text_field(data.get("message"))
            return Event("error", message=message, network_wait=bool(_NETWORK.search(message)))
        if kind in ("item.started", "item.completed", "item.updated"):
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            item_type = text_field(item.get("type")) or None
            return Event("item", item_type=item_type, message=text_field(item.get("message")) or None,
                         phase=kind.split(".", 1)[1], command=item_type == "command_execution")
        return Event("other")

    def classify(self, view: AttemptView) -> Outcome:
        rc = view.returncode
        if view.stopped_for:
            return base.stopped_outcome(view)
        if view.kind == "resume" and view.thread_id and view.expected_thread \
                and view.thread_id != view.expected_thread:
            return Outcome(base.THREAD_MISMATCH, f"asked {view.expected_thread}, got {view.thread_id}")
        if view.turn_failed is not None:
            return Outcome(base.failure_kind(view.turn_failed, _FAILURE_KINDS), first_line(view.turn_failed))
        if view.turn_completed:
            return Outcome(base.COMPLETED, f"exit {rc}")
        if rc is not None and rc < 0:
            return Outcome(base.KILLED, f"signal {-rc}")
        if view.thread_id is None:
            if _UNKNOWN_THREAD.search(view.stderr_tail):
                return Outcome(base.UNKNOWN_THREAD, first_match_line(view.stderr_tail, _UNKNOWN_THREAD))
            if _THREAD_BUSY.search(view.stderr_tail):
                return Outcome(base.THREAD_BUSY, first_match_line(view.stderr_tail, _THREAD_BUSY))
            return Outcome(base.CRASHED_BEFORE_THREAD, f"exit {rc}: {last_line(view.stderr_tail)}")
        if rc == 0:
            return Outcome(base.EXITED_EARLY, "exit 0 without a completed turn")
        if view.errors and _NETWORK.search(view.errors[-1]):
            return Outcome(base.NETWORK_DOWN, first_line(view.errors[-1]))
        return Outcome(base.CRASHED, f"exit {rc}: {last_line(view.stderr_tail)}")

    # --- environment and session store ---------------------------------------------------------

    def environment(self, base_env: Dict[str, str]) -> Dict[str, str]:
        """An explicit allowlist, the provider's key variables, and CODEX_HOME."""
        env = base.allowed_environment(
            base_env, (*PROVIDER_KEY_VARS, *self._provider_env_keys(), *self.env_passthrough))
        env["CODEX_HOME"] = str(self.codex_home)
        return env

    def _provider_env_keys(self) -> List[str]:
        """`env_key` of every provider in the operator's config.toml (read, never written)."""
        try:
            import tomllib
        except ImportError:  # Python < 3.11: only the built-in key variables pass
            return []
        try:
            with open(self.codex_home / "config.toml", "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, ValueError):
            return []
        providers = data.get("model_providers") if isinstance(data, dict) else None
        if not isinstance(providers, dict):
            return []
        return [p["env_key"] for p in providers.values()
                if isinstance(p, dict) and isinstance(p.get("env_key"), str)]

    def find_thread(self, cwd: Path) -> Optional[str]:
        """The newest thread whose latest recorded cwd is `cwd`, from the rollout files."""
        sessions = self.codex_home / "sessions"
        best = None
        for path in sessions.rglob("rollout-*.jsonl") if sessions.is_dir() else ():
            thread, last_cwd = _rollout_thread_and_cwd(path)
            if thread and last_cwd and os.path.realpath(last_cwd) == os.path.realpath(cwd):
                mtime = path.stat().st_mtime
                if best is None or mtime > best[0]:
                    best = (mtime, thread)
        return best[1] if best else None

    def rollout_files(self) -> List[Path]:
        sessions = self.codex_home / "sessions"
        return sorted(sessions.rglob("rollout-*.jsonl")) if sessions.is_dir() else []

    def after_attempt(self, worktree: Path) -> Sequence[str]:
        return gitops.remove_sandbox_stubs(worktree)

    def progress_files(self, thread_id: Optional[str]) -> List[Path]:
        """The thread's rollout file: codex appends to it as items complete."""
        if not thread_id:
            return []
        known = self._rollouts.get(thread_id)
        if known is not None and known.exists():
            return [known]  # sampled every few seconds: no walk of a store that grows every night
        sessions = self.codex_home / "sessions"
        found = sorted(sessions.rglob(f"rollout-*-{thread_id}.jsonl")) if sessions.is_dir() else []
        if found:
            self._rollouts[thread_id] = found[0]
        return found


def _rollout_thread_and_cwd(path: Path):
    thread, cwd = None, None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                payload = record.get("payload") if isinstance(record, dict) else None
                if not isinstance(payload, dict):
                    continue
                if record.get("type") == "session_meta":
                    thread = thread or payload.get("id")
                    cwd = payload.get("cwd") or cwd
                elif record.get("type") == "turn_context" and payload.get("cwd"):
                    cwd = payload["cwd"]
    except OSError:
        return None, None
    return thread, cwd

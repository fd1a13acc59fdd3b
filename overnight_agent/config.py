"""The configuration schema (YAML, version 2), its defaults, and loading it.

Owns: every setting's name, converter, default and one-line doc; reading the YAML file; resolving
repo-relative paths against the primary repository's root. Must not: touch git, processes or
state files. Defaults live here and nowhere else: every command reads them through `load()`.

A bad file gives one `ConfigError` line naming the file, the key and what was expected.
"""
import dataclasses
import os
import re
import shutil
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

from . import pathglob, timeparse
from .state import RunLayout
from .exitcodes import ConfigError

SEED_CONFIG_PATHS = ("docs/meta/automation/overnight_agent.yaml", ".overnight-agent.yaml")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")


# --- converters: each takes the raw YAML value and returns the typed one or raises ValueError ---

def _string(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    if "\0" in value:
        raise ValueError("holds a NUL character; no path, name or argument can")
    return value


def _optional_string(value):
    return None if value is None else _string(value)


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= sys.float_info.max:
        raise ValueError("expected a finite number greater than 0")  # NaN, .inf and huge ints fail too
    return float(value)


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def _one_of(*choices):
    def convert(value):
        if value not in choices:
            raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(choices)}")
        return value
    return convert


def _branch(value):
    value = _string(value)
    if value.startswith(("-", "/")) or ".." in value or " " in value or value.endswith("/"):
        raise ValueError(f"{value!r} is not a usable branch name")
    return value


def _string_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    if any("\0" in v for v in value):
        raise ValueError("an entry holds a NUL character; no path, name or argument can")
    return list(value)


def _codex_overrides(value):
    items = _string_list(value)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ValueError(f"{item!r} is not a codex -c override; expected key=value")
    return items


def _version(value):
    if value != 2 or isinstance(value, bool):
        raise ValueError(f"{value!r} is not supported; expected 2")
    return 2  # not 2.0


def setting(convert: Callable, default: Any, doc: str):
    """A config key: its converter, its default (MISSING: required) and what it means."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"convert": convert, "doc": doc})
    return field(default=default, metadata={"convert": convert, "doc": doc})


def _clock(value):
    moment = timeparse.parse_clock(value)
    return f"{moment.hour:02d}:{moment.minute:02d}"


@dataclass(frozen=True)
class GitIdentity:
    name: str = setting(_string, "Overnight Agent", "author and committer name of the tool's commits")
    email: str = setting(_string, "overnight-agent@localhost", "author and committer email")


@dataclass(frozen=True)
class RepoConfig:
    base_branch: str = setting(_branch, "main", "branch the session branch starts from")
    session_worktree_root: str = setting(
        _string, "../{repo_name}_worktrees/overnight_session",
        "folder holding one session worktree per run (<root>/<run_id>)")
    ops_journal_branch: str = setting(_branch, "overnight/ops-journal", "branch of the ops journal")
    ops_journal_worktree: str = setting(
        _string, "../{repo_name}_worktrees/overnight_ops_journal", "worktree of the ops journal")
    run_root: str = setting(_string, "tmp/overnight_agent", "local-only runtime folder (lock, logs)")
    session_state: Optional[str] = setting(
        _optional_string, None, "durable session state file; default <run_root>/session.json")
    exec_summary_log: str = setting(
        _string, "docs/meta/logs/ops/executive_summary.log",
        "append-only summary, relative to the ops-journal worktree")
    reports_dir: str = setting(
        _string, "docs/meta/logs/ops", "strategy notes and questions, relative to the ops-journal worktree")
    git_identity: GitIdentity = GitIdentity()


@dataclass(frozen=True)
class CodexConfig:
    codex_bin: str = setting(_string, "codex", "the Codex CLI executable (name on PATH or a path)")
    codex_home: Optional[str] = setting(
        _optional_string, None, "CODEX_HOME for the agent; default <run_root>/codex_home")
    model: str = setting(_string, "gpt-5.3-codex", "model pinned on every exec and resume")
    model_reasoning_effort: str = setting(
        _one_of(*REASONING_EFFORTS), "xhigh", "reasoning effort pinned on every exec and resume")
    full_auto: bool = setting(_boolean, True, "true means --sandbox workspace-write")
    sandbox: Optional[str] = setting(
        lambda v: None if v is None else _one_of(*SANDBOX_MODES)(v), None,
        "codex sandbox mode; default workspace-write")
    extra_config: List[str] = setting(
        _codex_overrides, [], "extra `-c key=value` settings passed to codex")
    env_passthrough: List[str] = setting(
        _string_list, [], "extra environment variables passed to codex (besides PATH, HOME, locale, "
        "the provider key variables and every env_key in codex_home/config.toml)")
    prompt_template: Optional[str] = setting(
        _optional_string, None, "the old name of prompts.boot (still read, for every agent)")
    resume_prompt_template: Optional[str] = setting(
        _optional_string, None, "the old name of prompts.resume (still read, for every agent)")
    wrap_up_prompt_template: Optional[str] = setting(
        _optional_string, None, "the old name of prompts.wrap_up (still read, for every agent)")


@dataclass(frozen=True)
class ClaudeConfig:
    """agent: claude (Claude Code, pinned 2.1.328): docs/claude-code.md."""
    bin: str = setting(_string, "claude", "the Claude Code CLI executable (name on PATH or a path)")
    home: Optional[str] = setting(
        _optional_string, None, "CLAUDE_CONFIG_DIR for the agent; default <run_root>/claude_home")
    model: str = setting(_string, "claude-opus-5-5", "model pinned on every start and resume (--model)")
    effort: Optional[str] = setting(
        lambda v: None if v is None else _one_of("low", "medium", "high", "xhigh", "max")(v), None,
        "reasoning effort pinned on every start and resume (--effort); default: the CLI's own")
    permission_mode: str = setting(
        _one_of("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan", "default"), "acceptEdits",
        "--permission-mode on every call (not stored with a session, so repeated on resume); "
        "bypassPermissions is refused by Claude Code as root unless IS_SANDBOX=1 is passed through "
        "(never done for you): the night then ends failed at its first attempt, saying why")
    allowed_tools: List[str] = setting(
        _string_list, ["Bash", "Edit", "Write", "Read"],
        "--allowedTools on every call: what the agent may use without asking (without Bash, "
        "its commands are denied silently: the attempt completes with the denials in its detail)")
    extra_args: List[str] = setting(_string_list, [], "extra arguments passed to claude on every call")
    env_passthrough: List[str] = setting(
        _string_list, [], "extra environment variables passed to claude (besides PATH, HOME, locale "
        "and ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL); one of "
        "CLAUDE_CODE_MAX_RETRIES, API_TIMEOUT_MS, CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS listed here "
        "keeps its value instead of the backend's bound")


@dataclass(frozen=True)
class GeminiConfig:
    """agent: gemini (Gemini CLI, pinned 0.61.0): docs/gemini-cli.md."""
    bin: str = setting(_string, "gemini", "the Gemini CLI executable (name on PATH or a path)")
    home: Optional[str] = setting(
        _optional_string, None, "the Gemini CLI's home for the agent; default <run_root>/gemini_home")
    model: str = setting(_string, "gemini-2.5-pro", "model pinned on every start and resume (-m)")
    approval_mode: str = setting(
        _one_of("default", "auto_edit", "yolo"), "yolo", "--approval-mode on every call")
    extra_args: List[str] = setting(_string_list, [], "extra arguments passed to gemini on every call")
    env_passthrough: List[str] = setting(
        _string_list, [], "extra environment variables passed to gemini (besides PATH, HOME, locale and "
        "GEMINI_API_KEY, GOOGLE_API_KEY, GOOGLE_GEMINI_BASE_URL)")
    max_attempts: int = setting(
        _positive_int, 3, "general.maxAttempts in the CLI's settings: tries of one model request "
        "(at most 10) before the attempt ends and the supervisor's own backoff takes over")


@dataclass(frozen=True)
class PromptsConfig:
    boot: Optional[str] = setting(
        _optional_string, None, "file replacing the shipped boot prompt, for any agent (placeholders: see docs)")
    resume: Optional[str] = setting(_optional_string, None, "file replacing the shipped resume prompt")
    wrap_up: Optional[str] = setting(_optional_string, None, "file replacing the shipped wrap-up prompt")


# prompts.<kind> was codex.<old name> before other agents came; the old names are still read.
PROMPT_OLD_KEYS = {"boot": "prompt_template", "resume": "resume_prompt_template",
                   "wrap_up": "wrap_up_prompt_template"}


@dataclass(frozen=True)
class ScheduleConfig:
    deadline: str = setting(_clock, "05:00", "local time the night ends (HH:MM)")
    window_start: str = setting(
        _clock, "17:00",
        "a scheduled start before this time of day (and after the deadline) waits for the next night")
    wrap_up: float = setting(timeparse.parse_duration, "30m", "how long before the deadline to wrap up")


@dataclass(frozen=True)
class RestartConfig:
    backoff_initial: float = setting(timeparse.parse_duration, "2s", "wait before resuming after an exit")
    backoff_max: float = setting(timeparse.parse_duration, "5m", "the longest wait between attempts")
    backoff_factor: float = setting(_positive_number, 2.0, "growth of the wait on quick repeated exits")
    healthy_after: float = setting(
        timeparse.parse_duration, "10m", "an attempt that ran this long resets the backoff")
    resume_failures_before_fresh: int = setting(
        _positive_int, 2, "failed resumes of one thread (died, or hung silent, before naming it) before a fresh session starts")
    max_per_hour: int = setting(
        _positive_int, 30, "attempts started in any hour before the night pauses (crash-loop cap)")
    rate_limit_backoff: float = setting(
        timeparse.parse_duration, "1m", "first wait after a 429 or server error; doubles while they repeat")
    usage_limit_margin: float = setting(
        timeparse.parse_duration, "2m", "extra wait after the reset time a usage-limit message gives")


@dataclass(frozen=True)
class StopConfig:
    sigint_grace: float = setting(timeparse.parse_duration, "10s", "wait after SIGINT before SIGTERM")
    sigterm_grace: float = setting(timeparse.parse_duration, "10s", "wait after SIGTERM before SIGKILL")


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError("expected a fraction of one CPU core between 0 and 1, e.g. 0.005")
    return float(value)


def _token_budget(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a whole number of tokens (0: no budget)")
    return value


@dataclass(frozen=True)
class LivenessConfig:
    model_silent: float = setting(
        timeparse.parse_duration, "15m",
        "stalled when no evidence of life for this long while no command runs (model thinking)")
    command_silent: float = setting(
        timeparse.parse_duration, "30m",
        "stalled when no evidence of life for this long while a command runs")
    sample_interval: float = setting(
        timeparse.parse_duration, "5s", "how often files and CPU are sampled for evidence (at least "
        "five times per stall limit; a verdict always samples first)")
    agent_cpu_floor: float = setting(
        _fraction, 0.05, "CPU share of the agent CLI itself that counts as work (below: idle timers and "
        "start-up; codex idles at about 0.3% and streams at about 0.5%)")
    agent_cpu_ceiling: float = setting(
        _fraction, 0.25, "CPU share at which the agent CLI alone counts as spinning, not working (streaming uses under 2%)")
    command_cpu_floor: float = setting(
        _fraction, 0.005, "CPU share of the agent's commands that counts as work")
    network_down_limit: float = setting(
        timeparse.parse_duration, "10m",
        "stop an attempt whose CLI has been waiting for the network this long (codex retries forever)")


@dataclass(frozen=True)
class BudgetConfig:
    max_tokens: int = setting(
        _token_budget, 0, "input+output tokens per night; when spent the night ends (0: no budget)")


@dataclass(frozen=True)
class CommandAgentConfig:
    argv: List[str] = setting(
        _string_list, [], "agent: command: argv of a fresh start; placeholders {prompt} {run_id} "
        "{worktree} {heartbeat_file}")
    resume_argv: Optional[List[str]] = setting(
        lambda v: None if v is None else _string_list(v), None,
        "agent: command: argv of a restart (default: argv again)")


AGENT_KINDS = ("codex", "claude", "gemini", "command")


def _agent_kind(value):
    return _one_of(*AGENT_KINDS)(value)


def _clip(text: str, limit: int = 300) -> str:
    """Text that may quote a huge value (a pasted file), cut to a readable part of one line:
    journald splits a line past LineMax, and nobody reads 100 kB of it."""
    return text if len(text) <= limit else f"{text[:limit // 2]} ... {text[-(limit // 2):]}"


def _plain(text: str, limit: int = 300) -> str:
    """A key or a path as a one-line message shows it: as written, unless that would break the
    line (then quoted and escaped) or run on (then cut)."""
    return _clip(text if text.isprintable() else repr(text), limit)


class KeyedValueError(ValueError):
    """A converter's error about one part of a value: `where` extends the key (`[2].timeout`)."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Suite:
    """A validation suite: a shell command run when a touched path matches one of its globs."""

    name: str
    command: str
    timeout: float
    paths: Tuple[str, ...]      # empty when `always`
    always: bool = False


SUITE_KEYS = ("name", "command", "timeout", "paths")
DEFAULT_SUITE_TIMEOUT = "10m"


def _suites(value):
    if not isinstance(value, list):
        raise ValueError("expected a list of suites, each with name, command, timeout and paths")
    suites, names = [], set()
    for i, raw in enumerate(value):
        where = f"[{i}]"
        if not isinstance(raw, dict):
            raise KeyedValueError(where, "expected a mapping with name, command, timeout and paths")
        for key in raw:
            if key not in SUITE_KEYS:
                raise KeyedValueError(f"{where}.{_plain(str(key), 80)}",
                                      f"unknown key; expected one of {', '.join(SUITE_KEYS)}")
        for key in ("name", "command", "paths"):
            if key not in raw:
                raise KeyedValueError(f"{where}.{key}", "missing; a suite needs name, command and paths")
        try:
            name = _string(raw["name"])
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise ValueError(f"{name!r} is not a suite name; use letters, digits, '.', '_' or '-'")
            if name in names:
                raise ValueError(f"{name!r} is used by two suites; names must be unique")
        except ValueError as exc:
            raise KeyedValueError(f"{where}.name", str(exc)) from None
        try:
            command = _string(raw["command"])
        except ValueError as exc:
            raise KeyedValueError(f"{where}.command", str(exc)) from None
        try:
            timeout = timeparse.parse_duration(raw.get("timeout", DEFAULT_SUITE_TIMEOUT))
        except ValueError as exc:
            raise KeyedValueError(f"{where}.timeout", str(exc)) from None
        paths = raw["paths"]
        if paths == "always" or paths == ["always"]:
            globs, always = (), True
        else:
            if not isinstance(paths, list) or not paths:
                raise KeyedValueError(f"{where}.paths", "expected `always` or a non-empty list of path "
                                                        "globs, e.g. [\"src/**\", \"**/*.rs\"]")
            for j, pattern in enumerate(paths):
                try:
                    _glob(pattern)
                except ValueError as exc:
                    raise KeyedValueError(f"{where}.paths[{j}]", str(exc)) from None
            globs, always = tuple(paths), False
        names.add(name)
        suites.append(Suite(name=name, command=command, timeout=timeout, paths=globs, always=always))
    return suites


def _glob(value):
    """`pathglob.check`, whose regex compiler refuses some classes ([z-a]) with re.error."""
    try:
        return pathglob.check(value)
    except re.error as exc:
        raise ValueError(f"{value!r}: not a usable glob ({exc.msg})") from None


def _optional_glob(value):
    return None if value is None else _glob(value)


def _globs(value):
    return [_glob(p) for p in _string_list(value)]


@dataclass(frozen=True)
class ValidationConfig:
    suites: List[Suite] = setting(
        _suites, [], "suites `{name, command, timeout, paths}` run by `overnight-agent validate` when a "
        "touched path matches one of `paths` (globs), or always with `paths: always`")
    max_changed_files: int = setting(
        _positive_int, 30, "change scope: a commit touching more files than this is refused (ask the operator)")
    docs_index: Optional[str] = setting(
        _optional_string, "docs/index.md",
        "doc sprawl: a new .md file must be linked from this file (null: guard off)")
    docs_exempt: List[str] = setting(
        _globs, [], "globs of .md files that need no link from docs_index")
    perf_cycle_dirs: Optional[str] = setting(
        _optional_glob, None, "perf-cycle retention: glob of one cycle directory, e.g. "
        "benchmarks/perf_cycles/* (null: guard off); one cycle per branch")
    perf_cycle_complete_file: Optional[str] = setting(
        _optional_string, None, "a file every finished cycle directory holds, e.g. cycle_delta.md")


DEFAULT_FORBIDDEN_COMMANDS = [
    "npm publish", "npm unpublish", "yarn publish", "yarn npm publish", "pnpm publish",
    "cargo publish", "cargo yank", "twine upload", "poetry publish", "flit publish", "hatch publish",
    "uv publish", "gem push", "dotnet nuget push", "nuget push", "mvn deploy", "gradle publish",
    "./gradlew publish", "docker push", "podman push", "helm install", "helm upgrade", "helm uninstall",
    "helm push", "kubectl apply", "kubectl create", "kubectl delete", "kubectl replace", "kubectl patch",
    "kubectl rollout", "kubectl scale", "terraform apply", "terraform destroy", "tofu apply",
    "tofu destroy", "pulumi up", "pulumi destroy", "gh release create", "gh release upload",
    "gh release delete", "gh pr merge", "gh repo delete", "gh secret set", "gh secret delete",
    "gh workflow run", "aws secretsmanager rotate-secret", "aws secretsmanager put-secret-value",
    "gcloud secrets versions add", "vault kv put", "vault write", "az keyvault secret set",
    "fly deploy", "flyctl deploy", "vercel deploy", "vercel --prod", "netlify deploy",
    "firebase deploy", "serverless deploy", "sls deploy", "cdk deploy", "sam deploy", "eb deploy",
    "gcloud app deploy", "gcloud run deploy", "gcloud functions deploy", "wrangler deploy",
    "wrangler publish", "ansible-playbook",
]


DEFAULTS_ENTRY = "default"   # in a list setting: the setting's default entries, in its place


def _command_prefixes(value):
    import shlex
    items = []
    for item in _string_list(value):
        for command in (DEFAULT_FORBIDDEN_COMMANDS if item.strip() == DEFAULTS_ENTRY else [item]):
            try:
                tokens = shlex.split(command)
            except ValueError as exc:
                raise ValueError(f"{command!r} is not a command ({exc})") from None
            if not tokens:
                raise ValueError("an empty command would forbid everything")
            if command not in items:
                items.append(command)
    return items


@dataclass(frozen=True)
class GuardConfig:
    forbidden_commands: List[str] = setting(
        _command_prefixes, DEFAULT_FORBIDDEN_COMMANDS,
        "command prefixes codex refuses for the agent (deploys, releases, publishing, secret "
        "rotation); a speed bump, not a sandbox. Setting it replaces the default list unless it "
        "holds the entry `default`; to add to the defaults use extra_forbidden_commands")
    extra_forbidden_commands: List[str] = setting(
        _command_prefixes, [], "command prefixes refused in addition to forbidden_commands "
        "(e.g. your own release script)")
    agent_identity: bool = setting(
        _boolean, True, "the agent's own commits carry repo.git_identity, so its ref updates can be "
        "told from the operator's")

    def forbidden(self) -> List[str]:
        """Every command prefix refused: the list and its extras, each once."""
        return list(dict.fromkeys([*self.forbidden_commands, *self.extra_forbidden_commands]))


def _optional_argv(value):
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a command as a list of strings, e.g. [/home/me/bin/night-failed, "
                         "--channel, ops] (no shell), or null")
    return list(value)


@dataclass(frozen=True)
class NotifyConfig:
    command: Optional[List[str]] = setting(
        _optional_argv, None, "argv run when a night fails, with the report path, run id and final "
        "state appended (also in OVERNIGHT_AGENT_* variables); null: no announcement")
    timeout: float = setting(
        timeparse.parse_duration, "1m", "how long the notify command may run before it is killed")


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2,
               "mib": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3}


def _byte_size(value):
    """`200MB`, `1.5GiB`, `500k` or a whole number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else None
    size = float(match.group(1)) * _BYTE_UNITS[unit] if unit in _BYTE_UNITS else 0.0
    if not 0 < size <= sys.float_info.max:  # 400 digits make an infinite float
        raise ValueError(f"{value!r} is not a size; expected e.g. 200MB, 1GiB, 500k or a number of bytes")
    return int(size)


@dataclass(frozen=True)
class RetentionConfig:
    max_log_bytes: int = setting(
        _byte_size, "200MB", "size cap of one night's run folder (codex logs); past it, output is "
        "no longer logged (see `overnight-agent gc` for removing old nights)")


@dataclass(frozen=True)
class LogsConfig:
    redact_agent_output: bool = setting(
        _boolean, True, "redact secrets from the agent's stdout/stderr on their way to the run logs "
        "(false: byte-exact logs, and an `agent: command` writes its stdout into the run log itself, "
        "at full speed; secrets it prints are then kept)")


def _publish_branches(value):
    pattern = _glob(value)
    if not pattern.startswith("overnight/"):
        raise ValueError(f"{pattern!r} lies outside overnight/; only a night's overnight/* branches are "
                         "ever published")
    return pattern


def _optional_remote(value):
    value = _optional_string(value)
    if value is not None and (value.startswith("-") or any(c.isspace() for c in value)):
        raise ValueError(f"{_plain(value, 80)} is not a remote; expected a remote's name or a URL")
    return value


@dataclass(frozen=True)
class PublishConfig:
    enabled: bool = setting(
        _boolean, False, "at the end of a night, push its overnight/* branches and the ops-journal branch "
        "to `remote` (never force, never another ref); off by default")
    remote: Optional[str] = setting(
        _optional_remote, None, "where to push: a remote of the repository (its name) or a URL; "
        "credentials in a URL are never logged")
    branches: str = setting(
        _publish_branches, "overnight/*", "which of the night's own branches to push (a glob under "
        "overnight/; the ops-journal branch always goes)")
    timeout: float = setting(
        timeparse.parse_duration, "5m", "how long the push may take before it is stopped (recorded as failed)")


@dataclass(frozen=True)
class Config:
    version: int = setting(_version, dataclasses.MISSING, "schema version; must be 2")
    repo: RepoConfig = RepoConfig()
    codex: CodexConfig = CodexConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    restart: RestartConfig = RestartConfig()
    stop: StopConfig = StopConfig()
    liveness: LivenessConfig = LivenessConfig()
    budget: BudgetConfig = BudgetConfig()
    agent: str = setting(_agent_kind, "codex",
                         "which agent CLI to supervise: codex, claude, gemini, or command (any argv)")
    claude: ClaudeConfig = ClaudeConfig()
    gemini: GeminiConfig = GeminiConfig()
    command: CommandAgentConfig = CommandAgentConfig()
    validation: ValidationConfig = ValidationConfig()
    guard: GuardConfig = GuardConfig()
    notify: NotifyConfig = NotifyConfig()
    retention: RetentionConfig = RetentionConfig()
    logs: LogsConfig = LogsConfig()
    publish: PublishConfig = PublishConfig()
    prompts: PromptsConfig = PromptsConfig()


SECTION_TYPES = (Config, RepoConfig, GitIdentity, CodexConfig, ClaudeConfig, GeminiConfig, PromptsConfig,
                 ScheduleConfig, RestartConfig, StopConfig,
                 LivenessConfig, BudgetConfig, CommandAgentConfig, ValidationConfig, GuardConfig,
                 NotifyConfig, RetentionConfig)


@dataclass(frozen=True)
class Paths:
    """Absolute paths derived from a config and the primary repository root."""

    repo_root: Path
    run_root: Path
    session_state: Path
    lock_file: Path
    session_worktree_root: Path
    ops_journal_worktree: Path
    codex_home: Path
    agent_home: Path        # the supervised CLI's own state folder (codex: codex_home)

    def run_dir(self, run_id: str) -> Path:
        return self.run_root / "runs" / run_id

    def run(self, run_id: str) -> RunLayout:
        return RunLayout(self.run_dir(run_id))


@dataclass(frozen=True)
class AgentKeys:
    """Which keys of which section configure an agent CLI (None: it has no such key)."""

    section: str
    product: str
    binary: Optional[str]
    home: Optional[str]
    model: Optional[str]
    effort: Optional[str]


AGENT_KEYS = {
    "codex": AgentKeys("codex", "the Codex CLI", "codex_bin", "codex_home", "model", "model_reasoning_effort"),
    "claude": AgentKeys("claude", "Claude Code", "bin", "home", "model", "effort"),
    "gemini": AgentKeys("gemini", "the Gemini CLI", "bin", "home", "model", None),
    # agent: command runs any argv; it keeps the codex section's model for the record.
    "command": AgentKeys("codex", "the agent", None, "codex_home", "model", "model_reasoning_effort"),
}


@dataclass(frozen=True)
class Loaded:
    config: Config
    source: Optional[Path]  # None: built-in defaults
    paths: Paths

    @property
    def sandbox(self) -> str:
        return self.config.codex.sandbox or "workspace-write"

    @property
    def agent_keys(self) -> "AgentKeys":
        """Where the configured agent's binary, home, model and effort are set."""
        return AGENT_KEYS[self.config.agent]

    def _prompt_setting(self, kind: str) -> Tuple[Optional[str], Optional[str]]:
        """(the key that replaces the shipped `kind` prompt: `prompts.boot`, or its old name
        `codex.prompt_template`; its value), (None, None) when neither is set."""
        value = getattr(self.config.prompts, kind)
        if value is not None:
            return f"prompts.{kind}", value
        old = PROMPT_OLD_KEYS[kind]
        value = getattr(self.config.codex, old)
        return (f"codex.{old}", value) if value is not None else (None, None)

    def prompt_key(self, kind: str) -> Optional[str]:
        return self._prompt_setting(kind)[0]

    def prompt_template(self, kind: str) -> Optional[Path]:
        """The file replacing the shipped `kind` prompt (boot, resume, wrap_up), for any agent."""
        value = self._prompt_setting(kind)[1]
        return resolve_path(self.paths.repo_root, value) if value is not None else None

    def agent_model(self) -> Tuple[str, str]:
        """The model and reasoning effort pinned for the night ("" where the CLI has none)."""
        keys = self.agent_keys
        section = getattr(self.config, keys.section)
        return getattr(section, keys.model), (getattr(section, keys.effort) or "") if keys.effort else ""

    def agent_binary(self, search_path: Optional[str] = None, whose: str = "this process's") -> Optional[str]:
        """The agent CLI to run (None for `agent: command`, whose argv says it all): the
        section's binary key (`codex.codex_bin`, `claude.bin`, `gemini.bin`) as a path (relative
        to the repository root; it must be an executable file), or a name looked up on
        `search_path` (default: this process's PATH)."""
        keys = self.agent_keys
        if keys.binary is None:
            return None
        name = getattr(getattr(self.config, keys.section), keys.binary)
        key, source = f"{keys.section}.{keys.binary}", self.source or "<defaults>"
        if os.sep in name:
            found = resolve_path(self.paths.repo_root, name)
            if not (found.is_file() and os.access(found, os.X_OK)):
                raise ConfigError(f"{source}: {key}: {_plain(str(found))} is not an executable file; "
                                  f"install {keys.product} or fix the path")
            return str(found)
        found_on_path = shutil.which(name, path=search_path)
        if found_on_path is None:
            raise ConfigError(f"{source}: {key}: {_clip(repr(name), 80)} is not on {whose} PATH"
                              f"{f' ({search_path})' if search_path else ''}; install {keys.product} or "
                              f"set {key} to its path")
        return found_on_path


def _build(cls, raw: Any, where: str, source: str):
    """Instantiate section `cls` from the mapping `raw`, converting and checking every key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where or 'top level'}: expected a mapping of keys")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            full = f"{where}.{_plain(str(key), 80)}" if where else _plain(str(key), 80)
            raise ConfigError(
                f"{source}: {full}: unknown key; expected one of {', '.join(sorted(known))}")
    values = {}
    for name, fld in known.items():
        full = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(fld.type) or fld.type in SECTION_TYPES:
            values[name] = _build(fld.type, raw.get(name), full, source)
            continue
        required = fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                raise ConfigError(f"{source}: {full}: missing; add `{name}:` ({fld.metadata['doc']})")
            default = fld.default_factory() if fld.default is dataclasses.MISSING else fld.default
            raw_value = default
        else:
            raw_value = raw[name]
        try:
            converted = fld.metadata["convert"](raw_value)
        except KeyedValueError as exc:
            raise ConfigError(f"{source}: {full}{exc.where}: {_clip(str(exc))}") from None
        except ValueError as exc:
            raise ConfigError(f"{source}: {full}: {_clip(str(exc))}") from None
        values[name] = converted
    return cls(**values)


def _check_coherence(cfg: Config, source: str) -> None:
    codex = cfg.codex
    if codex.full_auto and codex.sandbox not in (None, "workspace-write"):
        raise ConfigError(
            f"{source}: codex.sandbox: {codex.sandbox!r} contradicts codex.full_auto: true "
            "(which means workspace-write); set full_auto: false or drop sandbox")
    if cfg.agent == "command" and not cfg.command.argv:
        raise ConfigError(f"{source}: command.argv: missing; `agent: command` needs the argv to run, "
                          "e.g. [my-agent, --prompt, '{prompt}']")
    for kind, old in PROMPT_OLD_KEYS.items():
        if getattr(cfg.prompts, kind) is not None and getattr(cfg.codex, old) is not None:
            raise ConfigError(f"{source}: codex.{old}: the old name of prompts.{kind}, which is set too; "
                              f"drop codex.{old}")
    if cfg.restart.backoff_max < cfg.restart.backoff_initial:
        raise ConfigError(f"{source}: restart.backoff_max: must not be below restart.backoff_initial")
    if cfg.publish.enabled and cfg.publish.remote is None:
        raise ConfigError(f"{source}: publish.remote: missing; `publish.enabled: true` needs the remote "
                          "to push to (a remote's name or a URL)")
    if cfg.repo.ops_journal_branch == cfg.repo.base_branch:
        raise ConfigError(
            f"{source}: repo.ops_journal_branch: must differ from repo.base_branch "
            f"({_clip(repr(cfg.repo.base_branch), 80)}); e.g. overnight/ops-journal")


def _validate_template(path: Path, key: str, source: str, placeholders) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: {key}: cannot read {_plain(str(path))}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: {key}: {_plain(str(path))} is not UTF-8 text (byte {exc.start}); "
                          "save it as UTF-8") from None
    try:
        names = {m.group("named") or m.group("braced")
                 for m in string.Template.pattern.finditer(text) if m.group("named") or m.group("braced")}
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}: {_plain(str(path))}: {exc}") from None
    unknown = sorted(names - set(placeholders))
    if unknown:
        raise ConfigError(
            f"{source}: {key}: {_plain(str(path))} uses unknown placeholder ${unknown[0]}; "
            f"expected some of {', '.join('$' + p for p in sorted(placeholders))}")


class _Loader(yaml.SafeLoader):
    """YAML without YAML 1.1's base-60 numbers: `05:00` stays the string "05:00", not 300."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Each number needs a digit: the constructors crash on `.` or `0x_` (a plain `run_root: .`).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(0|[1-9][0-9_]*|0x[0-9a-fA-F_]*[0-9a-fA-F][0-9a-fA-F_]*|0o?[0-7_]*[0-7][0-7_]*|0_+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*\.[0-9_]*|\.[0-9_]*[0-9][0-9_]*)([eE][-+]?[0-9]+)?$"
               r"|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."))


def parse(text: str, source: str) -> Config:
    """Config from YAML text; `source` names the file in error messages."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({_clip(problem)})") from None
    except RecursionError:  # the composer recurses once per level of [[[...
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None
    except (ValueError, TypeError, LookupError, AttributeError):  # PyYAML's constructors on `!!int x`
        raise ConfigError(f"{source}: not valid YAML (a value does not fit its !!tag; drop it)") from None
    if raw is None:
        raise ConfigError(f"{source}: empty file; expected at least `version: 2`")
    cfg = _build(Config, raw, "", source)
    _check_coherence(cfg, source)
    return cfg


def find_config(repo_root: Path) -> Optional[Path]:
    for rel in SEED_CONFIG_PATHS:
        candidate = repo_root / rel
        if candidate.is_file():
            return candidate
    return None


def resolve_path(repo_root: Path, text: str) -> Path:
    text = text.replace("{repo_name}", repo_root.name)
    path = Path(os.path.expanduser(text))
    return Path(os.path.normpath(path if path.is_absolute() else repo_root / path))


def resolve_paths(cfg: Config, repo_root: Path) -> Paths:
    repo = cfg.repo
    run_root = resolve_path(repo_root, repo.run_root)
    codex_home = (resolve_path(repo_root, cfg.codex.codex_home) if cfg.codex.codex_home
                  else run_root / "codex_home")
    return Paths(
        repo_root=repo_root,
        run_root=run_root,
        session_state=(resolve_path(repo_root, repo.session_state) if repo.session_state
                       else run_root / "session.json"),
        lock_file=run_root / "overnight-agent.lock",
        session_worktree_root=resolve_path(repo_root, repo.session_worktree_root),
        ops_journal_worktree=resolve_path(repo_root, repo.ops_journal_worktree),
        codex_home=codex_home,
        agent_home=_agent_home(cfg, repo_root, run_root) or codex_home,
    )


def _agent_home(cfg: Config, repo_root: Path, run_root: Path) -> Optional[Path]:
    """The home of a CLI that is not codex (claude.home, gemini.home: `AGENT_KEYS` says which
    key), None for codex and command, whose home is codex_home."""
    keys = AGENT_KEYS[cfg.agent]
    if keys.section == "codex":
        return None
    value = getattr(getattr(cfg, keys.section), keys.home)
    return resolve_path(repo_root, value) if value else run_root / f"{keys.section}_home"


def load(config_path: Optional[Path], repo_root: Path) -> Loaded:
    """Load `config_path` (or the repo's config file, or the defaults) for `repo_root`."""
    source_path = config_path or find_config(repo_root)
    if source_path is None:
        cfg = parse("version: 2\n", "<defaults>")
    else:
        try:
            text = Path(source_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source_path}: cannot read config ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source_path}: not UTF-8 text (byte {exc.start}); save the config "
                              "as UTF-8") from None
        cfg = parse(text, str(source_path))
    paths = resolve_paths(cfg, repo_root)
    loaded = Loaded(cfg, Path(source_path) if source_path else None, paths)
    for kind in PROMPT_OLD_KEYS:
        template = loaded.prompt_template(kind)
        if template is not None:
            from .prompt import PLACEHOLDERS
            _validate_template(template, loaded.prompt_key(kind), str(source_path), PLACEHOLDERS)
    return loaded


def warnings(loaded: Loaded) -> List[str]:
    """One line per setting that is valid but probably not what was meant: a list whose default
    entries the config drops (a fence weakened by writing its list out), a key under its old name."""
    source = str(loaded.source or "<defaults>")
    found = []
    for key, default, _doc in describe():
        if not isinstance(default, list) or not default:
            continue
        section, name = key.rsplit(".", 1) if "." in key else ("", key)
        value = loaded.config
        for part in key.split("."):
            value = getattr(value, part)
        extra = getattr(_section(loaded.config, section), f"extra_{name}", [])
        dropped = [d for d in default if d not in value and d not in extra]
        if dropped:
            shown = ", ".join(dropped[:3]) + (", ..." if len(dropped) > 3 else "")
            found.append(
                f"{source}: {key}: drops {len(dropped)} of its {len(default)} default entries "
                f"({shown}); to extend the defaults, list additions under {section + '.' if section else ''}"
                f"extra_{name} or add `- {DEFAULTS_ENTRY}` to the list")
    for kind, old in PROMPT_OLD_KEYS.items():
        if getattr(loaded.config.codex, old) is not None:
            found.append(f"{source}: codex.{old}: the old name of prompts.{kind} (it applies to every "
                         f"agent); move it to prompts.{kind}")
    return found


def _section(cfg: Any, dotted: str) -> Any:
    for part in filter(None, dotted.split(".")):
        cfg = getattr(cfg, part)
    return cfg


def resolved_text(loaded: Loaded) -> str:
    """What `check-config` prints: the config with every default filled in, the paths it
    resolves to, as YAML."""
    resolved = {"source": str(loaded.source) if loaded.source else "<built-in defaults>",
                "config": to_plain(loaded.config),
                "paths": {k: str(v) for k, v in vars(loaded.paths).items()},
                "sandbox": loaded.sandbox}
    return yaml.safe_dump(resolved, sort_keys=False)


def to_plain(cfg: Any) -> Dict[str, Any]:
    """The config as nested dicts, for printing."""
    return dataclasses.asdict(cfg)


def describe() -> List[Tuple[str, Any, str]]:
    """(key, default, doc) for every setting: the reference table in the docs is generated from it."""
    rows: List[Tuple[str, Any, str]] = []

    def walk(cls, prefix):
        for fld in dataclasses.fields(cls):
            key = f"{prefix}{fld.name}"
            if fld.type in SECTION_TYPES or dataclasses.is_dataclass(fld.type):
                walk(fld.type, key + ".")
            else:
                default = (fld.default_factory() if fld.default is dataclasses.MISSING
                           and fld.default_factory is not dataclasses.MISSING else fld.default)
                rows.append((key, None if default is dataclasses.MISSING else default, fld.metadata["doc"]))

    walk(Config, "")
    return rows


def reference_table() -> str:
    """The Markdown table of every key, default and meaning (docs/configuration.md holds it)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in describe():
        if key == "version":
            shown = "(required)"
        elif default is None:
            shown = "—"
        else:
            text = yaml.safe_dump(default, default_flow_style=True, width=10**6).strip()
            text = text[:-3].strip() if text.endswith("...") else text
            shown = f"`{text}`" if len(text) <= 80 else f"{len(default)} entries (see docs/guardrails.md)"
        lines.append(f"| `{key}` | {shown} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


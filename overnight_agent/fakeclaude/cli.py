"""The stand-in's command line: `claude -p ... --output-format stream-json --verbose`, and playing a turn.

Owns: commander-style parsing (variadic `--allowedTools`, `--` before the prompt), the start-up
refusals in claude's words (root with a bypass of the permission checks, a reused
`--session-id`, an unknown `--resume` id), the stream-json lines, the permission decision for
Bash, playing the scenario's steps (commands in sessions of their own), the exit codes and the
signals (a one-line handler raises `Interrupted`; `run` ends the turn the way claude does).
See the package's docstring for what it must not do.
"""
import contextlib
import datetime as dt
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional

from ..fakecodex.common import (CommonSteps, Interrupted, SignalGate, StartupError, kill_group,
                               run_shell, err as _err, out as _out)
from ..fakecodex.scenario import ScenarioError, Step, load_scenario
from .store import (VERSION, Transcript, config_dir, ensure_private_dir, find_transcript,
                    iso_now, last_model, next_invocation, scenario_path, transcript_path)

DEFAULT_MODEL = "claude-opus-5-5"
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "default", "dontAsk", "plan")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
OUTPUT_FORMATS = ("text", "json", "stream-json")
TOOLS = ["Task", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree", "ExitWorktree",
         "ListAgents", "Monitor", "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup", "SendMessage",
         "Skill", "TaskStop", "ToolSearch", "WebFetch", "WebSearch", "Workflow", "Write"]
DEFAULT_USAGE = {"input_tokens": 200, "output_tokens": 40}
MSG_ROOT = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
MSG_IN_USE = "Error: Session ID {id} is already in use."
MSG_NOT_FOUND = "No conversation found with session ID: {id}"
MSG_REJECTED = ("The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was "
                "a file edit, the new_string was NOT written to the file). STOP what you are doing and wait "
                "for the user to tell you how to proceed.")
MSG_DENIED = ("{cmd} in '{cwd}' needs approval. The path is inside the working directories for this session "
              "('{cwd}'), and Claude Code asks before a shell command creates, changes or removes files there.")
SUBAGENT_STATS = {"spawned": 0, "requested": {"background": 0, "foreground": 0, "unset": 0},
                  "started_in_background": 0, "max_depth": 0, "spawned_by_subagents": 0, "completed": 0,
                  "failed": 0, "killed": {"parent": 0, "user": 0, "system": 0},
                  "refused": {"depth_limit": 0, "concurrency_limit": 0, "budget": 0}, "by_type": {}}
MSG_NO_INPUT = "Error: Input must be provided either through stdin or as a prompt argument when using --print"


# ----------------------------------------------------------------------------- command line

class UsageError(Exception):
    """A commander-style error: `error: ...` on stderr, exit 1."""


FLAGS = {"-p": "print", "--print": "print", "--verbose": "verbose", "-v": "version", "--version": "version",
         "-h": "help", "--help": "help", "--dangerously-skip-permissions": "skip_permissions",
         "--allow-dangerously-skip-permissions": "allow_skip_permissions", "-c": "continue_",
         "--continue": "continue_", "--fork-session": "fork_session", "--no-session-persistence": "ephemeral",
         "--include-partial-messages": "partial", "--bare": "bare"}
VALUES = {"--output-format": "output_format", "--session-id": "session_id", "-r": "resume", "--resume": "resume",
          "--model": "model", "--effort": "effort", "--permission-mode": "permission_mode",
          "--append-system-prompt": "append_system_prompt", "--system-prompt": "system_prompt",
          "--fallback-model": "fallback_model", "--permission-prompts": "permission_prompts",
          "--max-budget-usd": "max_budget_usd", "-n": "name", "--name": "name", "--settings": "settings",
          "--input-format": "input_format"}
VARIADIC = {"--allowedTools": "allowed_tools", "--allowed-tools": "allowed_tools",
            "--disallowedTools": "disallowed_tools", "--disallowed-tools": "disallowed_tools",
            "--add-dir": "add_dir", "--tools": "tools", "--betas": "betas", "--mcp-config": "mcp_config"}
CHOICES = {"output_format": OUTPUT_FORMATS, "effort": EFFORTS, "permission_mode": PERMISSION_MODES}


def parse_args(tokens: List[str]) -> Dict[str, Any]:
    """Commander's rules: a variadic option takes every following token up to the next one that
    starts with '-'; `--` ends the options; `--name=value` works for value options."""
    args: Dict[str, Any] = {"prompt": None}
    index, positional = 0, []
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--":
            positional.extend(tokens[index:])
            break
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, sep, inline = token.partition("=")
        if name in FLAGS and not sep:
            args[FLAGS[name]] = True
        elif name in VALUES:
            if not sep:
                if index >= len(tokens):
                    raise UsageError(f"error: option '{name} <value>' argument missing")
                inline = tokens[index]
                index += 1
            dest = VALUES[name]
            if dest in CHOICES and inline not in CHOICES[dest]:
                raise UsageError(f"error: option '{name} <value>' argument '{inline}' is invalid. Allowed "
                                 f"choices are {', '.join(CHOICES[dest])}.")
            args[dest] = inline
        elif name in VARIADIC:
            values = [inline] if sep else []
            while index < len(tokens) and not tokens[index].startswith("-"):
                values.append(tokens[index])
                index += 1
            if not values:
                raise UsageError(f"error: option '{name} <values...>' argument missing")
            args.setdefault(VARIADIC[name], []).extend(values)
        else:
            raise UsageError(f"error: unknown option '{name}'")
    if len(positional) > 1:
        raise UsageError(f"error: too many arguments. Expected 1 argument but got {len(positional)}.")
    args["prompt"] = positional[0] if positional else None
    return args


def _tools(values: List[str]) -> List[str]:
    """`--allowedTools` values: comma or space separated, parentheses kept whole."""
    found = []
    for value in values:
        depth, current = 0, ""
        for char in value:
            depth += char == "("
            depth -= char == ")"
            if char in ", " and depth == 0:
                if current:
                    found.append(current)
                current = ""
            else:
                current += char
        if current:
            found.append(current)
    return found


def _valid_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def _prompt(args: Dict[str, Any]) -> str:
    """The prompt argument, plus what stdin holds. A pipe that stays silent is waited for 3 s,
    with claude's warning; /dev/null is read at once."""
    data = ""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if not os.isatty(0):
            ready, _, _ = select.select([0], [], [], 3.0)
            if ready:
                data = os.read(0, 1 << 20).decode("utf-8", "replace")
            else:
                _err("Warning: no stdin data received in 3s, proceeding without it. To skip this, "
                     "redirect stdin explicitly: < /dev/null to skip, or pipe from a command or file.")
    prompt = args.get("prompt")
    if prompt and data.strip():
        return f"{data.rstrip()}\n\n{prompt}"
    if prompt:
        return prompt
    if data.strip():
        return data
    raise StartupError(MSG_NO_INPUT)


def _bypass_asked(args: Dict[str, Any]) -> bool:
    return bool(args.get("skip_permissions") or args.get("allow_skip_permissions")
                or args.get("permission_mode") == "bypassPermissions")


# ----------------------------------------------------------------------------- usage-limit text

def usage_limit_text(value: Any, now: Optional[dt.datetime] = None) -> str:
    """Claude Code's usage-limit result (not measured on 2.1.328: the wording of earlier
    versions): None -> no reset time; "3am" / "1:57 AM" -> `... resets <value>`; seconds ->
    `Claude AI usage limit reached|<epoch>`."""
    if value is None:
        return "You've hit your usage limit."
    if isinstance(value, str):
        return f"You've hit your usage limit \u00b7 resets {value}"
    now = now or dt.datetime.now().astimezone()
    return f"Claude AI usage limit reached|{int((now + dt.timedelta(seconds=value)).timestamp())}"


# ----------------------------------------------------------------------------- the turn

def _usage_block(counts: Dict[str, int]) -> Dict[str, Any]:
    return {"input_tokens": counts.get("input_tokens", 0),
            "cache_creation_input_tokens": counts.get("cache_creation_input_tokens", 0),
            "cache_read_input_tokens": counts.get("cache_read_input_tokens", 0),
            "output_tokens": counts.get("output_tokens", 0),
            "output_tokens_details": {"thinking_tokens": counts.get("thinking_tokens", 0)},
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard",
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "inference_geo": "", "iterations": [], "speed": "standard", "fallback_credit": None}


class Turn(CommonSteps):
    """Plays one invocation of the scenario as one `-p` run of the session."""

    def __init__(self, args: Dict[str, Any], session_id: str, cwd: str, model: str, mode: str,
                 transcript: Transcript, gate: SignalGate):
        self.stream = args.get("output_format") == "stream-json"
        self.output_format = args.get("output_format") or "text"
        self.session_id, self.cwd, self.model, self.mode = session_id, cwd, model, mode
        self.allowed = _tools(args.get("allowed_tools") or [])
        self.transcript = transcript
        self.gate = gate
        self.started = time.monotonic()
        self.usage: Dict[str, int] = {}
        self.explicit_usage = False
        self.requests = 0
        self.message_id: Optional[str] = None   # the "API response" the next blocks belong to
        self.last_text: Optional[str] = None
        self.denials: List[Dict[str, Any]] = []
        self.running: Dict[int, subprocess.Popen] = {}   # pgid -> command still running
        self.open_call: Optional[str] = None             # tool_use id of the command running

    # -- lines

    def emit(self, record: Dict[str, Any]) -> None:
        if self.stream:
            _out(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    def init(self, api_key_source: str) -> None:
        self.emit({"type": "system", "subtype": "init", "cwd": self.cwd, "session_id": self.session_id,
                   "tools": TOOLS, "mcp_servers": [], "model": self.model, "permissionMode": self.mode,
                   "slash_commands": [], "terminal_slash_commands": [], "apiKeySource": api_key_source,
                   "claude_code_version": VERSION, "output_style": "default", "agents": [], "skills": [],
                   "plugins": [], "capabilities": [], "analytics_disabled": True, "product_feedback_disabled": True,
                   "uuid": str(uuid.uuid4()),
                   "memory_paths": {"auto": os.path.join(os.path.dirname(self.transcript.path), "memory") + "/"},
                   "original_cwd": self.cwd, "additional_directories": [],
                   "messaging_socket_path": os.path.join(tempfile.gettempdir(), "cc-socks", f"{os.getpid()}.sock"),
                   "fast_mode_state": "off", "fast_mode_disabled_reason": "sdk_opt_in_required",
                   "per_turn_effort_active": True, "ultrathink_available": False, "ultrathink_typed_raises": False,
                   "view_mode": "default"})

    def _request(self) -> str:
        """A new "API response" (one request): blocks until the next end share its id."""
        if self.message_id is None:
            self.requests += 1
            self.message_id = "msg_fake_" + uuid.uuid4().hex[:20]
        return self.message_id

    def assistant(self, block: Dict[str, Any]) -> None:
        message = {"id": self._request(), "type": "message", "role": "assistant", "model": self.model,
                   "content": [block], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 100, "output_tokens": 1, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}, "context_management": None}
        line_id = str(uuid.uuid4())
        request_id = "req_fake_" + self.message_id[-12:]
        self.emit({"type": "assistant", "message": message, "parent_tool_use_id": None,
                   "session_id": self.session_id, "uuid": line_id, "timestamp": iso_now(),
                   "request_id": request_id})
        self.transcript.message("assistant", line_id, {"message": message, "requestId": request_id})

    def user(self, content: List[Dict[str, Any]], extra: Optional[Dict[str, Any]] = None) -> None:
        message = {"role": "user", "content": content}
        line_id = str(uuid.uuid4())
        self.emit({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": self.session_id,
                   "uuid": line_id, "timestamp": iso_now(), **(extra or {})})
        self.transcript.message("user", line_id, {"message": message})
        self.message_id = None  # the next assistant block is the answer to a new request

    def result(self, *, is_error: bool, subtype: str = "success", text: Optional[str] = None,
               terminal_reason: Optional[str] = "completed", stop_reason: Optional[str] = "end_turn",
               api_error_status: Optional[int] = None, errors: Optional[List[str]] = None) -> Dict[str, Any]:
        counts = dict(self.usage) if self.explicit_usage else dict(DEFAULT_USAGE)
        cost = round(counts.get("input_tokens", 0) * 3e-6 + counts.get("output_tokens", 0) * 15e-6, 6)
        model_usage = {self.model: {"inputTokens": counts.get("input_tokens", 0),
                                    "outputTokens": counts.get("output_tokens", 0),
                                    "cacheReadInputTokens": counts.get("cache_read_input_tokens", 0),
                                    "cacheCreationInputTokens": counts.get("cache_creation_input_tokens", 0),
                                    "webSearchRequests": 0, "costUSD": cost}}
        elapsed = int((time.monotonic() - self.started) * 1000)
        record = {"type": "result", "subtype": subtype, "is_error": is_error, "duration_ms": elapsed,
                  "duration_api_ms": min(elapsed, 100 * self.requests), "num_turns": max(self.requests, 1),
                  "result": text, "stop_reason": stop_reason, "session_id": self.session_id,
                  "total_cost_usd": cost, "usage": _usage_block(counts), "modelUsage": model_usage,
                  "permission_denials": self.denials, "terminal_reason": terminal_reason,
                  "fast_mode_state": "off", "fast_mode_disabled_reason": "sdk_opt_in_required",
                  "api_error_status": api_error_status, "uuid": str(uuid.uuid4()), "queued_turn_count": 0,
                  "result_index": 0, "model_usage_since_last_result": model_usage}
        record["safety_stops"] = 0
        record["subagent_stats"] = SUBAGENT_STATS
        if errors is not None:  # an interrupted turn: no text, no API status
            record["errors"] = errors
            del record["result"], record["api_error_status"]
        elif is_error:
            record["api_error_type"] = "rate_limit" if api_error_status == 429 else "api_error"
        else:  # timings of the stream that answered
            record.update(ttft_ms=100, ttft_stream_ms=100, time_to_request_ms=50, first_content_frame_ms=100)
        self.emit(record)
        if self.output_format == "json":
            _out(json.dumps(record, ensure_ascii=False))
        elif self.output_format == "text" and text:
            _out(text)
        return record

    # -- the run

    def run(self, steps: List[Step]) -> int:
        for step in steps:
            code = getattr(self, f"_step_{step.kind}")(step.value, step.options)
            if code is not None:
                return code
        return self.complete()

    def complete(self) -> int:
        if self.message_id is None and self.last_text is None:
            self._step_message("Done.", {})
        self.result(is_error=False, text=self.last_text or "")
        return 0

    def api_failure(self, text: str, status: Optional[int], code: int = 1) -> int:
        self.message_id = None
        self._step_message(text, {})
        self.result(is_error=True, text=text, terminal_reason="api_error", stop_reason="stop_sequence",
                    api_error_status=status)
        return code

    def interrupted(self, signum: int) -> int:
        """SIGINT: the running command's group killed, the turn ends as claude ends it (a result
        with is_error true when a tool call was cut, none when waiting on the API), exit 0.
        SIGTERM/SIGHUP: the command killed, its result "Exit code 137", no result line, 128+N."""
        call = self.open_call
        self.kill_running()
        if signum == signal.SIGINT:
            if call is not None:
                self.user([{"type": "tool_result", "content": MSG_REJECTED, "is_error": True, "tool_use_id": call}],
                          {"tool_use_result": "User rejected tool use",
                           "tool_result_meta": [{"id": call, "non_execution_kind": "user-rejected"}]})
                self.user([{"type": "text", "text": "[Request interrupted by user for tool use]"}])
                self.result(is_error=True, subtype="error_during_execution", text=None,
                            terminal_reason="aborted_tools", stop_reason="tool_use",
                            errors=["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=tool_use"])
            else:
                self.user([{"type": "text", "text": "[Request interrupted by user]"}])
            return 0
        if call is not None:
            self.user([{"type": "tool_result", "content": "Exit code 137", "is_error": True, "tool_use_id": call}],
                      {"tool_use_result": "Error: Exit code 137",
                       "tool_result_meta": [{"id": call, "permission_decision": {
                           "decision": "accept", "source": "config", "reason_type": "mode"}}]})
        return 128 + signum

    def kill_running(self) -> None:
        for pgid in list(self.running):
            kill_group(pgid)
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.running.pop(pgid).wait(timeout=5)
        self.open_call = None

    def _bash_allowed(self) -> bool:
        if self.mode in ("acceptEdits", "auto", "bypassPermissions"):
            return True
        return any(tool == "Bash" or tool.startswith("Bash(") for tool in self.allowed)

    # -- steps: each returns None to go on, or the exit code

    def _step_reasoning(self, text, _options):
        self.assistant({"type": "thinking", "thinking": text, "signature": ""})

    def _step_message(self, text, _options):
        self.assistant({"type": "text", "text": text})
        self.last_text = text

    def _step_shell(self, cmd, options):
        call = "toolu_" + uuid.uuid4().hex[:24]
        self.assistant({"type": "tool_use", "id": call, "name": "Bash", "input": {"command": cmd}})
        self.last_text = None
        if not self._bash_allowed():
            message = MSG_DENIED.format(cmd=cmd.split()[0] if cmd.split() else cmd, cwd=self.cwd)
            self.emit({"type": "system", "subtype": "permission_denied", "tool_name": "Bash", "tool_use_id": call,
                       "message": message, "uuid": str(uuid.uuid4()), "session_id": self.session_id})
            self.denials.append({"tool_name": "Bash", "tool_use_id": call, "tool_input": {"command": cmd}})
            self.user([{"type": "tool_result", "content": message, "is_error": True, "tool_use_id": call}],
                      {"tool_use_result": f"Error: {message}"})
            return None
        self.open_call = call
        proc, code, output = run_shell(cmd, cwd=self.cwd, env=dict(os.environ), running=self.running,
                                       yield_after=options.get("yield_after"), hold=self.gate.hold())
        self.open_call = None
        if code is None:  # moved to the background; killed at the turn's end
            self.user([{"tool_use_id": call, "type": "tool_result", "is_error": False,
                        "content": f"Command running in background with ID: {proc.pid}"}],
                      {"tool_use_result": {"stdout": "", "stderr": "", "interrupted": False, "isImage": False,
                                           "noOutputExpected": False, "backgroundTaskId": str(proc.pid)}})
            return None
        output = output.rstrip("\n")
        meta = {"tool_result_meta": [{"id": call, "permission_decision": {
            "decision": "accept", "source": "config", "reason_type": "mode"}}]}
        if code == 0:
            self.user([{"tool_use_id": call, "type": "tool_result",
                        "content": output or "(Bash completed with no output)", "is_error": False}],
                      {"tool_use_result": {"stdout": output, "stderr": "", "interrupted": False, "isImage": False,
                                           "noOutputExpected": False}, **meta})
        else:
            text = f"Exit code {code}" + (f"\n{output}" if output else "")
            self.user([{"type": "tool_result", "content": text, "is_error": True, "tool_use_id": call}],
                      {"tool_use_result": f"Error: {text}", **meta})
        return None

    def _step_usage(self, usage, _options):
        self.explicit_usage = True
        names = {"cached_input_tokens": "cache_read_input_tokens",
                 "cache_write_input_tokens": "cache_creation_input_tokens",
                 "reasoning_output_tokens": "thinking_tokens"}
        for key, count in usage.items():
            name = names.get(key, key)
            self.usage[name] = self.usage.get(name, 0) + count

    def _step_crash(self, code, _options):
        _err(f"fake claude: crash (exit {code})")
        return code

    def _step_exit_early(self, enabled, _options):
        return self.complete() if enabled else None

    def _step_fail(self, message, options):
        retries = int(options.get("retries", 0))
        for attempt in range(1, retries + 1):
            self.emit({"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": retries,
                       "retry_delay_ms": int(options.get("retry_delay", 0.0) * 1000), "error_status": 500,
                       "error": "server_error", "session_id": self.session_id, "uuid": str(uuid.uuid4())})
            time.sleep(options.get("retry_delay", 0.0))
        return self.api_failure(f"API Error: {message}", None)

    def _step_usage_limit(self, value, _options):
        return self.api_failure(usage_limit_text(value), 429)

    def _step_network_down(self, interval, _options):
        attempt = 0
        while True:  # the step's meaning: the network never comes back
            attempt += 1
            self.emit({"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10,
                       "retry_delay_ms": int(interval * 1000), "error_status": None, "error": "unknown",
                       "session_id": self.session_id, "uuid": str(uuid.uuid4())})
            time.sleep(interval)


# ----------------------------------------------------------------------------- a run

def _session(args: Dict[str, Any], home: str, cwd: str):
    """(session id, transcript path, resumed, model of the session) after claude's checks."""
    if args.get("session_id") and (args.get("resume") or args.get("continue_")) and not args.get("fork_session"):
        raise StartupError("Error: --session-id can only be used with --continue or --resume if "
                           "--fork-session is also specified.")
    if args.get("continue_"):
        raise StartupError("fake claude: --continue is not emulated (it is cwd-scoped and silently "
                           "starts a new session elsewhere: resume by id)")
    resume = args.get("resume")
    if resume:
        if not _valid_uuid(resume):
            raise StartupError("Error: --resume requires a valid session ID or session title")
        path = find_transcript(home, resume)
        if path is None:
            raise _NotFound(resume)
        return resume, path, True, last_model(path)
    session_id = args.get("session_id") or str(uuid.uuid4())
    if not _valid_uuid(session_id):
        raise StartupError("Error: Invalid session ID. Must be a valid UUID.")
    if find_transcript(home, session_id):
        raise StartupError(MSG_IN_USE.format(id=session_id))
    return session_id, transcript_path(home, cwd, session_id), False, None


class _NotFound(Exception):
    def __init__(self, session_id: str):
        super().__init__(session_id)
        self.session_id = session_id


def _not_found(args: Dict[str, Any], session_id: str) -> int:
    """Claude's answer to an unknown `--resume` id: a result line, the reason on stderr, exit 1."""
    if args.get("output_format") in ("stream-json", "json"):
        record = {"type": "result", "subtype": "error_during_execution", "duration_ms": 0, "duration_api_ms": 0,
                  "is_error": True, "num_turns": 0, "stop_reason": None, "session_id": session_id,
                  "total_cost_usd": 0, "usage": _usage_block({}), "modelUsage": {}, "permission_denials": [],
                  "uuid": str(uuid.uuid4()), "errors": [MSG_NOT_FOUND.format(id=session_id)], "result_index": 0}
        _out(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    _err(MSG_NOT_FOUND.format(id=session_id))
    return 1


def run(args: Dict[str, Any]) -> int:
    home = config_dir()
    gate = SignalGate().install()
    turn: Optional[Turn] = None
    transcript: Optional[Transcript] = None
    try:
        if os.geteuid() == 0 and _bypass_asked(args) and os.environ.get("IS_SANDBOX") != "1":
            raise StartupError(MSG_ROOT)
        if args.get("output_format") == "stream-json" and not args.get("verbose"):
            raise StartupError("Error: When using --print, --output-format=stream-json requires --verbose")
        prompt = _prompt(args)
        cwd = os.path.realpath(os.getcwd())
        with contextlib.suppress(OSError):
            ensure_private_dir(os.path.join(tempfile.gettempdir(), f"claude-{os.getuid()}"))
        source = scenario_path(home)
        try:
            scenario = load_scenario(source)
        except ScenarioError as exc:
            raise StartupError(f"fake claude: scenario {source or '(built-in)'}: {exc}") from None
        try:
            session_id, path, resumed, stored_model = _session(args, home, cwd)
        except _NotFound as missing:
            return _not_found(args, missing.session_id)
        model = args.get("model") or stored_model or DEFAULT_MODEL
        mode = "bypassPermissions" if args.get("skip_permissions") else (args.get("permission_mode") or "default")
        invocation = next_invocation(home)
        invocations = scenario["invocations"]
        steps = invocations[min(invocation, len(invocations) - 1)]
        transcript = Transcript(path, session_id, cwd)
        transcript.raw({"type": "queue-operation", "operation": "enqueue", "timestamp": iso_now(),
                        "sessionId": session_id, "content": prompt})
        transcript.message("user", str(uuid.uuid4()), {
            "message": {"role": "user", "content": prompt}, "permissionMode": mode, "promptSource": "sdk",
            "fakeClaude": {"invocation": invocation, "scenario": source, "effort": args.get("effort"),
                           "resumed": resumed}})
        key_source = "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none"
        turn = Turn(args, session_id, cwd, model, mode, transcript, gate)
        turn.init(key_source)
        return turn.run(steps)
    except StartupError as exc:
        _err(str(exc))
        return 1
    except Interrupted as exc:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if turn is None:
            return 0 if exc.signum == signal.SIGINT else 128 + exc.signum
        return turn.interrupted(exc.signum)
    finally:
        if turn is not None:
            turn.kill_running()
        if transcript is not None:
            transcript.close()


def main(argv: Optional[List[str]] = None) -> int:
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(tokens)
    except UsageError as exc:
        _err(str(exc))
        return 1
    if args.get("version"):
        _out(f"{VERSION} (Claude Code)")
        return 0
    if args.get("help"):
        _out("Usage: claude [options] [prompt]\n\nClaude Code (fake: overnight_agent.fakeclaude, plays a "
             "scenario file). Only -p (print) mode is emulated; see docs/claude-code.md.")
        return 0
    if not args.get("print"):
        _err("fake claude: only -p/--print is emulated (the interactive terminal UI is not)")
        return 1
    try:
        return run(args)
    except Interrupted as exc:  # a signal during the final clean-up
        return 0 if exc.signum == signal.SIGINT else 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())

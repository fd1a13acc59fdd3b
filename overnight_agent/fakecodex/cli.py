"""The stand-in's command line: `codex exec [resume]`, `codex queue`, `--version`, and playing a turn.

Owns: clap-style parsing and usage errors (exit 2), the prompt (stdin as codex reads it), the
settings a turn runs with (nothing comes from the thread), the `--json` event stream and the
human output, playing the scenario's steps (commands in sessions of their own), the exit codes,
and the signals (a one-line handler raises `Interrupted`; `run_exec` kills the running
commands and exits the way codex does). See the package's docstring for what it must not do.
"""
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .common import (CommonSteps, Interrupted, SignalGate, iso_now, kill_group, run_shell,
                     err as _err, out as _out)
from .scenario import (DEFAULT_TURN_USAGE, ScenarioError, Step, load_scenario, scenario_path,
                       usage_limit_message)
from .store import (MSG_TURN_ABORTED, USAGE_KEYS, VERSION, Rollout, StartupError, Thread,
                    codex_home, load_config, next_invocation, open_thread, queue_message, take_queued,
                    uuid7)

DEFAULT_MODEL = "gpt-5.3-codex"
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
COLORS = ("always", "never", "auto")
MSG_STDIN = "Reading additional input from stdin..."
MSG_STDIN_PROMPT = "Reading prompt from stdin..."
MSG_UNTRUSTED = "Not inside a trusted directory and --skip-git-repo-check was not specified."
MSG_METADATA = ("Model metadata for `{model}` not found. Defaulting to fallback metadata; "
                "this can degrade performance and cause issues.")
MSG_NETWORK = "Reconnecting... waiting for network (Connection failed: error sending request)"


# ----------------------------------------------------------------------------- command line

class UsageError(Exception):
    """A clap-style command-line error: printed to stderr, exit 2."""

    def __init__(self, message: str, usage: Optional[str] = None):
        super().__init__(message)
        self.usage = usage

    def render(self) -> str:
        usage = f"\nUsage: {self.usage}\n" if self.usage else ""
        return f"error: {self}\n{usage}\nFor more information, try '--help'."


FLAG, VALUE, LIST = "flag", "value", "list"
Opt = namedtuple("Opt", "names dest kind metavar choices")


def _opt(names: str, dest: str, kind: str = FLAG, metavar: str = "", choices=None) -> Opt:
    return Opt(tuple(names.split()), dest, kind, metavar, choices)


_CONFIG_OPTS = [_opt("-c --config", "config", LIST, "<key=value>"),
                _opt("--enable", "enable", LIST, "<FEATURE>"),
                _opt("--disable", "disable", LIST, "<FEATURE>")]
_COMMON_OPTS = _CONFIG_OPTS + [
    _opt("-m --model", "model", VALUE, "<MODEL>"),
    _opt("--json", "json"),
    _opt("-o --output-last-message", "output_last_message", VALUE, "<FILE>"),
    _opt("--skip-git-repo-check", "skip_git_repo_check"),
    _opt("--ephemeral", "ephemeral"),
    _opt("--ignore-user-config", "ignore_user_config"),
    _opt("--ignore-rules", "ignore_rules"),
    _opt("--dangerously-bypass-approvals-and-sandbox", "bypass"),
    _opt("-h --help", "help"),
]
TOP_OPTS = _CONFIG_OPTS + [_opt("-h --help", "help"), _opt("-V --version", "version")]
EXEC_OPTS = _COMMON_OPTS + [
    _opt("-s --sandbox", "sandbox", VALUE, "<SANDBOX_MODE>", SANDBOX_MODES),
    _opt("-C --cd", "cd", VALUE, "<DIR>"),
    _opt("--add-dir", "add_dir", LIST, "<DIR>"),
    _opt("--color", "color", VALUE, "<COLOR>", COLORS),
    _opt("-V --version", "version"),
]
RESUME_OPTS = _COMMON_OPTS + [_opt("--last", "last"), _opt("--all", "all")]
QUEUE_OPTS = [_opt("--thread", "thread", VALUE, "<THREAD_ID>"),
              _opt("--message", "message", VALUE, "<TEXT>"), _opt("-h --help", "help")]
# Real options this fake does not emulate: rejected, with a note saying why.
NOT_EMULATED = frozenset("-i --image -p --profile --oss --local-provider --strict-config "
                         "--approve-for-me --dangerously-bypass-hook-trust --worktree "
                         "--thread-source --cyber-access-program --trust --output-schema "
                         "--remote --remote-auth-token-env -a --ask-for-approval --search".split())

USAGE_TOP = "codex [OPTIONS] [PROMPT]\n       codex [OPTIONS] <COMMAND> [ARGS]"
USAGE_EXEC = "codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]"
USAGE_RESUME = "codex exec resume [OPTIONS] [SESSION_ID] [PROMPT]"
USAGE_QUEUE = "codex queue --thread <THREAD_ID> --message <TEXT>"


def _options_help(opts) -> str:
    lines = []
    for opt in opts:
        names = ", ".join(opt.names)
        lines.append(f"  {names} {opt.metavar}".rstrip())
    return "\n".join(lines)


HELP_TOP = (f"Codex CLI (fake: overnight_agent.fakecodex, plays a scenario file)\n\n"
            f"Usage: {USAGE_TOP}\n\nCommands:\n  exec   Run Codex non-interactively [aliases: e]\n"
            f"  queue  Queue a message for an existing session\n\nOptions:\n"
            f"{_options_help(TOP_OPTS)}\n")
HELP_EXEC = (f"Run Codex non-interactively (fake)\n\nUsage: {USAGE_EXEC}\n\nCommands:\n"
             f"  resume  Resume a previous session by id or pick the most recent with --last\n\n"
             f"Options:\n{_options_help(EXEC_OPTS)}\n")
HELP_RESUME = (f"Resume a previous session by id or pick the most recent with --last (fake)\n\n"
               f"Usage: {USAGE_RESUME}\n\nOptions:\n{_options_help(RESUME_OPTS)}\n")
HELP_QUEUE = (f"Queue a message for an existing session (fake)\n\nUsage: {USAGE_QUEUE}\n\n"
              f"Options:\n{_options_help(QUEUE_OPTS)}\n")


def _split_option(token: str):
    """`--name=value` / `-xVALUE` / `-x=VALUE` -> (name, inline value or None)."""
    if token.startswith("--"):
        name, sep, value = token.partition("=")
        return name, (value if sep else None)
    if len(token) > 2:
        value = token[2:]
        return token[:2], value[1:] if value.startswith("=") else value
    return token, None


def _display(opt: Opt) -> str:
    return f"{opt.names[-1]} {opt.metavar}".rstrip()


def _unexpected(token: str, usage: str) -> UsageError:
    message = f"unexpected argument '{token}' found"
    if token in NOT_EMULATED:
        message += "\n\n  note: the fake codex does not emulate this option"
    return UsageError(message, usage)


def _store(values: Dict[str, Any], opt: Opt, value: Optional[str], usage: str) -> None:
    if opt.kind == FLAG:
        if value is not None:
            raise UsageError(f"unexpected value '{value}' for '{opt.names[-1]}' found; "
                             "no more were expected", usage)
        values[opt.dest] = True
        return
    if opt.choices and value not in opt.choices:
        raise UsageError(f"invalid value '{value}' for '{_display(opt)}'\n"
                         f"  [possible values: {', '.join(opt.choices)}]")
    if opt.kind == LIST:
        values.setdefault(opt.dest, []).append(value)
    elif opt.dest in values:
        raise UsageError(f"the argument '{_display(opt)}' cannot be used multiple times", usage)
    else:
        values[opt.dest] = value


def parse_args(tokens, opts, usage, subcommands=(), max_positionals=1):
    """Clap-like parse of `tokens` against `opts`.

    Returns (values, positionals, subcommand, tokens after the subcommand). A subcommand is
    recognised only in the first positional slot, as clap does.
    """
    table = {name: opt for opt in opts for name in opt.names}
    values: Dict[str, Any] = {}
    positionals: List[str] = []
    index, only_positionals = 0, False
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if only_positionals or token == "-" or not token.startswith("-"):
            if not positionals and not only_positionals and token in subcommands:
                return values, positionals, token, list(tokens[index:])
            if len(positionals) >= max_positionals:
                raise _unexpected(token, usage)
            positionals.append(token)
            continue
        if token == "--":
            only_positionals = True
            continue
        name, inline = _split_option(token)
        opt = table.get(name)
        if opt is None:
            raise _unexpected(name, usage)
        if opt.kind != FLAG and inline is None:
            if index >= len(tokens):
                raise UsageError(f"a value is required for '{_display(opt)}' but none was supplied",
                                 usage)
            inline = tokens[index]
            index += 1
        _store(values, opt, inline, usage)
    return values, positionals, None, []


@dataclass
class ExecArgs:
    """`codex exec [resume]` after parsing: exec's options merged with resume's."""

    prompt: Optional[str] = None
    resume: bool = False
    session_id: Optional[str] = None
    last: bool = False
    all: bool = False
    config: List[str] = field(default_factory=list)
    enable: List[str] = field(default_factory=list)
    disable: List[str] = field(default_factory=list)
    add_dir: List[str] = field(default_factory=list)
    model: Optional[str] = None
    sandbox: Optional[str] = None
    cd: Optional[str] = None
    color: Optional[str] = None
    json: bool = False
    output_last_message: Optional[str] = None
    skip_git_repo_check: bool = False
    ephemeral: bool = False
    ignore_user_config: bool = False
    ignore_rules: bool = False
    bypass: bool = False
    version: bool = False
    help: Optional[str] = None  # the help text to print instead of running


def _apply(args: ExecArgs, values: Dict[str, Any], help_text: str) -> None:
    """Merge parsed values into args: lists extend, later scalars win (resume's over exec's)."""
    for key, value in values.items():
        if key == "help":
            args.help = help_text
        elif isinstance(value, list):
            getattr(args, key).extend(value)
        else:
            setattr(args, key, value)


def parse_exec_args(tokens, top_values: Optional[Dict[str, Any]] = None) -> ExecArgs:
    """Parse what follows `codex exec`; options before `resume` apply to the resume too."""
    args = ExecArgs()
    top_config = {key: value for key, value in (top_values or {}).items()
                  if key in ("config", "enable", "disable")}
    _apply(args, top_config, HELP_TOP)
    values, positionals, sub, rest = parse_args(tokens, EXEC_OPTS, USAGE_EXEC,
                                                ("resume", "fork", "review", "help"))
    _apply(args, values, HELP_EXEC)
    if sub in ("fork", "review"):
        raise UsageError(f"the fake codex does not emulate 'codex exec {sub}'", USAGE_EXEC)
    if sub == "help":
        args.help = HELP_EXEC
    elif sub == "resume":
        _parse_resume(rest, args)
    else:
        args.prompt = positionals[0] if positionals else None
    return args


def _parse_resume(tokens, args: ExecArgs) -> None:
    values, positionals, _sub, _rest = parse_args(tokens, RESUME_OPTS, USAGE_RESUME,
                                                  max_positionals=2)
    _apply(args, values, HELP_RESUME)
    args.resume = True
    if args.last:  # like codex: with --last, a lone SESSION_ID positional is the prompt
        args.prompt = positionals[-1] if positionals else None
    else:
        args.session_id, args.prompt = (positionals + [None, None])[:2]
    if args.session_id is None and not args.last and not args.help:
        raise UsageError("a SESSION_ID or --last is required", USAGE_RESUME)


def effective_settings(args: ExecArgs, config: Dict[str, Any], cwd: str) -> Dict[str, Any]:
    """What this turn runs with. Nothing comes from the thread: a resume re-derives it all
    (traps 1 and 2)."""
    sandbox = "danger-full-access" if args.bypass else (args.sandbox or config.get("sandbox_mode")
                                                         or "read-only")
    if sandbox not in SANDBOX_MODES:
        raise StartupError(f"Error loading config: unknown variant `{sandbox}`, expected one of "
                           "`read-only`, `workspace-write`, `danger-full-access` in `sandbox_mode`")
    workspace = config.get("sandbox_workspace_write")
    roots = workspace.get("writable_roots") if isinstance(workspace, dict) else None
    return {
        "cwd": cwd,
        "model": args.model or str(config.get("model") or DEFAULT_MODEL),
        "reasoning_effort": config.get("model_reasoning_effort"),
        "sandbox_mode": sandbox,
        "writable_roots": list(roots) if isinstance(roots, list) else [],
        "add_dirs": [os.path.abspath(path) for path in args.add_dir],
    }


def _trusted(config: Dict[str, Any], cwd: str) -> bool:
    projects = config.get("projects")
    project = projects.get(cwd) if isinstance(projects, dict) else None
    return isinstance(project, dict) and project.get("trust_level") == "trusted"


def _inside_git_work_tree(cwd: str) -> bool:
    try:
        done = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "true"


# ----------------------------------------------------------------------------- prompt

def _stdin_is_tty() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def _read_stdin() -> str:
    try:
        data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    except (OSError, ValueError, AttributeError):
        return ""
    return data.decode("utf-8", errors="replace")


def resolve_prompt(prompt: Optional[str], resume: bool = False) -> str:
    """The prompt after trap 4: stdin that is not a terminal is read to EOF and appended, except
    by `exec resume` with a PROMPT, which leaves stdin alone and says nothing. No PROMPT: stdin
    is the prompt ("Reading prompt from stdin..."); `-`: the same, silently."""
    if _stdin_is_tty():
        if prompt in (None, "-"):
            raise StartupError("No prompt provided. Either specify one as an argument or pipe "
                               "the prompt into stdin.")
        return prompt
    if resume and prompt not in (None, "-"):
        return prompt
    if prompt is None:
        _err(MSG_STDIN_PROMPT)
    elif prompt != "-":
        _err(MSG_STDIN)  # codex prints it even for /dev/null
    data = _read_stdin().rstrip("\n")
    if prompt in (None, "-"):
        if not data.strip():
            raise StartupError("No prompt provided via stdin.")
        return data
    return f"{prompt}\n\n<stdin>\n{data}\n</stdin>" if data.strip() else prompt


# ----------------------------------------------------------------------------- signals

def _die_by(signum: int) -> None:
    """Exit by the signal itself, so the parent sees -signum / 128+signum."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)
    os._exit(128 + signum)


# ----------------------------------------------------------------------------- the turn

def _human(event: Dict[str, Any], cwd: str) -> Optional[str]:
    """The text codex prints on stderr without --json (approximately)."""
    kind, item = event["type"], event.get("item") or {}
    if kind == "item.completed":
        if item["type"] == "reasoning":
            return f"thinking\n{item['text']}"
        if item["type"] == "agent_message":
            return f"codex\n{item['text']}"
        if item["type"] == "command_execution":
            return (f"exec\n{item['command']} in {cwd}\n{item['aggregated_output']}"
                    f"exited {item['exit_code']}")
        return f"warning: {item.get('message', '')}"
    if kind == "error":
        return f"ERROR: {event['message']}"
    if kind == "turn.completed":
        usage = event["usage"]
        return f"tokens used\n{usage['input_tokens'] + usage['output_tokens']}"
    return None


class Output:
    """The turn as the caller sees it: JSON lines on stdout with --json, else text on stderr."""

    def __init__(self, json_mode: bool, cwd: str):
        self.json_mode = json_mode
        self.cwd = cwd
        self._next_item = 0

    def new_item_id(self) -> str:
        item_id = f"item_{self._next_item}"
        self._next_item += 1
        return item_id

    def event(self, event: Dict[str, Any]) -> None:
        if self.json_mode:
            _out(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
            return
        text = _human(event, self.cwd)
        if text:
            _err(text)


def _message_item(role: str, text: str) -> Dict[str, Any]:
    content_type = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": content_type, "text": text}]}


class Agent(CommonSteps):
    """Plays one invocation of the scenario as one turn of the thread."""

    def __init__(self, out: Output, rollout: Rollout, settings: Dict[str, Any],
                 usage: Dict[str, int], gate: SignalGate, output_file: Optional[str]):
        self.out = out
        self.rollout = rollout
        self.settings = settings
        self.cwd = settings["cwd"]
        self.usage = dict(usage)  # cumulative for the thread
        self.turn_usage: Optional[Dict[str, int]] = None  # explicit `usage` steps of this turn
        self.gate = gate
        self.output_file = output_file
        self.turn_id = str(uuid.uuid4())
        self.last_message: Optional[str] = None
        self.running: Dict[int, subprocess.Popen] = {}  # pgid -> command still running
        self.turn_open = False  # between turn.started and turn.completed / turn.failed

    # -- turn boundaries

    def start_turn(self, inputs: List[str], invocation: int, source: Optional[str]) -> None:
        self.rollout.append("turn_context", {
            "turn_id": self.turn_id, "approval_policy": "never", **self.settings,
            "fake_codex": {"invocation": invocation, "scenario": source}})
        self.rollout.append("event_msg", {"type": "task_started", "turn_id": self.turn_id})
        for text in inputs:
            self.rollout.append("response_item", _message_item("user", text))
            self.rollout.append("event_msg", {"type": "user_message", "message": text})
        self.out.event({"type": "turn.started"})
        self.turn_open = True

    def run(self, steps: List[Step]) -> int:
        """Play the steps; returns the exit code (0 after the last step)."""
        for step in steps:
            code = getattr(self, f"_step_{step.kind}")(step.value, step.options)
            if code is not None:
                return code
        return self._complete()

    def _complete(self) -> int:
        self.turn_open = False
        self._record_usage(self.turn_usage or DEFAULT_TURN_USAGE)
        self.rollout.append("event_msg", {"type": "task_complete", "turn_id": self.turn_id,
                                          "last_agent_message": self.last_message})
        self.out.event({"type": "turn.completed", "usage": dict(self.usage)})
        self.write_output_file(self.last_message or "")
        return 0

    def _fail(self, message: str) -> int:
        self.turn_open = False
        if self.turn_usage:
            self._record_usage(self.turn_usage)
        self.rollout.append("event_msg", {"type": "error", "message": message})
        self.out.event({"type": "error", "message": message})
        self.out.event({"type": "turn.failed", "error": {"message": message}})
        self.write_output_file("")
        return 1

    def abort(self) -> None:
        """SIGINT mid-turn: like codex, keep the usage of the turn so far (a resume counts it)
        and record the abort; nothing on stdout. SIGTERM records nothing."""
        if not self.turn_open:
            return
        self.turn_open = False
        if self.turn_usage:
            self._record_usage(self.turn_usage)
        self.rollout.append("event_msg", {"type": "turn_aborted", "turn_id": self.turn_id,
                                          "reason": "interrupted"})

    def aborted_queue_turn(self, messages: List[str]) -> None:
        """The turn that messages queued during this one start as the process is about to exit:
        aborted at once, codex's note after them (nothing on stdout)."""
        turn_id = uuid7()
        self.rollout.append("turn_context", {"turn_id": turn_id, "approval_policy": "never",
                                             **self.settings})
        self.rollout.append("event_msg", {"type": "task_started", "turn_id": turn_id,
                                          "turn_trigger": "queue"})
        for text in messages:
            self.rollout.append("response_item", _message_item("user", text))
        self.rollout.append("response_item", _message_item("user", MSG_TURN_ABORTED))
        self.rollout.append("event_msg", {"type": "turn_aborted", "turn_id": turn_id,
                                          "reason": "interrupted"})

    def _record_usage(self, turn: Dict[str, int]) -> None:
        last = {key: int(turn.get(key, 0)) for key in USAGE_KEYS}
        for key in USAGE_KEYS:
            self.usage[key] += last[key]
        total = dict(self.usage,
                     total_tokens=self.usage["input_tokens"] + self.usage["output_tokens"])
        self.rollout.append("event_msg", {"type": "token_count", "info": {
            "total_token_usage": total, "last_token_usage": last}})

    def write_output_file(self, text: str) -> None:
        if self.output_file:
            with contextlib.suppress(OSError):
                with open(self.output_file, "w", encoding="utf-8") as fh:
                    fh.write(text)

    def kill_running(self) -> None:
        for pgid in list(self.running):
            kill_group(pgid)
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.running.pop(pgid).wait(timeout=5)

    def emit_item(self, fields: Dict[str, Any]) -> None:
        self.out.event({"type": "item.completed", "item": {"id": self.out.new_item_id(), **fields}})

    def _command_env(self) -> Dict[str, str]:
        """Commands inherit codex's environment; the fake adds the sandbox mode it was given."""
        return dict(os.environ, FAKE_CODEX_SANDBOX_MODE=self.settings["sandbox_mode"])

    # -- steps: each returns None to go on, or the process exit code

    def _step_reasoning(self, text, _options):
        self.rollout.append("response_item", {"type": "reasoning", "content": None,
                                              "summary": [{"type": "summary_text", "text": text}]})
        self.emit_item({"type": "reasoning", "text": text})

    def _step_message(self, text, _options):
        self.rollout.append("response_item", _message_item("assistant", text))
        self.rollout.append("event_msg", {"type": "agent_message", "message": text})
        self.emit_item({"type": "agent_message", "text": text})
        self.last_message = text

    def _step_shell(self, cmd, options):
        item = {"id": self.out.new_item_id(), "type": "command_execution",
                "command": f"/bin/bash -lc {shlex.quote(cmd)}", "aggregated_output": "",
                "exit_code": None, "status": "in_progress"}
        self.out.event({"type": "item.started", "item": dict(item)})
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        self.rollout.append("response_item", {
            "type": "function_call", "name": "exec_command", "call_id": call_id,
            "arguments": json.dumps({"cmd": cmd, "yield_time_ms": 10000})})
        proc, code, output = run_shell(cmd, cwd=self.cwd, env=self._command_env(), running=self.running,
                                       yield_after=options.get("yield_after"), hold=self.gate.hold())
        if code is None:  # trap 8: no item.completed, killed at turn end
            self.rollout.append("response_item", {
                "type": "function_call_output", "call_id": call_id,
                "output": f"Process running with session ID {proc.pid}"})
            return None
        self.rollout.append("response_item", {
            "type": "function_call_output", "call_id": call_id,
            "output": f"Process exited with code {code}\nOutput:\n{output}"})
        item.update(aggregated_output=output, exit_code=code,
                    status="completed" if code == 0 else "failed")
        self.out.event({"type": "item.completed", "item": item})
        return None

    def _step_usage(self, usage, _options):
        self.turn_usage = self.turn_usage or {}
        for key, count in usage.items():
            self.turn_usage[key] = self.turn_usage.get(key, 0) + count

    def _step_crash(self, code, _options):
        _err(f"{iso_now()} ERROR codex_core::codex: crash")
        return code

    def _step_exit_early(self, enabled, _options):
        return self._complete() if enabled else None

    def _step_fail(self, message, options):
        retries = options.get("retries", 0)
        for attempt in range(1, retries + 1):
            notice = f"Reconnecting... {attempt}/{retries} ({message})"
            self.out.event({"type": "error", "message": notice})
            time.sleep(options.get("retry_delay", 0.0))
        return self._fail(message)

    def _step_usage_limit(self, value, _options):
        return self._fail(usage_limit_message(value))

    def _step_network_down(self, interval, _options):
        while True:  # codex retries forever while the connection is refused
            self.out.event({"type": "error", "message": MSG_NETWORK})
            time.sleep(interval)

    def _step_write_file(self, spec, options):
        super()._step_write_file(spec, options)
        self.rollout.append("event_msg", {"type": "fake_write_file", "path": spec["path"]})


# ----------------------------------------------------------------------------- exec

def _banner(thread: Thread, settings: Dict[str, Any], prompt: str) -> str:
    return "\n".join([
        f"OpenAI Codex v{VERSION} (research preview) [fake]", "--------",
        f"workdir: {settings['cwd']}", f"model: {settings['model']}", "provider: fake",
        "approval: never", f"sandbox: {settings['sandbox_mode']}",
        f"reasoning effort: {settings['reasoning_effort'] or 'none'}",
        f"session id: {thread.thread_id}", "--------", "user", prompt])


def _working_dir(args: ExecArgs) -> str:
    if not args.cd:
        return os.getcwd()
    cwd = os.path.abspath(args.cd)
    if not os.path.isdir(cwd):
        raise StartupError(f"Error: failed to use {args.cd} as the working directory: "
                           "No such file or directory (os error 2)")
    return cwd


def _prepare(args: ExecArgs, home: str):
    """Start-up checks in codex's order; any failure raises StartupError before stdout is used."""
    prompt = resolve_prompt(args.prompt, args.resume)
    cwd = _working_dir(args)
    config = load_config(home, args)
    settings = effective_settings(args, config, cwd)
    if not (args.skip_git_repo_check or _trusted(config, cwd) or _inside_git_work_tree(cwd)):
        raise StartupError(MSG_UNTRUSTED)
    source = scenario_path(home)
    try:
        scenario = load_scenario(source)
    except ScenarioError as exc:
        raise StartupError(f"fake codex: scenario {source or '(built-in)'}: {exc}") from None
    return prompt, settings, scenario, source


def run_exec(args: ExecArgs) -> int:
    """`codex exec [resume]`: one turn of a new or resumed thread, played from the scenario."""
    home = codex_home()
    gate = SignalGate().install()
    thread: Optional[Thread] = None
    agent: Optional[Agent] = None
    rollout = Rollout(None)
    output_file = os.path.abspath(args.output_last_message) if args.output_last_message else None
    try:
        prompt, settings, scenario, source = _prepare(args, home)
        thread = open_thread(home, args, settings["cwd"])
        queued = take_queued(home, thread.thread_id) if thread.resumed else []
        invocation = next_invocation(home)
        invocations = scenario["invocations"]
        steps = invocations[min(invocation, len(invocations) - 1)]
        rollout = Rollout(None if args.ephemeral else thread.rollout_path)
        if not thread.resumed:
            rollout.append("session_meta", {
                "id": thread.thread_id, "timestamp": iso_now(), "cwd": settings["cwd"],
                "originator": "codex_exec", "cli_version": VERSION, "source": "exec"})
        out = Output(args.json, settings["cwd"])
        agent = Agent(out, rollout, settings, thread.usage, gate, output_file)
        if not args.json:
            _err(_banner(thread, settings, prompt))
        out.event({"type": "thread.started", "thread_id": thread.thread_id})
        if scenario["model_metadata_warning"]:
            warning = MSG_METADATA.format(model=settings["model"])
            agent.emit_item({"type": "error", "message": warning})
        agent.start_turn(queued + [prompt], invocation, source)
        code = agent.run(steps)
        if code == 0:
            # Messages queued while this turn ran start a turn as the process ends, aborted at once.
            queued_meanwhile = take_queued(home, thread.thread_id)
            if queued_meanwhile:
                agent.aborted_queue_turn(queued_meanwhile)
            if not args.json:
                _out(agent.last_message or "")
        return code
    except StartupError as exc:
        _err(str(exc))
        return 1
    except Interrupted as exc:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # no second unwinding
            signal.signal(signum, signal.SIG_IGN)
        if agent is not None and exc.signum == signal.SIGINT:
            agent.kill_running()
            agent.abort()
        _release(agent, rollout, thread)
        if exc.signum != signal.SIGINT:
            _die_by(exc.signum)
        if agent is not None:
            agent.write_output_file("")
        return 1
    finally:
        _release(agent, rollout, thread)


def _release(agent: Optional[Agent], rollout: Rollout, thread: Optional[Thread]) -> None:
    """Kill the commands still running, close the rollout, drop the active-writer lock."""
    if agent is not None:
        agent.kill_running()
    rollout.close()
    if thread is not None:
        thread.release()


def run_queue(tokens) -> int:
    values, _positionals, _sub, _rest = parse_args(tokens, QUEUE_OPTS, USAGE_QUEUE,
                                                   max_positionals=0)
    if values.get("help"):
        _out(HELP_QUEUE)
        return 0
    missing = [_display(opt) for opt in QUEUE_OPTS[:2] if opt.dest not in values]
    if missing:
        raise UsageError("the following required arguments were not provided:\n  "
                         + "\n  ".join(missing), USAGE_QUEUE)
    message_id = queue_message(codex_home(), values["thread"], values["message"])
    _out(f"Queued message {message_id} for thread {values['thread']}.")
    return 0


def _dispatch(argv: List[str]) -> int:
    values, _positionals, command, rest = parse_args(argv, TOP_OPTS, USAGE_TOP,
                                                     ("exec", "e", "queue"), max_positionals=0)
    if values.get("version"):
        _out(f"codex-cli {VERSION}")
        return 0
    if values.get("help"):
        _out(HELP_TOP)
        return 0
    if command is None:
        raise UsageError("the fake codex implements only `exec`, `queue` and `--version`",
                         USAGE_TOP)
    if command == "queue":
        return run_queue(rest)
    args = parse_exec_args(rest, values)
    if args.version:
        _out(f"codex-cli {VERSION}")
        return 0
    if args.help:
        _out(args.help)
        return 0
    return run_exec(args)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        _err(exc.render())
        return 2
    except StartupError as exc:
        _err(str(exc))
        return 1
    except Interrupted as exc:  # a signal during the final clean-up
        if exc.signum != signal.SIGINT:
            _die_by(exc.signum)
        return 1


if __name__ == "__main__":
    sys.exit(main())

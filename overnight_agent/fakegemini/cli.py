"""The stand-in's command line and its turn: `gemini -p PROMPT -o stream-json ...`.

Owns: yargs-style parsing (an unknown option: exit 1), the prompt (stdin, when it is not a
terminal, goes before -p), choosing the session (new, `--session-id`, `--resume`), the
stream-json events and the text/json outputs, playing the scenario's steps (each command
detached in a session of its own), exit codes and signals (a one-line handler raises
`Interrupted`; the CLI then exits 0 with nothing more on stdout and the command left running).
See the package's docstring for what it must not do.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..fakecodex import common
from ..fakecodex.common import CommonSteps, Interrupted, SignalGate, StartupError
from ..fakecodex.scenario import ScenarioError, Step, load_scenario
from .store import (VERSION, SessionFile, chats_dir, cli_home, find_session, iso_now,
                    latest_session, leave_registry_lock, load_settings, new_session, next_invocation, project_name,
                    resume_session, session_files)

DEFAULT_MODEL = "auto"
REQUEST_USAGE = {"input_tokens": 100, "output_tokens": 20}  # per model request, as the test mock
APPROVAL_MODES = ("default", "auto_edit", "yolo", "plan")
OUTPUT_FORMATS = ("text", "json", "stream-json")
MSG_COLOR = ("Warning: 256-color support not detected. Using a terminal with at least 256-color "
             "support is recommended for a better visual experience.")
MSG_YOLO = "YOLO mode is enabled. All tool calls will be automatically approved."
MSG_RIPGREP = "Ripgrep is not available. Falling back to GrepTool."
MSG_QUOTA = "You have exhausted your daily quota on this model."
MSG_NETWORK = "[API Error: exception TypeError: fetch failed sending request]"
_HTTP_STATUS = re.compile(r'"code"\s*:\s*([1-5]\d\d)\b|\b(?:status|HTTP)\s*([1-5]\d\d)\b')


def _write(stream, text: str) -> None:
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except ValueError:
        pass


def _out(text: str) -> None:
    _write(sys.stdout, text)


def _err(text: str) -> None:
    _write(sys.stderr, text)


# ----------------------------------------------------------------------------- command line

class UsageError(Exception):
    pass


@dataclass
class Args:
    prompt: Optional[str] = None
    model: Optional[str] = None
    output_format: str = "text"
    yolo: bool = False
    approval_mode: Optional[str] = None
    resume: Optional[str] = None
    session_id: Optional[str] = None
    skip_trust: bool = False
    list_sessions: bool = False
    version: bool = False
    help: bool = False
    ignored: List[str] = field(default_factory=list)


# name -> (dest, takes a value, choices)
_OPTIONS = {
    "-p": ("prompt", True, None), "--prompt": ("prompt", True, None),
    "-m": ("model", True, None), "--model": ("model", True, None),
    "-o": ("output_format", True, OUTPUT_FORMATS), "--output-format": ("output_format", True, OUTPUT_FORMATS),
    "-y": ("yolo", False, None), "--yolo": ("yolo", False, None),
    "--approval-mode": ("approval_mode", True, APPROVAL_MODES),
    "-r": ("resume", True, None), "--resume": ("resume", True, None),
    "--session-id": ("session_id", True, None),
    "--skip-trust": ("skip_trust", False, None),
    "--list-sessions": ("list_sessions", False, None),
    "-v": ("version", False, None), "--version": ("version", False, None),
    "-h": ("help", False, None), "--help": ("help", False, None),
    # accepted and without effect in the fake
    "-d": ("ignored", False, None), "--debug": ("ignored", False, None),
    "--screen-reader": ("ignored", False, None), "--raw-output": ("ignored", False, None),
    "--accept-raw-output-risk": ("ignored", False, None),
    "--include-directories": ("ignored", True, None), "-e": ("ignored", True, None),
    "--extensions": ("ignored", True, None), "--allowed-tools": ("ignored", True, None),
    "--allowed-mcp-server-names": ("ignored", True, None), "--policy": ("ignored", True, None),
}
NOT_EMULATED = ("-s", "--sandbox", "-i", "--prompt-interactive", "-w", "--worktree", "--acp",
                "--experimental-acp", "--session-file", "--delete-session", "-l", "--list-extensions")


def parse_args(argv: List[str]) -> Args:
    args = Args()
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-") or token == "-":
            if args.prompt is None:  # a positional query: interactive in the real CLI
                raise UsageError("the fake gemini runs headless only: pass the prompt with -p")
            raise UsageError(f"Unknown argument: {token}")
        name, sep, inline = token.partition("=")
        if name in NOT_EMULATED:
            raise UsageError(f"the fake gemini does not emulate {name}")
        spec = _OPTIONS.get(name)
        if spec is None:
            raise UsageError(f"Unknown arguments: {name.lstrip('-')}")
        dest, takes_value, choices = spec
        if not takes_value:
            value: Any = True
        elif sep:
            value = inline
        elif index < len(argv):
            value, index = argv[index], index + 1
        else:
            raise UsageError(f"Not enough arguments following: {name.lstrip('-')}")
        if choices and value not in choices:
            raise UsageError(f"Invalid values:\n  Argument: {name.lstrip('-')}, Given: \"{value}\", "
                             f"Choices: {', '.join(json.dumps(c) for c in choices)}")
        if dest == "ignored":
            args.ignored.append(name)
        else:
            setattr(args, dest, value)
    if args.yolo and args.approval_mode and args.approval_mode != "yolo":
        raise UsageError("Cannot use both --yolo (-y) and --approval-mode together. "
                         "Use --approval-mode=yolo instead.")
    if args.resume is not None and args.session_id is not None:
        raise UsageError("Arguments resume and session-id are mutually exclusive")
    return args


def resolve_prompt(args: Args) -> str:
    """-p is appended to stdin, when stdin is not a terminal (the real CLI reads it)."""
    data = ""
    try:
        if not os.isatty(0):
            data = sys.stdin.read() if sys.stdin is not None else ""
    except (OSError, ValueError):
        data = ""
    if args.prompt is None and not data.strip():
        raise UsageError("the fake gemini runs headless only: pass the prompt with -p")
    if data.strip():
        return f"{data.rstrip()}\n\n{args.prompt}" if args.prompt else data.rstrip()
    return args.prompt or ""


# ----------------------------------------------------------------------------- the turn

class _Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Turn(CommonSteps):
    """Plays one invocation of the scenario as one turn of the session."""

    def __init__(self, args: Args, session_id: str, model: str, session: SessionFile, cwd: str,
                 gate: SignalGate):
        self.args = args
        self.session_id = session_id
        self.model = model
        self.session = session
        self.cwd = cwd
        self.gate = gate
        self.started = time.monotonic()
        self.requests = 1
        self.extra_usage: Dict[str, int] = {}
        self.tool_calls = 0
        self.text: List[str] = []
        self.pending_calls: List[Dict[str, Any]] = []

    def event(self, data: Dict[str, Any]) -> None:
        if self.args.output_format == "stream-json":
            _out(json.dumps({"type": data.pop("type"), "timestamp": iso_now(), **data},
                            ensure_ascii=False, separators=(",", ":")))

    def usage(self) -> Dict[str, int]:
        usage = {key: value * self.requests for key, value in REQUEST_USAGE.items()}
        for key, value in self.extra_usage.items():
            name = "input_tokens" if key in ("input_tokens", "cached_input_tokens", "cache_write_input_tokens") \
                else "output_tokens"
            usage[name] = usage.get(name, 0) + value
        return usage

    def stats(self) -> Dict[str, Any]:
        usage = self.usage()
        counts = {"total_tokens": usage["input_tokens"] + usage["output_tokens"],
                  "input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
                  "cached": 0, "input": usage["input_tokens"]}
        return {**counts, "duration_ms": int((time.monotonic() - self.started) * 1000),
                "tool_calls": self.tool_calls, "models": {self.model: dict(counts)}}

    def run(self, steps: List[Step], prompt: str) -> int:
        self.session.append({"id": str(uuid.uuid4()), "timestamp": iso_now(), "type": "user",
                             "content": [{"text": prompt}]})
        self.session.touch()
        self.event({"type": "init", "session_id": self.session_id, "model": self.model})
        self.event({"type": "message", "role": "user", "content": prompt})
        try:
            for step in steps:
                getattr(self, f"_step_{step.kind}")(step.value, step.options)
        except _Exit as done:
            return done.code
        return self._complete()

    def _record_gemini(self, content: Any, tool_calls: Optional[List[Dict[str, Any]]] = None,
                       record_id: Optional[str] = None) -> None:
        """A model response; the same id written again once its tool calls are done (as 0.61.0)."""
        record = {"id": record_id or str(uuid.uuid4()), "timestamp": iso_now(), "type": "gemini", "content": content,
                  "thoughts": [], "tokens": {"input": REQUEST_USAGE["input_tokens"],
                                             "output": REQUEST_USAGE["output_tokens"], "cached": 0,
                                             "thoughts": 0, "tool": 0,
                                             "total": sum(REQUEST_USAGE.values())},
                  "model": self.model}
        if tool_calls:
            record["toolCalls"] = tool_calls
        self.session.append(record)
        self.session.touch()

    def _complete(self) -> int:
        text = "".join(self.text)
        self._record_gemini(text)
        self.event({"type": "result", "status": "success", "stats": self.stats()})
        if self.args.output_format == "json":
            _out(json.dumps({"session_id": self.session_id, "response": text,
                             "stats": {"models": {self.model: {"tokens": self.usage()}}}}, indent=2))
        elif self.args.output_format == "text":
            _out(text)
        return 0

    def fail(self, message: str, code: int, error_type: str = "unknown") -> None:
        """An API error after the CLI's retries: the result event, and exit with `code`."""
        self.event({"type": "result", "status": "error", "error": {"type": error_type, "message": message},
                    "stats": {**self.stats(), "total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
                              "input": 0, "duration_ms": 0,
                              "models": {self.model: {"total_tokens": 0, "input_tokens": 0,
                                                      "output_tokens": 0, "cached": 0, "input": 0}}}})
        if self.args.output_format == "json":
            _err(json.dumps({"session_id": self.session_id,
                             "error": {"type": "Error", "message": message, "code": code}}, indent=2))
        elif self.args.output_format == "text":
            _err("An unexpected critical error occurred:[object Object]")
        raise _Exit(code)

    # -- steps: each returns nothing; _Exit ends the process with its code

    def _step_reasoning(self, _text, _options):
        pass  # thoughts are not part of stream-json

    def _step_message(self, text, _options):
        self.text.append(text)
        self.event({"type": "message", "role": "assistant", "content": text, "delta": True})

    def _step_shell(self, cmd, _options):
        call_id = f"run_shell_command__call_{uuid.uuid4().hex[:10]}"
        self.tool_calls += 1
        self.event({"type": "tool_use", "tool_name": "run_shell_command", "tool_id": call_id,
                    "parameters": {"command": cmd, "description": "fake shell step"}})
        record_id = str(uuid.uuid4())
        self._record_gemini("", record_id=record_id)  # before the call; its toolCalls once done
        proc = subprocess.Popen(["/bin/bash", "-c", cmd], cwd=self.cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        output = proc.communicate()[0].decode("utf-8", errors="replace")
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        text = output.strip()
        result = (f"<untrusted_context>\nOutput: {text or '(empty)'}\n"
                  + (f"Exit Code: {code}\n" if code else "")
                  + f"Process Group PGID: {proc.pid}\n</untrusted_context>")
        response = {"functionResponse": {"id": call_id, "name": "run_shell_command",
                                         "response": {"output": result}}}
        self._record_gemini("", [{"id": call_id, "name": "run_shell_command", "args": {"command": cmd},
                                  "result": [response], "status": "success", "timestamp": iso_now()}],
                            record_id)
        self.session.append({"id": str(uuid.uuid4()), "timestamp": iso_now(), "type": "user",
                             "content": [response]})
        self.event({"type": "tool_result", "tool_id": call_id, "status": "success", "output": text})
        self.requests += 1  # the command's output goes back to the model

    def _step_usage(self, usage, _options):
        for key, count in usage.items():
            self.extra_usage[key] = self.extra_usage.get(key, 0) + count

    def _step_crash(self, code, _options):
        _err("fake gemini: crash")
        raise _Exit(code)

    def _step_exit_early(self, enabled, _options):
        if enabled:  # the output cut before the result: the real CLI exits 0 then
            raise _Exit(0)

    def _step_leave_registry_lock(self, enabled, _options):
        if enabled:  # seen from 0.61.0 after a clean run; it costs the next start 13 to 51 s
            leave_registry_lock(cli_home())

    def _step_fail(self, message, options):
        retries = options.get("retries", 0)
        for attempt in range(1, retries + 1):
            _err(f"Attempt {attempt} failed. Retrying with backoff... {message}")
            time.sleep(options.get("retry_delay", 0.0))
        match = _HTTP_STATUS.search(message)
        status = int(match.group(1) or match.group(2)) if match else 0
        self.fail(f"[API Error: {message}]", status & 0xFF if status else 1)

    def _step_usage_limit(self, _value, _options):
        self.fail(f"[API Error: {MSG_QUOTA}]", 429 & 0xFF)

    def _step_network_down(self, interval, _options):
        _err("Attempt 1 failed. Retrying with backoff... TypeError: fetch failed")
        time.sleep(interval)
        self.fail(MSG_NETWORK, 1)


# ----------------------------------------------------------------------------- run

def _open_session(args: Args, home: str, cwd: str):
    """(session id, its file) for a new session, --session-id, or --resume; StartupError (42)
    when the id is unknown in this cwd's project, or already taken."""
    if args.resume is None:
        project = project_name(home, cwd, create=True)
        chats = chats_dir(home, project)
        session_id = args.session_id or str(uuid.uuid4())
        if args.session_id and find_session(chats, session_id):
            raise StartupError(f'Error starting session: Session ID "{session_id}" already exists. '
                               "Use --resume to resume it, or provide a different ID.", 42)
        return session_id, new_session(chats, session_id, cwd)
    project = project_name(home, cwd, create=False)
    chats = chats_dir(home, project) if project else None
    if chats is None or not latest_session(chats):
        if args.resume == "latest":  # silently a new session
            _err("No previous sessions found for this project.")
            project = project_name(home, cwd, create=True)
            session_id = str(uuid.uuid4())
            return session_id, new_session(chats_dir(home, project), session_id, cwd)
        raise StartupError("Error resuming session: No previous sessions found for this project.", 42)
    path = latest_session(chats) if args.resume == "latest" else find_session(chats, args.resume)
    if path is None:
        raise StartupError(
            f'Error resuming session: Invalid session identifier "{args.resume}".\n'
            f"  Searched for sessions in {chats}.\n"
            "  Use --list-sessions to see available sessions, then use --resume {number}, "
            "--resume {uuid}, or --resume latest.", 42)
    session_id = str(json.loads(open(path, encoding="utf-8").readline())["sessionId"])
    return session_id, resume_session(chats, path, session_id, cwd)


def run(args: Args) -> int:
    home = cli_home()
    cwd = os.getcwd()
    gate = SignalGate().install()
    session: Optional[SessionFile] = None
    try:
        prompt = resolve_prompt(args)
        mode = "yolo" if args.yolo else (args.approval_mode or "default")
        _err(MSG_COLOR)
        if mode == "yolo":
            _err(MSG_YOLO)
            _err(MSG_YOLO)
        _err(MSG_RIPGREP)
        load_settings(home)
        source = common.scenario_path(home, "gemini")
        try:
            scenario = load_scenario(source)
        except ScenarioError as exc:
            raise StartupError(f"fake gemini: scenario {source or '(built-in)'}: {exc}") from None
        session_id, session = _open_session(args, home, cwd)
        invocations = scenario["invocations"]
        steps = invocations[min(next_invocation(home), len(invocations) - 1)]
        turn = Turn(args, session_id, args.model or DEFAULT_MODEL, session, cwd, gate)
        return turn.run(steps, prompt)
    except StartupError as exc:
        _err(str(exc))
        return exc.code
    except Interrupted:
        # Like 0.61.0 headless: exit 0 at once, nothing more on stdout, the command group left.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        return 0
    finally:
        if session is not None:
            session.close()


def list_sessions() -> int:
    home, cwd = cli_home(), os.getcwd()
    project = project_name(home, cwd, create=False)
    chats = chats_dir(home, project) if project else None
    ids = []
    for path in (session_files(chats) if chats else []):
        with contextlib.suppress(OSError, ValueError, KeyError):
            ids.append(json.loads(open(path, encoding="utf-8").readline())["sessionId"])
    ids = list(dict.fromkeys(ids))
    if not ids:
        _out("No previous sessions found for this project.")
        return 0
    _out(f"\nAvailable sessions for this project ({len(ids)}):")
    for number, session_id in enumerate(ids, 1):
        _out(f"  {number}. fake (Just now) [{session_id}]")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.version:
            _out(VERSION)
            return 0
        if args.help:
            _out("Usage: gemini [options] (fake: overnight_agent.fakegemini, plays a scenario file)\n"
                 "  -p, --prompt  -m, --model  -o, --output-format  -y, --yolo  --approval-mode\n"
                 "  -r, --resume  --session-id  --skip-trust  --list-sessions  -v, --version")
            return 0
        if args.list_sessions:
            return list_sessions()
        return run(args)
    except UsageError as exc:
        _err(f"Usage: gemini [options] [command]\n\n{exc}")
        return 1
    except Interrupted:
        return 0


if __name__ == "__main__":
    sys.exit(main())

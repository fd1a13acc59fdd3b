"""A scripted stand-in for Google's Gemini CLI 0.61.0 in headless mode (`gemini -p PROMPT -o
stream-json`), whose "model" is a scenario file in the format of the Codex stand-in
(`overnight_agent.fakecodex.scenario`: same file format, same step kinds).

Owns, as the real CLI does them (checked against the real CLI and a loopback mock of the API by
tests/test_gemini_conformance.py):
  - the command line: -p/--prompt, -m, -o {text,json,stream-json}, -y/--yolo, --approval-mode,
    --session-id, -r/--resume, --skip-trust, --list-sessions, -v/--version (yargs-style errors);
  - the stream-json events (init, message, tool_use, tool_result, error, result), one per line;
  - session files `$GEMINI_CLI_HOME/.gemini/tmp/<project>/chats/session-<time>-<id8>.jsonl` and
    `projects.json` (HOME when GEMINI_CLI_HOME is unset), scoped by the exact cwd; resume by id
    (a stray second file per resume, as the real CLI writes), rc 42 for an unknown id or a
    --session-id that exists;
  - exit codes (0 success, an API error's HTTP status & 0xFF, 42 input errors) and signals
    (SIGINT/SIGTERM: exit 0 at once, no `result`, the running command left running in its own
    session, as the real CLI leaves it).

Must not: touch the network, or import the rest of overnight_agent except the Codex stand-in
(its scenario model and its setsid sleeper; stdlib and PyYAML only); kill the commands it runs on a signal (the real CLI
does not: that is what the supervisor's sweep is for).

    python -m overnight_agent.fakegemini -p "PROMPT" -m MODEL -o stream-json --approval-mode yolo

The package: `cli` (the command line, the turn, signals), `store` (the CLI's home: settings,
projects, session files, the invocation counter).
"""
from .cli import main

__all__ = ["main"]

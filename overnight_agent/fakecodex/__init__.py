"""A scripted stand-in for OpenAI's Codex CLI 0.169.0 (`codex exec`), whose "model" is a
scenario file. The demo and the test suite run it where the real CLI would need the internet.

Owns, as the real CLI does them (measured against the real CLI; copies of its captures
in tests/samples/codex/):
  - the command line of `codex exec [OPTIONS] [PROMPT]`, `codex exec [OPTIONS] resume
    [OPTIONS] [SESSION_ID] [PROMPT]`, `codex queue` and `--version`, with clap-style usage
    errors (exit 2);
  - the `--json` event stream on stdout, one compact JSON object per flushed line;
  - session (rollout) files under `$CODEX_HOME/sessions/`, appended line by line, the
    active-writer lock, resume by id or `--last` with its quirks (read-only default sandbox,
    settings not stored with the thread, a silent new thread when `--last` finds nothing);
  - exit codes and signals: 0 turn completed, 1 turn failed / SIGINT / start-up error,
    death by SIGTERM;
  - the scenario: `invocations[N]` plays the Nth turn started in this CODEX_HOME.

Must not:
  - touch the network, or import the rest of overnight_agent (the supervisor is tested against
    it as against a foreign binary): standard library and PyYAML only;
  - emulate the sandbox: commands run unconfined whatever `--sandbox` says (the mode is only
    recorded), nor codex's `.rules`;
  - leave processes behind, except the ones a scenario asks for (`spawn_setsid_grandchild`, or
    background jobs of a `shell` step), which is the point of those steps.

Signals are turned into an exception (`common.Interrupted`) by a one-line handler; `run_exec` catches
it, kills the running commands' process groups and exits the way codex does.

    python -m overnight_agent.fakecodex exec --json "PROMPT"      (or: overnight-agent-fake-codex)

The package: `cli` (the command line, the turn, signals), `store` (CODEX_HOME: sessions, the
writer lock, the queue, config.toml), `scenario` (the steps, codex's usage-limit texts), `common` (what fakeclaude and fakegemini
do the same way and import from here: output, the signal gate, shell steps in sessions of their
own, the setsid sleeper, the store helpers).
"""
from .cli import main

__all__ = ["main"]

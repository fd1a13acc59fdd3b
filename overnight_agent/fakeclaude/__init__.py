"""A scripted stand-in for Anthropic's Claude Code CLI 2.1.328 in print mode
(`claude -p --output-format stream-json --verbose`), whose "model" is a scenario file.

Owns, as the real CLI does them (measured against the real CLI and a loopback Messages API;
tests/test_claude_conformance.py runs both side by side):
  - the command line: `-p`, `--output-format`, `--verbose`, `--session-id`, `--resume`,
    `--model`, `--effort`, `--permission-mode`, variadic `--allowedTools`, `--` before the prompt;
  - the stream-json lines (system/init, assistant per content block, user tool results,
    system/api_retry and permission_denied, the result line with `is_error`);
  - session transcripts `$CLAUDE_CONFIG_DIR/projects/<cwd mangled>/<id>.jsonl`, resume by id
    (not cwd-scoped, model restored, permission mode not), `--session-id` reuse refused;
  - exit codes and signals: 0 result (even is_error after SIGINT), 1 API error / start-up
    refusal, 143 after SIGTERM with no result line; root refused a bypass of the permission
    checks unless IS_SANDBOX=1;
  - the scenario: the same file format and step kinds as the Codex stand-in
    (`overnight_agent.fakecodex.scenario`), from `$FAKE_CLAUDE_SCENARIO` or
    `$CLAUDE_CONFIG_DIR/fake_claude_scenario.yaml`; invocation N plays the Nth run.

Must not:
  - touch the network (no request goes to ANTHROPIC_BASE_URL), or import the rest of
    overnight_agent but the Codex stand-in's scenario model: standard library and PyYAML only;
  - leave processes behind, except the ones a scenario asks for (`spawn_setsid_grandchild`).

    python -m overnight_agent.fakeclaude -p --output-format stream-json --verbose -- "PROMPT"

The package: `cli` (the command line, the turn, signals), `store` (CLAUDE_CONFIG_DIR).
"""
from .cli import main

__all__ = ["main"]

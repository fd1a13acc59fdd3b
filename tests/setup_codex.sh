#!/usr/bin/env bash
# Install the real Codex CLI (pinned) for its tests: tests/setup_cli.sh codex (see there).
exec bash "$(dirname "$0")/setup_cli.sh" codex "$@"

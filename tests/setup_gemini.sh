#!/usr/bin/env bash
# Install the real Gemini CLI (pinned) for its tests: tests/setup_cli.sh gemini (see there).
exec bash "$(dirname "$0")/setup_cli.sh" gemini "$@"

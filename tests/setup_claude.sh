#!/usr/bin/env bash
# Install the real Claude Code CLI (pinned) for its tests: tests/setup_cli.sh claude (see there).
exec bash "$(dirname "$0")/setup_cli.sh" claude "$@"

#!/usr/bin/env bash
# Install the real Claude Code CLI (pinned) for the realclaude tests and print the path of its
# native binary on the last line of stdout.
#
#   bash tests/setup_claude.sh [DIR]      (or CLAUDE_NPM_DIR=DIR bash tests/setup_claude.sh)
#
# DIR defaults to <repo>/.cache/claude-npm (gitignored through .cache/). The install is skipped
# when the binary under DIR already prints the pinned version.
# Exit codes: 0 ok, 2 node or npm missing, 1 install failed / binary not found.
set -euo pipefail

CLAUDE_VERSION="2.1.328"
PACKAGE="@anthropic-ai/claude-code@${CLAUDE_VERSION}"

src="${BASH_SOURCE[0]}"
case "$src" in */*) here="${src%/*}" ;; *) here="." ;; esac
here="$(cd "$here" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-${CLAUDE_NPM_DIR:-$repo/.cache/claude-npm}}"

if ! command -v npm >/dev/null 2>&1; then
    echo "setup_claude.sh: npm not found on PATH; the real Claude Code CLI needs node and npm (e.g. apt-get install nodejs npm)" >&2
    exit 2
fi
if ! command -v node >/dev/null 2>&1; then
    echo "setup_claude.sh: node not found on PATH; the real Claude Code CLI needs node and npm (e.g. apt-get install nodejs npm)" >&2
    exit 2
fi

# The native executable (a Bun single-file binary, no Node at run time); postinstall hard-links
# it over bin/claude.exe, but the platform package's own copy is there either way.
find_binary() {
    local cand
    shopt -s nullglob
    for cand in "$DIR"/node_modules/@anthropic-ai/claude-code-linux-*/claude \
                "$DIR"/node_modules/@anthropic-ai/claude-code/bin/claude.exe; do
        if [ -x "$cand" ] && [ -s "$cand" ]; then
            echo "$cand"
            shopt -u nullglob
            return 0
        fi
    done
    shopt -u nullglob
    return 1
}

installed_version() {
    local bin
    bin="$(find_binary)" || return 0
    timeout 60 "$bin" --version </dev/null 2>/dev/null || true
}

if [ "$(installed_version)" != "${CLAUDE_VERSION} (Claude Code)" ]; then
    mkdir -p "$DIR"
    echo "setup_claude.sh: installing ${PACKAGE} into $DIR" >&2
    # npm's stdout goes to stderr so that stdout carries only the binary path.
    if ! DISABLE_AUTOUPDATER=1 npm install --prefix "$DIR" --no-audit --no-fund --no-save "$PACKAGE" </dev/null 1>&2; then
        echo "setup_claude.sh: npm install ${PACKAGE} failed" >&2
        exit 1
    fi
    got="$(installed_version)"
    if [ "$got" != "${CLAUDE_VERSION} (Claude Code)" ]; then
        echo "setup_claude.sh: after install, claude --version printed '$got', expected '${CLAUDE_VERSION} (Claude Code)'" >&2
        exit 1
    fi
fi

bin="$(find_binary)" || {
    echo "setup_claude.sh: no native binary under $DIR/node_modules/@anthropic-ai/claude-code-linux-*/claude (machine: $(uname -m))" >&2
    exit 1
}
echo "$bin"

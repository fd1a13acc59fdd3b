#!/usr/bin/env bash
# Install one real agent CLI (pinned) for the tests that drive it (realcodex, realclaude,
# realgemini) and print the path of its executable on the last line of stdout.
#
#   bash tests/setup_cli.sh NAME [DIR]     NAME: codex | claude | gemini
#                                          (or CODEX_NPM_DIR=DIR, CLAUDE_NPM_DIR=DIR, GEMINI_NPM_DIR=DIR)
#
# DIR defaults to <repo>/.cache/NAME-npm (gitignored through .cache/). The install is skipped
# when the CLI under DIR already prints the pinned version. tests/setup_codex.sh,
# setup_claude.sh and setup_gemini.sh are this script with NAME given.
# Exit codes: 0 ok, 2 node or npm missing, 1 install failed / binary not found / unknown NAME.
set -euo pipefail

# The pinned versions (tests/test_kubernetes.py reads CODEX_VERSION: the container pins the same).
CODEX_VERSION="0.169.0"
CLAUDE_VERSION="2.1.328"
GEMINI_VERSION="0.61.0"

NAME="${1:-}"
shift || true
src="${BASH_SOURCE[0]}"
case "$src" in */*) here="${src%/*}" ;; *) here="." ;; esac
here="$(cd "$here" && pwd)"
repo="$(cd "$here/.." && pwd)"
me="setup_cli.sh $NAME"

case "$NAME" in
codex)
    PACKAGE="@openai/codex@${CODEX_VERSION}"
    WANT="codex-cli ${CODEX_VERSION}"
    DIR="${1:-${CODEX_NPM_DIR:-$repo/.cache/codex-npm}}"
    WHAT="the real Codex CLI needs node and npm"
    WHERE="static binary under $DIR/node_modules/@openai/codex-linux-*/vendor/*/bin/codex"
    npm_env=()
    find_binary() {
        local cand
        for cand in "$DIR"/node_modules/@openai/codex-linux-*/vendor/*/bin/codex; do
            if [ -x "$cand" ]; then
                echo "$cand"
                return 0
            fi
        done
        return 1
    }
    installed_version() {
        # The wrapper is a node script; give it a bounded time and no stdin.
        timeout 60 "$DIR/node_modules/.bin/codex" --version </dev/null 2>/dev/null || true
    }
    ;;
claude)
    PACKAGE="@anthropic-ai/claude-code@${CLAUDE_VERSION}"
    WANT="${CLAUDE_VERSION} (Claude Code)"
    DIR="${1:-${CLAUDE_NPM_DIR:-$repo/.cache/claude-npm}}"
    WHAT="the real Claude Code CLI needs node and npm"
    WHERE="native binary under $DIR/node_modules/@anthropic-ai/claude-code-linux-*/claude"
    npm_env=(DISABLE_AUTOUPDATER=1)
    # The native executable (a Bun single-file binary, no Node at run time); postinstall
    # hard-links it over bin/claude.exe, but the platform package's own copy is there either way.
    find_binary() {
        local cand
        for cand in "$DIR"/node_modules/@anthropic-ai/claude-code-linux-*/claude \
                    "$DIR"/node_modules/@anthropic-ai/claude-code/bin/claude.exe; do
            if [ -x "$cand" ] && [ -s "$cand" ]; then
                echo "$cand"
                return 0
            fi
        done
        return 1
    }
    installed_version() {
        local bin
        bin="$(find_binary)" || return 0
        timeout 60 "$bin" --version </dev/null 2>/dev/null || true
    }
    ;;
gemini)
    PACKAGE="@google/gemini-cli@${GEMINI_VERSION}"
    WANT="${GEMINI_VERSION}"
    DIR="${1:-${GEMINI_NPM_DIR:-$repo/.cache/gemini-npm}}"
    WHAT="the real Gemini CLI needs node (>= 20) and npm"
    WHERE="executable $DIR/node_modules/.bin/gemini"
    npm_env=()
    find_binary() {
        [ -x "$DIR/node_modules/.bin/gemini" ] && echo "$DIR/node_modules/.bin/gemini"
    }
    installed_version() {
        # The CLI is a node script: a bounded time, no stdin, one process, a throwaway home (it
        # writes projects.json even for --version).
        local bin scratch
        bin="$(find_binary)" || return 0
        scratch="$(mktemp -d)"
        GEMINI_CLI_NO_RELAUNCH=1 GEMINI_CLI_HOME="$scratch" timeout 60 "$bin" --version </dev/null 2>/dev/null || true
        rm -rf "$scratch"
    }
    ;;
*)
    echo "usage: bash tests/setup_cli.sh codex|claude|gemini [DIR]" >&2
    exit 1
    ;;
esac
shopt -s nullglob

for tool in npm node; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$me: $tool not found on PATH; $WHAT (e.g. apt-get install nodejs npm)" >&2
        exit 2
    fi
done

if [ "$(installed_version)" != "$WANT" ]; then
    mkdir -p "$DIR"
    echo "$me: installing ${PACKAGE} into $DIR" >&2
    # npm's stdout goes to stderr so that stdout carries only the binary path.
    if ! env "${npm_env[@]}" npm install --prefix "$DIR" --no-audit --no-fund --no-save "$PACKAGE" </dev/null 1>&2; then
        echo "$me: npm install ${PACKAGE} failed" >&2
        exit 1
    fi
    got="$(installed_version)"
    if [ "$got" != "$WANT" ]; then
        echo "$me: after install, $NAME --version printed '$got', expected '$WANT'" >&2
        exit 1
    fi
fi

bin="$(find_binary)" || {
    echo "$me: no $WHERE (machine: $(uname -m))" >&2
    exit 1
}
echo "$bin"

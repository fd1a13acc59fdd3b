#!/usr/bin/env bash
# Install the real Gemini CLI (pinned) for the realgemini tests and print the path of its
# executable on the last line of stdout.
#
#   bash tests/setup_gemini.sh [DIR]      (or GEMINI_NPM_DIR=DIR bash tests/setup_gemini.sh)
#
# DIR defaults to <repo>/.cache/gemini-npm (gitignored through .cache/). The install is skipped
# when DIR/node_modules/.bin/gemini --version already prints the pinned version.
# Exit codes: 0 ok, 2 node or npm missing, 1 install failed / binary not found.
set -euo pipefail

GEMINI_VERSION="0.61.0"
PACKAGE="@google/gemini-cli@${GEMINI_VERSION}"

src="${BASH_SOURCE[0]}"
case "$src" in */*) here="${src%/*}" ;; *) here="." ;; esac
here="$(cd "$here" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-${GEMINI_NPM_DIR:-$repo/.cache/gemini-npm}}"

for tool in npm node; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup_gemini.sh: $tool not found on PATH; the real Gemini CLI needs node (>= 20) and npm (e.g. apt-get install nodejs npm)" >&2
        exit 2
    fi
done

bin="$DIR/node_modules/.bin/gemini"

installed_version() {
    # The CLI is a node script: a bounded time, no stdin, one process, a throwaway home (it
    # writes projects.json even for --version).
    local scratch
    scratch="$(mktemp -d)"
    GEMINI_CLI_NO_RELAUNCH=1 GEMINI_CLI_HOME="$scratch" timeout 60 "$bin" --version </dev/null 2>/dev/null || true
    rm -rf "$scratch"
}

if [ ! -x "$bin" ] || [ "$(installed_version)" != "${GEMINI_VERSION}" ]; then
    mkdir -p "$DIR"
    echo "setup_gemini.sh: installing ${PACKAGE} into $DIR" >&2
    # stdout of npm goes to stderr so that stdout carries only the binary path.
    if ! npm install --prefix "$DIR" --no-audit --no-fund --no-save "$PACKAGE" </dev/null 1>&2; then
        echo "setup_gemini.sh: npm install ${PACKAGE} failed" >&2
        exit 1
    fi
    got="$(installed_version)"
    if [ "$got" != "${GEMINI_VERSION}" ]; then
        echo "setup_gemini.sh: after install, gemini --version printed '$got', expected '${GEMINI_VERSION}'" >&2
        exit 1
    fi
fi
echo "$bin"

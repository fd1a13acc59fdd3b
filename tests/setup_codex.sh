#!/usr/bin/env bash
# Install the real Codex CLI (pinned) for the realcodex tests and print the path of its
# static binary on the last line of stdout.
#
#   bash tests/setup_codex.sh [DIR]      (or CODEX_NPM_DIR=DIR bash tests/setup_codex.sh)
#
# DIR defaults to <repo>/.cache/codex-npm (gitignored through .cache/). The install is skipped
# when DIR/node_modules/.bin/codex --version already prints the pinned version.
# Exit codes: 0 ok, 2 node or npm missing, 1 install failed / binary not found.
set -euo pipefail

CODEX_VERSION="0.169.0"
PACKAGE="@openai/codex@${CODEX_VERSION}"

src="${BASH_SOURCE[0]}"
case "$src" in */*) here="${src%/*}" ;; *) here="." ;; esac
here="$(cd "$here" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-${CODEX_NPM_DIR:-$repo/.cache/codex-npm}}"

if ! command -v npm >/dev/null 2>&1; then
    echo "setup_codex.sh: npm not found on PATH; the real Codex CLI needs node and npm (e.g. apt-get install nodejs npm)" >&2
    exit 2
fi
if ! command -v node >/dev/null 2>&1; then
    echo "setup_codex.sh: node not found on PATH; the real Codex CLI needs node and npm (e.g. apt-get install nodejs npm)" >&2
    exit 2
fi

installed_version() {
    # The wrapper is a node script; give it a bounded time and no stdin.
    timeout 60 "$DIR/node_modules/.bin/codex" --version </dev/null 2>/dev/null || true
}

if [ "$(installed_version)" != "codex-cli ${CODEX_VERSION}" ]; then
    mkdir -p "$DIR"
    echo "setup_codex.sh: installing ${PACKAGE} into $DIR" >&2
    # stdout of npm goes to stderr so that stdout carries only the binary path.
    if ! npm install --prefix "$DIR" --no-audit --no-fund --no-save "$PACKAGE" </dev/null 1>&2; then
        echo "setup_codex.sh: npm install ${PACKAGE} failed" >&2
        exit 1
    fi
    got="$(installed_version)"
    if [ "$got" != "codex-cli ${CODEX_VERSION}" ]; then
        echo "setup_codex.sh: after install, codex --version printed '$got', expected 'codex-cli ${CODEX_VERSION}'" >&2
        exit 1
    fi
fi

bin=""
shopt -s nullglob
for cand in "$DIR"/node_modules/@openai/codex-linux-*/vendor/*/bin/codex; do
    if [ -x "$cand" ]; then
        bin="$cand"
        break
    fi
done
shopt -u nullglob
if [ -z "$bin" ]; then
    echo "setup_codex.sh: no static binary under $DIR/node_modules/@openai/codex-linux-*/vendor/*/bin/codex (machine: $(uname -m))" >&2
    exit 1
fi
echo "$bin"

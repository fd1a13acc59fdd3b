#!/bin/sh
# The CronJob's init step (deploy/kubernetes/): put the repository on the volume and bring its
# base branch up to date with the remote, before the supervisor starts the night.
#
#   REPO_URL            the repository to clone (https or ssh); required
#   REPO_DIR            where the clone lives on the volume (default /work/repo)
#   BASE_BRANCH         the branch nights start from (default main): fast-forwarded, never reset
#   OPS_JOURNAL_BRANCH  the ops journal (default overnight/ops-journal): taken from the remote
#                       when the clone has none (a new volume), so the journal goes on
#   GIT_TOKEN           optional: the password of https pushes and fetches, read from the
#                       environment at each use by the credential helper below; never written
#   GIT_USERNAME        optional: the user name that goes with it (default x-access-token)
#
# Idempotent: a first night clones, every later one fetches. It never touches an overnight/*
# branch the volume already has: those are the nights' work, published (or not) by the supervisor.
set -eu

: "${REPO_URL:?REPO_URL is not set: the repository to clone}"
REPO_DIR="${REPO_DIR:-/work/repo}"
BASE_BRANCH="${BASE_BRANCH:-main}"
OPS_JOURNAL_BRANCH="${OPS_JOURNAL_BRANCH:-overnight/ops-journal}"

# Answers git's `get` with GIT_TOKEN from the environment of the git that asks; the secret stays
# in the Secret and in the environment of this step and the supervisor (the agent's allowlisted
# environment does not carry it).
# shellcheck disable=SC2016
HELPER='!f() { test "$1" = get && test -n "${GIT_TOKEN:-}" || exit 0; echo "username=${GIT_USERNAME:-x-access-token}"; echo "password=${GIT_TOKEN}"; }; f'

mkdir -p "$(dirname "$REPO_DIR")"
[ -z "${HOME:-}" ] || mkdir -p "$HOME"

if [ ! -d "$REPO_DIR/.git" ]; then
    echo "prepare-repo: cloning into $REPO_DIR"
    git -c credential.helper="$HELPER" clone --quiet --origin origin --branch "$BASE_BRANCH" \
        "$REPO_URL" "$REPO_DIR"
fi
cd "$REPO_DIR"
git config credential.helper "$HELPER"
git remote set-url origin "$REPO_URL"
git fetch --quiet --prune origin
git checkout --quiet "$BASE_BRANCH"
if ! git merge-base --is-ancestor "$BASE_BRANCH" "origin/$BASE_BRANCH"; then
    echo "prepare-repo: $BASE_BRANCH on the volume has commits origin/$BASE_BRANCH lacks; not" \
         "starting a night from a diverged base (move the volume's branch aside by hand)" >&2
    exit 1
fi
git merge --quiet --ff-only "origin/$BASE_BRANCH"
if ! git show-ref --verify --quiet "refs/heads/$OPS_JOURNAL_BRANCH" \
   && git show-ref --verify --quiet "refs/remotes/origin/$OPS_JOURNAL_BRANCH"; then
    git branch --quiet --no-track "$OPS_JOURNAL_BRANCH" "origin/$OPS_JOURNAL_BRANCH"
    echo "prepare-repo: $OPS_JOURNAL_BRANCH taken from origin"
fi
echo "prepare-repo: $BASE_BRANCH at $(git rev-parse --short=12 HEAD)"

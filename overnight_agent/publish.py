"""Publishing a night's work: the opt-in push, at the end of a night, of its own branches and the
ops journal to a remote, so nights run on a cluster can be reviewed in the morning elsewhere.

Owns: which refs a night publishes (`choose`, pure: the night's `overnight/*` branches that match
`publish.branches` and were not there when it began, and its ops-journal branch), reading git's per-ref answer (`parse_porcelain`,
pure), keeping the credentials of a remote's URL out of every message (`hide_credentials`), the
push itself (`push`: one `git push` through `gitops.run` with a timeout, every refspec explicit
and without `+`), and recording its outcome in session.json (`publish`). Must not: push any other
ref (a base branch, a tag, another night's or the operator's branch), force anything (a diverged
remote branch is refused by git and reported), fetch, change a local ref or work tree, raise (a
failure is logged and recorded; the work stays on the local branches), or run for the agent:
only the supervisor calls it, after the night's report is written.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from . import gitops, hookrun, pathglob, redact, state, timeparse

PUSHED, FAILED = "publish.pushed", "publish.failed"
BRANCH_PREFIX = "overnight/"
# `git push --porcelain`: `<flag>\t<from>:<to>\t<summary> (<reason>)` per ref. Flags: ' ' fast
# forward, '*' new ref, '+' forced (never asked for), '-' deleted (never asked for), '=' up to
# date, '!' rejected.
_PORCELAIN = re.compile(r"^(?P<flag>[ *+\-=!])\t(?P<src>[^:\t]*):(?P<dst>[^\t]+)\t(?P<summary>.*)$")
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


@dataclass(frozen=True)
class Choice:
    push: List[str]                                   # branch names, in the order pushed
    skipped: Dict[str, str] = field(default_factory=dict)   # overnight/* branches left out: why


def choose(local: Iterable[str], *, session_branch: str, ops_journal_branch: str, run_id: str,
           recorded: Iterable[str] = (), pattern: str = "overnight/*",
           existed: Optional[Iterable[str]] = None) -> Choice:
    """The branches a night publishes, of the local branches `local`: its session branch, the work
    branches it made (`recorded`: the run's branches file, which the agent's git hooks fill; or
    named after the run, like the checkpoint branch), each under `overnight/` and matching
    `pattern`; then its ops-journal branch. Anything else stays local. The branches file lies
    where the agent can write, so `existed` (the `overnight/*` branches there when the night
    began, from session.json) keeps an earlier night's branch local whatever the file says."""
    local = list(dict.fromkeys(local))
    mine = {session_branch, *recorded}
    before = set(existed or ()) - {session_branch}
    push, skipped = [], {}
    for name in sorted(local, key=lambda n: (n != session_branch, n)):
        if name == ops_journal_branch:
            continue
        if not name.startswith(BRANCH_PREFIX):
            continue                                   # not the night's kind of branch at all
        if name in before:
            skipped[name] = "there before this night began"
        elif not (name in mine or run_id in name):
            skipped[name] = "not made by this night"
        elif not pathglob.match(pattern, name):
            skipped[name] = f"does not match publish.branches ({pattern})"
        else:
            push.append(name)
    if ops_journal_branch in local:
        push.append(ops_journal_branch)
    return Choice(push, skipped)


def hide_credentials(text: str, urls: Iterable[str] = ()) -> str:
    """`text` with the user-info of every URL in it (`https://user:token@host`, `https://token@host`)
    replaced by `***`, and each of `urls` (the remote's own, which git may quote) shown that way."""
    for url in urls:
        if url:
            text = text.replace(url, _USERINFO.sub("***@", url))
    return _USERINFO.sub("***@", text)


def parse_porcelain(stdout: str) -> Dict[str, Tuple[str, str]]:
    """{local branch: (flag, git's summary)} from `git push --porcelain`."""
    found = {}
    for line in stdout.splitlines():
        m = _PORCELAIN.match(line)
        if m:
            src = m.group("src")
            found[src[len("refs/heads/"):] if src.startswith("refs/heads/") else src] = (
                m.group("flag"), m.group("summary").strip())
    return found


@dataclass
class Outcome:
    remote: str                                       # as shown: credentials hidden
    pushed: List[str] = field(default_factory=list)   # new or moved on the remote
    unchanged: List[str] = field(default_factory=list)   # already there
    rejected: Dict[str, str] = field(default_factory=dict)   # refused by the remote (diverged): why
    error: Optional[str] = None                       # the push as a whole failed: git's last line

    @property
    def ok(self) -> bool:
        return self.error is None and not self.rejected

    def fields(self) -> dict:
        data = {"remote": self.remote, "pushed": self.pushed, "unchanged": self.unchanged}
        if self.rejected:
            data["rejected"] = self.rejected
        if self.error:
            data["error"] = self.error
        return data


def _interpret(remote: str, branches: List[str], code: int, stdout: str, stderr: str,
               urls: Iterable[str]) -> Outcome:
    """What a push did to each branch, from git's exit status and answer (pure)."""
    outcome = Outcome(remote)
    answered = parse_porcelain(stdout)
    for name in branches:
        flag, summary = answered.get(name, (None, ""))
        if flag in (" ", "*", "+"):
            outcome.pushed.append(name)
        elif flag == "=":
            outcome.unchanged.append(name)
        elif flag is not None:
            outcome.rejected[name] = hide_credentials(summary, urls) or "rejected"
    missing = [n for n in branches if n not in answered]
    if code != 0 and (missing or not answered):
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if line.startswith(("fatal:", "error:"))),
                    lines[-1] if lines else f"git push exited {code}")
        outcome.error = hide_credentials(said.strip(), urls)
    return outcome


def _remote_urls(repo: Path, remote: str) -> Tuple[bool, List[str]]:
    """(whether `remote` names a remote of `repo`, every URL it may push to: to hide)."""
    names = gitops.git(["remote"], repo, check=False, policy=gitops.Env.CLEAN).split()
    if remote not in names:
        return False, [remote]
    urls = gitops.git(["remote", "get-url", "--push", "--all", remote], repo, check=False,
                      policy=gitops.Env.CLEAN).splitlines()
    urls += gitops.git(["remote", "get-url", "--all", remote], repo, check=False,
                       policy=gitops.Env.CLEAN).splitlines()
    return True, [u for u in urls if u]


def night_branches(repo: Path) -> List[str]:
    """The `overnight/*` branches of `repo` now: what a new night records as there before it."""
    return [name for name in local_branches(repo) if name.startswith(BRANCH_PREFIX)]


def local_branches(repo: Path) -> List[str]:
    out = gitops.git(["for-each-ref", "--format=%(refname)", "refs/heads/"], repo, policy=gitops.Env.READ)
    return [ref[len("refs/heads/"):] for ref in out.splitlines() if ref.startswith("refs/heads/")]


def push(repo: Path, remote: str, branches: List[str], timeout: float) -> Outcome:
    """Push `branches` (local names) to the same names on `remote`: fast-forwards and new
    branches only. A remote's `mirror` setting (which would force and delete), `push.followTags`
    and submodule recursion are overridden; no refspec carries `+`."""
    named, urls = _remote_urls(repo, remote)
    shown = remote if named else hide_credentials(remote)
    if not branches:
        return Outcome(shown)
    args = ["-c", f"remote.{remote}.mirror=false"] if named else []
    args += ["push", "--porcelain", "--no-follow-tags", "--recurse-submodules=no", remote,
             *[f"refs/heads/{b}:refs/heads/{b}" for b in branches]]
    try:
        proc = gitops.run(args, repo, check=False, policy=gitops.Env.CLEAN, timeout=timeout)
    except (gitops.GitError, OSError) as exc:
        return Outcome(shown, error=hide_credentials(str(exc), urls))
    return _interpret(shown, branches, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                      proc.stderr.decode("utf-8", "replace"), urls)


def publish(settings, session: state.Session, log, now=None) -> Outcome:
    """Push the night's branches as `settings` (`config.PublishConfig`) say, log the outcome and
    note it in `session.events` (`publish.pushed` or `publish.failed`; the caller saves the
    session). Never raises."""
    repo = Path(session.repo_root)
    remote = settings.remote or ""
    try:
        layout = state.RunLayout.of_session(session)
        recorded = hookrun.created_branches(str(layout.branches_file)) if layout else {}
        choice = choose(local_branches(repo), session_branch=session.session_branch,
                        ops_journal_branch=session.ops_journal_branch, run_id=session.run_id,
                        recorded=recorded, pattern=settings.branches, existed=session.branches_at_start)
        outcome = push(repo, remote, choice.push, settings.timeout)
    except (gitops.GitError, OSError) as exc:   # the repository itself unreadable
        choice = Choice([])
        outcome = Outcome(hide_credentials(remote), error=hide_credentials(str(exc), [remote]))
    scrub = redact.Redactor(os.environ)
    fields = scrub.data(outcome.fields())
    when = timeparse.iso(now or timeparse.local_now())
    if outcome.ok:
        session.note(PUSHED, when, **fields)
        log.info(PUSHED, **fields, left_local=sorted(choice.skipped))
    else:
        session.note(FAILED, when, **fields)
        log.error(FAILED, **fields, hint="the work is on the local branches; it is pushed again when "
                                         "the next night starts, or push it by hand")
    return outcome


def pending(session: state.Session) -> bool:
    """Whether the night still has to be published (no push of it has succeeded)."""
    return not any(e.get("event") == PUSHED for e in session.events)


def describe(session: state.Session) -> Optional[str]:
    """One line for `status`: the night's last publish, or None when it has none."""
    last = next((e for e in reversed(session.events) if e.get("event") in (PUSHED, FAILED)), None)
    if last is None:
        return None
    remote = last.get("remote", "?")
    pushed, unchanged = last.get("pushed") or [], last.get("unchanged") or []
    done = f"{len(pushed)} pushed, {len(unchanged)} already there"
    if last["event"] == PUSHED:
        return f"published to {remote}: {done}"
    problems = [f"{name} refused ({why})" for name, why in (last.get("rejected") or {}).items()]
    if last.get("error"):
        problems.append(str(last["error"]))
    return f"publish to {remote} FAILED: {'; '.join(problems)} ({done})"

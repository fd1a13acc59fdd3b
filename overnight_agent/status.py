"""What a night is doing or did: `overnight-agent status`, and the facts the morning report draws.

Owns: reading one night's facts into a `View` (session.json, the age of the last sign of life,
the `overnight/*` branches and commits made during the run, each branch's validation records
and whether they cover its tip, the summary lines, the questions for the operator, the
strategy) and printing them. Works while a night is live and after it.
Must not: take the lock, write any file, or run a git command that changes anything; a missing
repository or journal file gives an emptier view, never an error.

Which branches belong to a run: every `overnight/*` branch (the ops journal aside) whose name
holds the run id, that was created during the run (its reflog), or that was created before it
and has commits made during the run that the base commit does not have. A branch created after
the run is never its own, even when it holds the run's merged commits. The run lasts from
`created_at` to the last moment it recorded (now while it is not over).
"""
import datetime as dt
import functools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import gitops, publish, redact, state, timeparse

LIVE_STATES = (state.STARTING, state.RUNNING, state.BACKOFF, state.STOPPING)
SLACK = dt.timedelta(seconds=5)     # commits in the last second of a run, clock granularity
STOP_ALLOWANCE = dt.timedelta(minutes=5)   # stopping and the checkpoint after the deadline
SUMMARY = re.compile(r"(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (?P<branch>\S+) (?P<sha>\S+) (?P<text>.*)")
QUESTION = re.compile(r"- \[(?P<mark>[ xX])\] (?P<at>\S+) \(run (?P<run>[^)]+)\) (?P<text>.*)")
USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")


@dataclass
class Commit:
    sha: str
    at: str                 # committer time, ISO 8601
    author: str
    subject: str

    @property
    def checkpoint(self) -> bool:
        return self.subject.startswith("checkpoint:")


@dataclass
class FileStat:
    path: str
    added: Optional[int]     # None for a binary file
    deleted: Optional[int]


@dataclass
class Validation:
    """One `overnight-agent validate` of the night (its record under `<run_dir>/validation/`)."""

    at: str
    ok: bool
    mode: str                # "base": the branch against its base; "staged": a commit about to be made
    branch: Optional[str]
    head: Optional[str]      # the commit checked out then (older records lack it)
    suites: List[Dict[str, object]] = field(default_factory=list)   # name, status, seconds
    failed_guards: List[str] = field(default_factory=list)
    record: str = ""

    def describe(self) -> str:
        suites = ", ".join(f"{s['name']} {s['status']}" for s in self.suites) or "no suite"
        guards = f"; guards failed: {', '.join(self.failed_guards)}" if self.failed_guards else ""
        return f"{'passed' if self.ok else 'FAILED'} ({self.mode}): {suites}{guards}"


# A branch's validation, judged against its tip.
VALIDATED, FAILED_VALIDATION, STALE, UNVALIDATED = "passed", "failed", "stale", "none"


@dataclass
class Branch:
    name: str
    tip: str
    created_at: Optional[str]
    commits: List[Commit] = field(default_factory=list)    # newest first, made during the run
    shortstat: str = ""                                    # against the base commit
    files: List[FileStat] = field(default_factory=list)
    merged: bool = False                                   # tip reachable from the base branch
    tip_parent: Optional[str] = None
    validations: List[Validation] = field(default_factory=list)   # oldest first
    validation: str = UNVALIDATED    # passed (a passing run covers the tip) | failed | stale | none

    @property
    def needs_review(self) -> bool:
        """Commits tonight, and no passing validation of what the branch holds now."""
        return bool(self.commits) and self.validation != VALIDATED


@dataclass
class Summary:
    at: str
    branch: str
    sha: str
    text: str


@dataclass
class Question:
    at: str
    text: str
    done: bool
    file: str


@dataclass
class Evidence:
    source: str             # codex log | heartbeat | rollout
    path: str
    at: str
    age_seconds: float


@dataclass
class View:
    session: state.Session
    session_path: Path
    run_dir: Path
    run_root: Path
    codex_home: Path
    now: dt.datetime
    window: Tuple[dt.datetime, dt.datetime]
    supervisor_alive: bool
    evidence: Optional[Evidence]
    branches: List[Branch]
    summaries: List[Summary]
    questions: List[Question]
    strategy: Optional[str]
    git_error: Optional[str] = None

    @property
    def live(self) -> bool:
        return self.session.state in LIVE_STATES and self.supervisor_alive

    @property
    def time_left(self) -> float:
        return max(0.0, (self.session.deadline_dt - self.now).total_seconds())

    @property
    def commits(self) -> List[Commit]:
        """Every commit made during the run, once, oldest first."""
        seen: Dict[str, Commit] = {}
        for branch in self.branches:
            for commit in branch.commits:
                seen.setdefault(commit.sha, commit)
        return sorted(seen.values(), key=lambda c: c.at)

    @property
    def open_questions(self) -> List[Question]:
        return [q for q in self.questions if not q.done]


# --- collecting ---------------------------------------------------------------------------------

def run_dir_of(session: state.Session, session_path: Path) -> Path:
    """`<run_root>/runs/<run_id>`: from the heartbeat path the night recorded, else beside the state."""
    return state.RunLayout.of_session(session, session_path).root


def collect(session_path: Path, *, session: Optional[state.Session] = None,
            run_dir: Optional[Path] = None, codex_home: Optional[Path] = None,
            now: Optional[dt.datetime] = None) -> View:
    """Everything known about the night in `session_path` (read-only; never takes the lock)."""
    if session is None:
        session = state.load(session_path)
        if session is None:
            from .exitcodes import ConfigError
            raise ConfigError(f"{session_path}: no session state; start a night with `overnight-agent run`")
    now = now or timeparse.local_now()
    run_dir = run_dir or run_dir_of(session, session_path)
    run_root = run_dir.parent.parent
    codex_home = codex_home or run_root / "codex_home"
    alive = supervisor_alive(run_root / "overnight-agent.lock", session.supervisor_pid)
    window = run_window(session, now)
    branches, git_error = [], None
    try:
        branches = run_branches(session, window)
    except (OSError, gitops.GitError) as exc:
        git_error = str(exc)
    judge_validations(branches, validations(run_dir))
    reports = Path(session.reports_dir) if session.reports_dir else None
    return View(
        session=session, session_path=session_path, run_dir=run_dir, run_root=run_root,
        codex_home=codex_home, now=now, window=window, supervisor_alive=alive,
        evidence=last_evidence(session, run_dir, codex_home, now), branches=branches,
        summaries=summaries(session, window), questions=questions(session),
        strategy=_read(reports / f"{session.run_id}_strategy.md") if reports else None,
        git_error=git_error)


def run_window(session: state.Session, now: dt.datetime) -> Tuple[dt.datetime, dt.datetime]:
    """From `created_at` to the last moment the run recorded; while it is not over, to now (but
    never far past its deadline: a night whose supervisor died does not claim later work)."""
    start = timeparse.parse_iso(session.created_at)
    end = last_recorded(session)
    if session.state in LIVE_STATES:
        end = max(end, min(now, max(session.deadline_dt, end) + STOP_ALLOWANCE))
    return start - SLACK, end + SLACK


def last_recorded(session: state.Session) -> dt.datetime:
    """The last moment session.json records: an attempt's start or end, or an event."""
    moments = [timeparse.parse_iso(session.created_at)]
    for attempt in session.attempts:
        moments += [timeparse.moment(attempt.started_at), timeparse.moment(attempt.ended_at)]
    moments += [timeparse.moment(e.get("at")) for e in session.events]
    return max(m for m in moments if m is not None)


def supervisor_alive(lock_path: Path, pid: Optional[int]) -> bool:
    """Whether a supervisor holds the lock, read from /proc/locks (taking it, even shared for an
    instant, could make a starting supervisor fail); without /proc, whether `pid` lives."""
    try:
        st = os.stat(lock_path)
    except OSError:
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks a waiter)
                if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
                    continue
                dev_ino = parts[5].split(":")
                if len(dev_ino) != 3 or not dev_ino[2].isdigit() or int(dev_ino[2]) != st.st_ino:
                    continue
                same_dev = (int(dev_ino[0], 16), int(dev_ino[1], 16)) == (os.major(st.st_dev),
                                                                          os.minor(st.st_dev))
                # Some filesystems show another device number there: then the holder must be ours.
                if same_dev or (pid and parts[4] == str(pid)):
                    return True
        return False
    except OSError:
        pass
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_evidence(session: state.Session, run_dir: Path, codex_home: Path,
                  now: dt.datetime) -> Optional[Evidence]:
    """The newest of: the run's agent logs, the heartbeat file, the newest codex rollout (the
    other CLIs' transcripts are in their logs' stream already)."""
    agent = session.agent or "codex"
    candidates: List[Tuple[str, Path]] = [(f"{agent} log", p) for p in run_dir.glob(f"{agent}_*.log")]
    if session.heartbeat_file:
        candidates.append(("heartbeat", Path(session.heartbeat_file)))
    rollout = newest_rollout(codex_home / "sessions") if agent == "codex" else None
    if rollout is not None:
        candidates.append(("rollout", rollout))
    best: Optional[Tuple[float, str, Path]] = None
    for source, path in candidates:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, source, path)
    if best is None:
        return None
    mtime, source, path = best
    moment = dt.datetime.fromtimestamp(mtime, tz=dt.timezone.utc).astimezone(now.tzinfo)
    return Evidence(source=source, path=str(path), at=timeparse.iso(moment.replace(microsecond=0)),
                    age_seconds=max(0.0, now.timestamp() - mtime))


def newest_rollout(sessions: Path) -> Optional[Path]:
    """The newest `rollout-*.jsonl` in codex's store (`sessions/YYYY/MM/DD/`), newest day first."""
    if not sessions.is_dir():
        return None
    days = sorted((d for d in sessions.glob("*/*/*") if d.is_dir()), reverse=True)
    for day in days[:3] or [sessions]:
        files = [(p.stat().st_mtime, p) for p in day.glob("rollout-*.jsonl") if p.is_file()]
        if files:
            return max(files)[1]
    return None


# A read never takes a lock the agent's own git may need: status runs beside a live night.
_git = functools.partial(gitops.git, policy=gitops.Env.READ, raw=True)


def run_branches(session: state.Session, window: Tuple[dt.datetime, dt.datetime]) -> List[Branch]:
    """The `overnight/*` branches of the run, with the commits made during it."""
    repo = Path(session.repo_root)
    if not repo.is_dir():
        raise gitops.GitError(f"{repo}: the repository is gone")
    start, end = window
    common = Path(_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo).strip())
    refs = _git(["for-each-ref", "--format=%(refname:short)\x1f%(objectname)\x1f%(committerdate:unix)",
                 "refs/heads/overnight/"], repo)
    base_ref = f"refs/heads/{session.base_branch}"
    branches = []
    for line in refs.splitlines():
        name, tip, tip_time = line.split("\x1f")
        if name == session.ops_journal_branch:
            continue
        created = _created(common, name)
        if session.run_id not in name and created is not None:
            if created > end:
                continue        # made after this night (from a base that has its merged work)
            if created < start and tip_time.isdigit() and int(tip_time) < start.timestamp():
                continue        # older than the night, and nothing committed on it since
        commits = [c for c in _commits(repo, name, session.base_commit)
                   if start <= timeparse.parse_iso(c.at) <= end]
        born_here = created is not None and start <= created <= end
        if not (commits or born_here or session.run_id in name):
            continue
        branch = Branch(name=name, tip=tip, created_at=timeparse.iso(created) if created else None,
                        commits=commits)
        branch.shortstat = _git(["diff", "--shortstat", f"{session.base_commit}...{tip}"], repo).strip()
        for row in _git(["diff", "--numstat", f"{session.base_commit}...{tip}"], repo).splitlines():
            added, deleted, path = row.split("\t", 2)
            branch.files.append(FileStat(path, int(added) if added.isdigit() else None,
                                         int(deleted) if deleted.isdigit() else None))
        branch.merged = gitops.succeeds(["merge-base", "--is-ancestor", tip, base_ref], repo,
                                        policy=gitops.Env.READ)
        branch.tip_parent = gitops.git(["rev-parse", "--verify", "--quiet", f"{tip}^"], repo, check=False,
                                       policy=gitops.Env.READ) or None
        branches.append(branch)
    branches.sort(key=lambda b: (b.name != session.session_branch, b.created_at or "", b.name))
    return branches


def _commits(repo: Path, branch: str, base_commit: str) -> List[Commit]:
    out = _git(["log", "--format=%H%x1f%cI%x1f%an%x1f%s", f"refs/heads/{branch}", "--not", base_commit,
                "--"], repo)
    commits = []
    for line in out.splitlines():
        sha, at, author, subject = line.split("\x1f", 3)
        commits.append(Commit(sha=sha, at=at, author=author, subject=subject))
    return commits


def _created(common: Path, branch: str) -> Optional[dt.datetime]:
    """When the branch was created, from the first line of its reflog (None without one)."""
    try:
        with open(common / "logs" / "refs" / "heads" / branch, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return None
    match = re.search(r"> (\d+) [+-]\d{4}\t", first)
    if not match:
        return None
    return dt.datetime.fromtimestamp(int(match.group(1)), tz=dt.timezone.utc)


def validations(run_dir: Path) -> List[Validation]:
    """The night's validation records, oldest first (where `validate` writes them in a night:
    `<run_dir>/validation/`, or `<run_dir>/agent/validation/` when that was not writable);
    unreadable ones are skipped."""
    found = []
    layout = state.RunLayout(run_dir)
    for folder in (layout.validation_dir, layout.agent_dir / "validation"):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            data = _json(path)
            if not isinstance(data, dict) or not isinstance(data.get("started_at"), str):
                continue
            suites = [{"name": str(x.get("name")), "status": str(x.get("status")),
                       "seconds": x.get("seconds")}
                      for x in data.get("suites") or [] if isinstance(x, dict)]
            failed = [str(g.get("name")) for g in data.get("guards") or []
                      if isinstance(g, dict) and not g.get("ok", True)]
            found.append(Validation(at=data["started_at"], ok=bool(data.get("ok")),
                                    mode=str(data.get("mode") or "base"), branch=data.get("branch"),
                                    head=data.get("head"), suites=suites, failed_guards=failed,
                                    record=str(path)))
    return sorted(found, key=lambda v: timeparse.moment(v.at) or dt.datetime.min.replace(tzinfo=dt.timezone.utc))


def judge_validations(branches: List[Branch], records: List[Validation]) -> None:
    """Give each branch its records and a verdict from the newest validation of its tip (run on
    the tip, or on the staged set that became the tip): `passed` or `failed`; without one,
    `failed` when the newest validation of the branch failed, `stale` when it passed before the
    newest commits, `none` when there is none."""
    for branch in branches:
        branch.validations = [r for r in records if r.branch == branch.name]
        of_tip = [r for r in branch.validations if _covers(r, branch)]
        newest = (of_tip or branch.validations or [None])[-1]
        if newest is None:
            branch.validation = UNVALIDATED
        elif not newest.ok:
            branch.validation = FAILED_VALIDATION
        else:
            branch.validation = VALIDATED if of_tip else STALE


def _covers(record: Validation, branch: Branch) -> bool:
    if record.head is None:  # an older record: it counts when no commit came after it
        newest = timeparse.moment(branch.commits[0].at) if branch.commits else None
        return newest is None or (timeparse.moment(record.at) or newest) >= newest
    if record.mode == "staged":
        return record.head == branch.tip_parent
    return record.head == branch.tip


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summaries(session: state.Session, window: Tuple[dt.datetime, dt.datetime]) -> List[Summary]:
    """The executive summary lines written during the run."""
    text = _read(Path(session.exec_summary_log)) if session.exec_summary_log else None
    found = []
    for line in (text or "").splitlines():
        m = SUMMARY.fullmatch(line.strip())
        if m and window[0] <= timeparse.moment(m.group("at")) <= window[1]:
            found.append(Summary(at=m.group("at"), branch=m.group("branch"), sha=m.group("sha"),
                                 text=m.group("text")))
    return found


def questions(session: state.Session) -> List[Question]:
    """The run's questions for the operator (`- [ ]` open, `- [x]` answered)."""
    if not session.reports_dir:
        return []
    found = []
    for path in sorted(Path(session.reports_dir).glob("*_questions_for_operator.md")):
        for line in (_read(path) or "").splitlines():
            m = QUESTION.fullmatch(line.strip())
            if m and m.group("run") == session.run_id:
                found.append(Question(at=m.group("at"), text=m.group("text"),
                                      done=m.group("mark") != " ", file=path.name))
    return found


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# --- tokens ---------------------------------------------------------------------------------------

def usage_deltas(attempts: List[state.Attempt]) -> List[Optional[Dict[str, int]]]:
    """Tokens each attempt used. Codex reports usage cumulative per thread, so an attempt's share
    is its total minus the last total seen on the same thread (None: the attempt reported none)."""
    last: Dict[str, Dict[str, int]] = {}
    deltas: List[Optional[Dict[str, int]]] = []
    for attempt in attempts:
        usage = attempt.usage
        if not usage:
            deltas.append(None)
            continue
        thread = attempt.thread_id or f"#{attempt.number}"
        before = last.get(thread, {})
        total = {k: int(v) for k, v in usage.items() if isinstance(v, (int, float))}
        if any(total.get(k, 0) < before.get(k, 0) for k in total):
            before = {}          # the counter went back: a new thread under the same id
        deltas.append({k: total.get(k, 0) - before.get(k, 0) for k in total})
        last[thread] = total
    return deltas


# --- printing -------------------------------------------------------------------------------------

def to_json(view: View) -> dict:
    """The view as plain data, secrets redacted."""
    session = view.session
    data = session.to_dict()
    data.update({
        "session_state_file": str(view.session_path),
        "run_dir": str(view.run_dir),
        "time_left_seconds": int(view.time_left),
        "supervisor_running": view.supervisor_alive,
        "live": view.live,
        "last_evidence": asdict(view.evidence) if view.evidence else None,
        "branches": [{**asdict(b), "commits": [asdict(c) for c in b.commits],
                      "needs_review": b.needs_review} for b in view.branches],
        "commits": [asdict(c) for c in view.commits],
        "summaries": [asdict(s) for s in view.summaries],
        "open_questions": [asdict(q) for q in view.open_questions],
        "usage_per_attempt": usage_deltas(session.attempts),
        "git_error": view.git_error,
    })
    return redact.Redactor(os.environ).data(data)


def render(view: View, summary_lines: int = 5) -> str:
    """The view for a terminal, secrets redacted."""
    s = view.session
    out = []
    supervisor = ("supervisor alive" if view.supervisor_alive
                  else "no supervisor running" if s.state in LIVE_STATES else "")
    out.append(f"run {s.run_id}: {s.state}{' (' + supervisor + ')' if supervisor else ''}; "
               f"deadline {s.deadline} ({timeparse.format_duration(view.time_left)} left)")
    last = s.last_attempt()
    if last is None:
        out.append(f"no attempt yet; supervisor restarts {s.restarts}")
    else:
        doing = (f"{last.outcome}{': ' + last.detail if last.detail else ''}" if last.outcome
                 else f"running since {_hms(last.started_at)}")
        out.append(f"attempt {last.number} ({last.kind}): {doing}")
        out.append(f"attempts {len(s.attempts)}; supervisor restarts {s.restarts}; "
                   f"fresh starts {s.fresh_starts}")
    out.append(f"thread {s.thread_id or '-'}")
    if view.evidence:
        e = view.evidence
        out.append(f"last sign of life: {timeparse.format_duration(e.age_seconds)} ago ({e.source}, "
                   f"{_hms(e.at)})")
    else:
        out.append("last sign of life: none yet")
    commits = view.commits
    out.append(f"branches {len(view.branches)}, commits {len(commits)} this run:")
    for b in view.branches:
        stat = b.shortstat or "no changes"
        out.append(f"  {b.name}: {len(b.commits)} commit{'s' if len(b.commits) != 1 else ''}; {stat}")
        out.append(f"    validation: {validation_line(b)}")
        for v in b.validations[-3:]:
            out.append(f"      {_hms(v.at)} {v.describe()}")
        for c in b.commits[:5]:
            out.append(f"    {c.sha[:10]} {_hms(c.at)} {c.subject}")
        if len(b.commits) > 5:
            out.append(f"    ... {len(b.commits) - 5} more")
    unchecked = [b.name for b in view.branches if b.needs_review]
    if unchecked:
        out.append(f"  NOT VALIDATED: {', '.join(unchecked)} (commits tonight, no passing "
                   "validation of the tip)")
    if view.git_error:
        out.append(f"  (git: {view.git_error})")
    if view.summaries:
        out.append(f"summaries ({len(view.summaries)}, last {min(summary_lines, len(view.summaries))}):")
        for item in view.summaries[-summary_lines:]:
            out.append(f"  {_hms(item.at)} {item.text}")
    opened = view.open_questions
    out.append(f"open questions: {len(opened) or 'none'}")
    for q in opened:
        out.append(f"  - [ ] {q.text}")
    out.append(f"session worktree {s.session_worktree} ({s.session_branch})")
    published = publish.describe(s)
    if published:
        out.append(published)
    return redact.Redactor(os.environ).text("\n".join(out))


def _hms(value) -> str:
    return timeparse.local_clock(value, missing="-")


def validation_line(branch: Branch) -> str:
    """What the morning reader needs of a branch's validation, in one phrase."""
    runs = len(branch.validations)
    counted = f"{runs} run{'s' if runs != 1 else ''}"
    if branch.validation == VALIDATED:
        return f"passed on its tip ({counted})"
    if branch.validation == FAILED_VALIDATION:
        return f"FAILED (last of {counted})"
    if branch.validation == STALE:
        return f"stale: passed before the newest commits ({counted})"
    return "none" + (" (NOT VALIDATED: commits without a validation run)" if branch.commits else "")


def dumps(view: View) -> str:
    return json.dumps(to_json(view), indent=2, ensure_ascii=False)


def command(session_path: Path, session: state.Session, codex_home: Optional[Path], as_json: bool) -> str:
    """`overnight-agent status [--json]`: the text to print (never takes the lock)."""
    view = collect(session_path, session=session, codex_home=codex_home)
    return dumps(view) if as_json else render(view)

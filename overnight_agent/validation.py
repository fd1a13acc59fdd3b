"""`overnight-agent validate`: run what the touched paths call for, and the guards, with limits.

Owns: computing the touched paths (the staged set, or the branch against its base), choosing the
suites whose globs match them (plus the `always` ones), running each under its time limit (the
whole process group, and any descendant that left it, is killed on timeout), the guards of
`guards.py` on the same change set, and the JSON record of all of it. Must not: change the
repository, or decide what a failure means for the night (the agent and the operator do).

The record: `<run_dir>/validation/<timestamp>.json` in a night, or `--out PATH`.
"""
import datetime as dt
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import gitops, guards, pathglob, procs, state
from .config import Suite

OUTPUT_TAIL = 4000
SUITE_MARK = "OVERNIGHT_AGENT_SUITE_RUN"
KILL_GRACE = 3.0
PASSED, FAILED, TIMED_OUT, ERROR = "passed", "failed", "timed_out", "error"


@dataclass
class SuiteResult:
    name: str
    command: str
    triggered_by: List[str]
    status: str
    exit_code: Optional[int]
    seconds: float
    timeout: float
    log: Optional[str]
    output_tail: str = ""


@dataclass
class Report:
    ok: bool
    mode: str                        # "staged" | "base"
    base: Optional[str]
    worktree: str
    branch: Optional[str]
    head: Optional[str]              # the commit checked out (the morning report matches it to tips)
    started_at: str
    seconds: float
    touched: List[str]
    suites: List[SuiteResult] = field(default_factory=list)
    guards: List[dict] = field(default_factory=list)
    skipped_suites: List[str] = field(default_factory=list)
    run_id: Optional[str] = None
    record: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def select(suites: Sequence[Suite], paths: Sequence[str]) -> List[Tuple[Suite, List[str]]]:
    """(suite, what triggered it) for every suite to run: `always`, or a matching touched path."""
    chosen = []
    for suite in suites:
        if suite.always:
            chosen.append((suite, ["always"]))
            continue
        hits = pathglob.matching(suite.paths, paths)
        if hits:
            chosen.append((suite, hits))
    return chosen


def suites_from_plain(items: Sequence[dict]) -> List[Suite]:
    return [Suite(name=i["name"], command=i["command"], timeout=float(i["timeout"]),
                  paths=tuple(i.get("paths") or ()), always=bool(i.get("always"))) for i in items]


def _kill_tree(proc: subprocess.Popen, mark: str) -> None:
    """SIGTERM the suite's process group, every descendant and every process carrying its mark
    (some leave the group with setsid), then SIGKILL whatever is left after a short grace."""
    found = procs.tree(procs.ref_of(proc), mark, var=SUITE_MARK)
    procs.signal_all(found, signal.SIGTERM, group=proc.pid)
    left = procs.stop_blocking(found, grace=KILL_GRACE, signals=(signal.SIGTERM,))
    if left or proc.poll() is None:
        procs.signal_all(left, signal.SIGKILL, group=proc.pid)
        procs.stop_blocking(left, grace=10, signals=(signal.SIGKILL,))
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_suite(suite: Suite, cwd: Path, env: Dict[str, str], log_path: Optional[Path],
              triggered_by: List[str]) -> SuiteResult:
    """Run one suite with `bash -c` in `cwd`, its own session, stdin /dev/null, output to
    `log_path`; kill the whole tree when its time is up."""
    started = time.monotonic()
    mark = f"{suite.name}:{os.getpid()}:{time.monotonic_ns()}"
    env = dict(env, **{SUITE_MARK: mark})
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log_path, "w+b")
    else:
        import tempfile
        sink = tempfile.TemporaryFile()
    try:
        try:
            proc = subprocess.Popen(["bash", "-c", suite.command], cwd=str(cwd), env=env,
                                    stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return SuiteResult(suite.name, suite.command, triggered_by, ERROR, None, 0.0, suite.timeout,
                               str(log_path) if log_path else None, f"cannot start bash: {exc.strerror}")
        status = None
        try:
            code = proc.wait(timeout=suite.timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc, mark)
            code, status = proc.returncode, TIMED_OUT
        else:
            if procs.tagged(mark, var=SUITE_MARK):  # background jobs do not outlive the suite
                _kill_tree(proc, mark)
        sink.flush()
        sink.seek(0, os.SEEK_END)
        size = sink.tell()
        sink.seek(max(0, size - OUTPUT_TAIL))
        tail = sink.read().decode("utf-8", "replace")
    finally:
        sink.close()
    if status is None:
        status = PASSED if code == 0 else FAILED
    if status == TIMED_OUT:
        tail += f"\n[overnight-agent: killed after {suite.timeout:g}s, the suite's timeout]"
    return SuiteResult(suite.name, suite.command, triggered_by, status, code,
                       round(time.monotonic() - started, 3), suite.timeout,
                       str(log_path) if log_path else None, tail)


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S_") + f"{now.microsecond // 1000:03d}"


def run(worktree: Path, suites: Sequence[Suite], settings: guards.GuardSettings, *, mode: str,
        base: Optional[str], record_dir: Optional[Path] = None, out: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None, run_id: Optional[str] = None, echo=print,
        with_guards: bool = True) -> Report:
    """Validate `worktree`: mode "staged" (the staged set) or "base" (the branch since `base`)."""
    t0 = time.monotonic()
    now = dt.datetime.now().astimezone()
    top = Path(gitops.git(["rev-parse", "--show-toplevel"], worktree))
    branch = guards.current_branch(top)
    if mode == "staged":
        target = guards.staged(top)
        branch_set = guards.against_base(top, base) if base else None
    else:
        if not base:
            raise ValueError("validate --base needs a base reference")
        target = branch_set = guards.against_base(top, base)
    touched = sorted(dict.fromkeys(target.paths))
    head = gitops.git(["rev-parse", "--verify", "--quiet", "HEAD"], top, check=False) or None
    report = Report(ok=True, mode=mode, base=base, worktree=str(top), branch=branch, head=head,
                    started_at=now.isoformat(timespec="seconds"), seconds=0.0, touched=touched,
                    run_id=run_id)
    record = out
    if record is None and record_dir is not None:
        record = record_dir / f"{_stamp(now)}.json"
    logs_dir = record.with_suffix("") if record is not None else None
    chosen = select(suites, touched)
    report.skipped_suites = [s.name for s in suites if s.name not in {c.name for c, _ in chosen}]
    suite_env = dict(os.environ if env is None else env)
    suite_env["OVERNIGHT_AGENT_VALIDATION"] = mode
    for suite, why in chosen:
        echo(f"validate: {suite.name}: running ({'always' if why == ['always'] else _why(why)}; "
             f"limit {suite.timeout:g}s)")
        log_path = logs_dir / f"{suite.name}.log" if logs_dir is not None else None
        result = run_suite(suite, top, suite_env, log_path, why)
        report.suites.append(result)
        echo(f"validate: {suite.name}: {result.status.upper()} in {result.seconds:.1f}s"
             + (f" (exit {result.exit_code})" if result.status == FAILED else ""))
        if result.status != PASSED:
            report.ok = False
            for line in result.output_tail.strip().splitlines()[-15:]:
                echo(f"    {line}")
    if with_guards:
        for res in guards.run_all(settings, target, branch_set, branch):
            report.guards.append(res.to_dict())
            if not res.ok:
                report.ok = False
                for message in res.messages:
                    echo(f"validate: guard {res.name}: FAILED: {message}")
    report.seconds = round(time.monotonic() - t0, 3)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        report.record = str(record)
        state.write_atomic(record, json.dumps(report.to_dict(), indent=2) + "\n")
    verdict = "passed" if report.ok else "FAILED"
    echo(f"validate: {verdict}: {len(report.suites)} suite(s), {len(touched)} touched path(s)"
         + (f"; record {record}" if record is not None else ""))
    return report


def _why(paths: List[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


# --- the command line's entry points ---------------------------------------------------------------

def _guard_spec() -> Optional[dict]:
    """The guard spec of the night this process runs in (the agent's environment), if any."""
    path = os.environ.get("OVERNIGHT_AGENT_GUARD")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _writable_dir(preferred: Path, fallback: Optional[Path]) -> Optional[Path]:
    """`preferred` if we may write there (the sandbox may not allow it), else `fallback`."""
    for folder in (preferred, fallback):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return folder
        except OSError:
            continue
    return None


def command(*, repo: Optional[Path], config_path: Optional[Path], staged: bool, base: Optional[str],
            out: Optional[Path]) -> int:
    """`overnight-agent validate`: 0 when every suite and guard passed, 3 otherwise."""
    from .exitcodes import VALIDATION_FAILED, ConfigError, UsageError
    worktree = (repo or Path.cwd()).resolve()
    spec = _guard_spec()
    record_dir, run_id = None, None
    if spec is not None and config_path is None:
        suites = suites_from_plain(spec.get("suites", []))
        settings = guards.GuardSettings.from_dict(spec.get("guards", {}))
        agent_dir = Path(spec["branches_file"]).parent if spec.get("branches_file") else None
        record_dir = _writable_dir(Path(spec["validation_dir"]),
                                   agent_dir / "validation" if agent_dir else None)
        run_id = spec.get("run_id")
    else:
        from . import night
        loaded = night.load_for(night.RunRequest(repo=worktree, config_path=config_path))
        cfg = loaded.config
        session = None
        if os.environ.get("OVERNIGHT_AGENT_SESSION"):  # the agent's night, without a guard spec
            session = state.load(Path(os.environ["OVERNIGHT_AGENT_SESSION"]))
        layout = state.RunLayout.of_session(session) if session else None
        settings = guards.GuardSettings.from_validation(
            cfg.validation, base=session.base_commit if session else cfg.repo.base_branch,
            ops_journal_branch=cfg.repo.ops_journal_branch,
            journal_paths=(cfg.repo.reports_dir.strip("/"), cfg.repo.exec_summary_log.strip("/")),
            branches_file=str(layout.branches_file) if layout else None)
        suites = cfg.validation.suites
        if layout is not None:
            record_dir = _writable_dir(layout.validation_dir, layout.agent_dir / "validation")
            run_id = session.run_id
    base_ref = base or settings.base
    try:
        if base_ref and not gitops.git(["rev-parse", "--verify", "--quiet", f"{base_ref}^{{commit}}"],
                                            worktree, check=False):
            raise UsageError(f"validate: {base_ref!r} is not a commit of this repository; pass --base REF")
        report = run(worktree, suites, settings, mode="staged" if staged else "base", base=base_ref,
                     record_dir=None if out else record_dir, out=out, run_id=run_id)
    except gitops.GitError as exc:
        raise ConfigError(f"validate: {exc}") from None
    return 0 if report.ok else VALIDATION_FAILED


def record_work_item(session, branch: str, paths: Optional[Sequence[str]]) -> None:
    """Remember a work-item branch (and the paths it declared) where the run's hooks read it."""
    from .hookrun import record_branch
    spec = _guard_spec()
    if spec is not None and spec.get("branches_file"):
        target = spec["branches_file"]
    elif state.RunLayout.of_session(session) is not None:
        target = str(state.RunLayout.of_session(session).branches_file)
    else:
        return
    record_branch(target, branch, paths=list(paths) if paths else None, by="branch-command")

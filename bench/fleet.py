"""Many nights on one machine: what each night's supervisor costs, and how many nights fit.

    .venv/bin/python bench/fleet.py [--sizes 1,5,10,20] [--windows 3] [--seconds 8] [--quick] [--json PATH]
    .venv/bin/python bench/run.py --only fleet        # the same, as a section of the bench

For each N in `--sizes`, N nights run at once, each on a git repository of its own, as N plain
`overnight-agent run --hours 1` processes (what N instances of `overnight-agent@.service` run),
each with the project's scripted Codex CLI (`overnight_agent.fakecodex`) as its agent, every
setting at its default except the paths and the stop graces (1 s, for a quick teardown). Twice
per N, with a fresh fleet each time:

- **idle**: every agent prints one message and then nothing (the fake's `hang`: a model thinking);
- **work**: every agent prints an event every 0.2 s, and runs `git status --short` every 2 s.

Once every night has its thread (and 3 s more), `--windows` windows of `--seconds` each: the CPU
of every supervisor process (all threads, `/proc/PID/task/*/schedstat`, nanoseconds) and, at the
end of each window, its RSS, PSS and USS (psutil `memory_full_info`: `/proc/PID/smaps_rollup`).
Per window, the median over the N supervisors; the figure is the median over the windows. The
baseline, in the same run: one night alone (N = 1), the first size measured.

The machine limit: MemAvailable (read before the first fleet) divided by what one night adds,
codex's own peak RSS of about 150 MB (measured on the real CLI 0.169.0:
/work/shared/notes/codex-cli/README.md, "Timings here") plus the supervisor's PSS at the largest
N; and the CPU: the cores divided by the supervisor's CPU while its agent works plus codex's own
(0.5 % of a core streaming, measured: docs/how-it-works.md).

Every process it starts carries OA_BENCH_MARK=<token>; the agents carry overnight-agent's tag of
their run_root. All are stopped at the end, and the run ends by proving none is left.
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable
MARK_VAR = "OA_BENCH_MARK"
TOKEN = f"oa-fleet-{os.getpid()}-{time.time_ns() % 10**9}"
CODEX_RSS_MB = 150.0      # the real Codex CLI's peak RSS (notes/codex-cli/README.md, item 11)
CODEX_CPU_PERCENT = 0.5   # the real CLI's CPU while a model streams (docs/how-it-works.md)
SIZES = (1, 5, 10, 20)
SECONDS = 8.0             # per measurement window
STARTED = time.monotonic()
EVENT_EVERY = 0.2         # work: seconds between the fake's events
SHELL_EVERY = 10          # work: every 10th event is a `git status --short`

PHASES = {
    "idle": [{"message": "thinking"}, {"hang": True}],
    "work": [{"message": "working"}]
    + [step for i in range(1, 3000)
       for step in ({"sleep": EVENT_EVERY},
                    {"shell": "git status --short"} if i % SHELL_EVERY == 0 else {"message": f"step {i}"})]
    + [{"hang": True}],
}


def log(msg: str) -> None:
    print(f"[fleet {time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --- processes --------------------------------------------------------------------------------------

def cpu_ns(pid: int) -> Optional[int]:
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def tag_prefix(run_root: Path) -> str:
    """The agent tag prefix overnight-agent gives every agent process of `run_root` (night.tag_prefix)."""
    return "oa-" + hashlib.sha256(str(run_root).encode()).hexdigest()[:12] + ":"


def leftovers(prefixes: List[str]) -> List[int]:
    """Live processes with the bench's mark or one of the fleet's agent tags."""
    needles = [f"{MARK_VAR}={TOKEN}".encode()] + [f"OVERNIGHT_AGENT_TAG={p}".encode() for p in prefixes]
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
            with open(f"/proc/{name}/stat") as handle:
                zombie = handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            continue
        if not zombie and any(var.startswith(n) for var in env for n in needles):
            found.append(int(name))
    return found


def kill_all(prefixes: List[str], timeout: float = 5.0) -> List[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = leftovers(prefixes)
        if not pids:
            return []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    return leftovers(prefixes)


# --- one fleet --------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Night:
    def __init__(self, base: Path, codex: Path, steps: List[dict]):
        import yaml
        self.base = base
        self.repo = base / "repo"
        self.repo.mkdir(parents=True)
        (self.repo / "README.md").write_text(f"# {base.name}\n")
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "add", "-A")
        git(self.repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q",
            "-m", "initial")
        self.run_root = base / "run"
        home = self.run_root / "codex_home"
        home.mkdir(parents=True)
        (home / "fake_codex_scenario.yaml").write_text(yaml.safe_dump({"steps": steps}, sort_keys=False))
        self.config = base / "overnight.yaml"
        self.config.write_text(yaml.safe_dump({
            "version": 2,
            "repo": {"run_root": str(self.run_root), "session_worktree_root": str(base / "wt" / "session"),
                     "ops_journal_worktree": str(base / "wt" / "ops")},
            "codex": {"codex_bin": str(codex)},
            "stop": {"sigint_grace": "1s", "sigterm_grace": "1s"},
        }, sort_keys=False))
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "OVERNIGHT_AGENT_"))}
        env[MARK_VAR] = TOKEN
        out = open(self.base / "supervisor.out", "wb")
        self.popen = subprocess.Popen(
            [PY, "-m", "overnight_agent", "run", "--repo", str(self.repo), "--config", str(self.config),
             "--hours", "1"], cwd=self.base, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def session(self) -> Optional[dict]:
        try:
            return json.loads((self.run_root / "session.json").read_text())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.base.name}: the supervisor exited {self.popen.returncode}: "
                               + (self.base / "supervisor.out").read_text()[-1500:])
        session = self.session()
        return bool(session and session["state"] == "running" and session.get("thread_id"))


def measure_fleet(work: Path, n: int, phase: str, windows: int, seconds: float) -> dict:
    import psutil
    folder = work / f"{phase}-{n:02d}"
    codex = work / "bin" / "codex"
    if not codex.exists():
        from overnight_agent import demo
        demo.write_fake_codex(codex)
    nights = [Night(folder / f"night-{i:02d}", codex, PHASES[phase]) for i in range(n)]
    prefixes = [tag_prefix(night.run_root) for night in nights]
    t0 = time.monotonic()
    try:
        for night in nights:
            night.start()
        end = time.monotonic() + 60 + 5 * n
        while not all(night.ready() for night in nights):
            if time.monotonic() > end:
                raise RuntimeError(f"{phase} x{n}: not every night had its thread after {end - t0:.0f} s")
            time.sleep(0.1)
        setup = time.monotonic() - t0
        time.sleep(3.0)   # past start-up: the first liveness samples
        pids = [night.popen.pid for night in nights]
        agents = [night.session()["attempts"][-1]["pid"] for night in nights]
        result = {"n": n, "phase": phase, "setup_s": setup, "cpu_s_per_min": [], "rss_mb": [], "pss_mb": [],
                  "uss_mb": [], "agent_rss_mb": [], "fleet_cpu_percent": []}
        before = {pid: cpu_ns(pid) for pid in pids}
        for _ in range(windows):
            start = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - start
            now = {pid: cpu_ns(pid) for pid in pids}
            used = [(now[pid] - before[pid]) / 1e9 for pid in pids]
            result["cpu_s_per_min"].append(statistics.median(used) / elapsed * 60)
            result["fleet_cpu_percent"].append(sum(used) / elapsed * 100)
            mems = [psutil.Process(pid).memory_full_info() for pid in pids]
            for key, field in (("rss_mb", "rss"), ("pss_mb", "pss"), ("uss_mb", "uss")):
                result[key].append(statistics.median(getattr(m, field, 0) / 1e6 for m in mems))
            rss = []
            for pid in agents:
                try:
                    rss.append(psutil.Process(pid).memory_info().rss / 1e6)
                except psutil.Error:
                    pass
            result["agent_rss_mb"].append(statistics.median(rss) if rss else 0.0)
            before = now
        states = [(night.session() or {}).get("state") for night in nights]
        if any(state != "running" for state in states):
            raise RuntimeError(f"{phase} x{n}: a night left `running` while measured: {states}")
        result["attempts"] = sum(len(night.session()["attempts"]) for night in nights)
        return result
    finally:
        for night in nights:
            if night.popen is not None and night.popen.poll() is None:
                night.popen.send_signal(signal.SIGTERM)
        for night in nights:
            if night.popen is not None:
                try:
                    night.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    night.popen.kill()
                    night.popen.wait()
        left = kill_all(prefixes)
        if left:
            raise RuntimeError(f"{phase} x{n}: processes left: {left}")
        shutil.rmtree(folder, ignore_errors=True)


def measure(sizes=SIZES, windows: int = 3, seconds: float = SECONDS, work: Optional[Path] = None) -> dict:
    """Every size, idle then work; returns the raw figures (see `table`)."""
    import psutil
    own = work is None
    if own:
        shm = Path("/dev/shm")
        work = Path(tempfile.mkdtemp(prefix="oa-fleet-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                     else None))
    memory = psutil.virtual_memory()
    results = {"sizes": list(sizes), "windows": windows, "seconds": seconds, "cores": os.cpu_count(),
               "mem_total_mb": memory.total / 1e6, "mem_available_mb": memory.available / 1e6, "runs": {}}
    try:
        for n in sizes:
            for phase in ("idle", "work"):
                log(f"{n} night{'s' if n > 1 else ''} at once, agents {phase}: setting up")
                results["runs"][f"{phase}-{n}"] = measure_fleet(work, n, phase, windows, seconds)
    finally:
        kill_all([])
        if own:
            shutil.rmtree(work, ignore_errors=True)
    results["left"] = leftovers([])
    return results


# --- the table ----------------------------------------------------------------------------------------

def med(values):
    return statistics.median(values) if values else None


def table(results: dict) -> str:
    runs = results["runs"]
    sizes = [n for n in results["sizes"] if f"idle-{n}" in runs and f"work-{n}" in runs]
    if not sizes:
        return ""
    base = sizes[0]

    def fig(n, phase, key):
        return med(runs[f"{phase}-{n}"][key])

    rows = []
    for n in sizes:
        rss, pss, uss = (fig(n, "idle", k) for k in ("rss_mb", "pss_mb", "uss_mb"))
        wrss, wpss, wuss = (fig(n, "work", k) for k in ("rss_mb", "pss_mb", "uss_mb"))
        idle, busy = fig(n, "idle", "cpu_s_per_min"), fig(n, "work", "cpu_s_per_min")
        ratio = ("baseline" if n == base else
                 f"PSS {pss / fig(base, 'idle', 'pss_mb'):.2f}x, CPU idle {idle / fig(base, 'idle', 'cpu_s_per_min'):.2f}x, "
                 f"working {busy / fig(base, 'work', 'cpu_s_per_min'):.2f}x")
        rows.append(
            f"| {n} night{'s' if n > 1 else ''} at once (setup F) | {rss:.1f} / {pss:.1f} / {uss:.1f} MB "
            f"| {wrss:.1f} / {wpss:.1f} / {wuss:.1f} MB | {idle:.3f} s ({idle / 60 * 100:.2f} %) "
            f"| {busy:.3f} s ({busy / 60 * 100:.2f} %) | {fig(n, 'work', 'fleet_cpu_percent'):.1f} % "
            f"| {runs[f'idle-{n}']['setup_s']:.1f} s | {ratio} |")
    head = ("| nights at once | supervisor RSS / PSS / USS per night, agent idle | the same, agent working "
            "| supervisor CPU per night per minute, agent idle (% of a core) | the same, agent working "
            "| all supervisors together, agents working, % of a core | every night set up and on its thread "
            "| per night vs 1 night alone |")
    return "\n".join([head, "|---|---|---|---|---|---|---|---|", *rows])


def limits(results: dict) -> Dict[str, float]:
    runs = results["runs"]
    sizes = [n for n in results["sizes"] if f"idle-{n}" in runs and f"work-{n}" in runs]
    top = sizes[-1]
    pss = max(med(runs[f"idle-{top}"]["pss_mb"]), med(runs[f"work-{top}"]["pss_mb"]))
    rss = max(med(runs[f"idle-{top}"]["rss_mb"]), med(runs[f"work-{top}"]["rss_mb"]))
    per_night = CODEX_RSS_MB + pss
    busy = med(runs[f"work-{top}"]["cpu_s_per_min"]) / 60 * 100
    return {"at": top, "pss_mb": pss, "rss_mb": rss, "per_night_mb": per_night,
            "by_ram": int(results["mem_available_mb"] // per_night),
            "by_ram_rss": int(results["mem_available_mb"] // (CODEX_RSS_MB + rss)),
            "supervisor_cpu_percent": busy,
            "by_cpu": int(results["cores"] * 100 // (busy + CODEX_CPU_PERCENT))}


def notes(results: dict) -> List[str]:
    lim = limits(results)
    agent_rss = med(results["runs"][f"idle-{lim['at']}"]["agent_rss_mb"])
    sizes = ", ".join(str(n) for n in results["sizes"])
    return [
        f"Setup F: N nights at once (N = {sizes}), each `overnight-agent run --repo R --config C --hours 1` "
        "on a git repository of its own, `agent: codex` with the scripted Codex CLI "
        "(`overnight_agent.fakecodex`, a `#!/bin/sh` wrapper that execs it); every setting at its default "
        "except `repo.run_root`, `repo.*_worktree*` (under the bench's folder) and `stop.sigint_grace`/"
        "`sigterm_grace` 1s. Agent idle: one message, then the fake's `hang` (a model thinking: no output, "
        f"no CPU). Agent working: an event every {EVENT_EVERY:g} s, every {SHELL_EVERY}th a "
        "`git status --short` command. A fresh fleet per row and phase; "
        f"{results['windows']} windows of {results['seconds']:g} s after every night has its thread (+3 s); per "
        "window the median over the N supervisors, then the median of the windows. The first row is the "
        "baseline the last column divides by, measured in the same run.",
        f"Machine limit, RAM: MemAvailable {results['mem_available_mb'] / 1000:.1f} GB (of "
        f"{results['mem_total_mb'] / 1000:.1f} GB) / (codex's own ~{CODEX_RSS_MB:.0f} MB, peak RSS of the real CLI "
        f"0.169.0 measured in notes/codex-cli + the supervisor's {lim['pss_mb']:.1f} MB PSS at N = {lim['at']}) "
        f"= {lim['by_ram']} nights ({lim['by_ram_rss']} counting the supervisor's whole RSS, "
        f"{lim['rss_mb']:.1f} MB). CPU: {results['cores']} cores / (the supervisor's {lim['supervisor_cpu_percent']:.2f} % "
        f"with its agent working + codex's own ~{CODEX_CPU_PERCENT:g} % while a model streams) = "
        f"{lim['by_cpu']} nights. The scripted agent's own RSS here "
        f"(~{agent_rss:.0f} MB, Python) is not codex's and is "
        "not counted; commands the agent runs (builds, test suites) come on top of both.",
    ]


def head_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES), help="fleet sizes, e.g. 1,5,10,20")
    parser.add_argument("--windows", type=int, default=3, help="measurement windows per fleet")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="seconds per window")
    parser.add_argument("--quick", action="store_true", help="sizes 1,3, one 5 s window (a smoke test)")
    parser.add_argument("--json", default=None, help="write the raw figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    windows, seconds = args.windows, args.seconds
    if args.quick:
        sizes, windows, seconds = [1, 3], 1, 5.0

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    before = head_commit()
    try:
        results = measure(sizes, windows, seconds)
    except KeyboardInterrupt:
        kill_all([])
        return 130
    after = head_commit()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    tree = (f"commit {before}" + (f" (HEAD moved to {after} during the run)" if after != before else "")
            + (" with uncommitted changes" if dirty.stdout.strip() else ""))
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, Linux "
             f"{platform.release().split('-')[0]}, Python {platform.python_version()}; {tree}; "
             f"whole run {time.monotonic() - STARTED:.0f} s.", *notes(results),
             f"Processes left with the benchmark's marker or a fleet's tag at the end: {len(results['left'])}."]
    print(table(results) + "\n\n" + "\n".join(f"- {line}" for line in lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if results["left"] else 0


if __name__ == "__main__":
    sys.exit(main())

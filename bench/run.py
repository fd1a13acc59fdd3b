"""Benchmarks: overnight-agent against supervisord, circus and a stdlib reference, in one run.

    make bench                      # or: .venv/bin/python bench/run.py [--quick] [--only idle,hang]

Builds `bench/.venv` from nothing (supervisor and circus at the versions pinned in
`bench/requirements.txt`), then measures, for each supervisor, with the tiny agent in
`bench/agent.py` (or `bench/crash.sh`):

1. idle CPU and RSS of the supervisor while its child sleeps;
2. last heartbeat -> hung child dead, limit 5 s (child asleep, child SIGSTOPped);
3. crash -> restart latency with no backoff;
4. processes left after SIGTERM to the supervisor (plain child, setsid grandchild, child
   ignoring SIGTERM);
5. log capture of 200 MB against the child writing the file itself, byte-exact or not.

Prints a Markdown table (medians; ratios against the baseline measured in the same run) and
writes it to `bench/results.md` (raw samples: `bench/results.json`). Every process it starts
carries OA_BENCH_MARK=<token> in its environment; all are killed at the end, and the run ends by
proving none is left. Network: only a UDP port on 127.0.0.1 (circus's watchdog plugin).
"""
import argparse
import ctypes
import hashlib
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
REQUIREMENTS = BENCH / "requirements.txt"
PY = sys.executable
AGENT = BENCH / "agent.py"
MARK_VAR = "OA_BENCH_MARK"
TOKEN = f"oa-bench-{os.getpid()}-{time.time_ns() % 10**9}"
sys.path.insert(0, str(BENCH))
import agent as agent_mod  # noqa: E402  (the stream the flood agent writes, for its sha256)

LIMIT = 5.0            # hang limit, seconds
GRACE = 1.0            # every stop grace (SIGINT, SIGTERM; circus/supervisord: before SIGKILL)
BEAT_SECONDS = 5.0     # the hang agent beats this long (0.1 s apart), then hangs: long enough
                       # for every supervisor to be watching (circus's plugin starts ~3 s late)
CRASH_RESTARTS = {"supervisord": 20, "circus": 10}   # about a second each; 40 for the others
LONG_NIGHT = 200       # restarts in one night, to see whether a restart gets slower as they add up
CRASH_LIFE = 0.05      # how long the crash agent lives: a CLI that dies at start-up lives longer
FLOOD_BYTES = 200 * 1000 * 1000
ALL_TOOLS = ("overnight-agent", "supervisord", "circus", "reference")
TOOLS = ALL_TOOLS
BUDGET = 9.5 * 60      # the whole run; what does not fit is reported as skipped
STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --- processes: everything we start carries the mark; everything marked is killed --------------

def marked_pids(mark: str = TOKEN + ":") -> List[int]:
    """Live (non-zombie) processes whose OA_BENCH_MARK starts with `mark` (the run's token and
    a colon: everything this run started; a handle's full mark: what one supervisor started)."""
    needle = f"\0{MARK_VAR}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                data = b"\0" + handle.read()
            if needle in data and pid_alive(int(name)):
                found.append(int(name))
        except OSError:
            continue
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def kill_marked(mark: str = TOKEN + ":", timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = marked_pids(mark)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def bench_env(mark: str, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "OVERNIGHT_AGENT_"))}
    env[MARK_VAR] = mark
    env.update(extra)
    return env


def wait_until(predicate: Callable, timeout: float, interval: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


class Inotify:
    """When a file last changed size, precisely: an inotify watch on its folder (no polling)."""

    IN_MODIFY, IN_CREATE = 0x2, 0x100

    def __init__(self, folder: Path):
        self.fd = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(folder).encode(),
                                                   self.IN_MODIFY | self.IN_CREATE) >= 0:
                self.fd = fd
        except (OSError, AttributeError):
            self.fd = None

    def wait(self, timeout: float) -> None:
        if self.fd is None:
            time.sleep(min(timeout, 0.001))
            return
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


# --- the supervisors under test ------------------------------------------------------------------

class Spec:
    """What to supervise and how: the child's argv and the features the measurement needs."""

    def __init__(self, argv: List[str], *, capture: bool = False, hang_limit: Optional[float] = None,
                 restart: bool = False, udp_port: int = 0, redact: bool = False):
        self.argv, self.capture, self.hang_limit = argv, capture, hang_limit
        self.restart, self.udp_port, self.redact = restart, udp_port, redact


class Handle:
    """One supervisor under test; every process it starts carries `mark` (OA_BENCH_MARK)."""

    def __init__(self, tool: str, base: Path, mark: str, popen: subprocess.Popen,
                 log: Callable[[], Optional[Path]]):
        self.tool, self.base, self.mark, self.popen, self.log = tool, base, mark, popen, log

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM the supervisor (only it) and wait; SIGKILL its group if it overstays.
        True if it exited by itself."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except OSError:
                pass
            self.popen.wait(5)
            return False

    def own_pids(self) -> List[int]:
        return marked_pids(self.mark + "\0")

    def close(self) -> None:
        if self.popen.poll() is None:
            self.stop()
        kill_marked(self.mark + "\0")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redaction_switch() -> Optional[tuple]:
    """(section, key) of a boolean config switch that redacts the agent's output, if the
    supervisor has one yet: looked up in its config schema, not guessed."""
    if not (ROOT / "overnight_agent" / "redact.py").exists():
        return None
    try:
        import dataclasses
        from overnight_agent import config
    except Exception:
        return None
    for section in dataclasses.fields(config.Config):
        default = section.default
        if not dataclasses.is_dataclass(default):
            continue
        for item in dataclasses.fields(type(default)):
            if ("redact" in item.name or "redact" in section.name) and isinstance(
                    getattr(default, item.name, None), bool):
                return section.name, item.name
    return None


def config_has(section: str, key: str) -> bool:
    """Whether overnight-agent's config schema has `section.key` (the schema is still moving)."""
    try:
        from overnight_agent import config
        return hasattr(getattr(config.Config(version=2), section), key)
    except Exception:
        return False


def config_default(section: str, key: str):
    from overnight_agent import config
    return getattr(getattr(config.Config(version=2), section), key)


def launch(argv: List[str], base: Path, env: Dict[str, str]) -> subprocess.Popen:
    """Start a supervisor in its own session, its output in `base/supervisor.out`."""
    with open(base / "supervisor.out", "wb") as out:
        return subprocess.Popen(argv, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_ours(base: Path, mark: str, spec: Spec) -> Handle:
    import yaml
    repo = base / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q",
        "--allow-empty", "-m", "initial")
    cfg = {
        "version": 2,
        "agent": "command",
        "command": {"argv": spec.argv},
        "repo": {"run_root": str(base / "run"), "session_worktree_root": str(base / "wt" / "session"),
                 "ops_journal_worktree": str(base / "wt" / "ops")},
        "codex": {"env_passthrough": [MARK_VAR]},
        "stop": {"sigint_grace": f"{GRACE:g}s", "sigterm_grace": f"{GRACE:g}s"},
        "restart": {"max_per_hour": 1000000},
    }
    if spec.restart:
        cfg["restart"].update({"backoff_initial": 0, "backoff_max": 0})
    if spec.hang_limit:
        cfg["liveness"] = {"model_silent": f"{spec.hang_limit:g}s", "command_silent": f"{spec.hang_limit:g}s"}
    switch = redaction_switch()
    if switch:  # explicit either way: the default may change
        cfg.setdefault(switch[0], {})[switch[1]] = bool(spec.redact)
    if spec.capture and config_has("retention", "max_log_bytes"):
        cfg["retention"] = {"max_log_bytes": "100GB"}  # the default night cap (200MB) would cut the flood
    (base / "overnight.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    popen = launch([PY, "-m", "overnight_agent", "run", "--repo", str(repo), "--config",
                    str(base / "overnight.yaml"), "--hours", "1"], base, bench_env(mark))

    def log_path():
        found = sorted((base / "run" / "runs").glob("*/command_start.log"))
        return found[0] if found else None
    return Handle("overnight-agent", base, mark, popen, log_path)


def start_supervisord(base: Path, mark: str, spec: Spec) -> Handle:
    conf = f"""[supervisord]
nodaemon=true
logfile={base}/supervisord.log
pidfile={base}/supervisord.pid
childlogdir={base}
loglevel=info

[program:agent]
command={shlex.join(spec.argv)}
environment=OVERNIGHT_AGENT_HEARTBEAT="{base}/heartbeat"
autostart=true
autorestart={"true" if spec.restart else "false"}
startsecs=0
startretries=1000000
stopsignal=TERM
stopwaitsecs={GRACE:g}
stopasgroup=true
killasgroup=true
stdout_logfile={base}/agent.log
stdout_logfile_maxbytes=0
stdout_logfile_backups=0
stderr_logfile={base}/agent.err
stderr_logfile_maxbytes=0
"""
    (base / "supervisord.conf").write_text(conf)
    popen = launch([str(VENV / "bin" / "supervisord"), "-n", "-c", str(base / "supervisord.conf")],
                   base, bench_env(mark))
    return Handle("supervisord", base, mark, popen, lambda: base / "agent.log")


def start_circus(base: Path, mark: str, spec: Spec) -> Handle:
    lines = [
        "[circus]",
        f"endpoint = ipc://{base}/ctl.sock",
        f"pubsub_endpoint = ipc://{base}/pub.sock",
        "statsd = false",
        "check_delay = 1",      # the Arbiter's own default; the ini default (5) restarts in 5 s
        "loglevel = info",
        f"logoutput = {base}/circusd.log",
        "",
        "[watcher:agent]",
        f"cmd = {shlex.quote(spec.argv[0])}",
        f"args = {shlex.join(spec.argv[1:])}",
        "numprocesses = 1",
        "copy_env = true",
        f"respawn = {'true' if spec.restart else 'false'}",
        "max_retry = -1",
        "check_flapping = false",
        f"graceful_timeout = {GRACE:g}",
        "stop_children = true",
        "stdout_stream.class = FileStream",
        f"stdout_stream.filename = {base}/agent.log",
        "stderr_stream.class = FileStream",
        f"stderr_stream.filename = {base}/agent.err",
        "",
        "[env:agent]",
        f"OVERNIGHT_AGENT_HEARTBEAT = {base}/heartbeat",
    ]
    if spec.hang_limit:
        # Its most precise setting: look every 0.1 s, kill after limit/0.1 looks without a beat.
        lines += ["", "[plugin:watchdog]", "use = circus.plugins.watchdog.WatchDog", "loop_rate = 0.1",
                  f"max_count = {int(round(spec.hang_limit / 0.1))}", "watchers_regex = ^agent$",
                  "ip = 127.0.0.1", f"port = {spec.udp_port}"]
    (base / "circus.ini").write_text("\n".join(lines) + "\n")
    popen = launch([str(VENV / "bin" / "circusd"), str(base / "circus.ini")], base, bench_env(mark))
    return Handle("circus", base, mark, popen, lambda: base / "agent.log")


def start_reference(base: Path, mark: str, spec: Spec) -> Handle:
    argv = [PY, str(BENCH / "reference.py"), "--grace", f"{GRACE:g}"]
    if spec.capture:
        argv += ["--log", str(base / "agent.log")] + (["--pipe"] if spec.redact else [])
    if spec.hang_limit:
        argv += ["--limit", f"{spec.hang_limit:g}"]
    if spec.restart:
        argv.append("--restart")
    popen = launch([*argv, "--", *spec.argv], base,
                   bench_env(mark, OVERNIGHT_AGENT_HEARTBEAT=str(base / "heartbeat")))
    return Handle("reference", base, mark, popen, lambda: base / "agent.log")


STARTERS = {"overnight-agent": start_ours, "supervisord": start_supervisord, "circus": start_circus,
            "reference": start_reference}


class Bench:
    def __init__(self, work: Path, quick: bool):
        self.work = work
        self.quick = quick
        self.counter = 0
        self.expected_sha = ""

    def start(self, tool: str, label: str, spec: Spec) -> Handle:
        self.counter += 1
        base = self.work / f"{self.counter:03d}-{label}-{tool}"
        base.mkdir(parents=True)
        return STARTERS[tool](base, f"{TOKEN}:{base.name}", spec)

    def scratch(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"{self.counter:03d}-{name}"

    def runs(self, n: int) -> int:
        return 1 if self.quick else n

    # 1. idle -------------------------------------------------------------------------------

    def idle(self, windows: int = 5, seconds: float = 10.0) -> dict:
        """All at once, each with a sleeping child: CPU (ns, every thread, from
        /proc/PID/task/*/schedstat) and RSS of the supervisor process over `seconds` windows."""
        import psutil
        windows = 2 if self.quick else windows
        handles = {tool: self.start(tool, "idle", Spec([PY, str(AGENT), "sleep"])) for tool in TOOLS}
        try:
            def children_up():
                return all(psutil.Process(h.popen.pid).children(recursive=True) for h in handles.values())
            wait_until(children_up, 30, 0.1)
            time.sleep(3.0)  # past start-up: overnight-agent's first samples, circus's warm-up
            samples = {tool: {"cpu_percent": [], "rss_mb": []} for tool in TOOLS}
            before = {tool: cpu_ns(h.popen.pid) for tool, h in handles.items()}
            for _ in range(windows):
                t0 = time.monotonic()
                time.sleep(seconds)
                elapsed = time.monotonic() - t0
                for tool, h in handles.items():
                    now_ns = cpu_ns(h.popen.pid)
                    samples[tool]["cpu_percent"].append((now_ns - before[tool]) / 1e9 / elapsed * 100)
                    samples[tool]["rss_mb"].append(psutil.Process(h.popen.pid).memory_info().rss / 1e6)
                    before[tool] = now_ns
        finally:
            for h in handles.values():
                h.close()
        return samples

    # 2. hang -------------------------------------------------------------------------------

    def hang(self, how: str) -> dict:
        """Runs of all supervisors side by side (each is asleep for 10 of its 12 seconds):
        last heartbeat -> the hung child dead, seen through a pidfd."""
        result = {tool: {"latency_s": [], "never": 0, "reasons": []} for tool in TOOLS}
        for run in range(self.runs(5)):
            tools = [t for t in TOOLS if t != "supervisord" or run == 0]  # it never notices: once
            started = {}
            try:
                for tool in tools:
                    port = free_udp_port() if tool == "circus" else 0
                    out = self.scratch(f"hang-{tool}.txt")
                    spec = Spec([PY, str(AGENT), "hang", f"udp:{port}" if port else "file", how,
                                 f"{BEAT_SECONDS:g}", "0.1", str(out)], hang_limit=LIMIT, udp_port=port)
                    started[tool] = (self.start(tool, f"hang-{how}", spec), out)
                watched = {}
                for tool, (handle, out) in started.items():
                    line = wait_until(lambda: out.exists() and out.read_text().strip(), 60)
                    if not line:
                        raise RuntimeError(f"{tool}: the hang agent never reported its last beat")
                    pid, last = int(line.split()[0]), float(line.split()[1])
                    watched[tool] = (pid, last)
                deaths = wait_deaths({tool: pid for tool, (pid, _) in watched.items()},
                                     max(last for _, last in watched.values()) + 2 * LIMIT)
                for tool, (pid, last) in watched.items():
                    if deaths.get(tool) is None:
                        result[tool]["never"] += 1
                    else:
                        result[tool]["latency_s"].append(deaths[tool] - last)
                    if tool == "overnight-agent":
                        result[tool]["reasons"].append(stall_reason(started[tool][0].base))
            finally:
                for handle, _ in started.values():
                    handle.close()
        return result

    # 3. crash -> restart ---------------------------------------------------------------------

    def crash(self, tool: str, restarts: int, life: float = CRASH_LIFE) -> dict:
        """The child records its start, lives `life` seconds, records its exit and exits 1;
        latency = next start - previous exit."""
        times = self.scratch(f"crash-{tool}.txt")
        spec = Spec(["/bin/bash", str(BENCH / "crash.sh"), str(times), f"{life:g}"], restart=True)
        handle = self.start(tool, "crash", spec)
        try:
            def enough():  # or the supervisor is gone
                return (handle.popen.poll() is not None
                        or times.exists() and times.read_text().count("S ") > restarts)
            wait_until(enough, 20 + restarts * 2.5, 0.05)
        finally:
            handle.close()
        starts, exits = [], []
        for line in times.read_text().splitlines() if times.exists() else []:
            kind, _, value = line.partition(" ")
            (starts if kind == "S" else exits).append(float(value.replace(",", ".")))
        gaps = [s - e for e, s in zip(exits, starts[1:])][:restarts]
        return {"latency_ms": [g * 1000 for g in gaps]}

    # 4. survivors ----------------------------------------------------------------------------

    def survivors(self, kind: str) -> dict:
        """All supervisors side by side, each with its own mark: SIGTERM each (only it), wait
        for it to exit, wait a second more, count what is left of what its agent started."""
        result = {tool: [] for tool in TOOLS}
        for _ in range(self.runs(3)):
            started = {}
            try:
                for tool in TOOLS:
                    pids_file = self.scratch(f"pids-{tool}.txt")
                    spec = Spec([PY, str(AGENT), "survive", kind, str(pids_file)])
                    started[tool] = (self.start(tool, f"survive-{kind}", spec), pids_file)
                pids = {}
                for tool, (handle, pids_file) in started.items():
                    line = wait_until(lambda: pids_file.exists() and pids_file.read_text().strip(), 60)
                    if not line:
                        raise RuntimeError(f"{tool}: the agent never started")
                    pids[tool] = [int(p) for p in line.split()]
                time.sleep(0.5)
                for handle, _ in started.values():
                    handle.popen.send_signal(signal.SIGTERM)
                exited = {tool: handle.stop(timeout=20) for tool, (handle, _) in started.items()}
                time.sleep(1.0)  # alive a second after its supervisor exited: it survived the stop
                for tool, (handle, _) in started.items():
                    alive = {p for p in pids[tool] if pid_alive(p)} | set(handle.own_pids())
                    result[tool].append({"survivors": len(alive), "of": len(pids[tool]),
                                         "supervisor_exited": exited[tool]})
            finally:
                for handle, _ in started.values():
                    handle.close()
        return result

    # 5. log capture --------------------------------------------------------------------------

    def flood(self, tools: List[str], runs: int, redact: bool = False) -> dict:
        """Rounds of: the child writing the file itself (the baseline), then each supervisor
        capturing the same stream, so that the baseline and the supervisors see the same load."""
        result = {"baseline": {"runs": []}, **{tool: {"runs": []} for tool in tools}}
        for round_ in range(self.runs(runs)):
            if over_budget():
                break
            settle()
            result["baseline"]["runs"].append(self._flood_baseline())
            for tool in tools:
                if tool == "circus" and round_ >= 3:
                    continue  # slow: three runs are enough
                settle()
                stamp, go = self.scratch(f"flood-{tool}.txt"), self.scratch(f"flood-{tool}.go")
                spec = Spec([PY, str(AGENT), "flood", str(FLOOD_BYTES), "-", str(stamp), str(go)],
                            capture=True, redact=redact)
                handle = self.start(tool, "flood-redact" if redact else "flood", spec)
                try:
                    result[tool]["runs"].append(self._measure_capture(handle, stamp, go))
                finally:
                    handle.close()
                    log_path = handle.log()
                    if log_path and log_path.exists():
                        log_path.unlink()
        return result

    def _flood_baseline(self) -> dict:
        """The child writing the file itself, timed the way a capture is (from its first write
        until an observer sees the file hold all its bytes), so the two compare like for like."""
        base = self.scratch("flood-baseline")
        base.mkdir(parents=True)
        stamp, path, go = base / "times.txt", base / "agent.log", base / "go"
        child = subprocess.Popen([PY, str(AGENT), "flood", str(FLOOD_BYTES), str(path), str(stamp), str(go)],
                                 env=bench_env(f"{TOKEN}:{base.name}"))
        watcher = Inotify(base)
        go.touch()  # the child writes once the observer watches
        try:
            complete, end = self._observe(path, FLOOD_BYTES, stamp, watcher)
            code = child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        t0, t1 = map(float, stamp.read_text().split())
        exact = complete and code == 0 and file_sha256(path) == self.expected_sha
        path.unlink()
        return {"seconds": end - t0, "child_write_seconds": t1 - t0, "exact": exact}

    def _observe(self, path: Path, want: int, stamp: Path, watcher: "Inotify") -> tuple:
        """(complete, when): time.time() at which `path` first held `want` bytes, seen through
        inotify on its folder, or (False, when its size last changed) if it stopped growing short
        of that after the child was done."""
        last_size, last_change = -1, time.time()
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    size = 0  # the child has not opened it yet
                now = time.time()
                if size != last_size:
                    last_size, last_change = size, now
                if size >= want:
                    return True, now
                if stamp.exists() and stamp.read_text().strip() and now - last_change > 2.0:
                    break  # the child is done and the file stopped growing short of its bytes
                watcher.wait(0.25)
        finally:
            watcher.close()
        return False, last_change

    def _measure_capture(self, handle: Handle, stamp: Path, go: Path) -> dict:
        """Seconds from the child's first write until the log holds all its bytes (or, if it
        never does, until its size last changed), and whether those bytes are the child's."""
        path = wait_until(lambda: handle.log() if handle.log() and handle.log().exists() else None, 60)
        if path is None:
            raise RuntimeError(f"{handle.tool}: no log file appeared")
        header = b""
        if handle.tool == "overnight-agent":  # one `=== ... ===` line before the child's bytes
            header = wait_until(lambda: first_line(path), 30) or b""
        watcher = Inotify(path.parent)
        go.touch()  # the child writes once the observer watches
        complete, end = self._observe(path, len(header) + FLOOD_BYTES, stamp, watcher)
        times = wait_until(lambda: stamp.exists() and stamp.read_text().split(), 30)
        if not times:
            return {"seconds": float("nan"), "complete": False, "exact": False,
                    "error": "the child never finished writing"}
        t0, t1 = map(float, times)
        time.sleep(0.2)  # let a trailer line land
        data = path.read_bytes()
        body = data[len(header):len(header) + FLOOD_BYTES]
        tail = data[len(header) + FLOOD_BYTES:]
        exact = (complete and hashlib.sha256(body).hexdigest() == self.expected_sha
                 and (tail == b"" or tail.startswith(b"=== attempt")))
        return {"seconds": end - t0, "child_write_seconds": t1 - t0, "complete": complete,
                "exact": exact, "log_bytes": len(data) - len(header)}


def settle(limit: float = 10.0) -> None:
    """Before a 50 ms measurement: write back the last run's 200 MB, then wait (up to `limit`)
    until the machine is quiet, 0.2 s with the CPUs 97% idle. The kernel flushing pages or
    tidying memory after a slow run made the next one 3-5 times slower at random."""
    os.sync()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        before = cpu_times()
        time.sleep(0.2)
        after = cpu_times()
        total = after[0] - before[0]
        if total > 0 and (after[1] - before[1]) / total >= 0.97:
            return


def cpu_times() -> tuple:
    """(all, idle) jiffies of the machine, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def over_budget() -> bool:
    return time.monotonic() - STARTED > BUDGET


def first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return head[:head.index(b"\n") + 1] if b"\n" in head else b""


def wait_deaths(pids: Dict[str, int], until: float) -> Dict[str, Optional[float]]:
    """time.time() at which each process died (its pidfd became readable), None if alive at
    `until` (a time.time())."""
    deaths: Dict[str, Optional[float]] = {tool: None for tool in pids}
    fds = {}
    for tool, pid in pids.items():
        try:
            fds[os.pidfd_open(pid)] = tool
        except (AttributeError, OSError):
            if not pid_alive(pid):
                deaths[tool] = time.time()
    polled = {tool: pid for tool, pid in pids.items() if tool not in fds.values() and deaths[tool] is None}
    try:
        while (fds or polled) and time.time() < until:
            timeout = min(until - time.time(), 0.001 if polled else 1.0)
            ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
            now = time.time()
            for fd in ready:
                deaths[fds.pop(fd)] = now
                os.close(fd)
            for tool, pid in list(polled.items()):   # no pidfd: /proc every millisecond
                if not pid_alive(pid):
                    deaths[tool] = now
                    del polled[tool]
    finally:
        for fd in fds:
            os.close(fd)
    return deaths


def stall_reason(base: Path) -> Optional[str]:
    for path in (base / "run" / "runs").glob("*/supervisor.log"):
        for line in path.read_text().splitlines():
            if '"attempt.stalled"' in line:
                return json.loads(line).get("reason")
    return None


def cpu_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- the benchmark's own virtualenv ----------------------------------------------------------------

def ensure_venv() -> Dict[str, str]:
    """bench/.venv with the pinned supervisor and circus, built from nothing when missing or
    when the pins changed; returns the installed versions."""
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == want and (VENV / "bin" / "circusd").exists()):
        log("building bench/.venv (supervisor, circus) from bench/requirements.txt")
        shutil.rmtree(VENV, ignore_errors=True)
        base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
        subprocess.run([base_python, "-m", "venv", str(VENV)], check=True, timeout=300)
        pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            sys.stderr.write(pip.stdout + pip.stderr)
            raise SystemExit("bench: pip install -r bench/requirements.txt failed")
        stamp.write_text(want)
    out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) "
                          "for n in ('supervisor', 'circus', 'pyzmq', 'tornado', 'psutil')}))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"commit {head}" + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def ours_version() -> str:
    try:
        from overnight_agent import __version__
        return __version__
    except Exception:
        return "?"


# --- the table -------------------------------------------------------------------------------------

def med(values):
    return statistics.median(values) if values else None


def fmt(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def build_table(results: dict, versions: dict, redaction: Optional[tuple]) -> str:
    names = {"overnight-agent": f"overnight-agent {ours_version()}",
             "supervisord": f"supervisord {versions['supervisor']}",
             "circus": f"circus {versions['circus']}", "reference": "stdlib reference"}
    cols = [names[t] for t in TOOLS]
    rows = []

    def row(label, target, cells):
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    idle = results.get("idle")
    if idle:
        row("idle CPU, % of one core (median of 10 s windows)", "",
            [fmt(med(idle[t]["cpu_percent"]), ".3f", " %") for t in TOOLS])
        row("idle RSS of the supervisor, MB", "",
            [fmt(med(idle[t]["rss_mb"]), ".1f", " MB") for t in TOOLS])
    for how, label in (("sleep", "hang -> dead, child silent (limit 5 s)"),
                       ("sigstop", "hang -> dead, child SIGSTOPped (limit 5 s)")):
        data = results.get(f"hang_{how}")
        if not data:
            continue
        cells = []
        for tool in TOOLS:
            r = data.get(tool)
            if r is None:
                cells.append("skipped")
            elif r["latency_s"] and not r["never"]:
                m = med(r["latency_s"])
                cells.append(f"{m:.3f} s ({m / LIMIT:.3f}x limit)")
            elif r["latency_s"]:
                cells.append(f"{med(r['latency_s']):.3f} s; {r['never']} never")
            else:
                cells.append(f"never (not dead {2 * LIMIT:g} s after the last beat)")
        row(label, "within 1 % of 5 s", cells)
    def crash_cell(lat):
        if not lat:
            return "no restart seen"
        slow = sum(1 for v in lat if v >= 1000)
        return (f"{med(lat):.1f} / {percentile(lat, 0.9):.1f} ms (n={len(lat)}, max {max(lat):.0f}"
                + (f", {slow} took >= 1 s" if slow else "") + ")")

    crash = results.get("crash")
    if crash:
        row(f"crash -> restart, backoff 0, child lives {CRASH_LIFE * 1000:g} ms: median / p90", "p90 < 10 ms",
            [crash_cell(crash[t]["latency_ms"]) if t in crash else "skipped" for t in TOOLS])
    instant = results.get("crash_instant")
    if instant:
        row("the same, child exits at once (~1 ms)", "",
            [crash_cell(instant[t]["latency_ms"]) if t in instant else "not measured" for t in TOOLS])
    long = results.get("crash_long")
    if long:
        last = 40
        row(f"the same (child lives {CRASH_LIFE * 1000:g} ms), restarts {LONG_NIGHT - last + 1}-{LONG_NIGHT} "
            "of one night", "p90 < 10 ms",
            [crash_cell(long[t]["latency_ms"][-last:]) if t in long else "not measured" for t in TOOLS])
    surv = results.get("survivors")
    if surv:
        cells = []
        for tool in TOOLS:
            parts = []
            for kind in ("plain", "setsid", "ignore_term"):
                runs = surv.get(tool, {}).get(kind, {}).get("runs", [])
                parts.append(str(max(r["survivors"] for r in runs)) if runs else "?")
            cells.append("/".join(parts))
        row("processes left after SIGTERM: plain / setsid grandchild / ignores SIGTERM (worst run)",
            "0/0/0", cells)
    flood = results.get("flood")
    if flood:
        def base_of(key):
            return med([r["seconds"] for r in flood.get(key, {}).get("runs", [])])
        base_s = base_of("baseline")

        def cell(r, base):
            if not r or not r["runs"]:
                return "skipped (time)"
            s = med([x["seconds"] for x in r["runs"]])
            exact = all(x["exact"] for x in r["runs"])
            complete = all(x["complete"] for x in r["runs"])
            note = "byte-exact" if exact else ("NOT byte-exact" if complete else "bytes lost")
            return f"{base / s:.2f}x ({FLOOD_BYTES / 1e6 / s:.0f} MB/s, {note})"
        off = f" ({redaction[0]}.{redaction[1]}: false)" if redaction else ""
        row(f"log capture, {FLOOD_BYTES // 10**6} MB{off}: throughput vs the child writing the file itself "
            f"({FLOOD_BYTES / 1e6 / base_s:.0f} MB/s here)", ">= 0.95x, byte-exact",
            [cell(flood.get(t), base_s) for t in TOOLS])
        red = flood.get("overnight-agent+redact")
        red_cell = (cell(red, base_of("baseline_redact")) if isinstance(red, dict)
                    else "pending: no config switch redacts the agent's output yet")
        default_on = redaction and config_default(*redaction)
        piped = flood.get("reference+pipe")
        pipe_cell = cell(piped, base_of("baseline_redact")) + " through a 1 MiB pipe, spliced" if piped else "not measured"
        row(f"the same, read on its way: with redaction on{' (the default)' if default_on else ''}; "
            "the reference through a pipe, the least a reader pays", "reported",
            [red_cell if t == "overnight-agent" else pipe_cell if t == "reference" else "no such feature"
             for t in TOOLS])
    head = "| measure | target | " + " | ".join(cols) + " |"
    sep = "|" + "---|" * (len(cols) + 2)
    return "\n".join([head, sep, *rows])


def main() -> int:
    global TOOLS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of each (a smoke test)")
    parser.add_argument("--only", default="idle,hang,crash,survivors,flood",
                        help="comma-separated subset of idle,hang,crash,survivors,flood")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS),
                        help="comma-separated subset of " + ",".join(ALL_TOOLS))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument("--out", default=str(BENCH / "results.md"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    TOOLS = tuple(t for t in ALL_TOOLS if t in args.tools.split(","))

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    versions = ensure_venv()
    # In memory where there is a tmpfs: a filesystem's block allocation and write-back after a
    # 200 MB log made the next 50 ms capture several times slower at random, and disks differ.
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="oa-bench-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    bench = Bench(work, args.quick)
    results: dict = {}
    redaction = redaction_switch()
    skipped: List[str] = []
    try:
        if "idle" in only:
            log("idle: all four supervisors at once, child asleep")
            results["idle"] = bench.idle()
        if "hang" in only:
            for how in ("sleep", "sigstop"):
                if over_budget():
                    skipped.append(f"hang ({how})")
                    continue
                log(f"hang ({how}): {', '.join(TOOLS)} side by side")
                results[f"hang_{how}"] = bench.hang(how)
        if "crash" in only:
            results["crash"] = {}
            for tool in TOOLS:
                if over_budget():
                    skipped.append(f"crash {tool}")
                    continue
                restarts = 5 if args.quick else CRASH_RESTARTS.get(tool, 40)
                log(f"crash -> restart: {tool}, {restarts} restarts")
                results["crash"][tool] = bench.crash(tool, restarts)
            results["crash_instant"], results["crash_long"] = {}, {}
            for tool in ("overnight-agent", "reference"):
                if tool in TOOLS and not over_budget():
                    log(f"crash -> restart: {tool}, a child that exits at once")
                    results["crash_instant"][tool] = bench.crash(tool, 5 if args.quick else 40, life=0)
                    log(f"crash -> restart: {tool}, {LONG_NIGHT} restarts in one night")
                    results["crash_long"][tool] = bench.crash(tool, LONG_NIGHT)
        if "survivors" in only:
            results["survivors"] = {}
            for kind in ("plain", "setsid", "ignore_term"):
                if over_budget():
                    skipped.append(f"survivors ({kind})")
                    continue
                log(f"survivors ({kind}): {', '.join(TOOLS)} side by side")
                for tool, runs in bench.survivors(kind).items():
                    results["survivors"].setdefault(tool, {})[kind] = {"runs": runs}
        if "flood" in only:
            log(f"log capture: computing the sha256 of the {FLOOD_BYTES // 10**6} MB stream")
            bench.expected_sha = agent_mod.flood_sha256(FLOOD_BYTES)
            log(f"log capture: the child writing the file itself, then {', '.join(TOOLS)}, in rounds")
            results["flood"] = bench.flood(list(TOOLS), runs=5)
            if redaction is not None and "overnight-agent" in TOOLS and not over_budget():
                log(f"log capture with redaction ({redaction[0]}.{redaction[1]}: true): overnight-agent; "
                    "the reference through a pipe")
                piped = [t for t in ("overnight-agent", "reference") if t in TOOLS]
                red = bench.flood(piped, runs=3, redact=True)
                results["flood"]["overnight-agent+redact"] = red["overnight-agent"]
                results["flood"]["reference+pipe"] = red.get("reference")
                results["flood"]["baseline_redact"] = red["baseline"]
            else:
                results["flood"]["overnight-agent+redact"] = "pending"
            results["redactor_alone"] = redactor_alone()
    finally:
        kill_marked()
        left = marked_pids()
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    table = build_table(results, versions, redaction)
    elapsed = time.monotonic() - STARTED
    notes = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
        f"Linux {platform.release().split('-')[0]}, "
        f"Python {platform.python_version()}; overnight-agent {ours_version()} ({git_describe()}), supervisor "
        f"{versions['supervisor']}, circus {versions['circus']} (pyzmq {versions['pyzmq']}, tornado "
        f"{versions['tornado']}); {'--quick, one run each' if args.quick else 'medians of the runs noted'}; "
        f"whole run {elapsed:.0f} s.",
    ]
    try:
        notes.append("overnight-agent's defaults at this commit: liveness.sample_interval "
                     f"{config_default('liveness', 'sample_interval')}"
                     + (f", {redaction[0]}.{redaction[1]} {str(config_default(*redaction)).lower()}"
                        if redaction else "") + ".")
    except Exception:
        pass
    alone = results.get("redactor_alone")
    if alone:
        notes.append("`redact.StreamRedactor` alone, in-process, 1 MiB chunks (`bench/redaction_speed.py`): "
                     + ", ".join(f"{name} {r['mb_per_s']:.0f} MB/s" for name, r in alone.items())
                     + " (test-runner: lines holding `token`, `key`, `PASSED`, URLs but no secret; sparse: a "
                     "secret every 10,000 lines)"
                     + ("" if alone["flood"]["unchanged"] and alone["test-runner"]["unchanged"]
                        else "; a stream with no secret came out CHANGED") + ".")
    if skipped:
        notes.append("Skipped for time: " + ", ".join(skipped) + ".")
    notes.append(f"Processes left with the benchmark's marker at the end: {len(left)}.")
    text = table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    if not args.quick or args.out != str(BENCH / "results.md"):
        Path(args.out).write_text(text)
        (BENCH / "results.json").write_text(json.dumps(
            {"versions": versions, "results": results, "left": left}, indent=1, default=str) + "\n")
    return 1 if left else 0


def redactor_alone() -> Optional[dict]:
    """How fast the redaction layer is by itself (in-process: no supervisor, no pipe), on the
    streams of `redaction_speed.py`."""
    try:
        import redaction_speed
    except Exception:
        return None
    return {name: redaction_speed.measure(data) for name, data in redaction_speed.streams(16 << 20).items()}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_marked()
        sys.exit(130)

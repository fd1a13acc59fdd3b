"""Benchmarks: overnight-agent against supervisord, circus and a stdlib reference, in one run.

    make bench                      # or: .venv/bin/python bench/run.py [--quick] [--only idle,hang,codex]

Builds `bench/.venv` from nothing (supervisor and circus at the versions pinned in
`bench/requirements.txt`), then measures, for each supervisor, with the tiny agent in
`bench/agent.py` (or `bench/crash.sh`):

1. idle CPU and RSS of the supervisor while its child sleeps;
2. last heartbeat -> hung child dead, limit 5 s (child asleep, child SIGSTOPped);
3. crash -> restart latency with no backoff;
4. processes left after one SIGTERM to the supervisor (plain child, setsid grandchild, child
   ignoring SIGTERM);
5. log capture of 200 MB against the child writing the file itself, byte-exact or not;

and, in a second table, overnight-agent's codex backend at its defaults with the project's
scripted Codex CLI (`overnight_agent.fakecodex`, stamping its events through `bench/agent.py
codex`), against the same fake run directly in the same run:

6. codex exits mid-turn (1, or 0 without finishing) -> the resumed codex's `thread.started`;
7. codex stalls -> stopped (liveness.model_silent 5 s) -> the resumed codex's `thread.started`;
8. wall time per turn of ten one-turn codex processes in a row.

Every row names its setup: the agent's argv and every setting that is not the tool's default.
Prints the tables (medians; ratios or differences against a baseline measured in the same run).
A full run from a clean tree (`git status --porcelain` empty, bench/.venv and the bench's own
untracked files aside) writes them to `bench/results.md` (raw samples: `bench/results.json`),
naming the commit; otherwise it says where they would have gone and why not. `--out PATH` writes
them elsewhere from any tree, saying whether it was dirty. Every process it starts carries
OA_BENCH_MARK=<token> in its environment; all are killed at the end, and the run ends by proving
none is left. Network: only a UDP port on 127.0.0.1 (circus's watchdog plugin).
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
from typing import Callable, Dict, List, NamedTuple, Optional

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
SURVIVOR_WAIT = 20.0   # how long a supervisor has to exit after its one SIGTERM
CODEX_RUNS = 5         # nights per codex row (one each with --quick)
CODEX_TURNS = 10       # turns per night in the per-turn overhead row
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
        self.terminated = False   # SIGTERM sent: never a second one (it may cut a graceful stop short)

    def terminate(self) -> None:
        """One SIGTERM to the supervisor (only it), once."""
        if not self.terminated and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM the supervisor (unless it already had its SIGTERM) and wait; SIGKILL its
        group only if it is still there after `timeout`. True if it exited by itself."""
        self.terminate()
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


def make_repo(repo: Path) -> Path:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q",
        "--allow-empty", "-m", "initial")
    return repo


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
    """The default as the schema writes it (`"2s"`, before its converter)."""
    from overnight_agent import config
    return getattr(getattr(config.Config(version=2), section), key)


def config_seconds(section: str, key: str) -> float:
    from overnight_agent import timeparse
    value = config_default(section, key)
    return timeparse.parse_duration(value) if isinstance(value, str) else float(value)


def launch(argv: List[str], base: Path, env: Dict[str, str]) -> subprocess.Popen:
    """Start a supervisor in its own session, its output in `base/supervisor.out`."""
    with open(base / "supervisor.out", "wb") as out:
        return subprocess.Popen(argv, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


# What each supervisor is told, apart from paths: the starters write exactly this, and the
# table's setup notes print it (`settings_of`), so a figure always says what it measured.

def ours_config(spec: Spec) -> dict:
    """overnight-agent's config for `spec`, without the paths (`repo`)."""
    cfg = {
        "version": 2,
        "agent": "command",
        "command": {"argv": spec.argv},
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
    return cfg


def supervisord_program(spec: Spec) -> Dict[str, str]:
    return {"autostart": "true", "autorestart": "true" if spec.restart else "false", "startsecs": "0",
            "startretries": "1000000", "stopsignal": "TERM", "stopwaitsecs": f"{GRACE:g}",
            "stopasgroup": "true", "killasgroup": "true", "stdout_logfile_maxbytes": "0",
            "stdout_logfile_backups": "0", "stderr_logfile_maxbytes": "0"}


def circus_sections(spec: Spec) -> Dict[str, Dict[str, str]]:
    sections = {
        "circus": {"statsd": "false",
                   "check_delay": "1",      # the Arbiter's own default; the ini default (5) restarts in 5 s
                   "loglevel": "info"},
        "watcher:agent": {"numprocesses": "1", "copy_env": "true",
                          "respawn": "true" if spec.restart else "false", "max_retry": "-1",
                          "check_flapping": "false", "graceful_timeout": f"{GRACE:g}",
                          "stop_children": "true", "stdout_stream.class": "FileStream",
                          "stderr_stream.class": "FileStream"},
    }
    if spec.hang_limit:
        # Its most precise setting: look every 0.1 s, kill after limit/0.1 looks without a beat.
        sections["plugin:watchdog"] = {"use": "circus.plugins.watchdog.WatchDog", "loop_rate": "0.1",
                                       "max_count": str(int(round(spec.hang_limit / 0.1))),
                                       "watchers_regex": "^agent$", "ip": "127.0.0.1"}
    return sections


def reference_options(spec: Spec) -> List[List[str]]:
    options = [["--grace", f"{GRACE:g}"]]
    if spec.capture:
        options += [["--log", "FILE"]] + ([["--pipe"]] if spec.redact else [])
    if spec.hang_limit:
        options.append(["--limit", f"{spec.hang_limit:g}"])
    if spec.restart:
        options.append(["--restart"])
    return options


def flat_settings(cfg: dict, prefix: str = "") -> List[str]:
    """`section.key: value` for every leaf of a config mapping."""
    items = []
    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            items += flat_settings(value, name)
        else:
            shown = str(value).lower() if isinstance(value, bool) else json.dumps(value) if isinstance(value, list) else value
            items.append(f"{name}: {shown}")
    return items


def settings_of(tool: str, spec: Spec) -> List[str]:
    """What `tool` is set to for `spec`, paths and the bench's process marker left out."""
    if tool == "overnight-agent":
        cfg = {k: v for k, v in ours_config(spec).items() if k not in ("version", "command", "codex")}
        return flat_settings(cfg)
    if tool == "supervisord":
        return [f"{k}={v}" for k, v in supervisord_program(spec).items()]
    if tool == "circus":
        return [f"{'' if section == 'watcher:agent' else section + '.'}{k} = {v}"
                for section, items in circus_sections(spec).items() for k, v in items.items()]
    return [" ".join(option) for option in reference_options(spec)]


def start_ours(base: Path, mark: str, spec: Spec) -> Handle:
    import yaml
    repo = make_repo(base / "repo")
    cfg = ours_config(spec)
    cfg["repo"] = {"run_root": str(base / "run"), "session_worktree_root": str(base / "wt" / "session"),
                   "ops_journal_worktree": str(base / "wt" / "ops")}
    (base / "overnight.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    popen = launch([PY, "-m", "overnight_agent", "run", "--repo", str(repo), "--config",
                    str(base / "overnight.yaml"), "--hours", "1"], base, bench_env(mark))

    def log_path():
        found = sorted((base / "run" / "runs").glob("*/command_start.log"))
        return found[0] if found else None
    return Handle("overnight-agent", base, mark, popen, log_path)


def start_supervisord(base: Path, mark: str, spec: Spec) -> Handle:
    program = "\n".join(f"{k}={v}" for k, v in supervisord_program(spec).items())
    conf = f"""[supervisord]
nodaemon=true
logfile={base}/supervisord.log
pidfile={base}/supervisord.pid
childlogdir={base}
loglevel=info

[program:agent]
command={shlex.join(spec.argv)}
environment=OVERNIGHT_AGENT_HEARTBEAT="{base}/heartbeat"
stdout_logfile={base}/agent.log
stderr_logfile={base}/agent.err
{program}
"""
    (base / "supervisord.conf").write_text(conf)
    popen = launch([str(VENV / "bin" / "supervisord"), "-n", "-c", str(base / "supervisord.conf")],
                   base, bench_env(mark))
    return Handle("supervisord", base, mark, popen, lambda: base / "agent.log")


def start_circus(base: Path, mark: str, spec: Spec) -> Handle:
    sections = circus_sections(spec)
    sections["circus"] = {"endpoint": f"ipc://{base}/ctl.sock", "pubsub_endpoint": f"ipc://{base}/pub.sock",
                          **sections["circus"], "logoutput": f"{base}/circusd.log"}
    sections["watcher:agent"] = {"cmd": shlex.quote(spec.argv[0]), "args": shlex.join(spec.argv[1:]),
                                 **sections["watcher:agent"],
                                 "stdout_stream.filename": f"{base}/agent.log",
                                 "stderr_stream.filename": f"{base}/agent.err"}
    sections["env:agent"] = {"OVERNIGHT_AGENT_HEARTBEAT": f"{base}/heartbeat"}
    if "plugin:watchdog" in sections:
        sections["plugin:watchdog"]["port"] = str(spec.udp_port)
    lines = []
    for name, items in sections.items():
        lines += [f"[{name}]", *(f"{k} = {v}" for k, v in items.items()), ""]
    (base / "circus.ini").write_text("\n".join(lines))
    popen = launch([str(VENV / "bin" / "circusd"), str(base / "circus.ini")], base, bench_env(mark))
    return Handle("circus", base, mark, popen, lambda: base / "agent.log")


def start_reference(base: Path, mark: str, spec: Spec) -> Handle:
    flags = [str(base / "agent.log") if flag == "FILE" else flag
             for option in reference_options(spec) for flag in option]
    popen = launch([PY, str(BENCH / "reference.py"), *flags, "--", *spec.argv], base,
                   bench_env(mark, OVERNIGHT_AGENT_HEARTBEAT=str(base / "heartbeat")))
    return Handle("reference", base, mark, popen, lambda: base / "agent.log")


STARTERS = {"overnight-agent": start_ours, "supervisord": start_supervisord, "circus": start_circus,
            "reference": start_reference}


def shown_argv(argv: List[str], work: Path) -> str:
    """An agent's argv as a reader wants it: no interpreter path, no scratch paths."""
    out = []
    for arg in argv:
        if arg == PY:
            out.append("python")
        elif arg.startswith(str(BENCH) + os.sep):
            out.append("bench/" + arg[len(str(BENCH)) + 1:])
        elif arg.startswith(str(work)):
            out.append("FILE")
        elif arg.startswith("udp:"):
            out.append("udp:PORT")
        else:
            out.append(arg)
    return " ".join(out)


class Bench:
    def __init__(self, work: Path, quick: bool):
        self.work = work
        self.quick = quick
        self.counter = 0
        self.expected_sha = ""
        # label -> tool -> {"agent": argv as shown, "settings": [...]}: what each row ran
        self.setups: Dict[str, Dict[str, dict]] = {}

    def start(self, tool: str, label: str, spec: Spec) -> Handle:
        self.counter += 1
        base = self.work / f"{self.counter:03d}-{label}-{tool}"
        base.mkdir(parents=True)
        self.setups.setdefault(label, {})[tool] = {"agent": shown_argv(spec.argv, self.work),
                                                   "settings": settings_of(tool, spec)}
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
        handle = self.start(tool, "crash" if life == CRASH_LIFE else "crash-instant", spec)
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
        """All supervisors side by side, each with its own mark: one SIGTERM each (only it, and
        only one: a second may cut a graceful stop short), wait up to SURVIVOR_WAIT for it to
        exit (then, and only then, SIGKILL its group and record that it did not exit by itself),
        wait a second more, count what is left of what its agent started."""
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
                    handle.terminate()
                # stop() sends no second SIGTERM: each had its one above
                exited = {tool: handle.stop(timeout=SURVIVOR_WAIT) for tool, (handle, _) in started.items()}
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


    # 6. overnight-agent's codex backend at its defaults, with the scripted Codex CLI --------------

    def codex_night(self, label: str, invocations: List[List[dict]], overrides: Dict[str, str]) -> "CodexNight":
        """A night of overnight-agent with `agent: codex` (its default) and every setting at its
        default but `overrides` (dotted keys): its codex is the project's scripted stand-in,
        playing `invocations` (one list of steps per process), stamping what it does."""
        import yaml
        self.counter += 1
        base = self.work / f"{self.counter:03d}-{label}-overnight-agent"
        base.mkdir(parents=True)
        mark = f"{TOKEN}:{base.name}"
        repo = make_repo(base / "repo")
        stamps = base / "stamps.txt"
        wrapper = codex_wrapper(base / "bin" / "codex", mark, stamps)
        home = base / "run" / "codex_home"   # where overnight-agent puts CODEX_HOME by default
        write_scenario(home, invocations)
        cfg: dict = {"version": 2,
                     "repo": {"run_root": str(base / "run"), "session_worktree_root": str(base / "wt" / "session"),
                              "ops_journal_worktree": str(base / "wt" / "ops")},
                     "codex": {"codex_bin": str(wrapper)}}
        for dotted, value in overrides.items():
            section, key = dotted.split(".", 1)
            cfg.setdefault(section, {})[key] = value
        (base / "overnight.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        popen = launch([PY, "-m", "overnight_agent", "run", "--repo", str(repo), "--config",
                        str(base / "overnight.yaml"), "--hours", "1"], base, bench_env(mark))
        self.setups.setdefault(label, {})["overnight-agent"] = {
            "agent": scenario_shown(invocations), "codex": True,
            "settings": [f"{key}: {value} (default {config_default(*key.split('.', 1))})"
                         for key, value in overrides.items()]}
        return CodexNight(Handle("overnight-agent", base, mark, popen, lambda: None), repo, home, stamps)

    def codex_exit(self, code: int) -> dict:
        """Each run a night of its own (so the backoff is the first one, `restart.backoff_initial`):
        the first codex prints its thread, sleeps 0.5 s and exits `code` mid-turn (no `turn.*`
        event); from its exit (a pidfd) until the resumed codex has written `thread.started` of
        the same thread on its stdout (its own stamp). Baseline, in the same run: the same fake
        resuming that thread run directly, from spawn to `thread.started`."""
        label = f"codex-exit{code}"
        backoff = config_seconds("restart", "backoff_initial")
        result: dict = {"backoff_s": backoff, "exit_to_resumed_s": [], "direct_start_s": [], "outcomes": [],
                        "failed": []}
        for _ in range(self.runs(CODEX_RUNS)):
            if over_budget():
                break
            night = self.codex_night(label, [[{"message": "working"}, {"sleep": 0.5}, {"crash": code}],
                                             [{"hang": True}], [{"message": "done"}]], {})
            try:
                sample = self._exit_sample(night, backoff)
            finally:
                night.close()
            if isinstance(sample, str):
                result["failed"].append(sample)
                continue
            result["exit_to_resumed_s"].append(sample[0])
            result["outcomes"].append(night.first_outcome())
            result["direct_start_s"].append(self.codex_direct_start(night, sample[1]))  # None: failed
        return result

    def _exit_sample(self, night: "CodexNight", backoff: float):
        first = wait_until(lambda: find_stamp(night.stamps(), "turn.started"), 60)
        if not first:
            return "the first codex never started its turn"
        thread = find_stamp(night.stamps(), "thread.started", pid=first.pid)
        fd = pidfd_if_alive(first.pid)
        if fd is None:
            return "the first codex exited before the bench watched it"
        exited = wait_fd(fd, 30)
        if exited is None:
            return "the first codex did not exit"
        resumed = wait_until(lambda: find_stamp(night.stamps(), "thread.started", other_than=first.pid),
                             backoff + 30)
        if not resumed:
            return "no codex resumed the thread"
        if resumed.arg != thread.arg:
            return f"the next codex started thread {resumed.arg}, not {thread.arg}"
        return resumed.time - exited, thread.arg

    def codex_stall(self) -> dict:
        """The first codex sleeps 2 s (past its start-up's CPU), prints a message, then sleeps
        forever printing nothing: no event, no CPU, no rollout write. Times from its last event:
        the SIGINT reaching it (its stamp), its death (a pidfd), and the resumed codex's
        `thread.started`. liveness.model_silent is LIMIT: at the default (15m) a run would take a
        quarter of an hour."""
        label = "codex-stall"
        overrides = {"liveness.model_silent": f"{LIMIT:g}s"}
        result: dict = {"limit_s": LIMIT, "sigint_s": [], "dead_s": [], "resumed_after_dead_s": [],
                        "direct_start_s": [], "signals": [], "outcomes": [], "failed": []}
        for _ in range(self.runs(CODEX_RUNS)):
            if over_budget():
                break
            night = self.codex_night(label, [[{"sleep": 2}, {"message": "thinking"}, {"hang": True}],
                                             [{"hang": True}], [{"message": "done"}]], overrides)
            try:
                first = wait_until(lambda: find_stamp(night.stamps(), "start"), 60)
                fd = pidfd_if_alive(first.pid) if first else None
                dead = wait_fd(fd, 2 + 3 * LIMIT + 30) if fd is not None else None
                resumed = wait_until(lambda: find_stamp(night.stamps(), "thread.started", other_than=first.pid),
                                     30) if dead else None
            finally:
                night.close()
            if not (first and dead and resumed):
                result["failed"].append("no first codex" if not first else "the stalled codex never died"
                                        if not dead else "no codex resumed the thread")
                continue
            mine = [s for s in night.stamps() if s.pid == first.pid]
            thread = find_stamp(mine, "thread.started")
            sig = find_stamp(mine, "signal")
            events = [s for s in mine if s.what not in ("start", "signal") and (sig is None or s.time <= sig.time)]
            if sig is None or resumed.arg != thread.arg or events[-1].what != "item.completed":
                result["failed"].append(f"unexpected stamps: {[(s.what, s.arg) for s in mine]}, resumed {resumed}")
                continue
            last = events[-1].time
            result["sigint_s"].append(sig.time - last)
            result["dead_s"].append(dead - last)
            result["resumed_after_dead_s"].append(resumed.time - dead)
            result["signals"].append(int(sig.arg))
            result["outcomes"].append(night.first_outcome())
            result["direct_start_s"].append(self.codex_direct_start(night, thread.arg))  # None: failed
        return result

    def codex_turns(self, turns: int = CODEX_TURNS) -> dict:
        """`turns` one-turn codex processes in a row (a fresh `exec`, then `exec resume`), under
        overnight-agent and run directly by the bench (its stdout and stderr read through pipes,
        as a minimal parent does), in the same run, in turn first (so that a drift of the machine
        favours neither): wall time from the first process's start to the start of process
        turns+1, per turn. restart.backoff_initial is 0: at the default (2 s, doubled after each
        quick turn) ten turns would wait 13 minutes."""
        label = "codex-turns"
        result: dict = {"turns": turns, "supervised_ms": [], "direct_ms": [], "failed": []}
        for run in range(self.runs(CODEX_RUNS)):
            if over_budget():
                break
            direct = self._direct_turns(turns) if run % 2 else None
            night = self.codex_night(label, [[{"message": "turn done"}]], {"restart.backoff_initial": "0s"})
            try:
                wait_until(lambda: len(find_stamps(night.stamps(), "start")) > turns, 60 + 5 * turns, 0.05)
            finally:
                night.close()
            if not run % 2:
                direct = self._direct_turns(turns)
            stamps = night.stamps()
            starts = find_stamps(stamps, "start")
            threads = {s.arg for s in find_stamps(stamps, "thread.started")}
            done = {s.pid for s in find_stamps(stamps, "turn.completed")}
            if len(starts) <= turns or len(threads) != 1 or not all(s.pid in done for s in starts[:turns]):
                result["failed"].append(f"{len(starts)} codex processes, {len(threads)} threads, "
                                        f"{len(done)} turns completed")
                continue
            result["supervised_ms"].append((starts[turns].time - starts[0].time) / turns * 1000)
            result["direct_ms"].append(direct)  # None: failed
        return result

    def _direct_turns(self, turns: int) -> Optional[float]:
        """The same turns, the fake run directly: milliseconds per turn, None if one failed."""
        folder = self.scratch("codex-turns-direct")
        folder.mkdir(parents=True)
        repo = make_repo(folder / "repo")
        home = folder / "codex_home"
        write_scenario(home, [[{"message": "turn done"}]])
        stamps = folder / "stamps.txt"
        backend = codex_backend(codex_wrapper(folder / "bin" / "codex", f"{TOKEN}:{folder.name}", stamps),
                                home, repo)
        env = backend.environment(dict(os.environ))
        _, first = run_direct(backend.start_argv(shipped_prompt("boot")), repo, env)
        thread = thread_of(first.stdout)
        if thread is None or first.returncode != 0:
            return None
        for _ in range(turns):
            if run_direct(backend.resume_argv(thread, shipped_prompt("resume")), repo, env)[1].returncode != 0:
                return None
        starts = find_stamps(read_stamps(stamps), "start")
        return (starts[turns].time - starts[0].time) / turns * 1000 if len(starts) > turns else None

    def codex_direct_start(self, night: "CodexNight", thread: str) -> Optional[float]:
        """The fake resuming `thread`, run directly: seconds from spawn to its `thread.started`."""
        stamps = night.base / "stamps-direct.txt"
        backend = codex_backend(codex_wrapper(night.base / "bin" / "codex-direct", night.mark, stamps),
                                night.home, night.repo)
        spawned, done = run_direct(backend.resume_argv(thread, shipped_prompt("resume")), night.repo,
                                   backend.environment(dict(os.environ)))
        started = find_stamp(read_stamps(stamps), "thread.started")
        return started.time - spawned if started and started.arg == thread and done.returncode == 0 else None


class Stamp(NamedTuple):
    pid: int
    time: float
    what: str     # start | <event type> | signal
    arg: str      # exec | resume; the thread id; the signal number


class CodexNight:
    def __init__(self, handle: Handle, repo: Path, home: Path, stamps: Path):
        self.handle, self.repo, self.home, self.path = handle, repo, home, stamps
        self.base, self.mark = handle.base, handle.mark

    def stamps(self) -> List[Stamp]:
        return read_stamps(self.path)

    def close(self) -> None:
        self.handle.close()

    def first_outcome(self) -> str:
        """How overnight-agent typed the first attempt (from its session.json, after the night)."""
        try:
            attempt = json.loads((self.base / "run" / "session.json").read_text())["attempts"][0]
            return f"{attempt.get('outcome')} (exit {attempt.get('exit_code')})"
        except (OSError, ValueError, KeyError, IndexError):
            return "?"


def codex_wrapper(path: Path, mark: str, stamps: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexport {MARK_VAR}={shlex.quote(mark)} OA_BENCH_CODEX_STAMPS={shlex.quote(str(stamps))}\n"
                    f"exec {shlex.quote(PY)} {shlex.quote(str(AGENT))} codex \"$@\"\n")
    path.chmod(0o755)
    return path


def write_scenario(home: Path, invocations: List[List[dict]]) -> None:
    import yaml
    home.mkdir(parents=True, exist_ok=True)
    (home / "fake_codex_scenario.yaml").write_text(
        yaml.safe_dump({"invocations": [{"steps": steps} for steps in invocations]}, sort_keys=False))


def codex_backend(wrapper: Path, home: Path, repo: Path):
    """overnight-agent's own codex backend at its defaults: the argv and environment it gives codex."""
    from overnight_agent.agents.codex import CodexBackend
    sandbox = config_default("codex", "sandbox") or ("workspace-write" if config_default("codex", "full_auto")
                                                    else "read-only")
    return CodexBackend(codex_bin=str(wrapper), codex_home=home, model=config_default("codex", "model"),
                        effort=config_default("codex", "model_reasoning_effort"), sandbox=sandbox,
                        writable_roots=[repo])


def shipped_prompt(kind: str) -> str:
    from overnight_agent import prompt
    return prompt.shipped(kind)


def run_direct(argv: List[str], cwd: Path, env: Dict[str, str]):
    """(time.time() just before the spawn, the finished process)."""
    spawned = time.time()
    return spawned, subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=60)


def thread_of(stdout: bytes) -> Optional[str]:
    for line in stdout.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "thread.started":
            return event.get("thread_id")
    return None


def read_stamps(path: Path) -> List[Stamp]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    stamps = []
    for line in text.split("\n")[:-1]:   # whole lines only
        parts = line.split(" ", 3)
        if len(parts) >= 3:
            stamps.append(Stamp(int(parts[0]), float(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
    return stamps


def find_stamps(stamps: List[Stamp], what: str, pid: Optional[int] = None,
                other_than: Optional[int] = None) -> List[Stamp]:
    return [s for s in stamps if s.what == what and (pid is None or s.pid == pid)
            and (other_than is None or s.pid != other_than)]


def find_stamp(stamps: List[Stamp], what: str, pid: Optional[int] = None,
               other_than: Optional[int] = None) -> Optional[Stamp]:
    found = find_stamps(stamps, what, pid, other_than)
    return found[0] if found else None


def pidfd_if_alive(pid: int) -> Optional[int]:
    """A pidfd of `pid` if it is alive now (not a zombie: its exit would be long past)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    if not pid_alive(pid):
        os.close(fd)
        return None
    return fd


def wait_fd(fd: int, timeout: float) -> Optional[float]:
    """time.time() at which the pidfd became readable (its process exited); None on timeout."""
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return time.time() if ready else None
    finally:
        os.close(fd)


def scenario_shown(invocations: List[List[dict]]) -> str:
    """The fake's script in a line: `process 1: message, sleep 0.5, crash 1; ...`."""
    def step(item: dict) -> str:
        (kind, value), = item.items()
        return kind if kind in ("message", "reasoning") or value is True else f"{kind} {value}"
    parts = [f"process {n}: " + ", ".join(step(item) for item in steps) for n, steps in enumerate(invocations, 1)]
    if len(parts) > 1:
        parts[-1] = "later ones: " + parts[-1].split(": ", 1)[1]
    else:
        parts[0] = "every process: " + parts[0].split(": ", 1)[1]
    return "; ".join(parts)


def codex_common_note() -> str:
    """What every row of the codex table ran, and the baseline."""
    defaults = []
    for dotted in ("restart.backoff_initial", "restart.backoff_factor", "restart.max_per_hour",
                   "stop.sigint_grace", "stop.sigterm_grace", "liveness.model_silent",
                   "liveness.command_silent", "liveness.sample_interval", "logs.redact_agent_output"):
        try:
            defaults.append(f"{dotted} {shown_value(config_default(*dotted.split('.', 1)))}")
        except Exception:
            continue
    try:
        from overnight_agent.agents.codex import CodexBackend
        shown = CodexBackend(codex_bin="codex", codex_home=Path("CODEX_HOME"), model=config_default("codex", "model"),
                             effort=config_default("codex", "model_reasoning_effort"), sandbox="workspace-write",
                             writable_roots=[Path("REPO")])
        argv = (f"`{shlex.join(shown.start_argv('PROMPT'))}`, then `{shlex.join(shown.resume_argv('ID', 'PROMPT'))}`")
    except Exception:
        argv = "overnight-agent's own argv"
    return ("The codex table: the agent is the scripted Codex CLI (`overnight_agent.fakecodex`, codex-cli "
            "0.169.0's `exec --json`), run in-process by `python bench/agent.py codex`, which stamps when it "
            "starts, each event it writes to stdout and each signal it gets, behind a `#!/bin/sh` wrapper that "
            "execs it (as the tests' and the demo's); each run is a night of its own. overnight-agent runs "
            "`agent: codex` (its default) with `codex.codex_bin` the wrapper and every other setting at its "
            "default unless the row's setup says otherwise: " + ", ".join(defaults) + f"; codex's stdout reaches "
            f"it through a pipe of {pipe_size()}. The baseline runs the same wrapper with overnight-agent's own "
            f"argv ({argv}) and environment (its allowlist, CODEX_HOME), in a git repository, its stdout and "
            "stderr read through pipes by the bench.")


def shown_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def tree_state() -> Optional[dict]:
    """{"head": short commit, "dirty": [porcelain lines]} of the checkout, None outside git.
    Ignored: bench/.venv and the untracked files the bench itself makes under bench/ (its raw
    samples, Python's caches); bench/results.md modified counts: commit it first."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or status.returncode != 0:
        return None
    dirty = []
    for line in status.stdout.splitlines():
        path = line[3:]
        if path.startswith("bench/.venv/"):
            continue
        if line.startswith("?? ") and (path == "bench/results.json" or "/__pycache__/" in f"/{path}"
                                       and path.startswith("bench/")):
            continue
        dirty.append(line)
    return {"head": head.stdout.strip(), "dirty": dirty}


def describe_tree(before: Optional[dict], after: Optional[dict]) -> str:
    """The commit the run measured, and whether the tree was clean the whole run."""
    if before is None or after is None:
        return "not a git checkout"
    text = f"commit {before['head']}"
    if after["head"] != before["head"]:
        text += f", HEAD moved to {after['head']} during the run"
    dirty = list(dict.fromkeys(line[3:] for line in before["dirty"] + after["dirty"]))
    if dirty:
        shown = ", ".join(dirty[:6]) + (f" and {len(dirty) - 6} more" if len(dirty) > 6 else "")
        text += f"; the tree was dirty ({len(dirty)} paths not as committed: {shown})"
    return text


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


TOOL_NAMES = {"overnight-agent": "overnight-agent", "supervisord": "supervisord", "circus": "circus",
              "reference": "stdlib reference"}


def common_setup() -> Dict[str, List[str]]:
    """What every supervisor is set to in every row of the first table (a sleeping child)."""
    return {tool: settings_of(tool, Spec(["agent"])) for tool in ALL_TOOLS}


def derived_notes(tool: str, settings: List[str]) -> List[str]:
    """What a setting implies that a reader would not guess (overnight-agent's sampling, pipes)."""
    notes = []
    if tool == "overnight-agent":
        silent = [s for s in settings if s.startswith(("liveness.model_silent:", "liveness.command_silent:"))]
        if silent:
            try:
                from overnight_agent import timeparse
                limits = [timeparse.parse_duration(s.split(": ", 1)[1].split(" (")[0]) for s in silent]
                every = max(0.1, min(config_seconds("liveness", "sample_interval"), *(x / 5 for x in limits)))
                notes.append(f"so it samples every {every:g} s (at least five samples per limit)")
            except Exception:
                pass
        switch = redaction_switch()
        if switch and f"{switch[0]}.{switch[1]}: true" in settings:
            notes.append(f"the agent's stdout through a pipe of {pipe_size()} that it reads and redacts")
        elif switch and f"{switch[0]}.{switch[1]}: false" in settings and any(s.startswith("retention.") for s in settings):
            notes.append("the command writes the run log itself (no pipe)")
    if tool == "reference" and "--pipe" in settings:
        notes.append("its child's stdout a 1 MiB pipe, moved to the log with splice")
    return notes


def pipe_size() -> str:
    try:
        import inspect
        from overnight_agent import procs
        size = inspect.signature(procs.widen_pipe).parameters["size"].default
        return f"{size / (1 << 20):g} MiB" if size % (1 << 20) == 0 else f"{size} bytes"
    except Exception:
        return "the size the kernel gives"


class Setups:
    """Numbered setup notes, in the order the table's rows use them: each row says what it ran."""

    def __init__(self, setups: Dict[str, Dict[str, dict]], common: Dict[str, List[str]]):
        self.setups, self.common = setups, common
        self.used: List[tuple] = []

    def ref(self, title: str, *labels: str) -> str:
        labels = tuple(label for label in labels if label in self.setups)
        if not labels:
            return ""
        for number, (_, used) in enumerate(self.used, 1):
            if used == labels:
                return f" (setup {number})"
        self.used.append((title, labels))
        return f" (setup {len(self.used)})"

    def notes(self) -> List[str]:
        lines = []
        for number, (title, labels) in enumerate(self.used, 1):
            runs = [self.setups[label] for label in labels]
            codex = any(run[t].get("codex") for run in runs for t in run)
            parts = [f"the fake's script: {runs[0]['overnight-agent']['agent']}" if codex
                     else "agent " + " | ".join(agent_shown(run) for run in runs)]
            for tool in in_order(runs[0]):
                settings = runs[0][tool]["settings"]
                shown = settings if codex else [s for s in settings if s not in self.common.get(tool, [])]
                shown = shown + derived_notes(tool, settings)
                if shown:
                    parts.append(f"{TOOL_NAMES[tool]}: " + ", ".join(shown))
            if len(parts) == 1:
                parts.append("every setting as in the codex table's common note" if codex
                             else "each supervisor as in the common settings")
            lines.append(f"Setup {number} ({title}): " + "; ".join(parts) + ".")
        return lines

    def uses_codex(self) -> bool:
        return any(run[t].get("codex") for _, labels in self.used for label in labels
                   for run in [self.setups[label]] for t in run)

    def uses_common(self) -> bool:
        return any(not run[t].get("codex") for _, labels in self.used for label in labels
                   for run in [self.setups[label]] for t in run)

    def common_note(self) -> str:
        parts = [f"{TOOL_NAMES[tool]}: " + ", ".join(self.common[tool]) for tool in TOOLS if tool in self.common]
        return ("Common settings of the first table's rows (a setup adds to them; anything not named is "
                "the tool's own default; paths and the bench's process marker left out): " + "; ".join(parts) + ".")


def in_order(tools: dict) -> List[str]:
    return [t for t in ALL_TOOLS if t in tools]


def agent_shown(run: Dict[str, dict]) -> str:
    """The agent's argv in one row: the one most tools ran, and any other with who ran it."""
    shown = {tool: run[tool]["agent"] for tool in in_order(run)}
    main = max(set(shown.values()), key=list(shown.values()).count)
    others = [f"{TOOL_NAMES[tool]}: `{argv}`" for tool, argv in shown.items() if argv != main]
    return f"`{main}`" + (f" ({', '.join(others)})" if others else "")


def build_table(results: dict, versions: dict, redaction: Optional[tuple]) -> tuple:
    """(the tables, the setup notes they reference)."""
    names = {"overnight-agent": f"overnight-agent {ours_version()}",
             "supervisord": f"supervisord {versions['supervisor']}",
             "circus": f"circus {versions['circus']}", "reference": "stdlib reference"}
    cols = [names[t] for t in TOOLS]
    rows = []
    setups = Setups(results.get("setups", {}), results.get("common_setup", {}))

    def row(label, target, cells):
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    idle = results.get("idle")
    if idle:
        ref = setups.ref("idle", "idle")
        row(f"idle CPU, % of one core (median of 10 s windows){ref}", "",
            [fmt(med(idle[t]["cpu_percent"]), ".3f", " %") for t in TOOLS])
        row(f"idle RSS of the supervisor, MB{ref}", "",
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
        row(label + setups.ref(f"hang, child {'silent' if how == 'sleep' else 'SIGSTOPped'}", f"hang-{how}"),
            "within 1 % of 5 s", cells)

    def crash_cell(lat):
        if not lat:
            return "no restart seen"
        slow = sum(1 for v in lat if v >= 1000)
        return (f"{med(lat):.1f} / {percentile(lat, 0.9):.1f} ms (n={len(lat)}, max {max(lat):.0f}"
                + (f", {slow} took >= 1 s" if slow else "") + ")")

    crash = results.get("crash")
    if crash:
        row(f"crash -> restart, backoff 0, child lives {CRASH_LIFE * 1000:g} ms: median / p90"
            + setups.ref("crash -> restart", "crash"), "p90 < 10 ms",
            [crash_cell(crash[t]["latency_ms"]) if t in crash else "skipped" for t in TOOLS])
    instant = results.get("crash_instant")
    if instant:
        row("the same, child exits at once (~1 ms)" + setups.ref("crash -> restart, at once", "crash-instant"), "",
            [crash_cell(instant[t]["latency_ms"]) if t in instant else "not measured" for t in TOOLS])
    long = results.get("crash_long")
    if long:
        last = 40
        row(f"the same (child lives {CRASH_LIFE * 1000:g} ms), restarts {LONG_NIGHT - last + 1}-{LONG_NIGHT} "
            "of one night" + setups.ref("crash -> restart", "crash"), "p90 < 10 ms",
            [crash_cell(long[t]["latency_ms"][-last:]) if t in long else "not measured" for t in TOOLS])
    surv = results.get("survivors")
    if surv:
        cells, killed_any = [], False
        for tool in TOOLS:
            parts = []
            for kind in ("plain", "setsid", "ignore_term"):
                runs = surv.get(tool, {}).get(kind, {}).get("runs", [])
                killed = sum(1 for r in runs if not r.get("supervisor_exited", True))
                killed_any = killed_any or bool(killed)
                parts.append((str(max(r["survivors"] for r in runs)) if runs else "?") + ("*" * bool(killed)))
            cells.append("/".join(parts))
        row("processes left after one SIGTERM to the supervisor: plain / setsid grandchild / ignores SIGTERM "
            f"(worst run){' (*: the supervisor did not exit by itself within ' + f'{SURVIVOR_WAIT:g}' + ' s and its group was SIGKILLed)' if killed_any else ''}"
            + setups.ref("processes left after SIGTERM", "survive-plain", "survive-setsid", "survive-ignore_term"),
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
            f"({FLOOD_BYTES / 1e6 / base_s:.0f} MB/s here)" + setups.ref("log capture", "flood"),
            ">= 0.95x, byte-exact", [cell(flood.get(t), base_s) for t in TOOLS])
        red = flood.get("overnight-agent+redact")
        red_cell = (cell(red, base_of("baseline_redact")) if isinstance(red, dict)
                    else "pending: no config switch redacts the agent's output yet")
        default_on = redaction and config_default(*redaction)
        piped = flood.get("reference+pipe")
        pipe_cell = cell(piped, base_of("baseline_redact")) + " through a 1 MiB pipe, spliced" if piped else "not measured"
        row(f"the same, read on its way: with redaction on{' (the default)' if default_on else ''}; "
            "the reference through a pipe, the least a reader pays"
            + setups.ref("log capture, read on its way", "flood-redact"), "reported",
            [red_cell if t == "overnight-agent" else pipe_cell if t == "reference" else "no such feature"
             for t in TOOLS])
    tables = []
    if rows:
        head = "| measure | target | " + " | ".join(cols) + " |"
        sep = "|" + "---|" * (len(cols) + 2)
        tables.append("\n".join([head, sep, *rows]))
    codex = codex_table(results, setups)
    if codex:
        tables.append(codex)
    return "\n\n".join(tables), setups


def spread(values: List[float]) -> str:
    return f"runs {min(values):.0f}-{max(values):.0f}" if len(values) > 1 else "one run"


def ms(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def codex_table(results: dict, setups: Setups) -> str:
    """overnight-agent's codex backend against the same fake run directly, in the same run. Its
    part is the median of the runs' own differences (each run's baseline is measured right
    after it, or just before: a drift of the machine cancels out)."""
    rows = []

    def row(label, target, cells):
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    def failed(r) -> str:
        return f"; {len(r['failed'])} runs failed" if r.get("failed") else ""

    def paired(values, baselines, offset=0.0):
        return med([v - offset - b for v, b in zip(values, baselines) if b is not None])

    for code, what in ((1, "exits 1 mid-turn"), (0, "exits 0 without `turn.completed`")):
        r = results.get(f"codex_exit{code}")
        if not r:
            continue
        directs = [d for d in r["direct_start_s"] if d is not None]
        total, direct, backoff = med(r["exit_to_resumed_s"]), med(directs), r["backoff_s"]
        part = paired(r["exit_to_resumed_s"], r["direct_start_s"], backoff)
        outcomes = ", ".join(sorted(set(r["outcomes"]))) or "n/a"
        row(f"codex {what} -> the resumed codex's `thread.started`"
            + setups.ref(f"codex exits {code}", f"codex-exit{code}"), "reported",
            [f"{total:.3f} s = backoff {backoff:g} s + {ms(total - backoff)} (n={len(r['exit_to_resumed_s'])}; "
             f"typed {outcomes}{failed(r)})" if total is not None else "n/a" + failed(r),
             f"{ms(direct)} from spawn to `thread.started` (resuming the same thread)",
             ms(part)])
    r = results.get("codex_stall")
    if r:
        limit = r["limit_s"]
        sig, dead, after = med(r["sigint_s"]), med(r["dead_s"]), med(r["resumed_after_dead_s"])
        direct = med([d for d in r["direct_start_s"] if d is not None])
        restart = paired(r["resumed_after_dead_s"], r["direct_start_s"])
        names = ", ".join(sorted({signal.Signals(s).name for s in r["signals"]})) or "signal"
        row(f"codex stalls (no event, CPU or file write) -> stopped, limit liveness.model_silent {limit:g} s; "
            "then the resumed codex's `thread.started`" + setups.ref("codex stalls", "codex-stall"),
            f"within 1 % of {limit:g} s",
            [f"{names} {sig:.3f} s after its last event ({sig / limit:.3f}x limit), dead {dead:.3f} s; "
             f"resumed `thread.started` {ms(after)} after its death (n={len(r['sigint_s'])}{failed(r)})"
             if sig is not None else "n/a" + failed(r),
             f"{ms(direct)} from spawn to `thread.started` (resuming the same thread)",
             f"detection {ms(sig - limit)}; restart {ms(restart)}" if sig is not None else "n/a"])
    r = results.get("codex_turns")
    if r:
        directs = [d for d in r["direct_ms"] if d is not None]
        sup, direct = med(r["supervised_ms"]), med(directs)
        part = paired(r["supervised_ms"], r["direct_ms"])
        ratio = med([v / b for v, b in zip(r["supervised_ms"], r["direct_ms"]) if b])
        row(f"{r['turns']} one-turn codex processes in a row (`exec`, then `exec resume`): wall time per turn"
            + setups.ref("codex turns", "codex-turns"), "reported",
            [f"{sup:.0f} ms (n={len(r['supervised_ms'])}, {spread(r['supervised_ms'])}{failed(r)})"
             if sup is not None else "n/a" + failed(r),
             f"{direct:.0f} ms (n={len(directs)}, {spread(directs)})" if direct is not None else "n/a",
             f"{part:+.0f} ms per turn ({ratio:.2f}x)" if part is not None else "n/a"])
    if not rows:
        return ""
    head = (f"| overnight-agent {ours_version()}, codex backend (`agent: codex`), with the scripted Codex CLI "
            "| target | under overnight-agent | the same fake run directly | overnight-agent's part |")
    return "\n".join([head, "|---|---|---|---|---|", *rows])


ROWS = ("idle", "hang", "crash", "survivors", "codex", "flood")
EXTRA_ROWS = ("fleet",)   # asked for by --only alone: N nights at once (bench/fleet.py), ~5 minutes


def main() -> int:
    global TOOLS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run of each (a smoke test; writes bench/results.md never)")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS)
                        + "; or " + ",".join(EXTRA_ROWS) + ", not run by default")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS),
                        help="comma-separated subset of " + ",".join(ALL_TOOLS))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument("--out", default=None,
                        help="write the table to OUT (raw samples beside it, .json) from any tree; it says "
                             "whether the tree was dirty. Default: bench/results.md (and bench/results.json), "
                             "written only by a full run from a clean tree")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(ROWS) - set(EXTRA_ROWS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; expected a subset of "
                     f"{','.join(ROWS + EXTRA_ROWS)}")
    TOOLS = tuple(t for t in ALL_TOOLS if t in args.tools.split(","))
    default_out = BENCH / "results.md"
    out = Path(args.out).resolve() if args.out else default_out
    explicit = args.out is not None and out != default_out   # --out bench/results.md: as the default
    tree_before = tree_state()

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
        if "codex" in only and "overnight-agent" in TOOLS:
            for name, measure in (("codex_exit1", lambda: bench.codex_exit(1)),
                                  ("codex_exit0", lambda: bench.codex_exit(0)),
                                  ("codex_stall", bench.codex_stall),
                                  ("codex_turns", bench.codex_turns)):
                if over_budget():
                    skipped.append(name.replace("_", " "))
                    continue
                log(f"{name.replace('_', ' ')}: overnight-agent's codex backend at its defaults, the scripted "
                    "Codex CLI; the same fake run directly")
                results[name] = measure()
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
        if "fleet" in only:
            import fleet
            fleet.TOKEN = f"{TOKEN}:fleet"   # its processes carry the run's mark too
            log("fleet: N nights at once with the scripted Codex CLI (bench/fleet.py)")
            results["fleet"] = fleet.measure(sizes=(1, 3) if args.quick else fleet.SIZES,
                                             windows=1 if args.quick else 3,
                                             seconds=5.0 if args.quick else fleet.SECONDS, work=work / "fleet")
    finally:
        kill_marked()
        left = marked_pids()
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["setups"], results["common_setup"] = bench.setups, common_setup()
    table, setups = build_table(results, versions, redaction)
    if results.get("fleet"):
        import fleet
        table = (table + "\n\n" if table.strip() else "") + fleet.table(results["fleet"])
    elapsed = time.monotonic() - STARTED
    tree_after = tree_state()
    tree = describe_tree(tree_before, tree_after)
    clean = (tree_before is not None and tree_after is not None and tree_before["head"] == tree_after["head"]
             and not tree_before["dirty"] and not tree_after["dirty"])
    notes = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
        f"Linux {platform.release().split('-')[0]}, "
        f"Python {platform.python_version()}; overnight-agent {ours_version()} ({tree}), supervisor "
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
    if setups.uses_common():
        notes.append(setups.common_note())
    if setups.uses_codex():
        notes.append(codex_common_note())
    notes += setups.notes()
    alone = results.get("redactor_alone")
    if alone:
        notes.append("`redact.StreamRedactor` alone, in-process, 1 MiB chunks (`bench/redaction_speed.py`): "
                     + ", ".join(f"{name} {r['mb_per_s']:.0f} MB/s" for name, r in alone.items())
                     + " (test-runner: lines holding `token`, `key`, `PASSED`, URLs but no secret; sparse: a "
                     "secret every 10,000 lines)"
                     + ("" if alone["flood"]["unchanged"] and alone["test-runner"]["unchanged"]
                        else "; a stream with no secret came out CHANGED") + ".")
    if results.get("fleet"):
        notes += fleet.notes(results["fleet"])
    if skipped:
        notes.append("Skipped for time: " + ", ".join(skipped) + ".")
    notes.append(f"Processes left with the benchmark's marker at the end: {len(left)}.")
    text = table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    raw = {"versions": versions, "tree": {"before": tree_before, "after": tree_after}, "results": results,
           "left": left}
    if explicit or (clean and not args.quick):
        raw_path = out.with_suffix(".json") if out.suffix != ".json" else out.with_name(out.stem + ".raw.json")
        out.write_text(text)
        raw_path.write_text(json.dumps(raw, indent=1, default=str) + "\n")
        log(f"written: {out} and {raw_path}")
    else:
        why = ("--quick is a smoke test" if args.quick
               else "not a git checkout" if tree_before is None or tree_after is None
               else f"the tree is not clean ({tree}); commit first" if not clean else "")
        log(f"not written to {default_out.relative_to(ROOT)} (nor bench/results.json): {why}; "
            "--out PATH writes it elsewhere, saying so")
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

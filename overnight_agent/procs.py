"""Process effects: spawning the agent in its own session, finding everything it started, and
stopping all of it.

Owns: the environment tag every agent descendant inherits (`OVERNIGHT_AGENT_TAG`), process-tree
sweeps (psutil), signalling process groups. Must not: decide *when* to stop (the supervisor does,
tick by tick) or reap children it does not own.

Why a tag: codex runs each command in a session of its own, so `killpg(codex)` misses them, and
a supervisor killed with SIGKILL loses its children's pids. The tag survives setsid and
re-parenting to init; a process that wipes its whole environment escapes it (documented limit).
"""
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import psutil

TAG_VAR = "OVERNIGHT_AGENT_TAG"
_SS_PID = re.compile(r"pid=(\d+)")
_SS_LASTRCV = re.compile(r"\blastrcv:(\d+)")


@dataclass(frozen=True)
class ProcRef:
    """A process identity that survives pid reuse: pid plus its start time."""

    pid: int
    pgid: int
    create_time: float

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return proc.create_time() == self.create_time and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def spawn(argv: Sequence[str], cwd: str, env: Dict[str, str], stdout, stderr) -> subprocess.Popen:
    """Start `argv` as the leader of a new session and process group, stdin from /dev/null."""
    return subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, start_new_session=True, close_fds=True)


def widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Grow a pipe's buffer (Linux F_SETPIPE_SZ) so a chatty agent blocks less and we wake less;
    silently keeps the default where the kernel refuses."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


def ref_of(popen: subprocess.Popen) -> ProcRef:
    try:
        created = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        created = 0.0
    return ProcRef(popen.pid, popen.pid, created)


def _environ(proc: psutil.Process) -> Dict[str, str]:
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


def tagged_pids(prefix: str, var: str = TAG_VAR, settle: float = 0.1, exact: bool = False) -> List[int]:
    """Pids (not ours) whose environment has `var` (the agent tag) starting with `prefix` (equal
    to it, with `exact`).

    Reads /proc/<pid>/environ as bytes directly: about ten times cheaper than building a psutil
    object per process, which matters because it runs after every attempt. A process in the
    middle of an exec (`setsid server &` an instant old) shows an empty environment: those (not
    kernel threads, whose environment is always empty) are read again for up to `settle` s."""
    needle = f"{var}={prefix}".encode()
    me = os.getpid()
    try:
        entries = [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]
    except OSError:
        return [p.pid for p in _tagged_psutil(prefix, var, exact)]
    found, unsure = [], []
    for pid in entries:
        data = _read_environ(pid)
        if data is None:
            continue
        if not data:
            unsure.append(pid)
        elif _holds(data, needle, exact):
            found.append(pid)
    unsure = [pid for pid in unsure if not _kernel_thread(pid)]
    end = time.monotonic() + settle
    while unsure and time.monotonic() < end:
        time.sleep(0.005)
        still = []
        for pid in unsure:
            data = _read_environ(pid)
            if data == b"":
                still.append(pid)
            elif data and _holds(data, needle, exact):
                found.append(pid)
        unsure = still
    return found


def _read_environ(pid: int) -> Optional[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return None  # gone, or not ours to read


def _holds(data: bytes, needle: bytes, exact: bool = False) -> bool:
    if needle not in data:
        return False
    entries = data.split(b"\0")
    return needle in entries if exact else any(var.startswith(needle) for var in entries)


def _kernel_thread(pid: int) -> bool:
    """PF_KTHREAD in /proc/<pid>/stat's flags (the 9th field)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return bool(int(fields[6]) & 0x00200000)
    except (OSError, IndexError, ValueError):
        return True  # gone: nothing to wait for


def _tagged_psutil(prefix: str, var: str, exact: bool = False) -> List[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        value = _environ(proc).get(var)
        if proc.pid != os.getpid() and value is not None and (value == prefix if exact else value.startswith(prefix)):
            found.append(proc)
    return found


def tagged(prefix: str, var: str = TAG_VAR) -> List[psutil.Process]:
    """Live processes (not zombies, not us) whose tag (`var`) starts with `prefix`."""
    found = []
    for pid in tagged_pids(prefix, var):
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def tree(root: ProcRef, tag_prefix: Optional[str], var: str = TAG_VAR) -> List[psutil.Process]:
    """Everything that belongs to a process: the root, its group (while it is the root's: see
    `group_is_ours`), its descendants, its tag."""
    procs: Dict[int, psutil.Process] = {}
    if root.alive():
        try:
            leader = psutil.Process(root.pid)
            procs[leader.pid] = leader
            for child in leader.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            pass
    if group_is_ours(root):
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and os.getpgid(proc.pid) == root.pgid:
                    procs.setdefault(proc.pid, proc)
            except (OSError, psutil.Error):
                pass
    if tag_prefix:
        for proc in tagged(tag_prefix, var):
            procs.setdefault(proc.pid, proc)
    return [p for p in procs.values() if _is_live(p)]


def group_is_ours(root: ProcRef) -> bool:
    """Whether process group `root.pgid` is still the one `root` led.

    The kernel gives no pid that is in use as a process group id, so a group outlives its leader
    with its id reserved. Once the group is empty the id is free: with many nights on a machine
    (pid_max can be 32768) another night's codex may get it and lead a group of that id. A live
    process at the leader's pid that is not the leader (another start time) shows exactly that."""
    if root.pgid != root.pid or not root.create_time:
        return True   # not a group we made the leader of, or no start time: nothing to compare
    try:
        return psutil.Process(root.pid).create_time() == root.create_time  # ours, a zombie included
    except psutil.NoSuchProcess:
        return True   # leader gone: the group (if any) is the rest of ours, its id held by it
    except psutil.Error:
        return False


def _is_live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_all(procs: Iterable[psutil.Process], sig: int, group: Optional[int] = None) -> None:
    """Send `sig` to the group and to each process; continue stopped ones so they can die.

    The group is signalled only while one of `procs` is in it: then it is the group they were
    found in, not one another night's process leads under a reused id (see `group_is_ours`)."""
    procs = list(procs)
    if group is not None and any(_pgid(proc.pid) == group for proc in procs):
        _quietly(os.killpg, group, sig)
    for proc in procs:
        _quietly(os.kill, proc.pid, sig)
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            _quietly(os.kill, proc.pid, signal.SIGCONT)


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, PermissionError):
        pass


def stop_blocking(procs: List[psutil.Process], grace: float = 3.0,
                  signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL)) -> List[psutil.Process]:
    """Stop `procs` now, escalating through `signals` with `grace` each; return survivors.

    For start-up sweeps, where no loop is running yet; the supervisor escalates over ticks.
    Reaps nothing it does not own: non-children are only waited for by polling.
    """
    alive = [p for p in procs if _is_live(p)]
    for sig in signals:
        if not alive:
            break
        signal_all(alive, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [p for p in alive if _is_live(p)]
    return alive


def descendants(pid: int) -> List[int]:
    """All descendants of `pid`, walked through /proc/<pid>/task/<tid>/children (cheap: no scan
    of every process); psutil's full scan where that file is missing."""
    found: List[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as handle:
                    kids = [int(k) for k in handle.read().split()]
            except FileNotFoundError:
                return _descendants_psutil(pid)
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def _descendants_psutil(pid: int) -> List[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def thread_cpu_ns(pid: int) -> Dict[int, int]:
    """CPU time of each thread of `pid` in nanoseconds (/proc/<pid>/task/<tid>/schedstat).

    Per thread because a multi-threaded CLI's main thread alone shows nothing, and keyed so that
    threads that exit do not make the total go backwards. psutil's times move in 10 ms ticks,
    too coarse to see a quiet process work."""
    result: Dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                result[int(tid)] = int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return result


def cpu_delta(previous: Dict, current: Dict) -> float:
    """Seconds of CPU used between two `{key: ns}` samples (new keys count from zero)."""
    return sum(max(0, ns - previous.get(key, 0)) for key, ns in current.items()) / 1e9


_SS_TIMEOUT = 3.0


def ss_binary(path: Optional[str] = None) -> Optional[str]:
    """`ss` (iproute2) on `path` (default: ours), or in the sbin folders a service's PATH may
    lack (some distributions keep it there); None where it is missing."""
    return shutil.which("ss", path=path) or shutil.which("ss", path="/usr/sbin:/sbin")


def has_sockets(pids) -> bool:
    """Whether any of `pids` holds a socket (cheap: readlink of its fds)."""
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    return True
            except OSError:
                continue
    return False


def last_data_received(pids) -> Optional[float]:
    """Seconds since any TCP socket of `pids` last received data (`ss -tinp`: tcp_info's
    last_data_recv), or None when they hold no socket or `ss` is missing.

    How a model that streams slowly is told from one that never answers: neither prints a line
    or touches a file until the response is complete, and the CLI's own CPU is much the same."""
    wanted = {int(p) for p in pids}
    ss = ss_binary()
    if ss is None:
        return None
    try:
        out = subprocess.run([ss, "-H", "-t", "-i", "-n", "-p", "state", "established"],
                             capture_output=True, text=True, timeout=_SS_TIMEOUT,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    best: Optional[float] = None
    owner = False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            owner = any(int(pid) in wanted for pid in _SS_PID.findall(line))
            continue
        if owner:
            match = _SS_LASTRCV.search(line)
            if match:
                ago = int(match.group(1)) / 1000.0
                best = ago if best is None else min(best, ago)
    return best


class Processes:
    """The process effects the supervisor has, as one object: its seam (tests replay scripted
    histories through a fake with the same methods)."""

    spawn = staticmethod(spawn)
    tree = staticmethod(tree)
    tagged = staticmethod(tagged)
    signal_all = staticmethod(signal_all)
    stop_blocking = staticmethod(stop_blocking)

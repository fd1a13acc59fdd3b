"""What the three stand-ins (fakecodex, fakeclaude, fakegemini) do the same way.

Owns: flushed UTF-8 output that survives a closed reader (`out`, `err`), the signal gate (a
one-line handler raises `Interrupted`; SIGTERM can be ignored; `hold()` defers signals while a
command is being started and recorded), running a scenario's shell command in a session of its
own (`run_shell`) and killing its group (`kill_group`), the setsid sleeper, the scenario steps
every fake plays alike (`CommonSteps`), where a scenario file is (`scenario_path`), and the small
store helpers (0700 folders, flock, JSON read and atomic write, the invocation counter, the
timestamp, `StartupError`).
Must not: know what any one CLI prints, its exit codes or its store layout (each fake's `cli`
and `store` say those); import anything beyond the standard library.
"""
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, ContextManager, Dict, Optional, Tuple


# ----------------------------------------------------------------------------- output

def write(stream, text: str) -> None:
    """Write UTF-8 text and flush; a closed reader (EPIPE) silences the stream for good."""
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except ValueError:  # stream closed
        pass


def out(text: str) -> None:
    """`text` on stdout, ending in a newline."""
    write(sys.stdout, text if text.endswith("\n") else text + "\n")


def err(text: str) -> None:
    """`text` on stderr, ending in a newline."""
    write(sys.stderr, text if text.endswith("\n") else text + "\n")


# ----------------------------------------------------------------------------- signals

class Interrupted(BaseException):
    """Raised by the signal handler in the main thread; each fake turns it into its CLI's exit."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SignalGate:
    """SIGINT/SIGTERM/SIGHUP -> Interrupted, except SIGTERM once `ignore_sigterm` is set."""

    def __init__(self):
        self.ignore_sigterm = False
        self.held = False
        self.pending: Optional[int] = None

    def install(self) -> "SignalGate":
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, _frame):
        if signum == signal.SIGTERM and self.ignore_sigterm:
            return
        if self.held:  # between starting a command and recording it: raise once it is recorded
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def hold(self):
        """Signals wait until the block ends (a command started must be known before a signal
        can unwind the turn, or it would outlive it)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


# ----------------------------------------------------------------------------- commands

def kill_group(pgid: int) -> None:
    """SIGKILL a command's process group; one already gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_shell(cmd: str, *, cwd: str, env: Dict[str, str], running: Dict[int, subprocess.Popen],
              yield_after: Optional[float],
              hold: Optional[ContextManager] = None) -> Tuple[subprocess.Popen, Optional[int], str]:
    """Run `cmd` with `/bin/bash -c` in a session of its own (stdin /dev/null, stderr into stdout),
    recorded in `running` (pgid -> process) while it runs; `hold` is entered around the start and
    the recording. Returns (process, exit code, output): a death by signal N is code 128+N; when
    it outlives `yield_after` seconds the code is None, the output "" and it stays in `running`
    (killed at the turn's end)."""
    with tempfile.TemporaryFile() as capture:
        with hold if hold is not None else contextlib.nullcontext():
            proc = subprocess.Popen(["/bin/bash", "-c", cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=capture, stderr=subprocess.STDOUT, start_new_session=True)
            running[proc.pid] = proc
        try:
            code = proc.wait(timeout=yield_after)
        except subprocess.TimeoutExpired:
            return proc, None, ""
        running.pop(proc.pid, None)
        capture.seek(0)
        output = capture.read().decode("utf-8", errors="replace")
    return proc, (code if code >= 0 else 128 - code), output


def spawn_setsid_sleeper(seconds: float) -> int:
    """Double-fork a `sleep` that calls setsid (its own session, parent init), stdio on /dev/null,
    environment inherited, like a test server that daemonizes. Returns its pid."""
    sleep_bin = shutil.which("sleep") or "/bin/sleep"
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        _orphan_child(read_fd, write_fd, sleep_bin, seconds)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    os.waitpid(child, 0)
    return int(data)


def _orphan_child(read_fd: int, write_fd: int, sleep_bin: str, seconds: float) -> None:
    try:
        os.close(read_fd)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(write_fd)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execv(sleep_bin, ["sleep", f"{seconds:g}"])
        os.write(write_fd, str(grandchild).encode())
    finally:
        os._exit(0)


class CommonSteps:
    """The scenario steps every fake plays alike. The class that uses it has `cwd`, `gate` (a
    `SignalGate`) and `_step_message(text, options)`."""

    cwd: str
    gate: SignalGate

    def _step_sleep(self, seconds, _options):
        time.sleep(seconds)

    def _step_hang(self, enabled, _options):
        while enabled:
            time.sleep(3600)

    def _step_ignore_sigterm(self, enabled, _options):
        self.gate.ignore_sigterm = enabled

    def _step_spawn_setsid_grandchild(self, seconds, _options):
        self._step_message(f"spawned {spawn_setsid_sleeper(seconds)}", {})

    def _step_leave_registry_lock(self, _enabled, _options):
        raise StartupError("fake: leave_registry_lock is a step of the gemini stand-in only", 2)

    def _step_write_file(self, spec, _options):
        path = os.path.join(self.cwd, spec["path"])
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a" if spec["append"] else "w", encoding="utf-8") as fh:
            fh.write(spec["text"])


def scenario_path(home: str, name: str) -> Optional[str]:
    """The scenario file: `$FAKE_<NAME>_SCENARIO`, else `fake_<name>_scenario.yaml` in `home`
    when it exists."""
    explicit = os.environ.get(f"FAKE_{name.upper()}_SCENARIO")
    if explicit:
        return explicit
    default = os.path.join(home, f"fake_{name}_scenario.yaml")
    return default if os.path.exists(default) else None


# ----------------------------------------------------------------------------- the store

class StartupError(Exception):
    """A failure before the turn starts: its text goes to stderr, nothing on stdout, exit `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def iso_now() -> str:
    """UTC now as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def ensure_private_dir(path: str) -> None:
    """Create `path` and its missing parents with mode 0700."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        ensure_private_dir(parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


@contextlib.contextmanager
def flocked(path: str):
    """Hold an exclusive (blocking) flock on `path` for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_json(path: str, default: Any) -> Any:
    """The JSON in `path`; `default` when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def write_json_atomic(path: str, data: Any, **dump_options: Any) -> None:
    """Replace `path` with `data` as JSON (a temporary file renamed over it); `dump_options` go to
    `json.dump` (default: `ensure_ascii=False, indent=1`)."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, **{"ensure_ascii": False, "indent": 1, **dump_options})
    os.replace(tmp, path)


def claim_invocation(path: str) -> int:
    """Claim the next turn number (0-based) counted in the JSON file `path`, atomically under an
    flock on `<path>.lock` (its folder must exist)."""
    with flocked(path + ".lock"):
        state = read_json(path, {})
        number = int(state.get("invocations", 0)) if isinstance(state, dict) else 0
        write_json_atomic(path, {"invocations": number + 1})
    return number

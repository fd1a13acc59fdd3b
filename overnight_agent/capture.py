"""An attempt's output on its way to the run log: pipes, redaction, the size cap, whole lines.

Owns: the run log of an attempt (header, footer), reading the agent's pipes without blocking,
redacting what is written (JSON-escaped text of an event stream decoded first), splitting stdout
into whole lines for the backend's parser, the tail of stderr, the night's log size cap
(`LogCap`), and the fast path where a plain command writes its stdout into the log itself
(watched with inotify, cut back to the cap). Must not: parse events, judge liveness, or decide
anything about the attempt: it says what arrived, the supervisor makes of it what it will.

The loop reads; redacting and writing a chunk happen on a thread of the run log's own
(`LogWriter`) while the loop reads the next: a flood is taken about twice as fast that way.
"""
import os
import queue
import selectors
import subprocess
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from . import filewatch, procs, redact

STDERR_TAIL = 8192
READ_CHUNK = 1 << 20   # matches the widened pipe: one read per wake-up under heavy output
BUFFERS = 4            # chunks read and not yet written, at most: memory stays bounded
BUFFER_WAIT = 0.05     # the writer is behind: wait this long for a buffer, then let the loop go on
MAX_EVENT_LINE = 8 << 20   # an event line longer than this reaches the parser cut (the log has it whole)
# After a look at a log the command writes itself, the next waits this long: a flood of writes
# then costs a few hundred wake-ups a second, not one per write (the cap is kept at each look).
WATCH_PAUSE = 0.01


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class LogCap:
    """Counts what the supervisor writes to a night's logs against `retention.max_log_bytes`.

    Starts from what the run folder already holds (a restarted supervisor continues the count).
    Before each write: `keep = cap.allow(len(chunk))`, write `chunk[:keep]`; once `cap.exceeded`,
    write `cap.notice()` (one line, once) and nothing more. Parsing the output goes on regardless.
    """

    def __init__(self, run_dir: Path, max_bytes: int):
        self.max_bytes = max_bytes
        self.used = folder_bytes(run_dir) if run_dir.is_dir() else 0
        self._noticed = False

    def allow(self, n: int) -> int:
        take = max(0, min(n, self.max_bytes - self.used))
        self.used += take
        return take

    @property
    def exceeded(self) -> bool:
        return self.used >= self.max_bytes

    def notice(self) -> bytes:
        if self._noticed or not self.exceeded:
            return b""
        self._noticed = True
        return (f"\n=== overnight-agent: this night's logs reached retention.max_log_bytes "
                f"({self.max_bytes} bytes); further output is not logged ===\n").encode()


class LogWatch:
    """One inotify watch for the supervisor's life (closing one is slow), on its selector as
    "written"; after each look it stays off the selector for WATCH_PAUSE."""

    def __init__(self, selector: selectors.BaseSelector):
        self.selector = selector
        self.watch: Optional[filewatch.FileWatch] = None
        self.resume_at: Optional[float] = None   # off the selector until then

    def add(self, path: Path) -> bool:
        """Be woken by writes to `path`; False where that cannot be (no inotify)."""
        if self.watch is None:
            self.watch = filewatch.open_watch()
            if self.watch is None:
                return False
            self.selector.register(self.watch.fileno(), selectors.EVENT_READ, "written")
        return self.watch.add(str(path))

    def looked(self, now: float) -> None:
        """A write woke us: take its events, then look away for a moment."""
        self.watch.drain()
        self.selector.unregister(self.watch.fileno())
        self.resume_at = now + WATCH_PAUSE

    def resume(self, now: float) -> None:
        if self.resume_at is not None and now >= self.resume_at:
            self.resume_at = None
            self.selector.register(self.watch.fileno(), selectors.EVENT_READ, "written")

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


def write_all(fd: int, pieces: List) -> None:
    """Every byte of `pieces`, in order (a write may take fewer than it was given)."""
    pieces = [memoryview(piece) for piece in pieces if len(piece)]
    while pieces:
        done = os.writev(fd, pieces)
        while pieces and done >= len(pieces[0]):
            done -= len(pieces.pop(0))
        if done:
            pieces[0] = pieces[0][done:]


def _cut(pieces: List, keep: int) -> List:
    """The first `keep` bytes of `pieces`."""
    out = []
    for piece in pieces:
        if keep <= 0:
            break
        out.append(memoryview(piece)[:keep])
        keep -= len(piece)
    return out


class LineSplitter:
    """Cuts a byte stream into whole lines for the parser, in memory bounded by `max_line`: a
    longer line (a command's 100 MB of output in one event) is passed on cut to its first
    `max_line` bytes, which no parser takes for an event; the rest of it is not kept."""

    def __init__(self, max_line: int = MAX_EVENT_LINE):
        self.max_line = max_line
        self.partial = bytearray()
        self.cut = 0              # lines cut so far
        self._over = False        # the line held is being cut

    def feed(self, buf, n: int) -> List[bytes]:
        """The lines that `buf[:n]` completes."""
        view = memoryview(buf)[:n]
        first = buf.find(b"\n", 0, n)
        if first < 0:
            self._hold(view)
            return []
        last = buf.rfind(b"\n", 0, n)
        self._hold(view[:first])
        lines = [self._take()]
        if last > first:
            for line in bytes(view[first + 1:last]).split(b"\n"):
                self._hold(line)
                lines.append(self._take())
        self._hold(view[last + 1:])
        return lines

    def flush(self) -> Optional[bytes]:
        rest = self._take()
        return rest or None

    def _hold(self, data) -> None:
        room = self.max_line - len(self.partial)
        if len(data) > room:
            if not self._over:
                self._over = True
                self.cut += 1
            data = data[:room]
        self.partial += data

    def _take(self) -> bytes:
        line, self.partial, self._over = bytes(self.partial), bytearray(), False
        return line


_SPARE: List[bytearray] = []   # buffers of attempts gone, for the next (a new one costs page faults)


class LogWriter:
    """Runs an attempt's log writes in order, and owns the buffers the loop reads into. Writes
    run in the loop until a read fills half a buffer (a flood), then on a thread of its own: at
    most `BUFFERS` chunks are then in flight, so a slow disk fills the agent's pipe rather than
    our memory, and holds the loop up for `BUFFER_WAIT` at most. A write that fails (a full disk)
    is kept and raised in the loop at its next read."""

    def __init__(self, threaded: bool = True):
        self.threaded = threaded                  # may move to a thread
        self.error: Optional[BaseException] = None
        self._free: "queue.SimpleQueue[bytearray]" = queue.SimpleQueue()
        self._room = BUFFERS if threaded else 1   # buffers not made yet: made when first needed
        self._todo: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def buffer(self) -> Optional[bytearray]:
        """A free buffer to read into; None when every one waits to be written."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._room:   # a quiet agent never needs more than one (a megabyte each)
            self._room -= 1
            return _SPARE.pop() if _SPARE else bytearray(READ_CHUNK)
        try:
            return self._free.get(timeout=BUFFER_WAIT)
        except queue.Empty:
            return None

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def submit(self, write: Callable[[], None], buf: Optional[bytearray] = None, size: int = 0) -> None:
        """Run `write` after every write submitted before it; `buf` is free again after it.
        `size`: the bytes it writes (a large one moves the writes to the thread)."""
        if self._thread is None and self.threaded and size >= READ_CHUNK // 2:
            self._thread = threading.Thread(target=self._run, name="run-log", daemon=True)
            self._thread.start()
        if self._thread is None:
            self._do(write, buf)
        else:
            self._todo.put((write, buf))

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        """Every write submitted is done once this returns (its buffers are then spare)."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        while len(_SPARE) < BUFFERS:
            try:
                _SPARE.append(self._free.get_nowait())
            except queue.Empty:
                break

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            self._do(*item)

    def _do(self, write: Callable[[], None], buf: Optional[bytearray]) -> None:
        try:
            write()
        except Exception as exc:   # kept for the loop, which decides what it means
            self.error = self.error or exc
        finally:
            if buf is not None:
                self._free.put(buf)


class Output:
    """One attempt's run log and the pipes that feed it."""

    def __init__(self, log_path: Path, header: str, cap: LogCap, redactor: Optional[redact.Redactor],
                 *, events_on_stdout: bool):
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_APPEND
        self.log = open(os.open(log_path, flags, 0o644), "wb", buffering=0)  # on disk at once
        self.log.write(header.encode())
        self.path = log_path
        self.cap = cap
        self.redactor = redactor
        self.events_on_stdout = events_on_stdout  # stdout is an event stream: split it into lines
        self.lines: Dict[int, LineSplitter] = {}
        self.redactors: Dict[int, redact.StreamRedactor] = {}
        self.kinds: Dict[int, str] = {}          # fd -> "out" | "err"
        self.stderr_tail = ""
        self.writer: Optional[LogWriter] = None   # from `attach` on
        # A plain command with nothing to redact writes its stdout into the log itself: we watch
        # the file for its writes and keep the size cap by cutting it back (see `account_direct`).
        self.direct = False
        self.direct_size = 0                     # the log's size as last accounted for
        self.cut_at: Optional[int] = None        # past the cap: the size the log is held to

    # --- setting up ---------------------------------------------------------------------------

    def direct_stdout(self, watch: LogWatch) -> Optional[int]:
        """An fd of the log for the child's stdout (its own open file, so our offset stays ours)
        where that is allowed and the writes can be watched; None: use a pipe."""
        if self.events_on_stdout or self.redactor is not None or not watch.add(self.path):
            return None
        self.direct = True
        self.direct_size = os.fstat(self.log.fileno()).st_size
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def attach(self, popen: subprocess.Popen, selector: selectors.BaseSelector) -> None:
        """Read the child's pipes from now on (non-blocking, widened, on the selector)."""
        for stream, kind in ((popen.stdout, "out"), (popen.stderr, "err")):
            if stream is None:
                continue  # stdout given the log itself
            fd = stream.fileno()
            os.set_blocking(fd, False)
            procs.widen_pipe(fd)
            self.lines[fd] = LineSplitter()
            self.kinds[fd] = kind
            if self.redactor is not None:
                json_lines = kind == "out" and self.events_on_stdout  # codex's --json events
                self.redactors[fd] = redact.StreamRedactor(self.redactor, json_lines=json_lines)
            selector.register(fd, selectors.EVENT_READ, kind)
        # A command writing the log itself shares it with us: then everything stays in the loop.
        self.writer = LogWriter(threaded=not self.direct)

    @property
    def open_fds(self) -> List[int]:
        return list(self.kinds)

    # --- while it runs --------------------------------------------------------------------------

    def read(self, fd: int, selector: selectors.BaseSelector) -> Tuple[List[str], bool]:
        """Take what `fd` holds: (whole stdout lines to parse, whether stdout said anything)."""
        kind = self.kinds.get(fd)
        if kind is None:
            return [], False
        self.writer.raise_error()
        buf = self.writer.buffer()
        if buf is None:
            return [], False   # the writer is behind: the agent waits in its pipe meanwhile
        try:
            n = os.readv(fd, [buf])
        except BlockingIOError:
            self.writer.give_back(buf)
            return [], False
        if not n:  # end of file: the last partial line counts as a line
            self.writer.give_back(buf)
            selector.unregister(fd)
            return self._close_fd(fd), False
        chunk = memoryview(buf)[:n]
        lines: List[str] = []
        if kind == "err":
            self.stderr_tail = (self.stderr_tail + bytes(chunk[-STDERR_TAIL:]).decode("utf-8", "replace"))[-STDERR_TAIL:]
        elif self.events_on_stdout:
            lines = [line.decode("utf-8", "replace") for line in self.lines[fd].feed(buf, n)]
        self.writer.submit(lambda: self._write(fd, buf, n), buf, n)   # `buf` is not read again here
        # A plain command: any output is a sign of life, none an event.
        return lines, kind == "out"

    def account_direct(self) -> bool:
        """The command writes the log itself: count what it wrote against the night's cap; True
        when it wrote anything since the last look. Past the cap the file is cut back to it (the
        notice after it) each time it grows; the command appends, so it writes on at the new
        end, into nothing kept."""
        if not self.direct:
            return False
        fd = self.log.fileno()
        size = os.fstat(fd).st_size
        grew = size > self.direct_size
        if self.cut_at is not None:
            if size > self.cut_at:
                os.ftruncate(fd, self.cut_at)
            self.direct_size = self.cut_at
            return grew
        grown = max(0, size - self.direct_size)
        keep = self.cap.allow(grown)
        self.direct_size = size
        if keep < grown or self.cap.exceeded:
            os.ftruncate(fd, size - grown + keep)
            notice = self.cap.notice()
            self.log.write(notice)  # appended: lands at the end, wherever that is now
            self.cut_at = os.lseek(fd, 0, os.SEEK_CUR) if notice else size - grown + keep
            self.direct_size = self.cut_at
        return grew

    def drain(self, selector: selectors.BaseSelector, deadline: float, clock) -> List[str]:
        """Read what is left in the pipes of an exited agent, until `deadline` at the latest (a
        grandchild may hold them open)."""
        lines: List[str] = []
        while self.kinds and clock() < deadline:
            ready = selector.select(0.05)
            for key, _ in ready:
                if key.fd in self.kinds:
                    lines += self.read(key.fd, selector)[0]
            if not ready:
                break
        return lines

    # --- the end ---------------------------------------------------------------------------------

    def close(self, selector: selectors.BaseSelector, popen: subprocess.Popen) -> List[str]:
        """Stop reading (what is buffered is written, a last partial line returned) and close
        the child's ends of the pipes."""
        lines: List[str] = []
        for fd in list(self.kinds):
            selector.unregister(fd)
            lines += self._close_fd(fd)
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()
        if self.writer is not None:
            self.writer.close()
            self.writer.raise_error()
        self.account_direct()  # the last writes, before the closing line
        return lines

    def finish(self, footer: str) -> None:
        if self.writer is not None:
            self.writer.close()
        self.log.write(footer.encode())
        self.log.close()

    def _close_fd(self, fd: int) -> List[str]:
        kind = self.kinds.pop(fd)
        if fd in self.redactors:
            self.writer.submit(lambda: self._write(fd, b"", 0, final=True))
        rest = self.lines.pop(fd).flush()
        return [rest.decode("utf-8", "replace")] if kind == "out" and rest and self.events_on_stdout else []

    def _write(self, fd: int, data, end: int, final: bool = False) -> None:
        """`data[:end]` into the run log: redacted, and within the night's size cap."""
        try:
            self._write_log(fd, data, end, final)
        except OSError as exc:   # named, for the message the loop will give
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def _write_log(self, fd: int, data, end: int, final: bool) -> None:
        stream = self.redactors.get(fd)
        if stream is not None:
            pieces = stream.pieces(data, end) + ([stream.flush()] if final else [])
        else:
            pieces = [memoryview(data)[:end]]
        self.account_direct()  # what the command wrote itself counts first
        size = sum(len(piece) for piece in pieces)
        keep = self.cap.allow(size)
        if keep:
            write_all(self.log.fileno(), _cut(pieces, keep) if keep < size else pieces)
            self.direct_size += keep
        if self.cap.exceeded:
            self.log.write(self.cap.notice())
            if self.direct and self.cut_at is None:
                self.cut_at = os.lseek(self.log.fileno(), 0, os.SEEK_CUR)

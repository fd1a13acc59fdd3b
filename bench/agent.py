"""The tiny agent every supervisor in the benchmark runs (standard library only).

    python agent.py sleep                                   idle: sleep until killed
    python agent.py hang BEAT HOW SECONDS INTERVAL OUT      beat, write "pid last_beat" to OUT, hang
    python agent.py flood NBYTES DEST TIMES [GO]            write the flood stream to DEST ('-': stdout),
                                                            once the file GO exists
    python agent.py survive KIND PIDS                       plain | setsid | ignore_term, pids to PIDS
    python agent.py codex ARGS...                           the scripted Codex CLI (overnight_agent.
                                                            fakecodex) with ARGS, stamping its events

BEAT is `file` (os.utime on $OVERNIGHT_AGENT_HEARTBEAT, in-process) or `udp:PORT` (circus's
watchdog message `pid;timestamp` to 127.0.0.1:PORT). HOW is `sleep` (silent) or `sigstop`.
Times are `time.time()` so they compare across processes; the crash agent is `crash.sh` (bash
starts in about a millisecond, a Python interpreter in twenty).

`codex` runs the project's scripted stand-in for the Codex CLI in this process, unchanged, and
appends a line `PID TIME WHAT` to $OA_BENCH_CODEX_STAMPS when it starts (`start exec|resume`),
right after it wrote each `--json` event to stdout (the event's type; `thread.started ID`), and
when a signal reaches it (`signal N`): when each thing happened, without parsing a log.
"""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

BLOCK = 1 << 20
_WORDS = ("overnight agent supervises a coding agent; café naïve Straße 日本語 テスト "
          "ünïcödé — résumé ✓ line")


def _base_block() -> bytes:
    """1 MiB of ~100-byte lines: ASCII and multi-byte UTF-8, nothing that looks like a secret."""
    lines, size, n = [], 0, 0
    while True:
        line = f"{n:08d} {_WORDS} {n * 7919 % 100000:05d}\n".encode()
        if size + len(line) > BLOCK - 16:
            break
        lines.append(line)
        size += len(line)
        n += 1
    return b"".join(lines)


def flood_parts(nbytes: int):
    """The stream, as (header, body) pairs: block i is `blk NNNNNNNN\\n` + the base block, the
    last one cut so that the whole stream is exactly `nbytes`."""
    base = _base_block()
    sent, i = 0, 0
    while sent < nbytes:
        header = f"blk {i:08d}\n".encode()[:nbytes - sent]
        body = base[:nbytes - sent - len(header)]
        yield header, body
        sent += len(header) + len(body)
        i += 1


def flood_sha256(nbytes: int) -> str:
    digest = hashlib.sha256()
    for header, body in flood_parts(nbytes):
        digest.update(header)
        digest.update(body)
    return digest.hexdigest()


def flood(nbytes: int, dest: str, times: str, go: str = "") -> None:
    """Write the stream with writev (no copies), to stdout or to a file we open ourselves; with
    `go`, not before that file exists (the benchmark's observer is ready then)."""
    parts = list(flood_parts(nbytes))  # built before the clock starts: only writes are timed
    while go and not os.path.exists(go):
        time.sleep(0.001)
    t0 = time.time()
    fd = 1 if dest == "-" else os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for header, body in parts:
        todo = [memoryview(header), memoryview(body)]
        while todo:
            done = os.writev(fd, todo)
            while todo and done >= len(todo[0]):
                done -= len(todo[0])
                todo.pop(0)
            if todo and done:
                todo[0] = todo[0][done:]
    if fd != 1:
        os.close(fd)
    t1 = time.time()
    with open(times, "a") as handle:
        handle.write(f"{t0!r} {t1!r}\n")


def hang(beat: str, how: str, seconds: float, interval: float, out: str) -> None:
    if beat == "file":
        path = os.environ["OVERNIGHT_AGENT_HEARTBEAT"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()

        def touch():
            os.utime(path)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port = int(beat.split(":", 1)[1])

        def touch():
            sock.sendto(f"{os.getpid()};{time.time()}".encode(), ("127.0.0.1", port))
    end = time.monotonic() + seconds
    while True:
        touch()
        last = time.time()
        if time.monotonic() >= end:
            break
        time.sleep(interval)
    with open(out, "a") as handle:
        handle.write(f"{os.getpid()} {last!r}\n")
    if how == "sigstop":
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(3600)


def survive(kind: str, pids: str) -> None:
    mine = [os.getpid()]
    if kind == "setsid":
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "sleep"],
                                 start_new_session=True, stdin=subprocess.DEVNULL)
        mine.append(child.pid)
    elif kind == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(pids, "a") as handle:
        handle.write(" ".join(map(str, mine)) + "\n")
    time.sleep(3600)


def codex(args) -> int:
    """The fake codex's own `main`, its event output and signal handler wrapped to stamp times."""
    fd = os.open(os.environ["OA_BENCH_CODEX_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 0o644)
    pid = os.getpid()

    def stamp(what: str) -> None:
        os.write(fd, f"{pid} {time.time()!r} {what}\n".encode())
    stamp("start resume" if "resume" in args else "start exec")
    from overnight_agent.fakecodex import cli
    emit, handle = cli.Output.event, cli.SignalGate._handle

    def event(self, data):
        emit(self, data)
        kind = data.get("type")
        stamp(f"{kind} {data.get('thread_id')}" if kind == "thread.started" else str(kind))

    def on_signal(self, signum, frame):
        stamp(f"signal {signum}")
        return handle(self, signum, frame)
    cli.Output.event, cli.SignalGate._handle = event, on_signal
    return cli.main(list(args))


def main(argv) -> None:
    mode = argv[0]
    if mode == "sleep":
        time.sleep(3600)
    elif mode == "hang":
        hang(argv[1], argv[2], float(argv[3]), float(argv[4]), argv[5])
    elif mode == "flood":
        flood(int(argv[1]), argv[2], argv[3], *argv[4:5])
    elif mode == "survive":
        survive(argv[1], argv[2])
    elif mode == "codex":
        sys.exit(codex(argv[1:]))
    else:
        raise SystemExit(f"agent.py: unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

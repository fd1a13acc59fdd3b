"""The simple stdlib reference supervisor the benchmark compares against (about 100 lines).

    python reference.py [--log FILE [--pipe]] [--limit S] [--restart] [--grace S] -- ARGV...

One child in its own session, its stdout (and stderr) the log file itself; the child's exit is a
pidfd in the poll set, so a restart needs no tick; the heartbeat file
($OVERNIGHT_AGENT_HEARTBEAT) is looked at only when a verdict is due (its mtime, moved onto the
monotonic clock, says when the next one is due), so an idle supervisor never wakes; a stop
sweeps every process carrying this supervisor's tag in its environment (setsid'd grandchildren
included): SIGTERM and SIGCONT, then SIGKILL after the grace. With --pipe the child's stdout is a
1 MiB pipe that the loop moves to the log with splice: the least any supervisor that reads its
child's output (to redact it, say) can pay.
"""
import argparse
import fcntl
import os
import select
import signal
import subprocess
import time

TAG_VAR = "BENCH_REFERENCE_TAG"


def tagged(tag: bytes):
    needle = f"{TAG_VAR}=".encode() + tag
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if needle + b"\0" in handle.read() + b"\0":
                    found.append(int(name))
        except OSError:
            continue
    return found


def sweep(tag: bytes, grace: float) -> None:
    """SIGTERM (+SIGCONT) every tagged process, SIGKILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = tagged(tag)
        for pid in pids:
            for s in (sig, signal.SIGCONT) if sig == signal.SIGTERM else (sig,):
                try:
                    os.kill(pid, s)
                except OSError:
                    pass
        end = time.monotonic() + grace
        while pids and time.monotonic() < end:
            time.sleep(0.01)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log")
    parser.add_argument("--limit", type=float)
    parser.add_argument("--restart", action="store_true")
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--pipe", action="store_true")
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args()
    tag = f"{os.getpid()}-{time.time_ns()}".encode()
    env = dict(os.environ, **{TAG_VAR: tag.decode()})
    heartbeat = env.get("OVERNIGHT_AGENT_HEARTBEAT")
    # splice refuses a file opened for appending: --pipe writes a fresh log from its start
    log = open(args.log, "wb" if args.pipe else "ab") if args.log else None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))

    while not stop:
        child = subprocess.Popen(args.argv, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE if args.pipe else log,
                                 stderr=log, start_new_session=True)
        pidfd = os.pidfd_open(child.pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        out = child.stdout.fileno() if args.pipe else None
        if out is not None:
            fcntl.fcntl(out, 1031, 1 << 20)  # F_SETPIPE_SZ: the most an unprivileged pipe gets
            poller.register(out, select.POLLIN)
        last = time.monotonic()                                  # evidence: the start
        while not stop and child.poll() is None:
            timeout = None
            if args.limit:
                if heartbeat:
                    try:
                        last = max(last, time.monotonic() - (time.time() - os.stat(heartbeat).st_mtime))
                    except OSError:
                        pass
                due = last + args.limit
                if time.monotonic() >= due:
                    sweep(tag, args.grace)                       # hung: stop the whole tree
                    continue
                timeout = max(0, int((due - time.monotonic()) * 1000) + 1)
            for fd, _ in poller.poll(timeout):
                if fd == out and not os.splice(out, log.fileno(), 1 << 20):
                    poller.unregister(out)
                    out = None
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        while out is not None and os.splice(out, log.fileno(), 1 << 20):
            pass  # what the child left in the pipe
        os.close(pidfd)
        if not args.restart:
            break
    sweep(tag, args.grace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

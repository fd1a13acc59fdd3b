"""A small agent for liveness tests (`agent: command`): beats its heart, then behaves one way.

    python hang_agent.py KIND BEATS

KIND: sleep | busy | sigstop | ignore_term | setsid_child | quiet_busy_command | exit
BEATS: heartbeats (0.1 s apart) before the behaviour starts.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def beat(n: int) -> None:
    path = Path(os.environ["OVERNIGHT_AGENT_HEARTBEAT"])
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(n):
        path.touch()
        time.sleep(0.1)


def main() -> None:
    kind, beats = sys.argv[1], int(sys.argv[2])
    print(f"agent {kind} starting", flush=True)
    beat(beats)
    print("last heartbeat", flush=True)
    if kind == "sleep":
        time.sleep(600)
    elif kind == "busy":
        while True:
            pass
    elif kind == "sigstop":
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(600)
    elif kind == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(600)
    elif kind == "setsid_child":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        time.sleep(600)
    elif kind == "quiet_busy_command":
        # A long test suite: no output, no heartbeat, but its CPU shows it is working.
        subprocess.run([sys.executable, "-c",
                        "import time\nend = time.time() + 4\nwhile time.time() < end: pass"], check=True)
        print("command done", flush=True)
    elif kind == "exit":
        pass


if __name__ == "__main__":
    main()

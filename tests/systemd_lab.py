"""A real `systemd --user` manager (with its own journald) for tests, set up and torn down here.

Owns: the lab: a scratch folder, a private mount namespace holding a journald and a user manager,
a cgroup subtree of their own, commands run inside the namespace (`systemctl --user`,
`journalctl`), and a teardown that proves every lab process and cgroup is gone.
Must not: start any systemd from the root cgroup (on a machine whose PID 1 is not systemd it
would move every process of the root cgroup, PID 1 included, into a new `init.scope`), mount
anything outside its namespace, or touch units and journals outside its scratch folder.

How (measured on a Debian 12 VM with systemd 252, root, cgroups in the hybrid layout):
1. State under `<base>`: `journal/`, `run/`, `xdg/{config,data,state,cache}`, `home/`, and a
   `user.conf` (no resource accounting: the controllers are not delegated) and a `journald.conf`.
2. cgroups: `oa-lab-<id>.slice/{infra,user-<uid>.slice/user@<uid>.service}` in both the
   `name=systemd` and the unified hierarchy. The manager goes into `user@<uid>.service`, so
   journald derives `_SYSTEMD_USER_UNIT=` for its services (slices in front are skipped).
3. A launcher moved into `infra` runs `unshare -m --propagation private` and, inside, mounts
   tmpfs on `/run/systemd` (with `system/`, which makes `sd_booted()` true), `/run/log` and
   `/run/user`, binds the lab's journal and confs in place, starts `systemd-journald`, then
   execs `systemd --user` from a subshell that first moved itself into `user@<uid>.service`.
4. Commands run through `nsenter -t <manager pid> -m` with the user's lab environment.
5. Teardown: `systemctl --user exit`, then SIGKILL to whatever is left in the lab's cgroups,
   `rmdir` bottom-up, and the scratch folder is removed.
"""
import os
import shlex
import shutil
import signal
import subprocess
import textwrap
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
SYSTEMD = Path("/lib/systemd/systemd")
JOURNALD = Path("/lib/systemd/systemd-journald")

USER_CONF = """\
[Manager]
DefaultCPUAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
DefaultIOAccounting=no
DefaultBlockIOAccounting=no
DefaultIPAccounting=no
"""

JOURNALD_CONF = """\
[Journal]
Storage=persistent
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitBurst=0
"""

INNER = """\
#!/bin/bash
# Runs inside the lab's private mount namespace (as root); see tests/systemd_lab.py.
set -euo pipefail
LAB=$1 UID_=$2 GID_=$3 USER_CG=$4
mkdir -p /run/systemd /run/log /run/user
mount -n -t tmpfs -o mode=0755 lab-run-systemd /run/systemd
mkdir /run/systemd/system
mount -n -t tmpfs -o mode=0755 lab-run-log /run/log
mount -n -t tmpfs -o mode=0755 lab-run-user /run/user
mkdir -p -m 0700 /run/user/$UID_
mount -n --bind "$LAB/run/user" /run/user/$UID_
mkdir -p /var/log/journal
mount -n --bind "$LAB/journal" /var/log/journal
mount -n --bind "$LAB/user.conf" /etc/systemd/user.conf
mount -n --bind "$LAB/journald.conf" /etc/systemd/journald.conf
@JOURNALD@ & echo $! > "$LAB/journald.pid"
for _ in $(seq 200); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.01; done
[ -S /run/systemd/journal/stdout ] || { echo "journald did not start" >&2; exit 1; }
(
  for root in @CGROUP_ROOTS@; do echo $BASHPID > "$root/$USER_CG/cgroup.procs"; done
  exec setpriv --reuid=$UID_ --regid=$GID_ --init-groups env -i @ENVIRONMENT@ \\
    @SYSTEMD@ --user --log-target=journal
) &
echo $! > "$LAB/manager.pid"
wait
"""


def unavailable(reason: str) -> None:
    """Skip a test that needs the lab, but fail under CI=true (a skip there hides a regression)."""
    if IN_CI:
        pytest.fail(f"systemd lab unavailable: {reason} (CI=true: a skip is a failure)")
    pytest.skip(f"systemd lab unavailable: {reason}")


def why_unavailable() -> Optional[str]:
    """None when this machine can host the lab, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and cgroups)"
    for tool in ("systemctl", "journalctl", "unshare", "nsenter", "setpriv", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    for binary in (SYSTEMD, JOURNALD):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing"
    try:
        pid1 = Path("/proc/1/comm").read_text().strip()
    except OSError:
        pid1 = ""
    if pid1 == "systemd":
        return "PID 1 is systemd here; the lab is for machines whose PID 1 is not systemd"
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    types = {fields[1]: (fields[2], fields[3]) for fields in (m.split() for m in mounts) if len(fields) > 3}
    legacy, unified = (types.get(str(root)) for root in CGROUP_ROOTS)
    if not legacy or legacy[0] != "cgroup" or "name=systemd" not in legacy[1]:
        return "no name=systemd cgroup v1 hierarchy at /sys/fs/cgroup/systemd (hybrid layout only)"
    if not unified or unified[0] != "cgroup2":
        return "no cgroup2 hierarchy at /sys/fs/cgroup/unified (hybrid layout only)"
    for root in CGROUP_ROOTS:
        if not os.access(root, os.W_OK):
            return f"{root} is not writable"
    return None


class Lab:
    """One user manager and its journald. Use as a context manager or call start()/stop()."""

    def __init__(self, base: Path):
        self.base = base
        self.uid, self.gid = os.getuid(), os.getgid()
        self.id = uuid.uuid4().hex[:10]
        self.slice = f"oa-lab-{self.id}.slice"
        self.user_cg = f"{self.slice}/user-{self.uid}.slice/user@{self.uid}.service"
        self.home = base / "home"
        self.xdg = base / "xdg"
        self.unit_dir = self.xdg / "config" / "systemd" / "user"
        self.launcher: Optional[subprocess.Popen] = None
        self.manager_pid: Optional[int] = None
        self.journald_pid: Optional[int] = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "Lab":
        for sub in ("journal", "run/user", "home", "xdg/config/systemd/user", "xdg/data",
                    "xdg/state", "xdg/cache"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.base / "run" / "user", 0o700)
        (self.base / "user.conf").write_text(USER_CONF)
        (self.base / "journald.conf").write_text(JOURNALD_CONF)
        for root in CGROUP_ROOTS:
            (root / self.slice / "infra").mkdir(parents=True)
            (root / self.user_cg).mkdir(parents=True)
        env_words = " ".join(shlex.quote(f"{k}={v}") for k, v in self.environment().items())
        script = (INNER.replace("@JOURNALD@", str(JOURNALD)).replace("@SYSTEMD@", str(SYSTEMD))
                  .replace("@CGROUP_ROOTS@", " ".join(str(r) for r in CGROUP_ROOTS))
                  .replace("@ENVIRONMENT@", env_words))
        inner = self.base / "inner.sh"
        inner.write_text(script)
        inner.chmod(0o755)
        infra = [str(root / self.slice / "infra" / "cgroup.procs") for root in CGROUP_ROOTS]

        def into_infra():  # runs in the child before exec: the whole lab lives in its cgroups
            for path in infra:
                with open(path, "w") as handle:
                    handle.write(str(os.getpid()))

        log = open(self.base / "launcher.log", "wb")
        self.launcher = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", str(inner), str(self.base), str(self.uid),
             str(self.gid), self.user_cg],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=into_infra,
            start_new_session=True)
        log.close()
        try:
            self._wait_running(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_running(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        pid_file = self.base / "manager.pid"
        while time.monotonic() < end:
            if self.launcher.poll() is not None:
                raise RuntimeError("lab launcher exited: " + self.launcher_log())
            if pid_file.exists() and pid_file.read_text().strip():
                self.manager_pid = int(pid_file.read_text())
                self.journald_pid = int((self.base / "journald.pid").read_text())
                state = self.systemctl("is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"user manager not running after {timeout}s: " + self.launcher_log())

    def launcher_log(self) -> str:
        try:
            return (self.base / "launcher.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the manager, kill anything left in the lab's cgroups, remove them and the folder."""
        if self.manager_pid is not None:
            self.systemctl("exit", check=False, timeout=10)
            _wait(lambda: not _alive(self.manager_pid), 5.0)
        for _ in range(50):
            pids = self.cgroup_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()
        left = self.cgroup_pids()
        for root in CGROUP_ROOTS:
            top = root / self.slice
            if top.exists():
                for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                                   key=lambda p: len(p.parts), reverse=True) + [top]:
                    try:
                        path.rmdir()
                    except OSError:
                        pass
        remaining = [str(root / self.slice) for root in CGROUP_ROOTS if (root / self.slice).exists()]
        shutil.rmtree(self.base, ignore_errors=True)
        if left or remaining:
            raise AssertionError(f"lab teardown left processes {left} or cgroups {remaining}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- inspection ---------------------------------------------------------------------------------

    def cgroup_pids(self, sub: str = "") -> List[int]:
        """Every pid in the lab's cgroups (or under `sub`, relative to the user manager's)."""
        pids = set()
        for root in CGROUP_ROOTS:
            top = root / (f"{self.user_cg}/{sub}" if sub else self.slice)
            if not top.exists():
                continue
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
        return sorted(pids)

    def unit_pids(self, unit: str) -> List[int]:
        """The live processes of a user unit, read from its cgroup (wherever its slice put it)."""
        pids = set()
        for root in CGROUP_ROOTS:
            for folder in (root / self.user_cg).rglob(unit):
                if folder.is_dir():
                    pids.update(self.cgroup_pids(str(folder.relative_to(root / self.user_cg))))
        return sorted(p for p in pids if _alive(p))

    def environment(self) -> Dict[str, str]:
        """What a login session of the lab's user would have."""
        return {
            "HOME": str(self.home), "USER": "root" if self.uid == 0 else str(self.uid),
            "LOGNAME": "root" if self.uid == 0 else str(self.uid),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": f"/run/user/{self.uid}",
            "XDG_CONFIG_HOME": str(self.xdg / "config"), "XDG_DATA_HOME": str(self.xdg / "data"),
            "XDG_STATE_HOME": str(self.xdg / "state"), "XDG_CACHE_HOME": str(self.xdg / "cache"),
            "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0",
        }

    # --- commands inside the namespace ---------------------------------------------------------------

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30,
            env: Optional[Dict[str, str]] = None, input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run `argv` inside the lab's mount namespace as its user, with the lab environment."""
        full_env = {**self.environment(), **(env or {})}
        cmd = ["nsenter", "-t", str(self.manager_pid), "-m", f"--wd={self.base}",
               "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
               "env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run(["systemctl", "--user", "--no-pager", *args], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", *args], check=False).stdout

    def install_unit(self, name: str, text: str) -> Path:
        path = self.unit_dir / name
        path.write_text(textwrap.dedent(text))
        return path

    def drop_in(self, unit: str, name: str, text: str) -> Path:
        folder = self.unit_dir / f"{unit}.d"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.conf"
        path.write_text(textwrap.dedent(text))
        return path

    def wait_state(self, unit: str, *states: str, timeout: float = 15.0,
                   prop: str = "ActiveState") -> str:
        last = {}

        def check():
            nonlocal last
            last = self.show(unit, prop)
            return last.get(prop) in states
        if not _wait(check, timeout):
            raise AssertionError(f"{unit}: {prop} is {last.get(prop)!r}, not {states} after {timeout}s")
        return last[prop]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def lab_fixture(tmp_path_factory):
    """A fresh user manager per test; the teardown fails the test if anything is left (the `lab`
    fixture of conftest.py)."""
    reason = why_unavailable()
    if reason:
        unavailable(reason)
    # A short path: unit names and sockets live under it.
    base = Path(tmp_path_factory.mktemp("lab"))
    with Lab(base) as running:
        yield running

"""`overnight-agent doctor`: is this machine ready to run nights unattended?

Owns: the list of checks (git; the repository; the config; the codex binary on the PATH the
service gets and its version; a codex login or the provider's API key where the service can see
it; `ss` for network evidence of life; writable runtime folders; free disk; the unit or LaunchAgent installed and enabled, its
executable present; the timer's next start; lingering) and printing one line per check.
Must not: change anything (no file written, no unit started), or stop at the first problem:
every check runs, each says what to do. Exit 78 when any check fails, else 0 (warnings too).
"""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from . import config, exitcodes, gitops, install, literals, procs, units
from .exitcodes import ConfigError, OvernightError

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_FREE = 1 << 30          # below this free space: a warning
CRITICAL_FREE = 200 << 20   # below this: a failure (worktrees and logs need room)


@dataclass
class Check:
    status: str
    name: str
    detail: str


def _run(argv, env=None, timeout=20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, env=env)


def _first_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return lines[0] if lines else f"exit {proc.returncode}"


class Doctor:
    def __init__(self, manager: str, repo: Optional[Path], config_path: Optional[Path],
                 instance: bool = False, run: Callable = _run, env=None,
                 find_ss: Callable[[str], Optional[str]] = procs.ss_binary):
        self.manager = manager
        self.repo = repo
        self.config_path = config_path
        self.instance = instance
        self.run = run
        self.find_ss = find_ss
        self.env = os.environ if env is None else env
        self.checks: List[Check] = []
        self.loaded: Optional[config.Loaded] = None

    def add(self, status: str, name: str, detail: str) -> None:
        self.checks.append(Check(status, name, detail))

    def all(self) -> List[Check]:
        self.check_git()
        if self.check_repo_and_config():
            self.check_agent()
            self.check_liveness_tools()
            self.check_redaction_engine()
            self.check_paths()
        if self.manager == "systemd":
            self.check_systemd()
        else:
            self.check_launchd()
        return self.checks

    # --- the machine and the repository -------------------------------------------------------

    def check_git(self) -> None:
        if shutil.which("git") is None:
            self.add(FAIL, "git", "not installed; install git")
            return
        self.add(OK, "git", _first_line(self.run(["git", "--version"])))

    def check_repo_and_config(self) -> bool:
        try:
            root = gitops.primary_root((self.repo or Path.cwd()).resolve())
        except OvernightError as exc:
            self.add(FAIL, "repository", str(exc))
            return False
        self.add(OK, "repository", str(root))
        try:
            self.loaded = config.load(self.config_path.resolve() if self.config_path else None, root)
        except OvernightError as exc:
            self.add(FAIL, "config", str(exc))
            return False
        self.add(OK, "config", str(self.loaded.source or "built-in defaults (no config file)"))
        for line in config.warnings(self.loaded):
            self.add(WARN, "config", line)
        return True

    def check_agent(self) -> None:
        loaded = self.loaded
        keys = loaded.agent_keys
        label = keys.section if keys.binary else "agent"
        path = install.service_path(self.env)
        try:
            binary = install.codex_for_service(loaded, path)
        except ConfigError as exc:
            self.add(FAIL, label, str(exc))
            return
        if binary is None:
            self.add(OK, "agent", f"agent: {getattr(loaded.config, 'agent', '?')} (its argv names the program)")
            return
        try:
            version = self.run([binary, "--version"], env={**self.env, **_QUIET_VERSION})
        except (OSError, subprocess.SubprocessError) as exc:
            self.add(FAIL, label, f"{binary} --version failed: {exc}")
            return
        status = OK if version.returncode == 0 else FAIL
        self.add(status, label, f"{binary}: {_first_line(version)}")
        if loaded.config.agent == "codex":
            self.check_login(binary)
        else:
            self.check_provider_key(label, loaded.config.agent)

    def check_provider_key(self, label: str, agent: str) -> None:
        """claude and gemini read their API key from the environment: the service's must hold one."""
        from .agents import claude, gemini
        names = [n for n in {"claude": claude, "gemini": gemini}[agent].PROVIDER_VARS if not n.endswith("_URL")]
        if agent == "claude":
            section = self.loaded.config.claude
            passed = {k: v for k, v in self.env.items() if k in section.env_passthrough}
            refusal = claude.root_refusal(section.permission_mode, section.extra_args, os.geteuid(), passed)
            if refusal:
                self.add(FAIL, label, refusal)
        env_file = install.environment_file(self.env)
        in_file = install.env_file_names(env_file)
        for name in names:
            if name in in_file:
                self.add(OK, f"{label} key", f"{name} is set in {env_file}")
                return
        for name in names:
            if self.env.get(name):
                where = ("" if self.manager == "launchd" or self.env.get("OVERNIGHT_AGENT_SERVICE_MANAGER")
                         else f"; a service does not inherit it: put it in {env_file} (mode 0600)")
                self.add(WARN if where else OK, f"{label} key", f"{name} is set in this shell{where}")
                return
        self.add(FAIL, f"{label} key", f"none of {', '.join(names)} is set; put the key in {env_file}")

    def check_login(self, codex: str) -> None:
        home = self.loaded.paths.codex_home
        env = {**self.env, "CODEX_HOME": str(home)}
        try:
            proc = self.run([codex, "login", "status"], env=env)
            if proc.returncode == 0:
                self.add(OK, "codex login", f"{_first_line(proc)} (CODEX_HOME={home})")
                return
        except (OSError, subprocess.SubprocessError):
            pass
        keys = provider_keys(home)
        env_file = install.environment_file(self.env)
        in_file = install.env_file_names(env_file)
        for name in keys:
            if name in in_file:
                self.add(OK, "codex login", f"{name} is set in {env_file}")
                return
        for name in keys:
            if self.env.get(name):
                where = ("" if self.manager == "launchd" or self.env.get("OVERNIGHT_AGENT_SERVICE_MANAGER")
                         else f"; a service does not inherit it: put it in {env_file} (mode 0600)")
                self.add(WARN if where else OK, "codex login", f"{name} is set in this shell{where}")
                return
        self.add(FAIL, "codex login",
                 f"not logged in (CODEX_HOME={home}) and none of {', '.join(keys)} is set; run "
                 f"`CODEX_HOME={home} codex login`, or put the key in {env_file}")

    def check_liveness_tools(self) -> None:
        """`ss` (iproute2) tells a model streaming slowly from one that never answers; without
        it that evidence is gone, and a slow answer can be taken for a stall."""
        found = self.find_ss(install.service_path(self.env))
        if found:
            self.add(OK, "ss", f"{found}: network evidence of life available")
        elif sys.platform.startswith("linux"):
            self.add(WARN, "ss", "not on the service's PATH: a model that streams slowly may be taken "
                                 "for a stall; install iproute2 (e.g. apt-get install iproute2)")
        else:
            self.add(WARN, "ss", f"not available on {sys.platform}: no network evidence of life; "
                                 "stalls are judged on output, files and CPU only")

    def check_redaction_engine(self) -> None:
        """Redaction finds secrets' anchors with hyperscan; without it a flood of output costs
        the supervisor a core (pure Python is about twenty times slower)."""
        why = literals.why_not_fast()
        if why is None:
            self.add(OK, "redaction", "hyperscan finds secrets in the agent's output at GB/s")
        else:
            self.add(WARN, "redaction", f"pure Python ({why}): heavy output costs the supervisor CPU; "
                                        "`pip install hyperscan` where a wheel exists")

    def check_paths(self) -> None:
        paths = self.loaded.paths
        for name, path in (("run_root", paths.run_root),
                           ("session_worktree_root", paths.session_worktree_root),
                           ("ops_journal_worktree", paths.ops_journal_worktree)):
            existing = _existing(path)
            if os.access(existing, os.W_OK | os.X_OK):
                self.add(OK, f"writable {name}", str(path))
            else:
                self.add(FAIL, f"writable {name}", f"{path}: {existing} is not writable")
        existing = _existing(paths.run_root)
        free = shutil.disk_usage(existing).free
        text = f"{free / (1 << 30):.1f} GiB free under {existing}"
        self.add(OK if free >= MIN_FREE else WARN if free >= CRITICAL_FREE else FAIL, "free disk", text)

    # --- the service manager ---------------------------------------------------------------------

    def unit_names(self) -> dict:
        if self.instance and self.loaded is not None:
            return units.instance_units(units.escape_path(str(self.loaded.paths.repo_root)))
        return {"service": units.SERVICE, "timer": units.TIMER, "failed": units.FAILED}

    def check_systemd(self) -> None:
        reachable, said = install.user_manager_state(lambda argv, **kw: self.run(argv, timeout=20))
        if not reachable:
            self.add(FAIL, "systemd user manager", f"not reachable ({said}); log in to a session "
                     "with one, or as root run `loginctl enable-linger USER`")
            return
        self.add(OK, "systemd user manager", said)
        names = self.unit_names()
        folder = install.systemd_unit_dir(self.env)
        template = units.T_SERVICE if self.instance else units.SERVICE
        unit_file = folder / template
        if not unit_file.is_file():
            how = " --instance" if self.instance else ""
            self.add(FAIL, "unit installed", f"{unit_file} is missing; run `overnight-agent install "
                     f"--systemd{how} --repo REPO`")
            return
        self.add(OK, "unit installed", str(unit_file))
        shown = self.show(names["service"], "ExecStart")
        exe = _exec_path(shown.get("ExecStart", ""))
        if exe and not os.access(exe, os.X_OK):
            self.add(FAIL, "unit executable", f"{exe} (from {names['service']}) is missing; "
                     "install again from the current installation")
        elif exe:
            self.add(OK, "unit executable", exe)
        enabled = _first_line(self.run(["systemctl", "--user", "is-enabled", names["timer"]]))
        self.add(OK if enabled == "enabled" else FAIL, "timer enabled",
                 f"{names['timer']}: {enabled}" + ("" if enabled == "enabled" else
                                                   f"; run `systemctl --user enable --now {names['timer']}`"))
        timer = self.show(names["timer"], "NextElapseUSecRealtime", "ActiveState")
        next_start = timer.get("NextElapseUSecRealtime", "")
        if next_start and timer.get("ActiveState") == "active":
            self.add(OK, "next start", f"{next_start} ({names['timer']})")
        else:
            self.add(WARN, "next start", f"{names['timer']} is {timer.get('ActiveState', '?')}; "
                     f"`systemctl --user start {names['timer']}`")
        linger = install.linger_enabled(self.env.get("USER"))
        if linger is False:
            self.add(WARN, "linger", "off: the user manager (and a night) stops at logout; as root "
                     "run `loginctl enable-linger USER`")
        elif linger:
            self.add(OK, "linger", "on")

    def show(self, unit: str, *props: str) -> dict:
        proc = self.run(["systemctl", "--user", "show", unit, *(f"--property={p}" for p in props)])
        return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)

    def check_launchd(self) -> None:
        label = units.LAUNCHD_LABEL
        if self.instance and self.loaded is not None:
            label = f"{label}.{units.escape_path(str(self.loaded.paths.repo_root))}"
        plist, log_path = install.launchd_paths(label, self.env)
        if not plist.is_file():
            self.add(FAIL, "LaunchAgent installed", f"{plist} is missing; run `overnight-agent install "
                     "--launchd --repo REPO`")
            return
        self.add(OK, "LaunchAgent installed", str(plist))
        if shutil.which("launchctl") is None:
            self.add(FAIL, "launchd", "launchctl is not installed (launchd is macOS's)")
            return
        proc = self.run(["launchctl", "print", f"gui/{os.getuid()}/{label}"])
        self.add(OK if proc.returncode == 0 else FAIL, "LaunchAgent loaded",
                 label if proc.returncode == 0 else f"{label} is not loaded; run install again")
        self.add(OK, "log", str(log_path))


# `gemini --version` starts the whole CLI: keep it from relaunching itself and phoning home.
_QUIET_VERSION = {"GEMINI_CLI_NO_RELAUNCH": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def provider_keys(codex_home: Path) -> List[str]:
    """API key variables codex may use: the built-in ones and every env_key in config.toml."""
    from .agents.codex import PROVIDER_KEY_VARS
    keys = list(PROVIDER_KEY_VARS)
    try:
        import tomllib
        with open(codex_home / "config.toml", "rb") as handle:
            data = tomllib.load(handle)
    except (ImportError, OSError, ValueError):
        return keys
    providers = data.get("model_providers") if isinstance(data, dict) else None
    for provider in (providers or {}).values() if isinstance(providers, dict) else ():
        if isinstance(provider, dict) and isinstance(provider.get("env_key"), str):
            keys.append(provider["env_key"])
    return keys


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _exec_path(exec_start: str) -> Optional[str]:
    """The program of `systemctl show -p ExecStart` (`{ path=/x ; argv[]=... }`)."""
    marker = "path="
    if marker not in exec_start:
        return None
    return exec_start.split(marker, 1)[1].split(" ;", 1)[0].strip()


def doctor(manager: str, repo: Optional[Path], config_path: Optional[Path], instance: bool = False,
           out=None) -> int:
    out = out or sys.stdout
    checks = Doctor(manager, repo, config_path, instance).all()
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{check.status:4}  {check.name:{width}}  {check.detail}", file=out)
    failed = [c for c in checks if c.status == FAIL]
    print(f"{len(failed)} problem{'s' if len(failed) != 1 else ''}"
          + (f"; fix the FAIL line{'s' if len(failed) != 1 else ''} above" if failed else
             "; ready for tonight"), file=out)
    return exitcodes.CONFIG if failed else 0

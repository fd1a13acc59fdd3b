"""`overnight-agent install` and `uninstall`: put the units (or the LaunchAgent) in place.

Owns: gathering the values the units need (the absolute path of this installed executable, the
repository, the config, the PATH the service will have, the stop timeout from the config), the
user's unit folder, writing and removing our files, and the `systemctl --user` / `launchctl`
calls that follow. Every step is printed. Must not: write a unit whose night could not start
(a missing repository, a bad config, no codex on the PATH it will have, a start time outside
the night window: refused, exit 78, nothing written), remove a file we did not write, or
touch the operator's API keys.

The unit texts come from `units`; `doctor` checks the result.
"""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import config, gitops, timeparse, units
from .exitcodes import ConfigError

Runner = Callable[..., subprocess.CompletedProcess]


def _run(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


@dataclass(frozen=True)
class Target:
    """What to install: for which manager, which repository and config, how."""

    manager: str                      # "systemd" | "launchd"
    repo: Path                        # the primary working tree
    config: Optional[Path]            # None: the repository's own config file (or defaults)
    loaded: config.Loaded
    instance: bool = False            # template units / a label of its own, one per repository
    start_at: str = units.DEFAULT_START


@dataclass
class Plan:
    files: Dict[Path, bytes] = field(default_factory=dict)
    commands: List[List[str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


# --- where things go ------------------------------------------------------------------------------

def systemd_unit_dir(env=None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user"


def environment_file(env=None) -> Path:
    """The optional file the units read for API keys (`%E/overnight-agent/environment`)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "overnight-agent" / "environment"


def launchd_paths(label: str, env=None) -> Tuple[Path, Path]:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    return (home / "Library" / "LaunchAgents" / f"{label}.plist",
            home / "Library" / "Logs" / "overnight-agent" / f"{label}.log")


def launchd_label(target: Target) -> str:
    if not target.instance:
        return units.LAUNCHD_LABEL
    return f"{units.LAUNCHD_LABEL}.{units.escape_path(str(target.repo))}"


def command_words() -> Tuple[str, ...]:
    """How a service runs this installation: its `overnight-agent` script, by absolute path."""
    beside = Path(sys.executable).parent / "overnight-agent"
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside),)
    found = shutil.which("overnight-agent")
    if found:
        return (str(Path(found).absolute()),)
    return (sys.executable, "-m", "overnight_agent")


def service_path(env=None) -> str:
    """The PATH a service gets: this shell's absolute entries, in order, without repeats."""
    env = os.environ if env is None else env
    seen: List[str] = []
    for entry in env.get("PATH", "").split(os.pathsep):
        if entry.startswith("/") and entry not in seen:
            seen.append(entry)
    for entry in ("/usr/local/bin", "/usr/bin", "/bin"):
        if entry not in seen:
            seen.append(entry)
    return os.pathsep.join(seen)


def systemd_version(runner: Runner = _run) -> int:
    try:
        out = runner(["systemctl", "--version"]).stdout
        return int(out.split()[1])
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return 0


# --- checks shared with doctor ----------------------------------------------------------------------

def resolve_target(manager: str, repo: Optional[Path], config_path: Optional[Path], instance: bool,
                   start_at: Optional[str]) -> Target:
    """Everything `install` needs, or a ConfigError naming what is missing."""
    repo_root = gitops.primary_root((repo or Path.cwd()).resolve())
    cfg_path = config_path.resolve() if config_path else None
    if cfg_path is not None and not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: --config: no such file")
    loaded = config.load(cfg_path, repo_root)
    at = start_at or units.DEFAULT_START
    try:
        at_time = timeparse.parse_clock(at)
    except ValueError as exc:
        raise ConfigError(f"--at: {exc}") from None
    at = f"{at_time.hour:02d}:{at_time.minute:02d}"
    schedule = loaded.config.schedule
    start, end = timeparse.parse_clock(schedule.window_start), timeparse.parse_clock(schedule.deadline)
    probe = timeparse.local_now().replace(hour=at_time.hour, minute=at_time.minute, second=0,
                                          microsecond=0)
    if not timeparse.in_night_window(probe, start, end):
        raise ConfigError(
            f"--at {at}: outside the night window {schedule.window_start}-{schedule.deadline} "
            f"(schedule.window_start, schedule.deadline of {loaded.source or '<defaults>'}): a night "
            "started then would exit at once; pick a time inside the window")
    return Target(manager=manager, repo=repo_root, config=cfg_path, loaded=loaded,
                  instance=instance, start_at=at)


def codex_for_service(loaded: config.Loaded, path: str) -> Optional[str]:
    """The agent CLI the service will run (None when the config uses no codex binary)."""
    return loaded.agent_binary(search_path=path, whose="the service's")


def user_manager_state(runner: Runner = _run) -> Tuple[bool, str]:
    """(reachable, what `systemctl --user is-system-running` said)."""
    if shutil.which("systemctl") is None:
        return False, "systemctl is not installed"
    try:
        proc = runner(["systemctl", "--user", "is-system-running"], timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    state = said[0] if said else f"exit {proc.returncode}"
    return state in ("running", "degraded", "starting", "initializing", "maintenance"), state


def linger_enabled(user: Optional[str] = None) -> Optional[bool]:
    """Whether the user manager outlives the user's sessions (None: cannot tell)."""
    user = user or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        return None
    return Path("/var/lib/systemd/linger", user).exists()


# --- plans --------------------------------------------------------------------------------------------

def systemd_values(target: Target, runner: Runner = _run, env=None) -> units.Values:
    stop = target.loaded.config.stop
    return units.Values(
        command=command_words(), repo=str(target.repo),
        config=str(target.config) if target.config else None, path=service_path(env),
        start_at=target.start_at, stop_timeout=units.stop_timeout(stop.sigint_grace, stop.sigterm_grace),
        restart_mode_direct=systemd_version(runner) >= 254)


def systemd_names(target: Target) -> Dict[str, str]:
    if target.instance:
        return units.instance_units(units.escape_path(str(target.repo)))
    return {"service": units.SERVICE, "timer": units.TIMER, "failed": units.FAILED}


def plan_systemd_install(target: Target, runner: Runner = _run, env=None) -> Plan:
    values = systemd_values(target, runner, env)
    folder = systemd_unit_dir(env)
    plan = Plan()
    for name, text in units.systemd_units(values, template=target.instance).items():
        plan.files[folder / name] = text.encode()
    if target.instance:
        instance = units.escape_path(str(target.repo))
        for rel, text in units.instance_drop_ins(values, instance).items():
            plan.files[folder / rel] = text.encode()
    timer = systemd_names(target)["timer"]
    plan.commands = [["systemctl", "--user", "daemon-reload"],
                     ["systemctl", "--user", "enable", "--now", timer]]
    return plan


def plan_launchd_install(target: Target, env=None) -> Plan:
    label = launchd_label(target)
    plist, log_path = launchd_paths(label, env)
    argv = [*command_words(), "run", "--repo", str(target.repo)]
    if target.config:
        argv += ["--config", str(target.config)]
    stop = target.loaded.config.stop
    data = units.launchd_plist(label=label, argv=argv, log_path=str(log_path),
                               path=service_path(env), start_at=target.start_at,
                               exit_timeout=units.stop_timeout(stop.sigint_grace, stop.sigterm_grace))
    domain = f"gui/{os.getuid()}"
    plan = Plan(files={plist: data})
    plan.commands = [["launchctl", "bootout", f"{domain}/{label}"],
                     ["launchctl", "bootstrap", domain, str(plist)],
                     ["launchctl", "enable", f"{domain}/{label}"]]
    plan.notes.append(f"log: {log_path}")
    return plan


# --- doing it -------------------------------------------------------------------------------------------

def install(manager: str, repo: Optional[Path], config_path: Optional[Path], instance: bool = False,
            start_at: Optional[str] = None, dry_run: bool = False, runner: Runner = _run,
            out=None) -> int:
    out = out or sys.stdout
    target = resolve_target(manager, repo, config_path, instance, start_at)
    path = service_path()
    agent = codex_for_service(target.loaded, path)
    if manager == "systemd":
        if not dry_run:
            reachable, state = user_manager_state(runner)
            if not reachable:
                raise ConfigError(
                    f"install --systemd: no systemd user manager answers ({state}); log in to a "
                    "session with one, or as root run `loginctl enable-linger USER`; nothing was written")
        plan = plan_systemd_install(target, runner)
    else:
        if not dry_run and shutil.which("launchctl") is None:
            raise ConfigError("install --launchd: launchctl is not installed (launchd is macOS's; "
                              "on Linux use --systemd); nothing was written")
        plan = plan_launchd_install(target)
    print(f"overnight-agent install --{manager}{' (dry run: nothing is changed)' if dry_run else ''}",
          file=out)
    print(f"  repository  {target.repo}", file=out)
    print(f"  config      {target.config or target.loaded.source or 'built-in defaults'}"
          f"{'' if target.config else ' (found at each start)'}", file=out)
    if manager == "systemd":
        print(f"  units       {', '.join(systemd_names(target).values())}", file=out)
    if agent:
        print(f"  agent       {agent}", file=out)
    print(f"  starts at   {target.start_at} every day", file=out)
    _apply(plan, dry_run, runner, out, ignore_failure=("bootout",))
    if dry_run:
        return 0
    if manager == "systemd":
        names = systemd_names(target)
        timers = runner(["systemctl", "--user", "list-timers", "--all", "--no-pager", names["timer"]])
        print(timers.stdout.rstrip(), file=out)
        unit = names["service"]
        print(f"watch it live:  journalctl --user -u {unit} -f", file=out)
        print(f"start tonight's night now:  systemctl --user start {unit}", file=out)
        print(f"stop it:  systemctl --user stop {unit}", file=out)
        if linger_enabled() is False:
            print("note: lingering is off for this user: the user manager (and the night) stops when "
                  "you log out; as root run `loginctl enable-linger USER`", file=out)
    _note_keys(target, out)
    for note in plan.notes:
        print(note, file=out)
    return 0


_PAST = {"write": "written", "update": "updated", "unchanged": "unchanged"}


def _apply(plan: Plan, dry_run: bool, runner: Runner, out, ignore_failure=()) -> None:
    for path, data in plan.files.items():
        old = path.read_bytes() if path.is_file() else None
        verb = "unchanged" if old == data else ("update" if old is not None else "write")
        if dry_run:
            print(f"--- would {verb} {path}", file=out)
            out.write(data.decode())
            continue
        if old != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        print(f"  {_PAST[verb]:10}  {path}", file=out)
    for argv in plan.commands:
        if dry_run:
            print(f"--- would run: {' '.join(argv)}", file=out)
            continue
        proc = runner(argv)
        said = (proc.stderr or proc.stdout).strip().replace("\n", "; ")
        if proc.returncode != 0 and not any(word in argv for word in ignore_failure):
            raise ConfigError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {said}")
        failed = f"  (exit {proc.returncode}: {said})" if proc.returncode else ""
        print(f"  ran         {' '.join(argv)}{failed}", file=out)


def _note_keys(target: Target, out) -> None:
    """Say when a provider key is in this shell but will not be in the service's environment."""
    from .agents.codex import PROVIDER_KEY_VARS
    env_file = environment_file()
    in_file = env_file_names(env_file)
    for name in PROVIDER_KEY_VARS:
        if os.environ.get(name) and name not in in_file and target.manager == "systemd":
            print(f"note: {name} is set in this shell but a service does not inherit it; put "
                  f"`{name}=...` in {env_file} (mode 0600) if codex needs it", file=out)


def env_file_names(path: Path) -> List[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line.split("=", 1)[0].strip() for line in lines
            if "=" in line and not line.lstrip().startswith("#")]


def uninstall(manager: str, repo: Optional[Path], instance: bool = False, dry_run: bool = False,
              runner: Runner = _run, out=None) -> int:
    out = out or sys.stdout
    print(f"overnight-agent uninstall --{manager}{' (dry run: nothing is changed)' if dry_run else ''}",
          file=out)
    if manager == "launchd":
        label = units.LAUNCHD_LABEL
        if instance:
            label = f"{label}.{units.escape_path(str(gitops.primary_root((repo or Path.cwd()).resolve())))}"
        plist, _ = launchd_paths(label)
        ours = _ours([plist], out)
        if not ours:
            print("  nothing installed", file=out)
            return 0
        plan = Plan(commands=[["launchctl", "bootout", f"gui/{os.getuid()}/{label}"]])
        _remove(plan, ours, dry_run, runner, out, ignore_failure=("bootout",))
        return 0
    folder = systemd_unit_dir()
    if instance:
        repo_root = gitops.primary_root((repo or Path.cwd()).resolve())
        names = units.instance_units(units.escape_path(str(repo_root)))
        files = [folder / f"{names['service']}.d" / "overnight-agent.conf",
                 folder / f"{names['failed']}.d" / "overnight-agent.conf"]
        wants = folder / "timers.target.wants"
        enabled = os.path.lexists(wants / names["timer"])  # an instance needs no file of its own
        others = [p for p in wants.glob("overnight-agent@*.timer") if p.name != names["timer"]]
        if not others:
            files += [folder / units.T_SERVICE, folder / units.T_TIMER, folder / units.T_FAILED]
        else:
            print(f"  keeping     the template units: {len(others)} other instance(s) enabled", file=out)
    else:
        names = {"service": units.SERVICE, "timer": units.TIMER, "failed": units.FAILED}
        files = [folder / units.SERVICE, folder / units.TIMER, folder / units.FAILED]
        enabled = False
    ours = _ours(files, out)
    if not ours and not enabled:
        print("  nothing installed", file=out)
        return 0
    plan = Plan(commands=[
        ["systemctl", "--user", "disable", "--now", names["timer"]],
        ["systemctl", "--user", "stop", names["service"]],
    ])
    _remove(plan, ours, dry_run, runner, out, ignore_failure=("disable", "stop"))
    after = [["systemctl", "--user", "daemon-reload"],
             ["systemctl", "--user", "reset-failed", names["service"], names["failed"]]]
    _apply(Plan(commands=after), dry_run, runner, out, ignore_failure=("reset-failed",))
    return 0


def _ours(files: List[Path], out) -> List[Path]:
    """The files among `files` that install wrote (others are named and left alone)."""
    ours = []
    for path in files:
        if not path.exists():
            continue
        if not path.read_bytes().startswith(units.HEADER.encode()):
            print(f"  leaving     {path} (not written by overnight-agent install)", file=out)
            continue
        ours.append(path)
    return ours


def _remove(plan: Plan, ours: List[Path], dry_run: bool, runner: Runner, out, ignore_failure=()) -> None:
    """Run the plan's commands, then remove the files."""
    _apply(plan, dry_run, runner, out, ignore_failure=ignore_failure)
    for path in ours:
        if dry_run:
            print(f"--- would remove {path}", file=out)
            continue
        path.unlink()
        if path.parent.name.endswith(".d") and not any(path.parent.iterdir()):
            path.parent.rmdir()
        print(f"  removed     {path}", file=out)

"""The text of the systemd units and the launchd job that run a night, rendered from values.

Owns: every line of `overnight-agent.service`/`.timer`, the template units
`overnight-agent@.service`/`.timer`, the OnFailure units `overnight-agent-failed[@].service`,
the per-instance drop-in, the LaunchAgent plist; quoting for unit files; systemd's path
escaping (`systemd-escape --path`). Must not: write files, run systemctl or launchctl, or look
at the machine (`install` gathers the values and does the effects).

`packaging/` holds these files rendered with example values (`python -m overnight_agent.units
packaging` rewrites them; a test checks they are current).

Why each service setting:
- `Type=notify`, `NotifyAccess=main`: the unit is `active` once the night is set up (READY=1
  from the supervisor's main loop as it starts, never from a helper process).
- `WatchdogSec=`: the main loop pings every pass; a loop stuck longer is killed (SIGABRT) and
  restarted, and the restart resumes the same thread. It must outlast the longest blocking step
  of a pass (a checkpoint commit on a large repository): minutes, not seconds.
- `Restart=on-failure` but `RestartPreventExitStatus=74 75 78`: a full disk, a held lock or a
  bad config is not fixed by trying again (see docs/exit-codes.md).
- `KillMode=control-group`: `systemctl --user stop` reaches every process of the night, a
  setsid'd grandchild of the agent included; `TimeoutStopSec=` outlasts our own escalation
  (SIGINT grace + SIGTERM grace + SIGKILL grace) so systemd's SIGKILL is the last resort.
- `OnFailure=`: once systemd gives up on a night (restarts exhausted, or an exit restarting
  cannot fix), `overnight-agent-failed*.service` runs `overnight-agent notify-failure`.
- `Environment=OVERNIGHT_AGENT_SERVICE_MANAGER=systemd`: `run` knows not to daemonize and
  leaves failure announcements to OnFailure=.
- `Environment=PATH=`: the PATH of the shell that ran `install` (a user manager's own PATH rarely
  holds `codex` and `node`).
- `EnvironmentFile=-%E/overnight-agent/environment`: optional, mode 0600, for the provider's API
  key; never written by `install`.
"""
import math
import plistlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HEADER = "# Written by `overnight-agent install"
SERVICE, TIMER, FAILED = "overnight-agent.service", "overnight-agent.timer", "overnight-agent-failed.service"
T_SERVICE, T_TIMER, T_FAILED = ("overnight-agent@.service", "overnight-agent@.timer",
                                "overnight-agent-failed@.service")
LAUNCHD_LABEL = "overnight-agent"
ENVIRONMENT_FILE = "%E/overnight-agent/environment"
DEFAULT_START = "19:00"
WATCHDOG = "5min"
RESTART_SEC = "30s"
KILL_GRACE = 2.0          # the supervisor's own wait after SIGKILL (see night._make_supervisor)
STOP_MARGIN = 30          # seconds on top of our escalation: a checkpoint commit, writing state


@dataclass(frozen=True)
class Values:
    """Everything a unit needs, as plain strings (rendering quotes and escapes them)."""

    command: Tuple[str, ...]      # how to run overnight-agent, e.g. ("/home/u/.venv/bin/overnight-agent",)
    repo: Optional[str]           # the repository; None in template units (they use %f)
    config: Optional[str] = None  # --config; None: the repository's own config file
    path: str = "/usr/local/bin:/usr/bin:/bin"
    start_at: str = DEFAULT_START
    stop_timeout: int = 52       # see stop_timeout(): for the default graces
    watchdog: str = WATCHDOG
    restart_sec: str = RESTART_SEC
    restart_mode_direct: bool = False  # systemd >= 254: keep OnFailure= for the final failure only
    specifiers: bool = False      # the strings hold intended specifiers (%h): do not escape `%`

    def word(self, text: str) -> str:
        return exec_quote(text, self.specifiers)

    def text(self, text: str) -> str:
        return text if self.specifiers else spec_escape(text)


# --- quoting and escaping --------------------------------------------------------------------

_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def spec_escape(text: str) -> str:
    """Text for a unit setting that expands specifiers: `%` becomes `%%`."""
    return text.replace("%", "%%")


def exec_quote(word: str, specifiers: bool = False) -> str:
    """One ExecStart= word: `%` and `$` escaped, quoted when it holds spaces or quotes."""
    text = (word if specifiers else spec_escape(word)).replace("$", "$$")
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _setting_quote(text: str) -> str:
    """A whole `Environment=` assignment, quoted when it holds spaces or quotes."""
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape_path(path: str) -> str:
    """`systemd-escape --path PATH`: the instance name of a template unit for a folder."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        return "-"
    text = "/".join(parts)
    out = []
    for i, byte in enumerate(text.encode("utf-8")):
        char = chr(byte)
        if char == "/":
            out.append("-")
        elif (char.isascii() and (char.isalnum() or char in ":_.")) and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def instance_units(instance: str) -> Dict[str, str]:
    """The concrete unit names of one template instance."""
    return {"service": f"overnight-agent@{instance}.service",
            "timer": f"overnight-agent@{instance}.timer",
            "failed": f"overnight-agent-failed@{instance}.service"}


def stop_timeout(sigint_grace: float, sigterm_grace: float) -> int:
    """TimeoutStopSec= for a config: our whole escalation plus a margin, in whole seconds."""
    return int(math.ceil(sigint_grace + sigterm_grace + KILL_GRACE)) + STOP_MARGIN


def on_calendar(start_at: str) -> str:
    hours, minutes = (int(p) for p in start_at.split(":"))
    return f"*-*-* {hours:02d}:{minutes:02d}:00"


# --- systemd ---------------------------------------------------------------------------------

_HEAD = """\
{header} --systemd{how}`.
# Removed by `overnight-agent uninstall --systemd{uninstall_args}`. Change a setting with
# `systemctl --user edit {unit}` (a drop-in): installing again rewrites this file.
# Operator's guide: docs/operator-guide.md.
"""

_SERVICE = """\
[Unit]
Description=overnight-agent: a night of unattended agent work on {where}
OnFailure={on_failure}
# Restarted at most 5 times an hour; then the unit fails and OnFailure= announces it.
StartLimitIntervalSec=1h
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={command} run --repo {repo}{config}
Environment=OVERNIGHT_AGENT_SERVICE_MANAGER=systemd
Environment=PYTHONUNBUFFERED=1
Environment={path}
EnvironmentFile=-{environment_file}
WatchdogSec={watchdog}
Restart=on-failure
RestartSec={restart_sec}
# 74: run_root's disk is full; 75: another supervisor holds the lock; 78: a config or state
# error. Restarting fixes none of them.
RestartPreventExitStatus=74 75 78
{restart_mode}# Setup (stopping leftovers, worktrees) happens before READY=1.
TimeoutStartSec=5min
KillMode=control-group
# Longer than the supervisor's own stop: SIGINT grace + SIGTERM grace + SIGKILL grace + margin.
TimeoutStopSec={stop_timeout}s
SyslogIdentifier=overnight-agent
"""

_TIMER = """\
[Unit]
Description=overnight-agent: start the night on {where} at {start_at}

[Timer]
OnCalendar={calendar}
# Missed while the machine was off: start at boot (outside the night window `run` just exits 0).
Persistent=true
Unit={service}

[Install]
WantedBy=timers.target
"""

_FAILED = """\
[Unit]
Description=overnight-agent: announce a failed night on {where}

[Service]
Type=oneshot
ExecStart={command} notify-failure --repo {repo}{config} --unit {unit}
Environment=OVERNIGHT_AGENT_SERVICE_MANAGER=systemd
Environment={path}
EnvironmentFile=-{environment_file}
TimeoutStartSec=5min
SyslogIdentifier=overnight-agent
"""


def _common(values: Values) -> Dict[str, str]:
    return {"command": " ".join(values.word(w) for w in values.command),
            "path": _setting_quote(values.text(f"PATH={values.path}")),
            "environment_file": ENVIRONMENT_FILE,
            "config": f" --config {values.word(values.config)}" if values.config else "",
            "start_at": values.start_at, "calendar": on_calendar(values.start_at)}


def systemd_units(values: Values, template: bool = False) -> Dict[str, str]:
    """{file name: text} of the three units: service, timer and OnFailure handler."""
    common = _common(values)
    restart_mode = ("# systemd >= 254: no OnFailure= for failures that are restarted.\n"
                    "RestartMode=direct\n" if values.restart_mode_direct else "")
    if template:
        names = (T_SERVICE, T_TIMER, T_FAILED)
        repo, where, how = "%f", "%f", " --instance"
        service_ref, unit_ref, on_failure = "overnight-agent@%i.service", "overnight-agent@%i.service", \
            "overnight-agent-failed@%i.service"
        common["config"] = ""  # an instance's --config goes in its drop-in (`instance_drop_ins`)
    else:
        names = (SERVICE, TIMER, FAILED)
        repo, where, how = values.word(values.repo), values.text(values.repo), ""
        service_ref, unit_ref, on_failure = SERVICE, SERVICE, FAILED
    texts = {
        names[0]: _SERVICE.format(**common, repo=repo, where=where, on_failure=on_failure,
                                  watchdog=values.watchdog, restart_sec=values.restart_sec,
                                  restart_mode=restart_mode, stop_timeout=values.stop_timeout),
        names[1]: _TIMER.format(**common, where=where, service=service_ref),
        names[2]: _FAILED.format(**common, repo=repo, where=where, unit=unit_ref),
    }
    uninstall_args = " --instance --repo REPO" if template else ""
    return {name: _HEAD.format(header=HEADER, how=how, uninstall_args=uninstall_args,
                               unit=name.replace("@.", "@INSTANCE.")) + text
            for name, text in texts.items()}


def instance_drop_ins(values: Values, instance: str) -> Dict[str, str]:
    """Drop-ins giving one template instance its --config ({relative path: text})."""
    if not values.config:
        return {}
    common = _common(values)
    units = instance_units(instance)
    head = f"{HEADER} --systemd --instance --config`: this instance's config file.\n"
    return {
        f"{units['service']}.d/overnight-agent.conf":
            head + "[Service]\nExecStart=\n"
            f"ExecStart={common['command']} run --repo %f{common['config']}\n",
        f"{units['failed']}.d/overnight-agent.conf":
            head + "[Service]\nExecStart=\n"
            f"ExecStart={common['command']} notify-failure --repo %f{common['config']} "
            f"--unit overnight-agent@%i.service\n",
    }


# --- launchd ---------------------------------------------------------------------------------

def launchd_plist(*, label: str, argv: List[str], log_path: str, path: str, start_at: str,
                  exit_timeout: int) -> bytes:
    """A LaunchAgent (~/Library/LaunchAgents/<label>.plist): `run` in the foreground at start_at.

    No daemonizing: launchd tracks the process it started. KeepAlive on unsuccessful exit
    restarts a crashed night (launchd cannot be told to spare 74, 75 and 78: under launchd `run`
    exits 0 after printing them, see docs/exit-codes.md). ExitTimeOut: SIGTERM to SIGKILL.
    """
    hours, minutes = (int(p) for p in start_at.split(":"))
    job = {
        "Label": label,
        "ProgramArguments": list(argv),
        "StartCalendarInterval": {"Hour": hours, "Minute": minutes},
        "RunAtLoad": False,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 30,
        "ExitTimeOut": exit_timeout,
        "ProcessType": "Background",
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
        "EnvironmentVariables": {"OVERNIGHT_AGENT_SERVICE_MANAGER": "launchd",
                                 "PYTHONUNBUFFERED": "1", "PATH": path},
    }
    return plistlib.dumps(job, sort_keys=False)


# Keys and types a LaunchAgent of ours must have (checked by tests; launchd ignores a job whose
# key has the wrong type, and there is no plutil/launchctl on Linux to catch it).
PLIST_SCHEMA = {
    "Label": str, "ProgramArguments": list, "StartCalendarInterval": dict, "RunAtLoad": bool,
    "KeepAlive": dict, "ThrottleInterval": int, "ExitTimeOut": int, "ProcessType": str,
    "StandardOutPath": str, "StandardErrorPath": str, "EnvironmentVariables": dict,
}


def check_plist(job: dict) -> List[str]:
    """Problems with a loaded plist dict (empty when it is a well-formed job of ours)."""
    problems = []
    for key, kind in PLIST_SCHEMA.items():
        if key not in job:
            problems.append(f"{key}: missing")
        elif not isinstance(job[key], kind) or (kind is int and isinstance(job[key], bool)):
            problems.append(f"{key}: expected {kind.__name__}, got {type(job[key]).__name__}")
    for key in set(job) - set(PLIST_SCHEMA):
        problems.append(f"{key}: not a key we write")
    args = job.get("ProgramArguments")
    if isinstance(args, list) and (not args or not all(isinstance(a, str) for a in args)
                                   or not args[0].startswith("/")):
        problems.append("ProgramArguments: expected strings, the first an absolute path")
    cal = job.get("StartCalendarInterval")
    if isinstance(cal, dict):
        for key, top in (("Hour", 23), ("Minute", 59)):
            value = cal.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                problems.append(f"StartCalendarInterval.{key}: expected an integer 0-{top}")
        for key in set(cal) - {"Hour", "Minute"}:
            problems.append(f"StartCalendarInterval.{key}: not a key we write")
    keep = job.get("KeepAlive")
    if isinstance(keep, dict) and keep != {"SuccessfulExit": False}:
        problems.append("KeepAlive: expected {SuccessfulExit: false}")
    env = job.get("EnvironmentVariables")
    if isinstance(env, dict) and not all(isinstance(v, str) for v in env.values()):
        problems.append("EnvironmentVariables: every value must be a string")
    for key in ("StandardOutPath", "StandardErrorPath"):
        if isinstance(job.get(key), str) and not job[key].startswith("/"):
            problems.append(f"{key}: expected an absolute path (launchd does not expand ~)")
    return problems


# --- the reference copies in packaging/ ------------------------------------------------------

EXAMPLE_HOME = "/Users/you"


def reference_files() -> Dict[str, bytes]:
    """packaging/ as `install` would write it for ~/.local/bin/overnight-agent and ~/src/project."""
    from . import config
    stop = config.parse("version: 2\n", "<defaults>").stop
    timeout = stop_timeout(stop.sigint_grace, stop.sigterm_grace)
    values = Values(command=("%h/.local/bin/overnight-agent",), repo="%h/src/project",
                    path="%h/.local/bin:/usr/local/bin:/usr/bin:/bin", stop_timeout=timeout,
                    specifiers=True)
    files = {f"systemd/{name}": text.encode() for name, text in systemd_units(values).items()}
    files.update({f"systemd/{name}": text.encode()
                  for name, text in systemd_units(values, template=True).items()})
    files[f"launchd/{LAUNCHD_LABEL}.plist"] = launchd_plist(
        label=LAUNCHD_LABEL,
        argv=[f"{EXAMPLE_HOME}/.local/bin/overnight-agent", "run", "--repo", f"{EXAMPLE_HOME}/src/project"],
        log_path=f"{EXAMPLE_HOME}/Library/Logs/overnight-agent/{LAUNCHD_LABEL}.log",
        path=f"{EXAMPLE_HOME}/.local/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        start_at=DEFAULT_START, exit_timeout=timeout)
    return files


def write_reference(folder: Path) -> List[Path]:
    written = []
    for rel, data in reference_files().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


if __name__ == "__main__":  # python -m overnight_agent.units packaging
    for written in write_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "packaging")):
        print(written)

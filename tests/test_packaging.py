"""Fast checks of the units, the LaunchAgent and `install` that need no service manager.

`systemd-analyze --user verify` must print nothing for every unit we ship or render (it exits 0
on unknown keys and bad values, so only empty output proves a unit clean); the plist is checked
key by key and type by type (there is no plutil on Linux, and plistlib accepts wrong types).
"""
import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from overnight_agent import config, exitcodes, install, units

import helpers
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
OA = str(Path(sys.executable).parent / "overnight-agent")


def verify(files, home: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    require("systemd-analyze", "the unit files are checked with `systemd-analyze --user verify`")
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True, mode=0o700)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "--user", "verify", *map(str, files)], env=env,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=60)


def unit_settings(text: str) -> dict:
    """{key: [values]} of a unit file, comments and sections aside."""
    found = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


# --- packaging/ ---------------------------------------------------------------------------------

def test_packaging_holds_exactly_what_install_renders():
    expected = units.reference_files()
    shipped = {str(p.relative_to(PACKAGING)): p.read_bytes()
               for p in PACKAGING.rglob("*") if p.is_file() and p.name != "README.md"}
    assert sorted(shipped) == sorted(expected)
    for rel, data in expected.items():
        assert shipped[rel] == data, (f"packaging/{rel} is stale: run "
                                      "`python -m overnight_agent.units packaging`")


def test_every_shipped_unit_verifies_with_empty_output(tmp_path):
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    os.symlink(OA, home / ".local" / "bin" / "overnight-agent")  # what %h/.local/bin names
    files = sorted((PACKAGING / "systemd").iterdir())
    assert len(files) == 6
    proc = verify(files, home, tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # Instances of the templates too (an instance takes its repository from %f).
    instance = units.escape_path("/srv/src/my project")
    for template in (units.T_SERVICE, units.T_TIMER, units.T_FAILED):
        shutil.copy(PACKAGING / "systemd" / template, tmp_path / template)
    names = [n.replace("@.", f"@{instance}.") for n in (units.T_SERVICE, units.T_TIMER, units.T_FAILED)]
    proc = verify([tmp_path / n for n in names], home, tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_a_broken_unit_is_not_silently_accepted(tmp_path):
    """The check above would catch a typo: systemd-analyze prints it (and still exits 0)."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    os.symlink(OA, home / ".local" / "bin" / "overnight-agent")
    text = (PACKAGING / "systemd" / "overnight-agent.service").read_text()
    bad = tmp_path / "overnight-agent.service"
    bad.write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
    shutil.copy(PACKAGING / "systemd" / "overnight-agent-failed.service", tmp_path)
    proc = verify([bad], home, tmp_path)
    assert proc.returncode == 0 and "Unknown key 'WatchdogSecs'" in proc.stdout + proc.stderr


def test_the_service_settings_the_night_relies_on():
    values = units.Values(command=(OA,), repo="/srv/repo")
    rendered = units.systemd_units(values)
    service = unit_settings(rendered[units.SERVICE])
    expected = {"Type": ["notify"], "NotifyAccess": ["main"], "Restart": ["on-failure"],
                "KillMode": ["control-group"], "OnFailure": [units.FAILED],
                "RestartPreventExitStatus": [f"{exitcodes.DISK_FULL} {exitcodes.LOCKED} {exitcodes.CONFIG}"],
                "WatchdogSec": ["5min"]}
    for key, value in expected.items():
        assert service[key] == value, key
    assert service["ExecStart"] == [f"{OA} run --repo /srv/repo"]
    assert "OVERNIGHT_AGENT_SERVICE_MANAGER=systemd" in service["Environment"]
    timer = unit_settings(rendered[units.TIMER])
    assert timer["OnCalendar"] == ["*-*-* 19:00:00"] and timer["Persistent"] == ["true"]
    assert timer["WantedBy"] == ["timers.target"]
    template = units.systemd_units(values, template=True)
    t_service = unit_settings(template[units.T_SERVICE])
    assert t_service["ExecStart"] == [f"{OA} run --repo %f"]
    assert t_service["OnFailure"] == ["overnight-agent-failed@%i.service"]
    assert unit_settings(template[units.T_FAILED])["ExecStart"] == [
        f"{OA} notify-failure --repo %f --unit overnight-agent@%i.service"]
    assert "RestartMode" not in service  # systemd < 254 does not know it (verify would warn)
    newer = unit_settings(units.systemd_units(
        units.Values(command=(OA,), repo="/r", restart_mode_direct=True))[units.SERVICE])
    assert newer["RestartMode"] == ["direct"]


def test_the_stop_timeout_outlasts_our_own_stop(tmp_path):
    for text in ("version: 2\n", "version: 2\nstop:\n  sigint_grace: 2m\n  sigterm_grace: 45s\n"):
        cfg = config.parse(text, "x.yaml")
        seconds = units.stop_timeout(cfg.stop.sigint_grace, cfg.stop.sigterm_grace)
        assert seconds > cfg.stop.sigint_grace + cfg.stop.sigterm_grace + units.KILL_GRACE + 10
        service = unit_settings(units.systemd_units(units.Values(
            command=(OA,), repo="/r", stop_timeout=seconds))[units.SERVICE])
        assert service["TimeoutStopSec"] == [f"{seconds}s"]
    assert units.stop_timeout(10, 10) == 52  # the default config: what packaging/ shows


def test_the_timer_calendar_is_19_00_every_day():
    require("systemd-analyze", "the calendar spec is checked with `systemd-analyze calendar`")
    spec = units.on_calendar(units.DEFAULT_START)
    proc = subprocess.run(["systemd-analyze", "calendar", spec], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Next elapse: \w+ \d{4}-\d\d-\d\d 19:00:00", proc.stdout), proc.stdout
    assert units.on_calendar("7:05") == "*-*-* 07:05:00"


@pytest.mark.parametrize("path", ["/home/u/src/project", "/home/u/src/my-project", "/srv/a b/ç.d",
                                  "/home/u/.hidden/x", "/tmp//x/./y/", "/"])
def test_instance_names_are_systemd_escape_path(path):
    tool = require("systemd-escape", "instance names are compared with systemd's own escaping")
    expected = subprocess.run([tool, "--path", path], capture_output=True, text=True).stdout.strip()
    assert units.escape_path(path) == expected


def test_unit_words_are_quoted_and_specifiers_escaped(tmp_path):
    assert units.exec_quote("/srv/plain-path_1.2") == "/srv/plain-path_1.2"
    assert units.exec_quote("/srv/a b") == '"/srv/a b"'
    assert units.exec_quote("/srv/100%") == "/srv/100%%"
    assert units.exec_quote('/srv/q"$x') == '"/srv/q\\"$$x"'
    odd = tmp_path / "a b%c"
    odd.mkdir()
    values = units.Values(command=(OA,), repo=str(odd), config=str(odd / "c.yaml"), path="/usr/bin:/bin")
    files = []
    for name, text in units.systemd_units(values).items():
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    proc = verify(files, tmp_path, tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    assert f'--repo "{tmp_path}/a b%%c" --config "{tmp_path}/a b%%c/c.yaml"' in (tmp_path / units.SERVICE).read_text()


# --- launchd --------------------------------------------------------------------------------------

def test_the_shipped_plist_has_every_key_with_its_type():
    job = plistlib.loads((PACKAGING / "launchd" / "overnight-agent.plist").read_bytes())
    assert units.check_plist(job) == []
    assert job["StartCalendarInterval"] == {"Hour": 19, "Minute": 0}
    assert job["KeepAlive"] == {"SuccessfulExit": False} and job["RunAtLoad"] is False
    assert job["ProgramArguments"][1:3] == ["run", "--repo"]  # the foreground: no --detach
    assert "--detach" not in job["ProgramArguments"]
    assert job["ExitTimeOut"] == units.stop_timeout(10, 10)
    assert job["EnvironmentVariables"]["OVERNIGHT_AGENT_SERVICE_MANAGER"] == "launchd"


def test_the_plist_check_catches_wrong_types_plistlib_accepts():
    job = plistlib.loads((PACKAGING / "launchd" / "overnight-agent.plist").read_bytes())
    text = (PACKAGING / "launchd" / "overnight-agent.plist").read_text()
    wrong = plistlib.loads(text.replace("<integer>19</integer>", "<string>19</string>").encode())
    assert units.check_plist(wrong) == ["StartCalendarInterval.Hour: expected an integer 0-23"]
    assert units.check_plist({**job, "ExitTimeOut": True}) == ["ExitTimeOut: expected int, got bool"]
    assert units.check_plist({**job, "KeepAlive": True}) == ["KeepAlive: expected dict, got bool"]
    assert units.check_plist({**job, "StandardOutPath": "~/x.log"}) == [
        "StandardOutPath: expected an absolute path (launchd does not expand ~)"]
    del job["Label"]
    assert units.check_plist(job) == ["Label: missing"]


# --- install without a manager ------------------------------------------------------------------------

@pytest.fixture
def setup(tmp_path):
    repo = helpers.make_repo(tmp_path / "repo")
    cfg = helpers.write_config(tmp_path / "overnight.yaml", tmp_path,
                               schedule={"window_start": "17:00", "deadline": "05:00"})
    return tmp_path, repo, cfg


def oa(*args, env=None, cwd=None):
    return subprocess.run([OA, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL)


def test_the_launchd_plan_runs_this_installation_in_the_foreground(setup, tmp_path):
    base, repo, cfg = setup
    target = install.resolve_target("launchd", repo, cfg, instance=False, start_at=None)
    plan = install.plan_launchd_install(target, env={"HOME": str(base / "home"), "PATH": "/usr/bin:/bin"})
    (plist_path, data), = plan.files.items()
    assert plist_path == base / "home/Library/LaunchAgents/overnight-agent.plist"
    job = plistlib.loads(data)
    assert units.check_plist(job) == []
    assert job["ProgramArguments"] == [OA, "run", "--repo", str(repo), "--config", str(cfg)]
    assert job["StandardOutPath"] == str(base / "home/Library/Logs/overnight-agent/overnight-agent.log")
    assert job["ExitTimeOut"] == units.stop_timeout(1, 1)  # the test config's graces
    assert [c[:2] for c in plan.commands] == [["launchctl", "bootout"], ["launchctl", "bootstrap"],
                                              ["launchctl", "enable"]]
    instance = install.resolve_target("launchd", repo, cfg, instance=True, start_at="21:30")
    job = plistlib.loads(next(iter(install.plan_launchd_install(instance).files.values())))
    assert job["Label"] == "overnight-agent." + units.escape_path(str(repo))
    assert job["StartCalendarInterval"] == {"Hour": 21, "Minute": 30}


def test_dry_run_prints_everything_and_writes_nothing(setup):
    base, repo, cfg = setup
    home = base / "home"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    for manager in ("--systemd", "--launchd"):
        proc = oa("install", manager, "--repo", repo, "--config", cfg, "--dry-run", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "dry run: nothing is changed" in proc.stdout
    proc = oa("install", "--systemd", "--instance", "--repo", repo, "--config", cfg, "--dry-run", env=env)
    instance = units.escape_path(str(repo))
    assert f"would write {home}/.config/systemd/user/overnight-agent@.service" in proc.stdout
    assert f"overnight-agent@{instance}.service.d/overnight-agent.conf" in proc.stdout
    assert f"would run: systemctl --user enable --now overnight-agent@{instance}.timer" in proc.stdout
    assert not home.exists()


def test_install_refuses_what_could_not_run_and_writes_nothing(setup, tmp_path):
    base, repo, cfg = setup
    home = base / "home"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    bad_cfg = base / "bad.yaml"
    bad_cfg.write_text("version: 2\ncodex:\n  codex_bin: no-such-codex-here\n")
    cases = [
        (["--repo", base / "nowhere"], "--repo: not a folder"),
        (["--repo", base], "not inside a git repository"),
        (["--repo", repo, "--config", base / "missing.yaml"], "--config: no such file"),
        (["--repo", repo, "--config", bad_cfg], "codex.codex_bin: 'no-such-codex-here' is not on the service's PATH"),
        (["--repo", repo, "--config", cfg, "--at", "12:00"], "--at 12:00: outside the night window 17:00-05:00"),
    ]
    for args, message in cases:
        proc = oa("install", "--systemd", *args, env=env)
        assert proc.returncode == exitcodes.CONFIG, proc.stdout + proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if shutil.which("launchctl") is None:
        proc = oa("install", "--launchd", "--repo", repo, "--config", cfg, env=env)
        assert proc.returncode == exitcodes.CONFIG
        assert "launchctl is not installed" in proc.stderr and "nothing was written" in proc.stderr
    usage = oa("install", "--repo", repo)
    assert usage.returncode == exitcodes.USAGE and "--systemd" in usage.stderr
    assert not home.exists()


def test_uninstall_with_nothing_installed_says_so(setup):
    base, repo, _ = setup
    env = {"HOME": str(base / "home"), "XDG_CONFIG_HOME": str(base / "home" / ".config")}
    proc = oa("uninstall", "--systemd", env=env)
    assert proc.returncode == 0 and "nothing installed" in proc.stdout, proc.stdout + proc.stderr


def test_the_service_path_keeps_this_shells_absolute_entries():
    assert install.service_path({"PATH": "/opt/node/bin:relative:/usr/bin:/opt/node/bin"}) == \
        "/opt/node/bin:/usr/bin:/usr/local/bin:/bin"


def test_doctor_checks_for_ss_where_network_evidence_comes_from(tmp_path):
    """Field defect 8: without `ss` a slowly streaming model has no network evidence and may be
    taken for a stall; doctor said nothing of it."""
    from overnight_agent import doctor
    repo = helpers.make_repo(tmp_path / "repo")
    cfg = helpers.write_config(tmp_path / "c.yaml", tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def ss_check(**seam):
        checks = doctor.Doctor("systemd", repo, cfg, env=env, **seam).all()
        return [(c.status, c.detail) for c in checks if c.name == "ss"]

    [(status, detail)] = ss_check()
    assert status == doctor.OK and detail.endswith("/ss: network evidence of life available"), detail
    [(status, detail)] = ss_check(find_ss=lambda path: None)
    assert status == doctor.WARN and "install iproute2" in detail, detail


def test_doctor_checks_the_configured_agent_its_key_and_claudes_root_refusal(tmp_path):
    """agent: claude or gemini: doctor runs that CLI's --version (not codex's), looks for its own
    API key variable, and says up front that Claude Code refuses bypassPermissions to root."""
    import os
    from overnight_agent import doctor
    repo = helpers.make_repo(tmp_path / "repo")
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '2.1.328 (Claude Code)'\n")
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANTHROPIC_API_KEY": "sk-ant-test",
           "OVERNIGHT_AGENT_SERVICE_MANAGER": "systemd"}

    def checks(mode):
        cfg = helpers.write_config(tmp_path / "c.yaml", tmp_path, agent="claude",
                                   claude={"bin": str(fake), "permission_mode": mode})
        return {(c.name, c.status): c.detail for c in doctor.Doctor("systemd", repo, cfg, env=env).all()}

    found = checks("acceptEdits")
    assert found[("claude", doctor.OK)].endswith("2.1.328 (Claude Code)")
    assert "ANTHROPIC_API_KEY is set" in found[("claude key", doctor.OK)]
    assert not any(name == "codex" for name, _ in found)
    refused = checks("bypassPermissions")
    if os.geteuid() == 0:
        assert "refused by Claude Code as root" in refused[("claude", doctor.FAIL)]
    else:
        assert ("claude", doctor.FAIL) not in refused

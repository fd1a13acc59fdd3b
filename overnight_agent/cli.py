"""The `overnight-agent` command line: parsing arguments and mapping errors to exit codes.

Owns: subcommands, their arguments, and the one place exceptions become one-line messages and
exit codes (see `exitcodes`). Must not: hold logic of its own; each subcommand calls a module.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from . import __version__, agenttools, config, gitops, journal, logs, night, timeparse
from .exitcodes import OvernightError


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours, e.g. 8 or 0.5")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _clock(text: str) -> str:
    try:
        timeparse.parse_clock(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="overnight-agent",
        description="Run a coding agent unattended through the night on a git repository.")
    parser.add_argument("--version", action="version", version=f"overnight-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def with_repo(p):
        p.add_argument("--config", type=Path, help="config file (default: the repo's, or built-in defaults)")
        p.add_argument("--repo", type=Path, help="the git repository (default: the current folder)")
        return p

    run = with_repo(sub.add_parser("run", help="run a night in the foreground (what systemd expects)"))
    when = run.add_mutually_exclusive_group()
    when.add_argument("--until", type=_clock, metavar="HH:MM", help="deadline, local time")
    when.add_argument("--hours", type=_hours, metavar="H", help="deadline, hours from now")
    run.add_argument("--no-resume", action="store_true",
                     help="start a new night even if the last one's deadline has not passed")
    run.add_argument("--detach", action="store_true",
                     help="go on in the background (for cron; never under systemd or launchd)")

    check = sub.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("path", nargs="?", type=Path)
    check.add_argument("--repo", type=Path)

    demo = sub.add_parser("demo", help="a short night on a throwaway sample repo with the scripted agent")
    demo.add_argument("--dir", type=Path, help="where to put it (default: a new temporary folder)")
    demo.add_argument("--seconds", type=float, default=45.0, help="length of the night (default 45)")

    status = with_repo(sub.add_parser("status", help="the state of the current or last night"))
    status.add_argument("--json", action="store_true")

    rp = with_repo(sub.add_parser("report", help="write the morning report (report.md and report.html "
                                                 "in the night's run folder) and print their paths"))
    rp.add_argument("--run", metavar="ID", help="an archived night (<run_root>/runs/ID/session.json)")

    gcp = with_repo(sub.add_parser("gc", help="remove the worktrees, merged branches and run folders of "
                                              "nights that ended DAYS ago (a dry run without --apply)"))
    gcp.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    gcp.add_argument("--apply", action="store_true", help="do it (default: print what would be done)")

    jr = sub.add_parser("journal", help="write to the ops journal (for the agent)")
    jsub = jr.add_subparsers(dest="journal_command", metavar="KIND")
    jsub.required = True
    for name, helptext in (("summary", "append an executive summary line"),
                           ("question", "write down a question for the operator")):
        p = jsub.add_parser(name, help=helptext)
        p.add_argument("text")
    p = jsub.add_parser("strategy", help="save this run's strategy (FILE or - for stdin)")
    p.add_argument("file")

    br = sub.add_parser("branch", help="start a work-item branch overnight/YYYY-MM-DD_HHMM_<slug>")
    br.add_argument("slug")
    br.add_argument("--paths", nargs="+", metavar="GLOB",
                    help="the paths this work item may touch (globs like 'src/**'); commits outside "
                         "them are refused")
    sub.add_parser("heartbeat", help="tell the supervisor the agent is alive")

    va = with_repo(sub.add_parser("validate", help="run the validation suites the touched paths call "
                                                   "for, and the guards; exit 3 if one fails"))
    which = va.add_mutually_exclusive_group()
    which.add_argument("--staged", action="store_true", help="the staged set (default: the branch "
                                                             "against its base)")
    which.add_argument("--base", metavar="REF", help="base of the branch (default: the night's base "
                                                     "commit, else repo.base_branch)")
    va.add_argument("--out", type=Path, help="write the JSON record here (default: "
                                             "<run_dir>/validation/<timestamp>.json in a night)")

    tl = with_repo(sub.add_parser("tell", help="leave a message for the agent's next turn"))
    tl.add_argument("text")

    for name, helptext in (("install", "write the systemd units or the launchd job; enable the daily start"),
                           ("uninstall", "stop and remove what install wrote"),
                           ("doctor", "check git, codex and its login, config, paths, disk, the units")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--repo", type=Path, help="the git repository (default: the current folder)")
        if name != "uninstall":
            p.add_argument("--config", type=Path, help="config file (default: the repo's own)")
        manager = p.add_mutually_exclusive_group(required=name != "doctor")
        manager.add_argument("--systemd", dest="manager", action="store_const", const="systemd")
        manager.add_argument("--launchd", dest="manager", action="store_const", const="launchd")
        p.add_argument("--instance", action="store_true",
                       help="one of several repositories: units overnight-agent@<escaped repo path>")
        if name == "install":
            p.add_argument("--at", type=_clock, metavar="HH:MM", help="daily start (default 19:00)")
        if name != "doctor":
            p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    nf = with_repo(sub.add_parser("notify-failure", help="announce a failed night (units run it OnFailure=)"))
    nf.add_argument("--unit", help="the systemd unit that failed")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        return COMMANDS[args.command](args)
    except OvernightError as exc:
        print(f"overnight-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_run(args) -> int:
    request = night.RunRequest(repo=args.repo, config_path=args.config, until=args.until,
                               hours=args.hours, no_resume=args.no_resume)
    from . import service
    return service.run_night(request, detach=args.detach)


def cmd_check_config(args) -> int:
    repo_root = gitops.primary_root((args.repo or Path.cwd()).resolve())
    loaded = config.load(args.path, repo_root)
    print(config.resolved_text(loaded), end="")
    for line in config.warnings(loaded):
        print(f"overnight-agent: warning: {line}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from . import demo
    return demo.run(args.dir, args.seconds)


def cmd_status(args) -> int:
    from . import status
    path, session = agenttools.session_for(args.repo, args.config)
    print(status.command(path, session, _codex_home(args), args.json))
    return 0


def _codex_home(args) -> Optional[Path]:
    try:
        return night.load_for(night.RunRequest(repo=args.repo, config_path=args.config)).paths.codex_home
    except OvernightError:
        return None  # no readable config here: <run_root>/codex_home


def cmd_report(args) -> int:
    from . import report
    for path in report.command(_loaded(args), args.run):
        print(path)
    return 0


def _loaded(args) -> config.Loaded:
    return night.load_for(night.RunRequest(repo=args.repo, config_path=args.config))


def cmd_gc(args) -> int:
    from . import gc
    return gc.command(_loaded(args), args.older_than, args.apply)


def cmd_journal(args) -> int:
    _, session = agenttools.session_for()
    if args.journal_command == "summary":
        print(journal.summary(session, args.text))
    elif args.journal_command == "question":
        print(journal.question(session, args.text))
    else:
        text = sys.stdin.read() if args.file == "-" else agenttools.read_text(Path(args.file))
        print(journal.strategy(session, text))
    return 0


def cmd_branch(args) -> int:
    _, session = agenttools.session_for()
    print(agenttools.start_branch(session, args.slug, args.paths or ()))
    return 0


def cmd_validate(args) -> int:
    from . import validation
    return validation.command(repo=args.repo, config_path=args.config, staged=args.staged,
                              base=args.base, out=args.out)


def cmd_heartbeat(args) -> int:
    agenttools.heartbeat()
    return 0


def cmd_tell(args) -> int:
    from . import tell
    print(tell.command(_loaded(args), args.text))
    return 0


def cmd_install(args) -> int:
    from . import install
    return install.install(args.manager, args.repo, args.config, instance=args.instance,
                           start_at=args.at, dry_run=args.dry_run)


def cmd_uninstall(args) -> int:
    from . import install
    return install.uninstall(args.manager, args.repo, instance=args.instance, dry_run=args.dry_run)


def cmd_doctor(args) -> int:
    from . import doctor
    manager = args.manager or ("launchd" if sys.platform == "darwin" else "systemd")
    return doctor.doctor(manager, args.repo, args.config, instance=args.instance)


def cmd_notify_failure(args) -> int:
    from . import alerts
    return alerts.notify_failure(_loaded(args), args.unit)


COMMANDS = {"tell": cmd_tell, "run": cmd_run, "check-config": cmd_check_config, "demo": cmd_demo,
            "status": cmd_status, "report": cmd_report, "gc": cmd_gc, "journal": cmd_journal,
            "branch": cmd_branch,
            "heartbeat": cmd_heartbeat, "validate": cmd_validate,
            "install": cmd_install, "uninstall": cmd_uninstall, "doctor": cmd_doctor,
            "notify-failure": cmd_notify_failure}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

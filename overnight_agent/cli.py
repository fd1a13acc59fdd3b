"""The `overnight-agent` command line: parsing arguments and mapping errors to exit codes.

Owns: subcommands, their arguments, and the one place exceptions become one-line messages and
exit codes (see `exitcodes`). Must not: hold logic of its own; each subcommand calls a module.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from . import __version__, config, exitcodes, gitops, journal, logs, night, state, timeparse
from .exitcodes import ConfigError, OvernightError, UsageError


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

    check = sub.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("path", nargs="?", type=Path)
    check.add_argument("--repo", type=Path)

    demo = sub.add_parser("demo", help="a short night on a throwaway sample repo with the scripted agent")
    demo.add_argument("--dir", type=Path, help="where to put it (default: a new temporary folder)")
    demo.add_argument("--seconds", type=float, default=45.0, help="length of the night (default 45)")

    status = with_repo(sub.add_parser("status", help="the state of the current or last night"))
    status.add_argument("--json", action="store_true")

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
    sub.add_parser("heartbeat", help="tell the supervisor the agent is alive")
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
    return night.run(request)


def cmd_check_config(args) -> int:
    repo_root = gitops.primary_root((args.repo or Path.cwd()).resolve())
    loaded = config.load(args.path, repo_root)
    resolved = {"source": str(loaded.source) if loaded.source else "<built-in defaults>",
                "config": config.to_plain(loaded.config),
                "paths": {k: str(v) for k, v in vars(loaded.paths).items()},
                "sandbox": loaded.sandbox}
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def cmd_demo(args) -> int:
    from . import demo
    return demo.run(args.dir, args.seconds)


def _session_for(args) -> tuple:
    """The session.json to act on: the agent's (from its environment) or the repo's."""
    env_path = os.environ.get("OVERNIGHT_AGENT_SESSION")
    if env_path and getattr(args, "repo", None) is None and getattr(args, "config", None) is None:
        path = Path(env_path)
    else:
        loaded = night.load_for(night.RunRequest(repo=getattr(args, "repo", None),
                                                 config_path=getattr(args, "config", None)))
        path = loaded.paths.session_state
    session = state.load(path)
    if session is None:
        raise ConfigError(f"{path}: no session state; start a night with `overnight-agent run`")
    return path, session


def cmd_status(args) -> int:
    path, session = _session_for(args)
    from .lock import is_held
    data = session.to_dict()
    left = (session.deadline_dt - timeparse.local_now()).total_seconds()
    data["time_left_seconds"] = max(0, int(left))
    data["session_state_file"] = str(path)
    data["supervisor_running"] = is_held(path.parent / "overnight-agent.lock") or None
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    last = session.last_attempt()
    print(f"run {session.run_id}: {session.state}; deadline {session.deadline} "
          f"({timeparse.format_duration(left)} left)")
    print(f"thread {session.thread_id or '-'}; attempts {len(session.attempts)}; "
          f"supervisor restarts {session.restarts}")
    if last:
        print(f"last attempt {last.number} ({last.kind}): {last.outcome or 'running'} {last.detail or ''}")
    print(f"session worktree {session.session_worktree} ({session.session_branch})")
    return 0


def cmd_journal(args) -> int:
    _, session = _session_for(args)
    if args.journal_command == "summary":
        print(journal.summary(session, args.text))
    elif args.journal_command == "question":
        print(journal.question(session, args.text))
    else:
        text = sys.stdin.read() if args.file == "-" else _read(Path(args.file))
        print(journal.strategy(session, text))
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def cmd_branch(args) -> int:
    _, session = _session_for(args)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,60}", args.slug):
        raise UsageError(f"branch: {args.slug!r} is not a slug; expected lowercase letters, digits, "
                         "'-', '_' or '.', e.g. fix-broken-links")
    now = timeparse.local_now()
    name = f"overnight/{now.strftime('%Y-%m-%d_%H%M')}_{args.slug}"
    worktree = Path(session.session_worktree)
    gitops.git(["switch", "-c", name, session.session_branch], worktree)
    print(name)
    return 0


def cmd_heartbeat(args) -> int:
    path_text = os.environ.get("OVERNIGHT_AGENT_HEARTBEAT")
    if not path_text:
        _, session = _session_for(args)
        path_text = session.heartbeat_file
    path = Path(path_text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a"):
        os.utime(path)
    return 0


COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "demo": cmd_demo,
            "status": cmd_status, "journal": cmd_journal, "branch": cmd_branch,
            "heartbeat": cmd_heartbeat}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

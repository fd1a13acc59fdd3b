"""Capture `tests/samples/codex/` from the real Codex CLI, byte for byte, with the command of each.

    python tests/capture_codex_samples.py [--check] [--only NAME ...]

Each capture runs the pinned CLI (tests/setup_codex.sh) against the loopback mock model
(tests/mock_model_server.py) in a scratch git repository outside /tmp, with stdin /dev/null,
and writes what it printed, unchanged: `<name>.jsonl` (stdout) and, where kept, `<name>.stderr.txt`.
`captures.json` beside them records, for every file, the argv (paths as placeholders), the mock
script, the config.toml settings, how the run was stopped, its exit code and the CLI version.

A capture that printed a path of this machine (the scratch folder, HOME) is not written: the
samples are committed, and raw bytes are the point. `--check` writes nothing and says, per
sample, whether a capture now has the same shape as the stored one (the event types and items,
thread ids and command output aside). Run by `tests/test_real_codex_mock.py`.
"""
import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realcodex as rc  # noqa: E402
from mock_model_server import MockModelServer  # noqa: E402

SAMPLES = rc.TESTS_DIR / "samples" / "codex"
MANIFEST = SAMPLES / "captures.json"
MODEL, EFFORT = "gpt-5.3-codex", "xhigh"
PINNED = ["--sandbox", "workspace-write", "-m", MODEL, "-c", f"model_reasoning_effort={EFFORT}"]
EXEC = ["exec", "--json", *PINNED]
SUCCESS = [{"reasoning": "Plan: create the heartbeat file.", "message": "Creating heartbeat.txt.",
            "shell": "touch heartbeat.txt && echo hi > file.txt"},
           {"message": "Done: heartbeat.txt and file.txt created."}]


def _soon_today() -> int:
    """A reset a few minutes ahead, the same day (codex then prints only the time of day)."""
    now = dt.datetime.now().astimezone()
    at = now + dt.timedelta(minutes=3)
    if at.date() != now.date():
        raise SystemExit("usage_limit_resets_at: capture it before 23:55 (the reset must fall today)")
    return int(at.timestamp())


# name -> how to capture it. `before`: a run whose output is not kept (a thread to resume);
# `stop_after`: SIGINT once stdout holds this many lines of that event type (the CLI would go
# on: it retries forever, or a command runs for a minute); `toml`: config.toml settings.
CAPTURES: Dict[str, Dict[str, Any]] = {
    "exec_success": {"script": SUCCESS, "stderr": True,
                     "args": ["exec", "--skip-git-repo-check", *PINNED, "--json", "-o", "{scratch}/last.txt",
                              "PROMPT"]},
    "command_failed_and_sandbox_denied": {
        "script": [{"shell": "echo oops; exit 3"}, {"shell": "echo denied > /usr/overnight-denied.txt"},
                   {"message": "ok"}],
        "args": [*EXEC, "go"]},
    "fail_400": {"script": [{"http_error": 400, "body": {"error": {"message": "bad request mock",
                                                                 "type": "server_error", "code": None}}}],
                 "args": [*EXEC, "go"]},
    "fail_err500": {"script": [{"http_error": 500}], "toml": {"request_max_retries": None,
                                                             "stream_max_retries": None},
                    "args": [*EXEC, "go"]},
    "fail_stall": {"script": [{"stall_after": 1}], "toml": {"stream_idle_timeout_ms": 1000},
                   "args": [*EXEC, "go"]},
    "fail_refused": {"script": [], "refused": True, "stop_after": ("error", 2),
                     "args": [*EXEC, "go"]},
    "fail_sigint": {"script": [{"shell": "sleep 60", "yield_time_ms": 120000}],
                    "stop_after": ("item.started", 1), "args": [*EXEC, "go"]},
    "resume_last": {"before": {"script": SUCCESS, "args": [*EXEC, "PROMPT"]},
                    "script": [{"shell": "echo resumed >> heartbeat.txt"}, {"message": "Resumed via --last."}],
                    "args": ["exec", *PINNED, "resume", "--last", "--json", "go on"]},
    "usage_limit_resets_at": {"script": [{"http_error": 429, "usage_limit": True,
                                          "resets_at": "{in 3 minutes}"}],
                              "args": [*EXEC, "go"]},
    "usage_limit_resets_another_day": {"script": [{"http_error": 429, "usage_limit": True,
                                                   "resets_at": "{in 3 days}"}],
                                       "args": [*EXEC, "go"]},
    "usage_limit_resets_in_seconds": {"script": [{"http_error": 429, "usage_limit": True, "plan_type": "plus",
                                                  "resets_in_seconds": 3600}],
                                      "args": [*EXEC, "go"]},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _concrete(script: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = json.loads(json.dumps(script))
    for step in out:
        if step.get("resets_at") == "{in 3 minutes}":
            step["resets_at"] = _soon_today()
        elif step.get("resets_at") == "{in 3 days}":
            step["resets_at"] = int(time.time()) + 3 * 86400
    return out


def _home(path: Path, port: int, toml: Dict[str, Any]) -> Path:
    settings = {"request_max_retries": 1, "stream_max_retries": 1, "stream_idle_timeout_ms": 5000}
    settings.update(toml)
    home = rc.write_codex_home(path, port, **{k: v for k, v in settings.items() if v is not None})
    if any(v is None for v in settings.values()):  # the CLI's own defaults for these keys
        text = (home / "config.toml").read_text()
        keep = [line for line in text.splitlines()
                if line.split(" = ")[0] not in {k for k, v in settings.items() if v is None}]
        (home / "config.toml").write_text("\n".join(keep) + "\n")
    return home


def _run(binary: str, args: List[str], scratch: Path, repo: Path, env: Dict[str, str],
         stop_after=None, timeout: float = 60.0):
    argv = [binary, *(a.replace("{scratch}", str(scratch)) for a in args)]
    proc = rc.start_codex(argv, cwd=repo, env=env)
    out, err = b"", b""
    try:
        if stop_after is None:
            out, err = proc.communicate(timeout=timeout)
        else:
            kind, count = stop_after
            seen, lines = 0, []
            end = time.monotonic() + timeout
            while seen < count and time.monotonic() < end:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                seen += json.loads(line).get("type") == kind
            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=30)
            out = b"".join(lines) + rest
    finally:
        rc.kill_process_tree(proc.pid, tag=env[rc.TAG_VAR])
    return proc.returncode, out, err


def capture(name: str, binary: str, version: str) -> Dict[str, Any]:
    """Run one capture; returns its manifest entry, with the raw bytes under `_stdout`/`_stderr`."""
    spec = CAPTURES[name]
    scratch = rc.scratch_dir(f"capture-{name}")
    try:
        repo = rc.make_git_repo(scratch / "repo")
        user_home = scratch / "home"
        user_home.mkdir()
        with MockModelServer(_concrete(spec.get("before", {}).get("script", []) + spec["script"])) as srv:
            port = _free_port() if spec.get("refused") else srv.port
            home = _home(scratch / "codex_home", port, spec.get("toml", {}))
            env = rc.codex_env(home, home=user_home, tag=f"oa-capture-{name}")
            if "before" in spec:
                code, _, err = _run(binary, spec["before"]["args"], scratch, repo, env)
                assert code == 0, err.decode()
            code, out, err = _run(binary, spec["args"], scratch, repo, env, spec.get("stop_after"))
        for text in (out, err if spec.get("stderr") else b""):
            for private in (str(scratch), str(Path.home()), os.environ.get("USER") or "\0"):
                if private.encode() in text:
                    raise SystemExit(f"capture {name}: the CLI printed a path of this machine "
                                     f"({private!r}); not written")
        entry = {"files": [f"{name}.jsonl"] + ([f"{name}.stderr.txt"] if spec.get("stderr") else []),
                 "cli": version, "cwd": "{repo}: a git repository with one commit",
                 "argv": ["codex", *spec["args"]], "stdin": "/dev/null",
                 "model_script": spec["script"], "config_toml": _toml_summary(spec),
                 "before": ({"argv": ["codex", *spec["before"]["args"]],
                             "model_script": spec["before"]["script"]} if "before" in spec else None),
                 "stopped": (f"SIGINT once stdout held {spec['stop_after'][1]} `{spec['stop_after'][0]}` "
                             "line(s)") if spec.get("stop_after") else "ran to its end",
                 "exit_code": code}
        entry["_stdout"], entry["_stderr"] = out, err
        return entry
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _toml_summary(spec: Dict[str, Any]) -> Dict[str, Any]:
    settings = {"model": MODEL, "model_reasoning_effort": EFFORT, "model_provider": "mock (loopback)",
                "request_max_retries": 1, "stream_max_retries": 1, "stream_idle_timeout_ms": 5000}
    for key, value in spec.get("toml", {}).items():
        settings[key] = value if value is not None else "(the CLI's default)"
    if spec.get("refused"):
        settings["base_url"] = "a loopback port nobody listens on"
    return settings


_CLOCK = re.compile(r"\b\d{1,2}:\d\d [AP]M\b")
_DATE = re.compile(r"\b[A-Z][a-z]{2} \d{1,2}(st|nd|rd|th), \d{4}\b")


def shape(raw: bytes) -> List[tuple]:
    """What a capture must keep from one run to the next: event types, item types, texts and
    statuses; not thread ids, command output, usage, or the time a usage limit resets at (its
    form stays: a time of day, or a date and a time)."""
    result = []
    for line in raw.decode("utf-8").splitlines():
        event = json.loads(line)
        item = event.get("item") or {}
        message = event.get("message") or (event.get("error") or {}).get("message") or item.get("text")
        if message:
            message = _DATE.sub("<date>", _CLOCK.sub("<time>", message))
        result.append((event.get("type"), item.get("type"), item.get("status"), message,
                       item.get("command"), item.get("exit_code")))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored samples; write nothing")
    parser.add_argument("--only", nargs="+", choices=sorted(CAPTURES), help="these captures only")
    args = parser.parse_args(argv)
    binary = rc.codex_binary()
    if binary is None:
        raise SystemExit("node and npm are needed to install the real Codex CLI (tests/setup_codex.sh)")
    version = rc._binary_version(binary)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    failed = 0
    for name in args.only or sorted(CAPTURES):
        entry = capture(name, binary, version)
        out, err = entry.pop("_stdout"), entry.pop("_stderr")
        if args.check:
            stored = (SAMPLES / f"{name}.jsonl").read_bytes()
            same = shape(stored) == shape(out)
            failed += not same
            print(f"{name}: {'same shape' if same else 'DIFFERS'}")
            continue
        (SAMPLES / f"{name}.jsonl").write_bytes(out)
        if "stderr.txt" in " ".join(entry["files"]):
            (SAMPLES / f"{name}.stderr.txt").write_bytes(err)
        manifest[name] = entry
        print(f"{name}: written ({len(out)} bytes, exit {entry['exit_code']})")
    if not args.check:
        (SAMPLES / "version.txt").write_text(version + "\n")
        manifest["version"] = {"files": ["version.txt"], "argv": ["codex", "--version"], "cli": version}
        MANIFEST.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

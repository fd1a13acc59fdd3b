"""Structured logging: every decision is one event with a stable name and fields.

Owns: structlog's configuration (readable on a terminal, JSON lines otherwise, native journal
fields when systemd connected stderr to the journal: see `journald`) and the copy of every event
into the run's `supervisor.log`. Must not: decide what to log (callers do).
Event names are stable (`attempt.started`, `attempt.ended`, `night.finished`, ...): tools may
filter on them.
"""
import json
import os
import sys
from pathlib import Path
from typing import IO, Optional

import structlog

from . import journald


class _FileTee:
    """A structlog processor that appends each event as a JSON line to the run's log file: one
    write on an O_APPEND descriptor, so a supervisor killed at any instant leaves whole lines."""

    def __init__(self):
        self.fd: Optional[int] = None

    def open(self, path: Path) -> None:
        self.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __call__(self, logger, method, event_dict):
        if self.fd is not None:
            line = json.dumps(event_dict, default=str, ensure_ascii=False) + "\n"
            try:
                os.write(self.fd, line.encode("utf-8", "replace"))
            except OSError:
                pass   # a full disk must not take the supervisor down with a log line
        return event_dict


tee = _FileTee()


def _redacting():
    """A processor that redacts every value of every event: the one place all log lines pass."""
    from . import redact  # late: redact imports nothing of ours, but keep logs importable alone
    redactor = redact.Redactor(os.environ)

    def process(logger, method, event_dict):
        return redactor.data(event_dict)
    return process


def configure(stream: IO[str] = None, json_lines: Optional[bool] = None) -> None:
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    renderer = (structlog.processors.JSONRenderer(ensure_ascii=False) if json_lines
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redacting(),
            tee,
            *journald.processors_for(stream),  # under systemd: native journal fields, not stderr
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get(**context):
    return structlog.get_logger().bind(**context)

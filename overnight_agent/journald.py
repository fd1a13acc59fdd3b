"""Log events straight into the systemd journal, each field a native journal field.

Owns: the journal's native protocol (datagrams to `/run/systemd/journal/socket`, standard
library only), turning an event into fields (`OVERNIGHT_RUN_ID=`, `OVERNIGHT_EVENT=`,
`OVERNIGHT_ATTEMPT=`, `OVERNIGHT_THREAD_ID=`, ...), and deciding whether our stderr is the
journal. Must not: decide what to log, or lose an event: when the journal cannot take one, the
event goes on to stderr as if this module did not exist (silently; a logger that logs about
itself would loop).

Why native fields: with them `journalctl --user-unit overnight-agent OVERNIGHT_RUN_ID=<id>`
shows one night, `OVERNIGHT_EVENT=attempt.started` every start. A stderr line lands in the journal
too, but only as MESSAGE=.

Used only under systemd: `$JOURNAL_STREAM` (`device:inode`, set by systemd when stdout or stderr
is connected to the journal) must name the stream we would print to, as sd_journal docs advise.

The protocol (systemd's `journal-native` spec): one datagram per entry; each field is
`NAME=value\\n`, or, when the value holds a newline, `NAME\\n` + its length as a 64-bit
little-endian integer + the value + `\\n`. Names are A-Z, 0-9 and `_`, start with a letter, at
most 64 characters. An entry too large for a datagram goes in a sealed memfd whose descriptor
is passed with SCM_RIGHTS.
"""
import errno
import json
import os
import re
import socket
import struct
from typing import IO, Any, Dict, Iterable, List, Optional, Tuple

import structlog

SOCKET_PATH = "/run/systemd/journal/socket"
IDENTIFIER = "overnight-agent"
FIELD_PREFIX = "OVERNIGHT_"
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
              "critical": 2, "fatal": 2}
SKIPPED_KEYS = ("timestamp", "level")   # the journal has its own time; the level is PRIORITY=
_NAME_OK = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def field_name(key: str) -> str:
    """`thread_id` -> `OVERNIGHT_THREAD_ID`; anything not A-Z, 0-9 becomes `_`."""
    name = FIELD_PREFIX + re.sub(r"[^A-Z0-9]", "_", str(key).upper())
    return name[:64]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


def fields_for(event_dict: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The journal fields of one structlog event (None values are left out)."""
    event = str(event_dict.get("event", ""))
    level = str(event_dict.get("level", "info")).lower()
    rest = [(k, v) for k, v in event_dict.items()
            if k != "event" and k not in SKIPPED_KEYS and v is not None]
    message = " ".join([event] + [f"{k}={_text(v)}" for k, v in rest])
    fields = [("MESSAGE", message), ("PRIORITY", str(PRIORITIES.get(level, 6))),
              ("SYSLOG_IDENTIFIER", IDENTIFIER), (field_name("event"), event)]
    for key, value in rest:
        fields.append((field_name(key), _text(value)))
    return fields


def encode(fields: Iterable[Tuple[str, str]]) -> bytes:
    """One native-protocol entry; raises ValueError on a name the journal would reject."""
    out = bytearray()
    for name, value in fields:
        if not _NAME_OK.fullmatch(name):
            raise ValueError(f"{name!r} is not a journal field name")
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def stream_is_journal(stream: IO, env=None) -> bool:
    """True when `$JOURNAL_STREAM` names `stream`'s file (systemd connected it to the journal)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


class JournalSink:
    """A structlog processor: sends the event to the journal and drops it from the stream; on any
    failure passes it on unchanged, so the stream (stderr, itself in the journal) still has it."""

    def __init__(self, path: Optional[str] = None):
        self.path = path or SOCKET_PATH
        self._sock: Optional[socket.socket] = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
            except OSError:
                pass
            self._sock = sock
        return self._sock

    def send(self, payload: bytes) -> None:
        sock = self._socket()
        try:
            sock.sendto(payload, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(sock, payload)

    def _send_memfd(self, sock: socket.socket, payload: bytes) -> None:
        import fcntl
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0,
                         self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __call__(self, logger, method, event_dict):
        try:
            self.send(encode(fields_for(event_dict)))
        except (OSError, ValueError):
            return event_dict  # silently: the stream below still shows it
        raise structlog.DropEvent


def processors_for(stream: IO, env=None) -> List[JournalSink]:
    """`[JournalSink()]` when `stream` is connected to the journal, else `[]` (for `logs.configure`)."""
    return [JournalSink()] if stream_is_journal(stream, env) else []

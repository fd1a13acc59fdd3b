"""The agent's output on its way to the run log, for real: byte for byte, as evidence of life,
and within the night's size cap, both through a pipe (redaction on, the default) and with the log
given to a plain command as its stdout (`logs.redact_agent_output: false`)."""
import signal
import sys

import pytest

import helpers

AGENT = r'''
import os, sys, time
mode, count = sys.argv[1], int(sys.argv[2])
sys.stderr.write("stdout is %s\n" % os.readlink("/proc/self/fd/1"))
sys.stderr.flush()
time.sleep(0.2)
if mode in ("stream", "stream_and_wait"):
    block = bytes(range(256)) * 4096  # 1 MiB holding every byte value: invalid UTF-8 included
    for i in range(count):
        sys.stdout.buffer.write(b"blk %08d\n" % i + block)
        sys.stdout.buffer.flush()
    time.sleep(0.3)
    if mode == "stream_and_wait":  # say so, and live on
        open(sys.argv[3], "w").close()
        time.sleep(600)
elif mode == "chatty_then_silent":
    for i in range(count):
        print("line", i, flush=True)
        time.sleep(0.3)
    time.sleep(600)
'''


def stream(count: int) -> bytes:
    block = bytes(range(256)) * 4096
    return b"".join(b"blk %08d\n" % i + block for i in range(count))


def command_night(night, mode: str, count: int, redact: bool, **overrides):
    script = night.base / "capture_agent.py"
    marker = night.base / "written"
    script.write_text(AGENT)
    helpers.write_config(night.config, night.base, logs={"redact_agent_output": redact},
                         stop={"sigint_grace": "0.5s", "sigterm_grace": "0.5s"}, **overrides)
    night.config.write_text(night.config.read_text()
                            + f"agent: command\ncommand:\n  argv: [{sys.executable}, {script}, {mode}, '{count}', {marker}]\n")
    return night.start("--hours", "1")


def first_attempt(night, timeout=30):
    proc_session = helpers.wait_session(night.base, lambda s: s["attempts"] and s["attempts"][0].get("outcome"),
                                        timeout=timeout, what="the first attempt's end")
    return proc_session


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    code, _, err = helpers.finish(proc)
    assert code == 0, err[-2000:]


def start_log(night, session) -> bytes:
    return (night.run_root / "runs" / session["run_id"] / "command_start.log").read_bytes()


def split_log(data: bytes):
    """(header line, stderr lines, the rest up to the closing line, closing line)."""
    header, rest = data.split(b"\n", 1)
    closing_at = rest.rindex(b"=== attempt 1 ended")
    return header, rest[:closing_at], rest[closing_at:]


MODES = [pytest.param(True, id="pipe-redacted"), pytest.param(False, id="log-as-stdout")]


@pytest.mark.parametrize("redact", MODES)
def test_output_reaches_the_log_byte_for_byte(night, redact):
    proc = command_night(night, "stream", 3, redact)
    try:
        session = first_attempt(night)
    finally:
        stop(proc)
    assert session["attempts"][0]["outcome"] == "completed", session["attempts"][0]
    header, body, closing = split_log(start_log(night, session))
    assert header.startswith(b"=== overnight-agent attempt 1 (start")
    note, _, body = body.partition(b"\n")
    if redact:
        assert note.startswith(b"stdout is pipe:"), note
    else:
        assert note.endswith(b"/command_start.log"), note  # the command writes the log itself
    assert body == stream(3)
    assert closing.startswith(b"=== attempt 1 ended: completed")


@pytest.mark.parametrize("redact", MODES)
def test_the_size_cap_holds_and_the_command_goes_on(night, redact):
    cap = 1_000_000
    proc = command_night(night, "stream_and_wait", 6, redact, retention={"max_log_bytes": str(cap)})
    try:
        helpers.wait_for(lambda: (night.base / "written").exists(), timeout=30, what="6 MiB written")
        session = night.session()
        size_while_running = (night.run_root / "runs" / session["run_id"] / "command_start.log").stat().st_size
        assert session["state"] == "running" and len(session["attempts"]) == 1  # not killed for it
    finally:
        stop(proc)
    assert size_while_running <= cap + 200, size_while_running  # held while it ran, not cut at the end
    session = night.session()
    data = start_log(night, session)
    header, body, closing = split_log(data)
    notice = b"\n=== overnight-agent: this night's logs reached retention.max_log_bytes"
    assert body.count(notice) == 1, body[-300:]
    kept, _, after = body.partition(notice)
    assert after.endswith(b"further output is not logged ===\n")
    note, _, kept = kept.partition(b"\n")
    assert kept and stream(6).startswith(kept)  # what was kept is the stream's beginning, unchanged
    # The log stops a little short of the cap (the folder's other files count too), the notice
    # and the closing line after it: 5 MB of the stream never reached the disk.
    up_to_notice = len(data) - len(after) - len(notice) - len(closing)
    assert cap - 20_000 <= up_to_notice <= cap, up_to_notice


@pytest.mark.parametrize("redact", MODES)
def test_output_is_evidence_of_life_until_it_stops(night, redact):
    proc = command_night(night, "chatty_then_silent", 8, redact,
                         liveness={"model_silent": "1.5s", "command_silent": "1.5s", "sample_interval": "0.2s"})
    try:
        session = first_attempt(night)
    finally:
        stop(proc)
    first = session["attempts"][0]
    # 2.6 s of a line every 0.3 s with no heartbeat is life; then 1.5 s of silence is a stall.
    assert first["outcome"] == "stalled", first
    assert "stdout 1." in first["detail"] and "heartbeat never" in first["detail"], first["detail"]
    log = start_log(night, session)
    assert b"line 7\n" in log


def test_a_file_watch_wakes_on_writes_and_merges_them(tmp_path):
    import select
    from overnight_agent import filewatch
    path = tmp_path / "log"
    path.write_bytes(b"")
    watch = filewatch.open_watch()
    assert watch is not None  # Linux: inotify is there
    try:
        assert watch.add(str(path)) and not watch.add(str(tmp_path / "missing"))
        assert select.select([watch], [], [], 0)[0] == [] and not watch.drain()
        with open(path, "ab", buffering=0) as handle:
            for _ in range(1000):
                handle.write(b"x" * 100)
        assert select.select([watch], [], [], 1.0)[0] == [watch]
        assert watch.drain() and not watch.drain()  # one look takes every queued write
        assert select.select([watch], [], [], 0)[0] == []
    finally:
        watch.close()

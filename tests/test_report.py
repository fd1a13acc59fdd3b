"""The morning report of a real (demo) night: Markdown and a self-contained HTML page, checked
against git and rendered in a real headless browser."""
import datetime as dt
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import uuid
import zlib
from pathlib import Path

import psutil
import pytest

import helpers
import nightbuild
from conftest import require
from helpers import git
from overnight_agent import report, state, status

TOKEN = "ghp_" + "R3p0rtS3cr3tTh4tMustN0tB3Sh0wn00000000"


@pytest.fixture(scope="module")
def demo_night(tmp_path_factory):
    """A whole demo night (12 s: a crash, a resume, commits on two branches, a question)."""
    base = tmp_path_factory.mktemp("demo")
    mark = uuid.uuid4().hex
    result = helpers.run_cli("demo", "--dir", str(base), "--seconds", "12", mark=mark, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    helpers.assert_no_agent_processes(mark, helpers.tag_prefix(base / "run"))
    return base


def _cli(base: Path, *args: str) -> subprocess.CompletedProcess:
    return helpers.run_cli(*args, "--repo", str(base / "sample-repo"), "--config",
                           str(base / "overnight_agent.yaml"))


def _git_truth(repo: Path, session: dict) -> dict:
    """Every overnight/* work branch and the commits git says each holds beyond the base."""
    names = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/overnight/").split()
    return {name: git(repo, "log", "--format=%H", name, "--not", session["base_commit"]).split()
            for name in names if name != session["ops_journal_branch"]}


def test_the_report_lists_every_branch_and_commit_git_shows(demo_night):
    base = demo_night
    out = _cli(base, "report")
    assert out.returncode == 0, out.stderr
    md_path, html_path = (Path(line) for line in out.stdout.split())
    session = json.loads((base / "run" / "session.json").read_text())
    run_dir = base / "run" / "runs" / session["run_id"]
    assert (md_path, html_path) == (run_dir / "report.md", run_dir / "report.html")
    truth = _git_truth(base / "sample-repo", session)
    assert len(truth) >= 3 and sum(len(c) for c in truth.values()) >= 3
    md, page = md_path.read_text(), html_path.read_text()
    for name, commits in truth.items():
        assert f"### `{name}`" in md and f'data-branch="{name}"' in page
        for sha in commits:
            assert f"`{sha[:10]}`" in md and f'data-sha="{sha}"' in page
    # The night as it went: attempts and their outcomes, the question, the summaries, tokens.
    outcomes = [a["outcome"] for a in session["attempts"]]
    assert outcomes[:2] == ["crashed", "completed"]
    for a in session["attempts"]:
        assert f'data-attempt="{a["number"]}" data-outcome="{a["outcome"]}"' in page
    assert "- [ ] Should slugify keep non-ASCII letters" in md
    assert "Fixed the broken Installing link" in md and "Added tests/test_slug.py" in page
    assert "| 2 | resume | completed | 200 | 0 | 40 | 0 | 240 |" in md
    assert "night.finished" in md and "checkpoint" in md


def test_the_html_is_self_contained(demo_night):
    out = _cli(demo_night, "report")
    page = Path(out.stdout.split()[1]).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg class=\"timeline\"" in page
    lowered = page.lower()
    for needle in ("<script", "<link", "@import", "url(", "<img", "<iframe", "@font-face"):
        assert needle not in lowered, needle
    references = re.findall(r"(?:src|href)\s*=\s*[\"']([^\"']+)", page)
    assert references == []
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"]


def test_a_secret_in_the_night_never_reaches_the_report(demo_night, tmp_path):
    """An attempt's error text held a token: the report shows the kind, never the value, and
    says it redacted one; an archived night is reported with --run."""
    base = demo_night
    run_root = base / "run"
    session = state.load(run_root / "session.json")
    # Archive a copy of the night under another id, with a leaked token in an attempt's detail.
    archived = state.from_dict(session.to_dict(), "copy")
    archived.run_id = "20200101_000000"
    archived.attempts[0].detail = f"exit 1: 401 Unauthorized for {TOKEN}"
    archived.note("journal.refused", archived.created_at, files=["x.md"], kinds=["github"])
    run_dir = run_root / "runs" / archived.run_id
    state.save(run_dir / "session.json", archived)
    try:
        out = _cli(base, "report", "--run", archived.run_id)
        assert out.returncode == 0, out.stderr
        md, page = (Path(p).read_text() for p in out.stdout.split())
        for text in (md, page):
            assert TOKEN not in text and "REDACTED:github" in text
        assert "This report: 1 value redacted." in md
        assert "journal.refused" in md and "kinds github" in md
        missing = _cli(base, "report", "--run", "19990101_000000")
        assert missing.returncode == 78 and "archived nights: 20200101_000000" in missing.stderr
    finally:
        shutil.rmtree(run_dir)


def test_the_markdown_is_committed_to_the_ops_journal(demo_night):
    base = demo_night
    session = state.load(base / "run" / "session.json")
    md_path, _ = report.write(base / "run" / "session.json", base / "run" / "runs" / session.run_id)
    # The night's end committed this report already: a changed one must make a new commit.
    md_path.write_text(md_path.read_text() + f"\nRead at {time.time_ns()}.\n")
    sha = report.commit_markdown(session)
    ops = Path(session.ops_journal_worktree)
    rel = Path(session.reports_dir).relative_to(ops) / f"{session.run_id}_report.md"
    assert sha == git(ops, "rev-parse", session.ops_journal_branch)
    assert git(ops, "show", f"{sha}:{rel}") == md_path.read_text().rstrip("\n")
    assert git(ops, "log", "-1", "--format=%s", sha) == f"ops: morning report for run {session.run_id}"
    assert report.commit_markdown(session) is None, "unchanged: nothing new to commit"


def test_token_use_per_attempt_is_the_difference_of_cumulative_totals():
    def attempt(n, thread, usage):
        return state.Attempt(number=n, kind="resume", started_at="2026-01-01T00:00:00+00:00", log="x",
                             thread_id=thread, usage=usage)
    attempts = [
        attempt(1, "t1", {"input_tokens": 100, "output_tokens": 10}),
        attempt(2, "t1", None),                                            # crashed: no report
        attempt(3, "t1", {"input_tokens": 250, "output_tokens": 30}),
        attempt(4, "t2", {"input_tokens": 40, "output_tokens": 4}),        # a fresh thread
        attempt(5, "t1", {"input_tokens": 260, "output_tokens": 31}),
    ]
    assert status.usage_deltas(attempts) == [
        {"input_tokens": 100, "output_tokens": 10}, None, {"input_tokens": 150, "output_tokens": 20},
        {"input_tokens": 40, "output_tokens": 4}, {"input_tokens": 10, "output_tokens": 1}]


def test_a_long_night_with_restarts_and_stalls_draws_a_readable_chart(tmp_path):
    """An eight-hour night built by hand: many attempts of every kind, a restart, a stall."""
    repo = helpers.make_repo(tmp_path / "repo")
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=9)
    kinds = ["completed", "crashed", "completed", "stalled", "rate_limited", "completed",
             "supervisor_lost", "completed", "turn_failed", "stopped"]
    attempts, moment = [], start
    for i, outcome in enumerate(kinds, 1):
        end = moment + dt.timedelta(minutes=40 if outcome == "completed" else 6)
        attempts.append(state.Attempt(
            number=i, kind="start" if i == 1 else "resume", started_at=nightbuild.stamp(moment),
            log="codex_resume.log", thread_id="t1", ended_at=nightbuild.stamp(end), outcome=outcome,
            detail="exit 1" if outcome != "completed" else "exit 0",
            usage={"input_tokens": 1000 * i * i, "output_tokens": 100 * i * i, "cached_input_tokens": 0,
                   "reasoning_output_tokens": 10 * i}))
        moment = end + dt.timedelta(minutes=3)
    session = nightbuild.new_night(tmp_path, repo, "20260102_220000", start, hours=8, current=True,
                                   attempts=attempts)
    session.note("supervisor.restarted", attempts[6].ended_at, restarts=1)
    session.note("stall", attempts[3].ended_at, attempt=4, reason="no evidence of life for 15m")
    session.restarts = 1
    nightbuild.save(session, tmp_path / "run", current=True)
    branch = nightbuild.work_branch(repo, session, "long-work", start + dt.timedelta(hours=2),
                                    {f"f{i}.txt": f"{i}\n" for i in range(12)})
    md_path, html_path = report.write(tmp_path / "run" / "session.json",
                                      tmp_path / "run" / "runs" / session.run_id)
    md, page = md_path.read_text(), html_path.read_text()
    assert page.count('<g class="attempt"') == len(kinds)
    assert 'data-event="supervisor.restarted"' in page and 'data-event="stall"' in page
    assert f'data-branch="{branch}"' in page and page.count('class="commit"') == 12
    assert "<details><summary>12 files changed</summary>" in page
    assert "| all | | | " in md and "1 supervisor restart" in md
    shot = _render(html_path, tmp_path / "long.png", tmp_path / "long-profile", height=1400)
    assert _has_colour(shot, (0xc6, 0x28, 0x28)) and _has_colour(shot, (0xf9, 0xa8, 0x25))


# --- a real browser ---------------------------------------------------------------------------------

def _chromium(args, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    binary = require("chromium", "the report is checked in a real headless browser")
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)          # helpers it may have left in its group
        except ProcessLookupError:
            pass
        proc.wait()
    left = [p for p in psutil.process_iter(["cmdline"])
            if any(str(profile) in part for part in (p.info["cmdline"] or []))]
    for p in left:
        p.kill()
    assert not left, "chromium left processes behind"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _render(html_path: Path, png: Path, profile: Path, height: int = 2400) -> dict:
    done = _chromium([f"--window-size=1280,{height}", f"--screenshot={png}", html_path.as_uri()], profile)
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    return _decode_png(png.read_bytes())


def test_the_html_renders_in_a_headless_browser(demo_night, tmp_path):
    base = demo_night
    out = _cli(base, "report")
    assert out.returncode == 0, out.stderr
    html_path = Path(out.stdout.split()[1])
    session = json.loads((base / "run" / "session.json").read_text())
    dom = _chromium(["--dump-dom", html_path.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert '<svg class="timeline"' in page and 'class="deadline"' in page
    assert page.count('<g class="attempt"') == len(session["attempts"])
    for name, commits in _git_truth(base / "sample-repo", session).items():
        assert f'data-branch="{name}"' in page
        for sha in commits:
            assert f'<tr class="commit" data-sha="{sha}">' in page
    png = tmp_path / "report.png"
    image = _render(html_path, png, tmp_path / "profile-shot")
    assert image["width"] == 1280 and image["height"] == 2400
    assert png.stat().st_size > 30_000, "a blank page compresses to almost nothing"
    assert len(image["colours"]) > 200, "text, chart and tables in many shades"
    # The chart's bars really were painted: the crashed attempt's red, the completed one's green.
    assert _has_colour(image, (0xc6, 0x28, 0x28)) and _has_colour(image, (0x2e, 0x7d, 0x32))


def _has_colour(image: dict, rgb) -> bool:
    return any(all(abs(a - b) <= 3 for a, b in zip(c, rgb)) for c in image["colours"])


def _add(a: int, b: int, lo: int, hi: int) -> int:
    """Bytewise (a + b) mod 256 of two pixel rows held as big integers (no carry between bytes)."""
    return ((a & lo) + (b & lo)) ^ ((a ^ b) & hi)


def _decode_png(data: bytes) -> dict:
    """Width, height and the set of colours of an 8-bit RGB(A) PNG (standard library only; the
    Up and Sub filters are undone a whole row at a time)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
            ch = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * ch
    lo, hi = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")
    prev, colours = bytes(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 1:                      # Sub: a running sum every `ch` bytes, in log steps
            acc, shift = int.from_bytes(row, "big"), ch
            while shift < stride:
                acc = _add(acc, acc >> (8 * shift), lo, hi)
                shift *= 2
            row = acc.to_bytes(stride, "big")
        elif kind == 2:                    # Up
            row = _add(int.from_bytes(row, "big"), int.from_bytes(prev, "big"), lo, hi).to_bytes(stride, "big")
        elif kind in (3, 4):               # Average, Paeth: byte by byte
            out = bytearray(row)
            for i in range(stride):
                left = out[i - ch] if i >= ch else 0
                up = prev[i]
                if kind == 3:
                    out[i] = (out[i] + ((left + up) >> 1)) & 0xFF
                else:
                    up_left = prev[i - ch] if i >= ch else 0
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    out[i] = (out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
            row = bytes(out)
        if y % 2 == 0:
            colours.update(row[i:i + 3] for i in range(0, stride, ch * 2))
        prev = row
    return {"width": width, "height": height, "colours": {tuple(c) for c in colours}}

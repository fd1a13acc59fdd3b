"""session.json validation and atomic writes; the flock single-instance lock with real processes."""
import json
import os
import signal
import subprocess
import sys

import pytest

from overnight_agent import lock, state
from overnight_agent.exitcodes import ConfigError, LockedError



def session(**kw):
    values = dict(run_id="r1", repo_root="/r", deadline="2026-11-30T05:00:00+01:00",
                  wrap_up_at="2026-11-30T04:30:00+01:00", session_worktree="/w/r1",
                  session_branch="overnight/session_r1", ops_journal_worktree="/w/ops",
                  ops_journal_branch="overnight/ops-journal", base_branch="main", base_commit="abc",
                  agent="codex", model="m", model_reasoning_effort="xhigh", sandbox="workspace-write",
                  created_at="2026-11-29T19:00:00+01:00")
    values.update(kw)
    return state.Session(**values)


def test_round_trip_keeps_attempts(tmp_path):
    s = session(thread_id="t1")
    s.attempts.append(state.Attempt(number=1, kind="start", started_at="2026-11-29T19:00:01+01:00",
                                    log="/l", outcome="crashed", usage={"input_tokens": 5}))
    path = tmp_path / "session.json"
    state.save(path, s)
    loaded = state.load(path)
    assert loaded == s
    assert loaded.deadline_dt.utcoffset().total_seconds() == 3600


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.pop("deadline"), "deadline: missing or not a string"),
    (lambda d: d.update(deadline="tomorrow"), "deadline: 'tomorrow' is not an ISO 8601 time"),
    (lambda d: d.update(deadline="2026-11-30T05:00:00"), "is not an ISO 8601 time with UTC offset"),
    (lambda d: d.update(state="dancing"), "state: 'dancing' is not one of"),
    (lambda d: d.update(attempts={"a": 1}), "attempts: expected a list of objects"),
    (lambda d: d.update(schema=9), "schema: 9 is not 1"),
])
def test_a_bad_state_file_names_the_key_and_stays_untouched(tmp_path, mutate, needle):
    data = session().to_dict()
    mutate(data)
    path = tmp_path / "session.json"
    text = json.dumps(data)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        state.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert path.read_text() == text


def test_atomic_write_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "session.json"
    state.write_atomic(path, "old\n")
    # A writer killed between its temp file and the rename: the old content survives.
    code = subprocess.run([sys.executable, "-c",
                           "from pathlib import Path; from overnight_agent import state; "
                           f"state.write_atomic(Path({str(path)!r}), 'new\\n')"],
                          env={**os.environ, "OVERNIGHT_AGENT_FAULTS": "state.before_rename"}).returncode
    assert code == -signal.SIGKILL
    assert path.read_text() == "old\n"
    state.write_atomic(path, "new\n")
    assert path.read_text() == "new\n"


HOLD = "import sys, time; from pathlib import Path; from overnight_agent.lock import InstanceLock; " \
       "l = InstanceLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"


def test_the_lock_names_its_holder_and_is_taken_over_after_a_kill(tmp_path):
    path = tmp_path / "run" / "overnight-agent.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.is_held(path) and lock.holder_pid(path) == holder.pid
        with pytest.raises(LockedError) as info:
            lock.InstanceLock(path).acquire()
        assert f"pid {holder.pid}" in str(info.value) and str(path) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert not lock.is_held(path)
    with lock.InstanceLock(path) as mine:
        assert lock.holder_pid(path) == os.getpid() and mine.fd is not None
    assert not lock.is_held(path)


def test_the_lock_is_not_inherited_by_children(tmp_path):
    path = tmp_path / "l.lock"
    with lock.InstanceLock(path):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        assert not lock.is_held(path), "a child must not keep the supervisor's lock"
    finally:
        child.kill()
        child.wait()

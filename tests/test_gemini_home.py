"""The gemini backend's one effect on its home beyond settings.json: the project registry's lock
(`<home>/.gemini/projects.json.lock`, a folder) that 0.61.0 can leave behind, removed when
nothing can hold it, kept while a CLI of another night shares the home.

Owns: `GeminiBackend.clear_left_lock` against real folders and real processes (a live holder is a
real child with GEMINI_CLI_HOME or HOME set to the home). Must not: leave a process behind.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realgemini  # noqa: E402
from overnight_agent.agents.gemini import REGISTRY_LOCK, REGISTRY_LOCK_STALE  # noqa: E402


@pytest.fixture
def gemini(tmp_path):
    backend = realgemini.backend("gemini", tmp_path / "home", tmp_path / "run")
    lock = backend.home / ".gemini" / REGISTRY_LOCK
    lock.mkdir(parents=True)
    return backend, lock


def _holder(var: str, home: Path) -> subprocess.Popen:
    """A process that 'uses' the home, as a CLI of another night would."""
    env = {**os.environ, var: str(home)}
    proc = subprocess.Popen(["sleep", "60"], env=env)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # its environment is readable once exec is done
        try:
            if f"{var}={home}".encode() in Path(f"/proc/{proc.pid}/environ").read_bytes():
                return proc
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the holder never showed its environment")


def _end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=5)
    assert proc.poll() is not None


def test_a_lock_nothing_can_hold_is_removed(gemini):
    backend, lock = gemini
    assert backend.clear_left_lock() == (str(lock),)
    assert not lock.exists()
    assert backend.clear_left_lock() == ()  # nothing to do the second time


@pytest.mark.parametrize("var", ["GEMINI_CLI_HOME", "HOME"])
def test_a_fresh_lock_is_kept_while_another_cli_uses_the_home(gemini, var):
    backend, lock = gemini
    holder = _holder(var, backend.home)
    try:
        assert backend.clear_left_lock() == ()
        assert lock.is_dir()
        # Stale by the CLI's own rule (a live holder touches it every 5 s): removed even so.
        old = time.time() - REGISTRY_LOCK_STALE - 1
        os.utime(lock, (old, old))
        assert backend.clear_left_lock() == (str(lock),)
        assert not lock.exists()
    finally:
        _end(holder)


def test_a_process_with_a_longer_home_path_is_not_a_holder(gemini):
    backend, lock = gemini
    holder = _holder("GEMINI_CLI_HOME", Path(str(backend.home) + "-other"))
    try:
        assert backend.clear_left_lock() == (str(lock),)
    finally:
        _end(holder)


def test_a_folder_with_something_in_it_is_not_the_clis_and_is_kept(gemini):
    backend, lock = gemini
    (lock / "note").write_text("not a lock\n")
    assert backend.clear_left_lock() == ()
    assert (lock / "note").exists()


def test_after_attempt_clears_it(gemini):
    """What the supervisor runs after every attempt and before a night's first one (the night
    test shows the latter)."""
    backend, lock = gemini
    assert backend.after_attempt(backend.home) == (str(lock),)
    assert not lock.exists()

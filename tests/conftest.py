"""Fixtures shared by the test suite.

Under CI=true a test that would skip for a missing tool fails instead (see `require`).
"""
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

import helpers
import systemd_lab

IN_CI = os.environ.get("CI", "").lower() == "true"

# Property tests explore anew on every run here (and keep what they find in .hypothesis/); in CI
# they replay one fixed sequence, so that a CI result says something about the commit.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


def require(tool: str, why: str) -> str:
    """The path of `tool`; skip without it, but fail under CI=true."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed: {why}"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing tool is a failure)")
        pytest.skip(message)
    return path


def pytest_collection_finish(session):
    """Install the pinned Codex CLI once, before the first test that needs it runs: an install
    inside a test would count against that test's time limit (npm takes several seconds)."""
    if any(item.get_closest_marker("realcodex") for item in session.items):
        import realcodex
        try:
            realcodex.codex_binary()
        except RuntimeError:
            pass  # each realcodex test reports the failed install itself
    if any(item.get_closest_marker("realclaude") for item in session.items):
        import realclaude
        try:
            realclaude.claude_binary()
        except RuntimeError:
            pass  # each realclaude test reports the failed install itself
    if any(item.get_closest_marker("realgemini") for item in session.items):
        import realgemini
        try:
            realgemini.gemini_binary()
        except RuntimeError:
            pass  # each realgemini test reports the failed install itself


@dataclass
class Night:
    base: Path
    repo: Path
    config: Path
    mark: str

    @property
    def run_root(self) -> Path:
        return self.base / "run"

    def scenario(self, *invocations):
        helpers.write_scenario(self.base, list(invocations))

    def start(self, *args, env_extra=None):
        return helpers.start_run(self.repo, self.config, self.mark, *args, env_extra=env_extra)

    def session(self):
        return helpers.read_session(self.base)


@pytest.fixture
def night(tmp_path):
    """A real repository, a config with everything outside it, and a leftover check at the end."""
    base = tmp_path
    repo = helpers.make_repo(base / "repo")
    config = helpers.write_config(base / "overnight.yaml", base)
    mark = uuid.uuid4().hex
    yield Night(base=base, repo=repo, config=config, mark=mark)
    helpers.assert_no_agent_processes(mark, helpers.tag_prefix(base / "run"))


@pytest.fixture
def lab(tmp_path_factory):
    """A real `systemd --user` manager with its own journald (tests/systemd_lab.py)."""
    yield from systemd_lab.lab_fixture(tmp_path_factory)

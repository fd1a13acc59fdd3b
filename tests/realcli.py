"""Installing a pinned agent CLI for the tests that drive the real one (realcodex, realclaude,
realgemini), and the skip-or-fail rule for a missing node/npm.

Owns: finding the pinned CLI already installed, else running `tests/setup_cli.sh NAME` once per
session and taking the binary path from the last line of its stdout; `OA_REAL_<NAME>_BIN` as an override;
skipping when node/npm are missing, failing instead under CI=true. Must not: know any one CLI
(each caller names its folder, version check and why-text; the pins are in setup_cli.sh), or hide a
failed install as a skip.

    Install(name, npm_dir, *, candidates, version_line)
        .binary() -> Optional[str]      the path; None only when node/npm are missing;
                                        RuntimeError for any other install failure
        .require(why) -> str            that path, or pytest.skip(why) (pytest.fail under CI=true)
    version(path) -> str                what `<path> --version` prints ("" when it cannot run)
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

SETUP_SCRIPT = Path(__file__).resolve().parent / "setup_cli.sh"


def version(path: str) -> str:
    """What `<path> --version` prints, stripped; "" when it cannot run."""
    try:
        return subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class Install:
    """One pinned CLI (`name`: codex | claude | gemini), installed at most once per session (a failure is remembered too)."""

    def __init__(self, name: str, npm_dir: Path, *,
                 candidates: Callable[[], Iterable[str]] = lambda: (), version_line: str = ""):
        self.name = name                  # codex | claude | gemini
        self.npm_dir = npm_dir
        self.candidates = candidates      # installed binaries to try before running the script
        self.version_line = version_line  # what a candidate's --version must print
        self._cache: Dict[str, Optional[str]] = {}

    def binary(self) -> Optional[str]:
        """The CLI's path, installing it when needed. None only when node or npm are missing;
        RuntimeError for any other failure (never hidden as a skip)."""
        if "path" in self._cache:
            return self._cache["path"]
        if "error" in self._cache:
            raise RuntimeError(self._cache["error"])
        self._cache["path"] = path = self._find_or_install()
        return path

    def _find_or_install(self) -> Optional[str]:
        override = os.environ.get(f"OA_REAL_{self.name.upper()}_BIN")
        if override:
            return override
        for cand in self.candidates():
            if os.access(cand, os.X_OK) and version(cand) == self.version_line:
                return cand
        if shutil.which("npm") is None or shutil.which("node") is None:
            return None
        script = f"tests/setup_cli.sh {self.name}"
        try:
            proc = subprocess.run(["bash", str(SETUP_SCRIPT), self.name, str(self.npm_dir)],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            self._cache["error"] = f"{script} timed out after {exc.timeout} s"
            raise RuntimeError(self._cache["error"]) from None
        if proc.returncode == 2:  # node/npm missing (the script's own check)
            return None
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
            self._cache["error"] = (f"{script} failed (rc {proc.returncode}):\n"
                                    f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            raise RuntimeError(self._cache["error"])
        return lines[-1]

    def require(self, why: str) -> str:
        """The binary path; skips the test with `why` when node/npm are missing, but fails it
        under CI=true."""
        import pytest

        path = self.binary()
        if path is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(why + " (CI=true: not skipping)", pytrace=False)
            pytest.skip(why)
        return path

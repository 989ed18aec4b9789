"""Shared fixtures: golden files and running the CLI in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("MEMSPEC_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory):
    """The parsed-module and compile-output caches in a folder of this session's, so that
    the tests neither read nor fill the user's (and run with the caches on, as users do)."""
    os.environ["MEMSPEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("memspec-cache"))


def check_golden(name: str, text: str) -> None:
    """Compare `text` with tests/golden/NAME byte for byte; MEMSPEC_UPDATE_GOLDEN=1 rewrites."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run with MEMSPEC_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden file"


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None):
    """Run `python -m memspec ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "memspec", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def golden():
    return check_golden

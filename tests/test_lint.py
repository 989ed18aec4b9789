"""ruff (lint and format) is part of the test suite, so style cannot drift."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_check_and_format():
    for args in (["check", "src", "tests", "bench"], ["format", "--check", "src", "bench"]):
        proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr

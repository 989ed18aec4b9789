"""`memspec solve --for B` re-checks its answer with B bound: torch decides views and
copies on concrete sizes, and at B = 1 GPT-2's fused QKV heads fold without the copies
that general sizes need, so the step at B = 1 differs from the formula at B = 1."""

from __future__ import annotations

import json

from memspec import compile_spec
from memspec.cli import main
from tests.conftest import ROOT, SPECS

SIZES = ["--set", "L=64", "--set", "V=512", "--set", "D=64", "--set", "N=2", "--set", "H=4",
         "--set", "P=64"]
GENERAL_AT_1 = 1_822_208 + 1_644_040  # the formula bytes(B) at B = 1


def _solve(capsys, budget: int, fmt: str = "text") -> str:
    args = ["solve", "specs/gpt2.mspec", "--for", "B", "--budget", str(budget), *SIZES,
            "--format", fmt]
    assert main(args) == 0
    return capsys.readouterr().out


def test_b1_is_decided_at_b1(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    at_1 = compile_spec(SPECS / "gpt2.mspec", set={"B": 1, "L": 64, "V": 512, "D": 64, "N": 2,
                                                   "H": 4, "P": 64}).peak.value
    assert at_1 == 3_531_784 and at_1 > GENERAL_AT_1  # the decisions at B = 1 cost more
    # a budget the formula says B = 1 fits, which B = 1 compiled at B = 1 does not
    out = _solve(capsys, 3_500_000)
    assert "even B = 1 needs more than 3,500,000 bytes" in out
    assert ("checked with B bound, as torch decides views at that size: "
            "B = 1: 3,531,784 bytes (does not fit)") in out
    assert "at general sizes the answer would be 1" in out
    doc = json.loads(_solve(capsys, 3_500_000, "json"))
    assert doc["max"] is None and doc["general"] == 1
    assert doc["checked"] == [{"value": 1, "bytes": 3_531_784}]


def test_an_answer_above_1_is_confirmed_at_it_and_the_next(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = _solve(capsys, 5_300_000)
    assert "largest B within 5,300,000 bytes: 2" in out
    assert ("B = 2: 5,288,456 bytes (fits), B = 3: 7,110,664 bytes (does not fit)") in out
    assert "general sizes" not in out

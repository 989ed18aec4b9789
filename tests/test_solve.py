"""Inverse queries: the CS336 question's part (b), the largest batch in 80 GB."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import UsageError
from memspec.solve import parse_budget, solve_max
from tests.conftest import ROOT, SPECS


def test_budget_units():
    assert parse_budget("80GB") == 80 * 10**9
    assert parse_budget("80 GiB") == 80 * 2**30
    assert parse_budget("1.5GB") == 1_500_000_000
    assert parse_budget("123") == 123
    with pytest.raises(UsageError):
        parse_budget("80 parsecs")


@pytest.mark.parametrize(
    ("spec", "convention", "expected"),
    [("cs336_lm.mspec", "course", 3), ("cs336_lm_swiglu.mspec", "course", 2),
     ("cs336_lm.mspec", "autograd", 4), ("cs336_lm_swiglu.mspec", "autograd", 3)],
)
def test_largest_batch_in_80_gb_at_gpt2_xl(spec, convention, expected):
    result = compile_spec(SPECS / spec, preset="gpt2_xl", convention=convention)
    solution = solve_max(result, "B", 80 * 10**9)
    assert solution.maximum == expected
    # The answer is exact: it fits, and one more does not.
    B = solution.symbol
    assert solution.expression.xreplace({B: expected}) <= 80 * 10**9
    assert solution.expression.xreplace({B: expected + 1}) > 80 * 10**9


def test_closed_form_when_other_dims_stay_symbolic():
    result = compile_spec(SPECS / "cs336_lm.mspec")
    solution = solve_max(result, "batch_size", 80 * 10**9)
    assert solution.maximum is None
    gpt2_xl = {"V": 50257, "L": 1024, "D": 1600, "N": 48, "H": 25}
    subs = {sp.Symbol(k, integer=True, positive=True): v for k, v in gpt2_xl.items()}
    assert solution.formula.xreplace(subs) == 3


def test_cli_json(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["solve", "specs/cs336_lm.mspec", "--budget", "80GB", "--for", "B",
            "--preset", "gpt2_xl", "--format", "json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("symbol", "max", "objective", "budget_bytes")} == {
        "symbol": "B", "max": 3, "objective": "sum", "budget_bytes": 80_000_000_000}
    assert doc["expression"] == "15517753344*B + 26181184512"

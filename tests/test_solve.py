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
    ("spec", "convention", "objective", "expected"),
    [("cs336_lm.mspec", "course", "sum", 3), ("cs336_lm_swiglu.mspec", "course", "sum", 2),
     ("cs336_lm.mspec", "autograd", "sum", 4), ("cs336_lm_swiglu.mspec", "autograd", "sum", 3),
     # the true peak (steady state, set_to_none=True) does not depend on the convention
     ("cs336_lm.mspec", "course", "peak", 5), ("cs336_lm_swiglu.mspec", "course", "peak", 3)],
)
def test_largest_batch_in_80_gb_at_gpt2_xl(spec, convention, objective, expected):
    result = compile_spec(SPECS / spec, preset="gpt2_xl", convention=convention)
    solution = solve_max(result, "B", 80 * 10**9, objective)
    assert solution.maximum == expected
    # The answer is exact: it fits, and one more does not.
    B = solution.symbol
    assert solution.expression.xreplace({B: expected}) <= 80 * 10**9
    assert solution.expression.xreplace({B: expected + 1}) > 80 * 10**9


def test_peak_expression_is_the_replayed_moment_at_the_start_of_backward():
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", preset="gpt2_xl")
    solution = solve_max(result, "B", 80 * 10**9, "peak")
    B = solution.symbol
    # every other moment is dominated once the sizes are bound: one line in B remains
    assert solution.expression == 13_849_690_112 * B + 25_587_605_768
    assert solution.moment == "backward: cross_entropy.log_probs"
    # parameters, AdamW state, buffers, every tensor autograd saved, the loss and the
    # backward seed (total_weight, 4 bytes, already freed), the two [B, L, V] gradients
    autograd = compile_spec(SPECS / "cs336_lm_swiglu.mspec", preset="gpt2_xl",
                            convention="autograd")
    c = autograd.categories
    constant = sum(autograd.value(c[k].bytes) for k in ("parameters", "optimizer_state",
                                                         "buffers"))
    saved = autograd.resolve(c["activations"].bytes).xreplace(
        {k: sp.Integer(v) for k, v in autograd.bindings.items()})
    want = constant + saved + 4 + 2 * B * 1024 * 50_257 * 4
    assert sp.expand(solution.expression - want) == 0


def test_closed_form_when_other_dims_stay_symbolic():
    result = compile_spec(SPECS / "cs336_lm.mspec")
    solution = solve_max(result, "batch_size", 80 * 10**9, "sum")
    assert solution.maximum is None
    gpt2_xl = {"V": 50257, "L": 1024, "D": 1600, "N": 48, "H": 25}
    subs = {sp.Symbol(k, integer=True, positive=True): v for k, v in gpt2_xl.items()}
    assert solution.formula.xreplace(subs) == 3


def test_cli_json(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["solve", "specs/cs336_lm.mspec", "--budget", "80GB", "--for", "B",
            "--preset", "gpt2_xl", "--format", "json", "--objective", "sum"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("symbol", "max", "objective", "budget_bytes")} == {
        "symbol": "B", "max": 3, "objective": "sum", "budget_bytes": 80_000_000_000}
    assert doc["expression"] == "15517753344*B + 26181184512"


def test_cli_json_default_objective_is_the_peak(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["solve", "specs/cs336_lm.mspec", "--budget", "80GB", "--for", "B",
            "--preset", "gpt2_xl", "--format", "json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("symbol", "max", "objective", "budget_bytes", "phase")} == {
        "symbol": "B", "max": 5, "objective": "peak", "budget_bytes": 80_000_000_000,
        "phase": "backward: cross_entropy.log_probs"}
    assert doc["expression"] == "11333107712*B + 19689365768"


def test_first_step_and_kept_gradients_change_the_answer():
    """Gradients kept through the forward (set_to_none=False) cost P more at every moment."""
    from memspec.passes.peak import StepOptions

    kept = compile_spec(SPECS / "cs336_lm.mspec", preset="gpt2_xl",
                        step=StepOptions(set_to_none=False))
    default = compile_spec(SPECS / "cs336_lm.mspec", preset="gpt2_xl")
    B = sp.Symbol("B", integer=True, positive=True)
    grads = default.value(default.categories["gradients"].bytes)
    a = solve_max(kept, "B", 80 * 10**9).expression
    b = solve_max(default, "B", 80 * 10**9).expression
    assert sp.expand(a - b) == grads
    assert solve_max(kept, "B", 80 * 10**9).maximum == 4
    assert B in a.free_symbols


def test_plot_is_written_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for f in files:
        assert main(["solve", "specs/cs336_lm.mspec", "--budget", "80GB", "--for", "B",
                     "--preset", "gpt2_xl", "--plot", str(f)]) == 0
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files[0].read_bytes() == files[1].read_bytes()


def test_plot_needs_the_other_dims_bound(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert main(["solve", "specs/cs336_lm.mspec", "--budget", "80GB", "--for", "B",
                 "--objective", "sum", "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot needs every dim but B bound" in capsys.readouterr().err

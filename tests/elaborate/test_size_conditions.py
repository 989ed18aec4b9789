"""`if L >= W { ... } else { ... }`: conditions on sizes, decided at the bound sizes.

transformers builds Mistral's window mask only when the sequence reaches the window
(L >= W); below it, the step is LLaMA's. memspec decides such a condition where torch
does, at the sizes bound, and says so in the report; with the sizes unbound it assumes
the condition as written and lists it among the assumptions, never a silent pick.
"""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.passes.peak import StepOptions
from memspec.report.render import render_json, render_markdown
from memspec.syntax import nodes as n
from memspec.syntax.parse import parse
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS

SPEC = """use std
dim batch_size as B
dim context_length as L
dim d_model as D
dim window as W
model M {
    near = Linear(D, D)
    far = Linear(D, 2 * D)
    back = Linear(2 * D, D)
    forward(x: [B, L, D], t: [B, L, D]) {
        if L >= W { y = near(x) } else { y = back(far(x)) }
        return mse_loss(y, t)
    }
}
"""
B, L, D, W = sp.symbols("B L D W", positive=True, integer=True)
MISTRAL = {"B": 2, "L": 6, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32}


def _weights_read(result) -> set[str]:
    graph = result.graph
    return {graph.value(v).path for op in graph.ops for v in op.inputs
            if graph.value(v).path.endswith(".weight")}


def test_the_condition_parses_as_a_comparison():
    stmt = parse(SPEC, "t.mspec").decls[-1].body[3].body.variants[0][1][0]
    assert isinstance(stmt, n.StmtIf)
    assert stmt.condition == n.ExprBinary(">=", n.ExprName("L"), n.ExprName("W"))


@pytest.mark.parametrize("window", [4, 8, 9])
def test_decided_at_the_bound_sizes(window):
    result = compile_spec(SPEC, set={"B": 2, "L": 8, "D": 4, "W": window})
    near = window <= 8
    assert [d.subject for d in result.graph.decisions] == ["L >= W"]
    decision = result.graph.decisions[0]
    assert decision.outcome == ("holds" if near else "does not hold (L < W)")
    assert dict(decision.facts) == {L: 8, W: window}
    assert _weights_read(result) == ({"near.weight"} if near else {"far.weight", "back.weight"})
    md = render_markdown(result)
    assert "## Decided at the bound sizes" in md
    assert f"at $L = 8$, $W = {window}$, `L >= W` " in md
    assert result.graph.conditions == ()


def test_unbound_sizes_assume_the_condition_and_say_so():
    result = compile_spec(SPEC)
    assert [str(c.relation) for c in result.graph.conditions] == ["L >= W"]
    assert _weights_read(result) == {"near.weight"}
    md = render_markdown(result)
    assert "$L \\geq W$, assumed: the sizes it needs are not bound" in md
    doc = json.loads(render_json(result))
    assert any(a.startswith("L >= W, assumed") for a in doc["assumptions"])


def test_a_partly_bound_condition_is_assumed_too():
    result = compile_spec(SPEC, set={"L": 8})
    assert [str(c.relation) for c in result.graph.conditions] == ["L >= W"]


@pytest.mark.parametrize("window", [3, 6, 8])
def test_mistral_verifies_on_both_sides_of_the_window(window):
    result = compile_spec(SPECS / "mistral.mspec", set={**MISTRAL, "W": window},
                          convention="autograd")
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    peak = compare_peak(result, measure_peak(result, StepOptions()))
    assert peak.expected == peak.measured


def test_below_the_window_mistral_is_llama():
    sizes = {**MISTRAL, "W": 8}
    mistral = compile_spec(SPECS / "mistral.mspec", set=sizes, convention="autograd")
    llama = compile_spec(SPECS / "llama.mspec", set=MISTRAL, convention="autograd")
    for key in ("parameters", "activations"):
        assert mistral.value(mistral.categories[key].bytes) == llama.value(
            llama.categories[key].bytes
        )
    assert mistral.peak.value == llama.peak.value


def test_a_condition_on_true_false_and_a_size_is_an_error(tmp_path, capsys):
    spec = tmp_path / "bad.mspec"
    spec.write_text(SPEC.replace("if L >= W", "if L >= true"))
    assert main(["compile", str(spec)]) == 2
    err = capsys.readouterr().err.replace(str(spec), "bad.mspec")
    assert err.splitlines() == [
        "bad.mspec:11:12: error: '>=' is not defined for true/false",
        "        if L >= true { y = near(x) } else { y = back(far(x)) }",
        "           ^~~~~~~~~",
    ]

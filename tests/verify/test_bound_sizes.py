"""Views, saved copies and gradients follow the sizes the user bound (issue #11).

PyTorch decides them on concrete sizes: a dim of size 1 has any stride and never blocks a
merge, so at B = 1 the heads of a fused QKV projection fold into one batch without a
copy, and at KV = 1 (MQA) repeat_kv is a stride-0 view. memspec decides them at the
bound sizes and says in the report which decisions differ from the general ones. Each
case is compared with PyTorch to the byte: every row of the step, and the true peak
(whose only named term is AdamW's `step` counters, 4 bytes per parameter tensor).
"""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.passes.peak import StepOptions
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT, SPECS

FUSED = ROOT / "tests" / "specs" / "fused_qkv.mspec"
GPT2 = {"B": 1, "L": 8, "P": 16, "V": 32, "D": 16, "N": 2, "H": 4, "F": 64}
FUSED_SIZES = {"B": 1, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4}
LLAMA = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "F": 24, "KV": 1}

CASES = [
    (SPECS / "gpt2.mspec", GPT2, ["math"]),
    (FUSED, FUSED_SIZES, ["math"]),
    (FUSED, FUSED_SIZES, ["flash"]),
    (FUSED, {**FUSED_SIZES, "B": 2}, ["math"]),  # the general decision, still exact
    (SPECS / "llama.mspec", LLAMA, ["math"]),  # MQA: repeat_kv a stride-0 view
    (SPECS / "llama.mspec", LLAMA, ["flash"]),
    (SPECS / "llama.mspec", LLAMA, ["eager"]),
    (SPECS / "llama.mspec", {**LLAMA, "B": 1}, ["math"]),  # both at once
]


def _step_counters(result) -> int:
    """Bytes of AdamW's `step` tensors: one float32 scalar per parameter tensor."""
    items = result.categories["parameters"].items
    return 4 * sum(result.value(i.multiplicity) for i in items)


@pytest.mark.parametrize(("spec", "sizes", "use"), CASES)
def test_step_and_peak_equal_pytorchs_at_the_bound_sizes(spec, sizes, use):
    result = compile_spec(spec, set=sizes, use=use, convention="autograd")
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    assert all(t.predicted == t.measured for t in tables)
    peak = compare_peak(result, measure_peak(result, StepOptions()))
    assert {t.name: t.bytes for t in peak.terms} == {"AdamW step counters": _step_counters(result)}
    assert peak.expected == peak.measured
    assert all(measured == expected for _, measured, expected in peak.rows)


def test_the_report_says_which_decisions_hold_only_at_the_bound_sizes():
    result = compile_spec(SPECS / "gpt2.mspec", preset="small", set={"B": 1})
    B = sp.Symbol("B", integer=True, positive=True)
    decided = {(d.subject, d.facts) for d in result.graph.decisions}
    assert decided == {
        ("embeds", ((B, 1),)),  # wpe's [1, L, D] output gets the sum's gradient itself
        ("h.attn.attention.sdpa_math_attention.scores", ((B, 1),)),  # scaled q, k as views
        ("h.attn.attention.sdpa_math_attention", ((B, 1),)),  # v saved as a view
    }
    markdown = result.to_markdown()
    assert "## Decided at the bound sizes" in markdown
    assert (
        "- at $B = 1$, `h.attn.attention.sdpa_math_attention.scores` saves (left operand, right "
        "operand); for general sizes, (left operand copy, right operand copy)" in markdown
    )
    assumptions = json.loads(result.to_json())["assumptions"]
    at_b1 = "at B = 1, h.attn.attention.sdpa_math_attention saves"
    assert any(a.startswith(at_b1) for a in assumptions)
    for sizes in ({}, {"B": 2}):
        general = compile_spec(SPECS / "gpt2.mspec", set=sizes)
        assert general.graph.decisions == ()
        assert "Decided at the bound sizes" not in general.to_markdown()


def test_a_decision_names_the_size_it_turns_on():
    """repeat_kv is a view at H = KV (llama2_7b): H/KV = 1, whatever B is."""
    result = compile_spec(SPECS / "llama.mspec", preset="llama2_7b", set={"B": 1}, use=["eager"])
    H, KV = (sp.Symbol(s, integer=True, positive=True) for s in ("H", "KV"))
    facts = {d.subject: d.facts for d in result.graph.decisions if d.subject.endswith("_rep")}
    assert facts == {
        "model.layers.self_attn.llama_attention.k_rep": ((H / KV, 1),),
        "model.layers.self_attn.llama_attention.v_rep": ((H / KV, 1),),
    }
    rep = next(d for d in result.graph.decisions if d.subject.endswith("k_rep"))
    assert (rep.outcome, rep.general) == ("is a view of its input", "a copy")


def test_mamba_folds_its_transposed_scan_input_without_a_copy_at_b_1():
    """x_proj and out_proj read [B, I, L] tensors transposed; at B = 1 torch views them as
    rows. (The true peak keeps test_peak_exact.py's known scan-backward gap.)"""
    sizes = {"B": 1, "L": 5, "V": 30, "D": 20, "N": 2, "S": 3, "K": 4, "E": 2}
    result = compile_spec(SPECS / "mamba.mspec", set=sizes, use=["slow"], convention="autograd")
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    assert {d.subject for d in result.graph.decisions} == {
        "backbone.layers.mixer.ssm",
        "backbone.layers.mixer.out_proj",
    }

"""`memspec check`: stated answers against memspec's count, term by term (the founding
question's use: a student's answer to CS336's AdamW accounting, part (a), checked)."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.check import parse_answers, verdicts
from memspec.cli import main
from tests.conftest import SPECS

SWIGLU = SPECS / "cs336_lm_swiglu.mspec"
B, L, V, D, N, H = sp.symbols("B L V D N H", integer=True, positive=True)

# the student's answer (docs: founding-question.md), in the question's symbols
PARAMS = "params == V*D + L*D + N*(3*D**2 + D**2 + 12*D**2 + 2*D) + D + D*V"
ACTIVATIONS = (
    "activations == N*(B*L*D + 3*B*L*D + B*H*L**2 + B*H*L**2 + B*L*D + B*L*D + 4*B*L*D"
    " + 4*B*L*D + 4*B*L*D + B*L*D) + B*L*D + B*L*V"
)
OPTIMIZER = "optimizer_state == 2*(V*D + N*(16*D**2 + 2*D) + D + D*V)"


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    names = {s.name: s for s in a.free_symbols}
    return sp.expand(a - b.xreplace({s: names.get(s.name, s) for s in b.free_symbols})) == 0


def test_the_students_answer_is_checked_term_by_term():
    result = compile_spec(
        SWIGLU, convention="course", checks=parse_answers([PARAMS, ACTIVATIONS, OPTIMIZER])
    )
    params, activations, optimizer = verdicts(result)
    # the RoPE tables counted as parameters: L*D more than memspec's parameters, a term
    # no item of memspec's has (its tables are buffers, [L, d_k/2] twice a layer)
    assert not params.check.holds
    assert _same(params.check.difference, -D * L)
    assert [_same(u.elements, D * L) for u in params.unmatched] == [True]
    assert params.missing == () and params.unmatched[0].elsewhere == ()
    # Q, K and V written as one 3*B*L*D are accounted for; the block's second RMSNorm
    # (a B*L*D a layer) and cross-entropy's log-probabilities (B*L*V) are missing
    assert not activations.check.holds
    assert _same(activations.check.difference, B * D * L * N + B * L * V)
    missing = {str(m.elements): (m.count, m.candidates) for m in activations.missing}
    assert set(missing) == {str(sp.expand(B * D * L * N)), str(B * L * V)}
    assert missing[str(B * L * V)] == (1, ("logits", "cross_entropy.log_probs"))
    assert "layers.ln2" in missing[str(sp.expand(B * D * L * N))][1]
    assert activations.unmatched == ()
    assert optimizer.check.holds and optimizer.missing == optimizer.unmatched == ()


def test_a_buffer_counted_as_a_parameter_is_named():
    """An answer that counts the RoPE tables at memspec's size names them as buffers."""
    answer = "params == V*D + N*(L*D/H + 3*D**2 + D**2 + 12*D**2 + 2*D) + D + D*V"
    result = compile_spec(SWIGLU, checks=parse_answers([answer]))
    (verdict,) = verdicts(result)
    (extra,) = verdict.unmatched
    assert _same(extra.elements, N * L * D / H)
    assert extra.elsewhere == ()  # two tables a layer: each is half of it
    answer = "params == V*D + N*(L*D/(2*H) + L*D/(2*H) + 3*D**2 + D**2 + 12*D**2 + 2*D) + D + D*V"
    (verdict,) = verdicts(compile_spec(SWIGLU, checks=parse_answers([answer])))
    assert [u.elsewhere for u in verdict.unmatched] == [
        (("buffers", "layers.attn.rope.cos"), ("buffers", "layers.attn.rope.sin")),
    ] * 2


def test_exit_codes_and_json(capsys):
    args = ["check", str(SWIGLU), "--convention", "course"]
    assert main([*args, "--expect", OPTIMIZER]) == 0
    assert "**Holds**" in capsys.readouterr().out
    assert main([*args, "--expect", PARAMS, "--expect", OPTIMIZER, "--format", "json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert [(d["text"], d["holds"], d["difference"]) for d in doc] == [
        (PARAMS, False, "-D*L"),
        (OPTIMIZER, True, "0"),
    ]
    assert doc[0]["not_counted"] == [{"elements": "D*L", "elsewhere": []}]


def test_an_answer_at_a_preset_is_a_number():
    result = compile_spec(SWIGLU, checks=parse_answers(["params == 22_000_000 at tinystories"]))
    (verdict,) = verdicts(result)
    assert verdict.check.difference == 22_696_448 - 22_000_000  # the spec's own expect
    assert verdict.missing == verdict.unmatched == ()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("params == V*D +* L", "--expect:1:23: error: unexpected '*'"),
        ("flops == V", "cannot expect 'flops'"),
        ("params == V*Q", "unknown name 'Q'"),
        ("params == V at nowhere", "nowhere"),
    ],
)
def test_bad_answers_are_usage_errors(answer, message, capsys):
    assert main(["check", str(SWIGLU), "--expect", answer]) == 2
    assert message in capsys.readouterr().err

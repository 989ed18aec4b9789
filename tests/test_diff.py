"""`memspec diff`: two compiles side by side, each category and the items that differ."""

from __future__ import annotations

import json

import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.diff import diff_results
from tests.conftest import SPECS

D, N, H, B, L = sp.symbols("D N H B L", integer=True, positive=True)
LLAMA = dict(preset="llama2_7b", set={"B": 1, "L": 2048})


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    names = {s.name: s for s in a.free_symbols}
    return sp.expand(a - b.xreplace({s: names.get(s.name, s) for s in b.free_symbols})) == 0


def test_gqa_removes_the_k_and_v_heads_it_drops():
    """KV 32 -> 8 at LLaMA-2-7B's sizes: k_proj and v_proj lose 3/4 of their rows, in the
    weights, their gradients, AdamW's moments and the saved projections; the sizes both
    sides bind alike (D, N, H, ...) stay symbols in B - A."""
    a = compile_spec(SPECS / "llama.mspec", **LLAMA)
    b = compile_spec(SPECS / "llama.mspec", preset="llama2_7b", set={"B": 1, "L": 2048, "KV": 8})
    found = {d.name: d for d in diff_results(a, b)}
    params = found["Parameters"]
    assert _same(params.difference, -4 * 2 * (32 - 8) * D**2 * N / H)
    assert params.values == (6_738_415_616 * 4, 6_738_415_616 * 4 - 805_306_368 * 4)
    assert [(c.path, _same(c.change, -4 * 24 * D**2 * N / H)) for c in params.changes] == [
        ("model.layers.self_attn.k_proj.weight", True),
        ("model.layers.self_attn.v_proj.weight", True),
    ]
    assert len(found["Optimizer state"].changes) == 4
    assert found["Buffers"].difference == 0 and found["Buffers"].changes == ()
    peak = found["True peak"]
    assert peak.values[1] - peak.values[0] == -12_884_901_888


def test_two_specs_name_the_items_only_one_has():
    """The W1-SiLU-W2 FFN against SwiGLU: w3 is only in B."""
    a = compile_spec(SPECS / "cs336_lm.mspec")
    b = compile_spec(SPECS / "cs336_lm_swiglu.mspec")
    params = next(d for d in diff_results(a, b) if d.name == "Parameters")
    only_b = [c.path for c in params.changes if c.a is None]
    assert "layers.ffn.w3.weight" in only_b


def test_the_command_line(capsys):
    # a value that starts with "--" goes after "=": argparse reads it as the option's
    args = ["diff", str(SPECS / "cs336_lm.mspec"), "--both=--preset gpt2_xl --set B=1"]
    assert main([*args, "--b=--precision mixed_bf16", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["a"] == "cs336_lm.mspec --preset gpt2_xl --set B=1"
    params = doc["categories"][0]
    assert params["name"] == "Parameters"
    assert params["values"] == {"a": 6_542_150_400, "b": 3_271_075_200}
    assert main([*args, "--b=--precision"]) == 2
    assert "diff: bad compile flags" in capsys.readouterr().err

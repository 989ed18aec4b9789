"""FLOPs of the matrix products against torch's FlopCounterMode on the lowered model."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from torch.utils.flop_counter import FlopCounterMode

from memspec import compile_spec
from memspec.lower.module import LoweredModel
from tests.conftest import ROOT, SPECS

CASES = [
    ("cs336_lm.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4}),
    ("cs336_lm_swiglu.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4, "F": 24}),
    ("gpt2.mspec", {"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 2, "H": 4}),
    ("llama.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24}),
    ("bert.mspec", {"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 2, "H": 4}),
    ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 2, "H": 2, "C": 5}),
    ("resnet18.mspec", {"B": 2, "I": 32, "C": 10}),
    ("mlp.mspec", {"B": 2, "I": 4, "F": 8, "C": 3}),
]


@pytest.mark.parametrize(("spec", "sizes"), CASES)
def test_flops_match_torchs_counter(spec, sizes):
    result = compile_spec(SPECS / spec, set=sizes, use=["math"])
    torch.manual_seed(0)
    model = LoweredModel(result.graph, result.substitutions())
    inputs = model.make_inputs()
    with FlopCounterMode(display=False) as counter:
        loss = model(*inputs)
        forward = counter.get_total_flops()
        loss.backward()
    assert result.value(result.flops.forward) == forward
    assert result.value(result.flops.total) == counter.get_total_flops()


def test_six_n_d_rule_plus_attention():
    result = compile_spec(ROOT / "specs" / "cs336_lm.mspec")
    B, L, V, D, N = (sp.Symbol(s, integer=True, positive=True) for s in "BLVDN")
    # 6 x (matrix parameters: 12 D^2 per block and the LM head) x tokens, plus Q K^T and
    # P V (4 B L^2 D per block forward, times three with backward).
    want = 6 * B * L * (12 * D**2 * N + D * V) + 12 * B * L**2 * D * N
    assert sp.expand(result.resolve(result.flops.total) - want) == 0

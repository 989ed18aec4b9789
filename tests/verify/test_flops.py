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


@pytest.mark.parametrize(("optimizer", "per_element"),
                         [("adamw", 14), ("adam", 13), ("sgd", 2), ("sgd_momentum", 5)])
def test_optimizer_step_flops_are_declared_per_parameter_element(optimizer, per_element):
    """torch.optim's update, one FLOP per elementwise operation (std/train.mspec says which)."""
    result = compile_spec(SPECS / "cs336_lm.mspec", optimizer=optimizer)
    params = result.categories["parameters"].elements
    assert sp.expand(result.flops.optimizer - per_element * params) == 0
    assert sp.expand(result.flops.step - result.flops.total - per_element * params) == 0


def test_question_c_and_d_at_gpt2_xl():
    """(c) one AdamW step at GPT-2 XL shape, B = 1024; (d) 400k steps at 50% MFU of an
    H100's 989 TFLOP/s (the question's figures)."""
    result = compile_spec(SPECS / "cs336_lm.mspec", preset="gpt2_xl", set={"B": 1024},
                          peak_flops=989e12, mfu=0.5, steps=400_000)
    forward_backward = result.value(result.flops.total)
    optimizer = result.value(result.flops.optimizer)
    assert optimizer == 14 * 1_635_537_600
    assert forward_backward == 3 * 3_506_703_564_800 * 1024  # backward is twice forward
    days = result.training_seconds() / 86_400
    assert days == pytest.approx(
        400_000 * (forward_backward + optimizer) / (0.5 * 989e12) / 86_400, rel=1e-12
    )
    assert round(days, 2) == 100.86

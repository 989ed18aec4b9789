"""The standard library's other layers (LayerNorm, GELU MLP, biases, dropout, flash
attention, tied output layer) in one small model, tests/specs/std_layers.mspec.

The autograd totals below were also checked against a hand-written torch 2.13 CPU
model at B=2, L=8, V=32, D=16, N=3, H=4: 61,316 saved bytes, 10,144 parameters.
"""

from __future__ import annotations

import sympy as sp

from memspec import compile_spec
from memspec.ir.verify import verify
from tests.conftest import ROOT

SPEC = ROOT / "tests" / "specs" / "std_layers.mspec"
B, L, V, D, N, H = (sp.Symbol(s, integer=True, positive=True) for s in "BLVDNH")


def _compile(**options):
    r = compile_spec(SPEC, **options)
    verify(r.graph)
    return r


def test_parameters_count_the_tied_embedding_once():
    r = _compile()
    # wte; per block LayerNorm (2D), attention (4D^2), LayerNorm without bias (D),
    # fc1 (DF + F), fc2 (FD + D); final LayerNorm (2D). F = 4D.
    want = V * D + N * (4 * D**2 + 8 * D**2 + 4 * D + 4 * D) + 2 * D
    assert sp.expand(r.resolve(r.categories["parameters"].elements) - want) == 0


def test_autograd_activations():
    r = _compile(convention="autograd")
    # Per block: LayerNorm mean and rstd (2 BL each norm), ln_1's output (one storage for
    # Q, K, V), q, k, v, flash output, logsumexp (BHL), merged heads, the dropout mask
    # (float32 on the CPU), ln_2's input and output, fc1's output (GELU's input, 4BLD),
    # GELU's output (4BLD): 17 BLD + BHL + 4 BL. Then each block's input (N BLD in all),
    # the last block's output, ln_f's statistics and output, the log-probabilities,
    # tokens and targets (int64), and nll_loss's total_weight.
    want = (N * (17 * B * L * D + B * H * L + 4 * B * L) + N * B * L * D + 2 * B * L * D
            + 2 * B * L + B * L * V + 2 * B * L + 1)
    assert sp.expand(r.resolve(r.categories["activations"].elements) - want) == 0
    small = _compile(convention="autograd", set={"B": 2, "L": 8, "V": 32, "D": 16, "N": 3,
                                                 "H": 4})
    assert small.value(small.categories["activations"].bytes) == 61_316
    assert small.value(small.categories["parameters"].elements) == 10_144


def test_course_counts_the_tied_output_layer():
    r = _compile(convention="course")
    # Per block: ln_1, Q, K, V, flash output, output proj, ln_2, fc2 (BLD each), fc1 and
    # GELU (4 BLD each). Then ln_f, the logits of the tied `linear`, the log-probabilities.
    want = N * 16 * B * L * D + B * L * D + 2 * B * L * V
    assert sp.expand(r.resolve(r.categories["activations"].elements) - want) == 0

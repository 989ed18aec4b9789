"""Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", arXiv 2205.05198, section 4): the activation memory of one GPT layer under
Megatron-LM's conventions (16-bit activations, 1-byte dropout masks, LayerNorm, GELU, a
4h MLP), for no recomputation, selective recomputation and full recomputation:

    sbh (34 + 5as/h)        34 sbh        2 sbh

with s the sequence length (L), b the micro-batch (B), h the hidden size (D) and a the
heads (H). memspec reproduces each row symbolically from `specs/megatron_gpt.mspec`
(the coefficient of N in the activations, exactly), with the one term PyTorch adds
named: native_layer_norm saves each token's mean and rstd in float32 (CUDA's
accumulation type), 2 x 4 bytes per LayerNorm, two LayerNorms a layer: 16 sb bytes. The
same spec's step is then run by torch (fp32, on the CPU) and equals memspec's to the
byte at each level.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from tests.conftest import ROOT, SPECS

SPEC = SPECS / "megatron_gpt.mspec"


def _per_layer(recompute: str) -> tuple[sp.Expr, dict]:
    result = compile_spec(SPEC, recompute=recompute)
    s, b, h, a, n = (result.symbols.lookup(x).symbol for x in "LBDHN")
    activations = sp.expand(result.resolve(result.categories["activations"].bytes))
    return activations.coeff(n), {"s": s, "b": b, "h": h, "a": a}


def _layernorm_stats(s, b) -> sp.Expr:
    """PyTorch's addition: two LayerNorms' float32 mean and rstd per token."""
    return 2 * 2 * 4 * s * b


@pytest.mark.parametrize(
    ("recompute", "row"),
    [
        ("none", lambda s, b, h, a: s * b * h * (34 + 5 * a * s / h)),
        ("selective", lambda s, b, h, a: 34 * s * b * h),
        ("full", lambda s, b, h, a: 2 * s * b * h),
    ],
)
def test_per_layer_activations_are_the_papers_rows(recompute, row):
    per_layer, sym = _per_layer(recompute)
    s, b, h, a = sym["s"], sym["b"], sym["h"], sym["a"]
    # full recomputation keeps only each layer's input: LayerNorm saves nothing then
    named = 0 if recompute == "full" else _layernorm_stats(s, b)
    assert sp.expand(per_layer - row(s, b, h, a) - named) == 0


def test_selective_saves_exactly_the_attention_cores_5as2b():
    """What selective recomputation saves per layer is the paper's 5as^2b: softmax's
    output (2 bytes), the dropout mask (1), the dropout's output (2), each a s^2 b."""
    none, sym = _per_layer("none")
    selective, _ = _per_layer("selective")
    s, b, a = sym["s"], sym["b"], sym["a"]
    assert sp.expand(none - selective - 5 * a * s**2 * b) == 0


SIZES = ["--set=B=2", "--set=L=16", "--set=D=32", "--set=H=4", "--set=V=64", "--set=N=3"]


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_the_spec_is_the_step_torch_runs(recompute, monkeypatch, capsys):
    """The spec's step at each level, run by torch with native_dropout's bool masks and
    the checkpoints torch.utils.checkpoint makes: saved tensors and peak to the byte (in
    float32, where the CPU's LayerNorm statistics are CUDA's dtype too)."""
    monkeypatch.chdir(ROOT)
    args = ["verify", "specs/megatron_gpt.mspec", "--precision", "fp32", "--peak"]
    assert main([*args, "--recompute", recompute, *SIZES]) == 0
    out = capsys.readouterr().out
    assert "verify --peak: equal to the byte in every category and in total" in out

"""Mamba (Hugging Face MambaForCausalLM, state-spaces/mamba-*-hf).

The published count lives in test_zoo.py and rendering in test_every_spec.py; here: the
hand-derived symbolic parameter formula (exact sympy equality), the tied head counted
once in every category, the autograd activations of both scan variants derived by hand,
`verify` of the slow variant at small sizes with zero difference in every row, and the
fused variant refused by `verify` (its CUDA kernel has no CPU implementation).
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.errors import UsageError
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS

MAMBA = SPECS / "mamba.mspec"


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, V, D, N, S_, K, E = map(S, ["B", "L", "V", "D", "N", "S", "K", "E"])
I = E * D  # noqa: E741  (the inner width, HF's intermediate_size)
R = sp.ceiling(D / 16)  # dt_rank "auto"
VP = 8 * sp.ceiling(V / 8)  # the vocabulary padded to a multiple of 8

# A vocabulary that needs padding (30 -> 32) and a d_model whose dt_rank rounds up
# (ceil(20 / 16) = 2), so that verify exercises both ceilings.
TINY = {"B": 2, "L": 5, "V": 30, "D": 20, "N": 2, "S": 3, "K": 4, "E": 2}


def _activation_bytes(variant: str, b_is_1: bool = False) -> sp.Expr:
    """fp32 bytes autograd saves, tensor by tensor.

    Per layer, shared: the layer input, the norm's rsqrt [B, L, 1], x * rsqrt and output
    [B, L, D]; in_proj's output xz [B, L, 2I] (the conv's input and the gate are views of
    it); the conv output [B, I, L + K - 1] (SiLU saves it, sliced); the SiLU output
    h [B, I, L]; the copy x_proj folds its transposed input into [B, L, I]; exp(A_log) and
    A = -exp(A_log) [I, S]; x_proj's output [B, L, R + 2S] (dt, B and C are views of it);
    the copy out_proj folds its transposed input into [B, L, I]. At B = 1 (`b_is_1`) both
    folds are views, as in torch: x_proj saves h itself (counted already), out_proj the
    scan's output y (as many bytes as its copy).
    slow: dt_proj's output and its softplus [B, L, I] each; dA and dB [B, I, L, S] each;
    L + 1 states [B, I, S] (the zero one and one per step); silu(z) and the pre-gate sum
    [B, I, L] each.
    fused: delta [B, I, L]; contiguous copies of B, C [B, S, L] and z [B, I, L]; the fp32
    checkpoints [B, I, ceil(L / 2048), 2S]; the un-gated output [B, I, L].
    Outside: the int64 tokens and shifted labels, the last layer's output, norm_f's rsqrt,
    x * rsqrt and output, the log-probabilities [B, L, VP], nll_loss's total_weight.
    """
    shared = (
        3 * B * L * D
        + B * L
        + 2 * B * L * I
        + B * I * (L + K - 1)
        + B * I * L
        + B * L * I
        + 2 * I * S_
        + B * L * (R + 2 * S_)
        + B * L * I
    )
    if b_is_1:
        shared -= B * L * I
    if variant == "slow":
        scan = 2 * B * L * I + 2 * B * I * L * S_ + B * I * S_ * (L + 1) + 2 * B * I * L
    else:
        scan = B * I * L + 2 * B * S_ * L + B * I * L + 2 * B * I * sp.ceiling(L / 2048) * S_
        scan += B * I * L
    outside = 4 * (3 * B * L * D + B * L + B * L * VP + 1) + 2 * 8 * B * L
    if b_is_1:
        outside += 8  # HF's shifted labels: a view of the padded [1, L + 1] labels
    return N * 4 * (shared + scan) + outside


def test_symbolic_parameter_formula():
    result = compile_spec(MAMBA)
    got = result.resolve(result.categories["parameters"].elements)
    # embeddings (the tied head) and norm_f; per layer the norm, in_proj (2I x D), conv1d
    # (I x 1 x K and a bias), x_proj ((R + 2S) x I), dt_proj (I x R and a bias), A_log
    # (I x S), D (I) and out_proj (D x I).
    per_layer = D + 2 * I * D + I * K + I + (R + 2 * S_) * I + I * R + I + I * S_ + I + D * I
    assert sp.expand(got - (VP * D + D + N * per_layer)) == 0
    assert got.free_symbols == {V, D, N, S_, K, E}


def test_the_tied_head_is_counted_once():
    result = compile_spec(MAMBA, preset="mamba_130m", set={"B": 1})
    for category, suffixes in [
        ("parameters", ("",)),
        ("gradients", (".grad",)),
        ("optimizer_state", (".exp_avg", ".exp_avg_sq")),
    ]:
        paths = [i.path for i in result.categories[category].items]
        assert not [p for p in paths if "lm_head" in p]
        for suffix in suffixes:
            assert paths.count(f"backbone.embeddings.weight{suffix}") == 1, category
    params = result.value(result.categories["parameters"].elements)
    assert params == 129_135_360  # HF's count, in which lm_head.weight is the embedding
    assert result.value(result.categories["gradients"].elements) == params
    assert result.value(result.categories["optimizer_state"].elements) == 2 * params


@pytest.mark.parametrize("variant", ["slow", "fused"])
def test_autograd_activations_by_hand(variant):
    result = compile_spec(MAMBA, convention="autograd", use=[variant])
    got = result.resolve(result.categories["activations"].bytes)
    assert sp.expand(got - result.resolve(_activation_bytes(variant))) == 0


def test_the_scan_variants_at_mamba_130m():
    """B = 1, L = 2048: the slow path's [B, I, L, S] tensors and per-step states dominate."""
    got = {}
    for variant in ("slow", "fused"):
        result = compile_spec(
            MAMBA, preset="mamba_130m", set={"B": 1}, convention="autograd", use=[variant]
        )
        got[variant] = result.value(result.categories["activations"].bytes)
        values = {B: 1, L: 2048, V: 50_280, D: 768, N: 24, S_: 16, K: 4, E: 2}
        assert got[variant] == _activation_bytes(variant, b_is_1=True).xreplace(values)
    # 301,989,888 less each than for general B: at B = 1 x_proj folds its transposed
    # input h without a copy (issue #11)
    assert got == {"slow": 18_120_663_052, "fused": 3_331_809_292}


def test_verify_at_small_sizes():
    result = compile_spec(MAMBA, convention="autograd", set=TINY, use=["slow"])
    measured = measure_step(result)
    tables = compare(result, measured)
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    assert all(t.measured > 0 for t in tables if t.category != "buffers")
    # One embedding matrix in the real module too: the head reuses it.
    assert [n for n in measured.parameters if "embeddings" in n or "lm_head" in n] == [
        "backbone.embeddings.weight"
    ]
    assert measured.parameters["backbone.embeddings.weight"] == 32 * 20  # V padded to 32


def test_verify_refuses_the_fused_kernel():
    result = compile_spec(MAMBA, convention="autograd", set=TINY, use=["fused"])
    with pytest.raises(UsageError, match=r"'selective_scan_fused'.*no PyTorch lowering"):
        measure_step(result)


@pytest.mark.parametrize("sizes", [
    {"B": 2, "L": 64, "V": 256, "D": 64, "N": 3, "S": 16, "K": 4, "E": 2},
    {"B": 3, "L": 16, "V": 64, "D": 32, "N": 3, "S": 4, "K": 4, "E": 2},
])
def test_slow_path_peak_equals_the_tracker(sizes):
    """The scan's backward runs 6L small nodes, later steps first, freeing the states as
    it goes (ssm_recurrence's backward_moments): the peak is the tracker's to the byte."""
    from memspec.verify.peak import compare_peak, measure_peak

    result = compile_spec(SPECS / "mamba.mspec", set=sizes, convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert comparison.moment.startswith("backward: backbone.layers.mixer.selective_scan")
    assert comparison.ok

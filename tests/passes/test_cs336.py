"""The founding question, answered exactly: CS336 A1 AdamW accounting.

Expected formulas are written out by hand from the handout's component list (see
../shared/docs/founding-question.md) and compared with exact sympy equality.
"""

from __future__ import annotations

import sympy as sp

from memspec import compile_spec
from memspec.ir.verify import verify
from tests.conftest import SPECS

B, L, V, D, N, H, F = (sp.Symbol(s, integer=True, positive=True) for s in "BLVDNHF")
GPT2_XL = {"B": 1, "V": 50257, "L": 1024, "N": 48, "D": 1600, "H": 25}


def same(a, b) -> bool:
    return sp.expand(a - b) == 0


def resolved(result, category):
    return result.resolve(result.categories[category].elements)


def test_course_convention_w1_silu_w2():
    r = compile_spec(SPECS / "cs336_lm.mspec", convention="course")
    verify(r.graph)
    params = 2 * V * D + N * (12 * D**2 + 2 * D) + D
    assert same(resolved(r, "parameters"), params)
    assert same(resolved(r, "gradients"), params)
    assert same(resolved(r, "optimizer_state"), 2 * params)
    assert same(resolved(r, "activations"), N * (16 * B * L * D + 2 * B * H * L**2)
                + B * L * D + 2 * B * L * V)
    # RoPE's cos/sin tables: two [L, D/(2H)] float32 buffers per layer, no gradient.
    assert same(resolved(r, "buffers"), N * L * D / H)


def test_course_structured_total_keeps_the_block():
    r = compile_spec(SPECS / "cs336_lm.mspec")
    structured = r.categories["parameters"].structured()
    structured = structured.xreplace({F: 4 * D})
    assert structured == 2 * V * D + N * (12 * D**2 + 2 * D) + D  # structure, not just value


def test_course_convention_swiglu():
    r = compile_spec(SPECS / "cs336_lm_swiglu.mspec", convention="course")
    verify(r.graph)
    # W1, W3: F x D; W2: D x F -> 3DF = 12 D^2 per block, plus 4 D^2 attention.
    params = 2 * V * D + N * (16 * D**2 + 2 * D) + D
    assert same(resolved(r, "parameters"), params)
    assert same(resolved(r, "optimizer_state"), 2 * params)
    # Per block: ln1, Q, K, V, weighted sum, output proj, ln2, W2 (1 BLD each), W1, SiLU,
    # W3 (4 BLD each: F = 4D), QK^T and softmax (BHL^2 each). The product SiLU(W1 x) * W3 x
    # is not a listed component.
    assert same(resolved(r, "activations"), N * (20 * B * L * D + 2 * B * H * L**2)
                + B * L * D + 2 * B * L * V)


def test_autograd_convention_cs336():
    r = compile_spec(SPECS / "cs336_lm.mspec", convention="autograd")
    # Per block, what torch 2.13 saves: RMSNorm x2 (x*rsqrt: BLD, rsqrt: BL), the ln1
    # output once for Q, K and V, rotated q and k, v, the causal mask (L^2 bool), softmax
    # output, the merged heads (a copy), the residual x for ln2, the ln2 output, W1's
    # output (SiLU's input, 4BLD), SiLU's output (4BLD): 17 BLD + BHL^2 + 2 BL + L^2.
    block = 17 * B * L * D + B * H * L**2 + 2 * B * L + L**2
    # Each block's input: the embedding output, then N - 1 block outputs; after the
    # loop: the last block output, ln_final's x*rsqrt and rsqrt and output, the
    # log-probabilities, the int64 tokens and targets, nll_loss's scalar total_weight.
    rest = N * B * L * D + 3 * B * L * D + B * L + B * L * V + 2 * B * L + 1
    assert same(resolved(r, "activations"), N * block + rest)
    nbytes = result_bytes(r)
    assert same(nbytes, 4 * (N * (17 * B * L * D + B * H * L**2 + 2 * B * L)
                             + N * B * L * D + 3 * B * L * D + B * L + B * L * V + 1)
                + N * L**2 + 8 * 2 * B * L)


def result_bytes(r):
    return r.resolve(r.categories["activations"].bytes)


def test_autograd_flash_variant_stores_no_scores():
    r = compile_spec(SPECS / "cs336_lm.mspec", convention="autograd", use=["flash"])
    assert r.variants_used == (("attention", "flash"),)
    # flash saves q, k, v, its output and a float32 logsumexp [B, H, L]; no L^2 tensor.
    block = 18 * B * L * D + B * H * L + 2 * B * L
    rest = N * B * L * D + 3 * B * L * D + B * L + B * L * V + 2 * B * L + 1
    assert same(resolved(r, "activations"), N * block + rest)


def test_course_flash_counts_the_fused_output():
    r = compile_spec(SPECS / "cs336_lm.mspec", convention="course", use=["flash"])
    # The fused kernel's output is the weighted sum; QK^T and softmax are never stored.
    assert same(resolved(r, "activations"), N * 16 * B * L * D + B * L * D + 2 * B * L * V)


def test_gpt2_xl_values_are_exact_integers():
    r = compile_spec(SPECS / "cs336_lm.mspec", set=GPT2_XL)
    b, l, v, d, n, h = (GPT2_XL[k] for k in "BLVDNH")  # noqa: E741
    params = 2 * v * d + n * (12 * d * d + 2 * d) + d
    acts = n * (16 * b * l * d + 2 * b * h * l * l) + b * l * d + 2 * b * l * v
    assert r.value(r.categories["parameters"].elements) == params == 1_635_537_600
    assert r.value(r.categories["optimizer_state"].bytes) == 8 * params
    assert r.value(r.categories["activations"].elements) == acts
    assert r.value(r.total_bytes) == 4 * (4 * params + acts + n * l * d // h)


def test_tinystories_parameter_count_matches_the_handout():
    r = compile_spec(SPECS / "cs336_lm_swiglu.mspec", preset="tinystories")
    assert r.value(r.categories["parameters"].elements) == 22_696_448
    assert [e.text for e in r.expects] == [
        "params == 2*D*V + D + N*(4*D**2 + 3*D*F + 2*D)",
        "params == 22,696,448 at tinystories",
    ]


def test_optimizer_and_precision_policies():
    p = 2 * V * D + N * (12 * D**2 + 2 * D) + D
    for optimizer, states in (("sgd", 0), ("sgd_momentum", 1), ("adam", 2), ("adamw", 2)):
        r = compile_spec(SPECS / "cs336_lm.mspec", optimizer=optimizer)
        assert same(resolved(r, "optimizer_state"), states * p), optimizer
    r = compile_spec(SPECS / "cs336_lm.mspec", precision="mixed_bf16")
    assert same(r.resolve(r.categories["parameters"].bytes), 2 * p)
    assert same(r.resolve(r.categories["gradients"].bytes), 4 * p)
    # exp_avg and exp_avg_sq in float32, plus a float32 master copy.
    assert same(r.resolve(r.categories["optimizer_state"].bytes), 12 * p)

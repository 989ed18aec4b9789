"""LLaMA-2 and Mistral 7B v0.1 (Hugging Face LlamaForCausalLM, MistralForCausalLM).

Per spec (published counts live in test_zoo.py, rendering in test_every_spec.py): a hand-
derived symbolic parameter formula (exact sympy equality), the autograd activations derived
by hand, and `verify` at small sizes with zero difference in every row, for every attention
variant the spec supports (LLaMA: math and flash; Mistral: math, as its window rules out the
fused kernel). Where torch's repeat_kv is a view (KV = H or KV = 1), verify matches every
total and differs only in which op the saved K and V are attributed to; MQA under the fused
kernel is a known gap.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, V, D, N, H, KV, F, W = map(S, ["B", "L", "V", "D", "N", "H", "KV", "F", "W"])

LLAMA, MISTRAL = "llama.mspec", "mistral.mspec"

# --- hand-derived symbolic parameter formulas -------------------------------------------

# embed_tokens and lm_head (VD each), model.norm (D); per layer q_proj and o_proj (D^2
# each), k_proj and v_proj (D x KV*D/H each), gate/up/down_proj (DF each), two RMSNorms.
DECODER = 2 * V * D + D + N * (2 * D**2 + 2 * D * KV * D / H + 3 * D * F + 2 * D)


@pytest.mark.parametrize("spec", [LLAMA, MISTRAL])
def test_symbolic_parameter_formula(spec):
    result = compile_spec(SPECS / spec)
    got = result.resolve(result.categories["parameters"].elements)
    # LLaMA's F has a default (Meta's rule), substituted on both sides; Mistral's has none.
    assert sp.expand(got - result.resolve(DECODER)) == 0
    if spec == MISTRAL:
        assert got.free_symbols == {V, D, N, H, KV, F}


def test_llama_d_ff_follows_metas_rule():
    result = compile_spec(SPECS / LLAMA)
    (dff,) = [d for d in result.symbols.ordered() if d.long_name == "d_ff"]
    # hidden = int(2 * 4D / 3), rounded up to a multiple of 256.
    assert dff.default.xreplace({D: 4096}) == 11_008  # Llama-2-7b
    assert dff.default.xreplace({D: 5120}) == 13_824  # Llama-2-13b
    # 7B and 13B without binding F: the default gives the published counts.
    for dims, count in [
        ({"D": 4096, "N": 32, "H": 32, "KV": 32}, 6_738_415_616),
        ({"D": 5120, "N": 40, "H": 40, "KV": 40}, 13_015_864_320),
    ]:
        result = compile_spec(SPECS / LLAMA, set={"V": 32_000, **dims})
        assert result.value(result.categories["parameters"].elements) == count


def test_gqa_shrinks_the_kv_projections_but_not_the_saved_keys():
    result = compile_spec(SPECS / MISTRAL, preset="mistral_7b", set={"B": 1}, convention="autograd")
    params = {i.path: i for i in result.categories["parameters"].items}
    for name, rows in [("q_proj", 4096), ("k_proj", 1024), ("v_proj", 1024), ("o_proj", 4096)]:
        item = params[f"model.layers.self_attn.{name}.weight"]
        assert tuple(result.value(s) for s in item.shape) == (rows, 4096)
    # with the window mask, repeat_kv copies K and V to all 32 heads; SDPA saves the copies.
    acts = {i.path: i for i in result.categories["activations"].items}
    for name in ("k_rep", "v_rep"):
        item = acts[f"model.layers.self_attn.mistral_attention.{name}"]
        assert tuple(result.value(s) for s in item.shape) == (1, 32, 8192, 128)


# --- activations by hand ----------------------------------------------------------------


def _autograd_bytes(flash: bool) -> sp.Expr:
    """fp32 bytes autograd saves, counted tensor by tensor.

    Per layer: the layer input, x * rsqrt and the output of input_layernorm; RoPE'd q,
    the expanded k and v; the merged heads (o_proj's input); the mid-block residual,
    x * rsqrt and the output of post_attention_layernorm: 10 [B, L, D]; two rsqrt
    [B, L, 1]; gate_proj, up_proj, silu and their product: 4 [B, L, F]. Math adds the
    probabilities [B, H, L, L] and the bool causal mask [L, L]; flash adds its logsumexp
    [B, H, L] (its output, laid out in q's [B, L, H, d] order, is the merged heads).
    Outside: the last layer's output, x * rsqrt and the output of model.norm, one
    rsqrt, the log-probabilities [B, L, V], the int64 tokens and targets, and
    nll_loss's float32 total_weight; the rotary cos and sin [1, L, D/H], made once per
    forward and saved by every layer.
    """
    per_layer = 10 * B * L * D + 2 * B * L + 4 * B * L * F
    per_layer += B * H * L if flash else B * H * L**2
    outside = 4 * (3 * B * L * D + B * L + B * L * V) + 2 * 8 * B * L + 4
    outside += 2 * 4 * L * D / H
    return N * (4 * per_layer + (0 if flash else L**2)) + outside


@pytest.mark.parametrize(
    ("spec", "variant"), [(LLAMA, "math"), (LLAMA, "flash"), (MISTRAL, "math")]
)
def test_autograd_activations_by_hand(spec, variant):
    result = compile_spec(SPECS / spec, convention="autograd", use=[variant])
    got = result.resolve(result.categories["activations"].bytes)
    expected = _autograd_bytes(variant == "flash")
    assert sp.expand(got - result.resolve(expected)) == 0


def test_the_window_changes_no_memory():
    """The sliding window is a mask: no category depends on W."""
    sizes = {"B": 1, "L": 8192, "V": 32_000, "D": 4096, "N": 32, "H": 32, "KV": 8, "F": 14_336}
    for convention in ("course", "autograd"):
        wide = compile_spec(SPECS / MISTRAL, set={**sizes, "W": 4096}, convention=convention)
        narrow = compile_spec(SPECS / MISTRAL, set={**sizes, "W": 16}, convention=convention)
        for name, category in wide.categories.items():
            assert W not in category.bytes.free_symbols
            assert wide.value(category.bytes) == narrow.value(narrow.categories[name].bytes)


def test_the_window_is_a_mask_the_fused_kernel_saves():
    """transformers passes the window as a mask to SDPA, whose CPU flash kernel saves it as
    a float [B, 1, L, L] per layer, whatever W is."""
    result = compile_spec(SPECS / MISTRAL, convention="autograd")
    items = {i.path: i for i in result.categories["activations"].items}
    mask = items["model.layers.self_attn.o.mask"]
    assert mask.shape == (B, 1, L, L) and mask.multiplicity == N


# --- verify at small sizes --------------------------------------------------------------

TINY = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "F": 24}
SMALL = [
    # GQA: KV = 2 of H = 4 heads, so repeat_kv really copies.
    *((LLAMA, {**TINY, "KV": 2}, [v]) for v in ("math", "flash")),
    # MHA (Llama-2-7B's KV = H) under the fused kernel, which saves K and V as given.
    (LLAMA, {**TINY, "KV": 4}, ["flash"]),
    # A window of 3 over 8 positions, so the mask differs from plain causal.
    (MISTRAL, {**TINY, "KV": 2, "W": 3}, ["math"]),
]


def _mismatches(result):
    tables = compare(result, measure_step(result))
    assert all(t.measured > 0 for t in tables)  # buffers too: the rotary tables
    return tables, [(t.category, r) for t in tables for r in t.rows if r.difference]


@pytest.mark.parametrize(("spec", "sizes", "use"), SMALL)
def test_verify_at_small_sizes(spec, sizes, use):
    result = compile_spec(SPECS / spec, convention="autograd", set=sizes, use=use)
    assert _mismatches(result)[1] == []


VIEWS = [
    (LLAMA, {**TINY, "KV": 4}),  # MHA: H / KV = 1
    (LLAMA, {**TINY, "KV": 1}),  # MQA: one K/V head
    (MISTRAL, {**TINY, "KV": 1, "W": 1}),
]


@pytest.mark.parametrize(("spec", "sizes"), VIEWS)
def test_verify_when_repeat_kv_is_a_view(spec, sizes):
    """With H / KV = 1 or KV = 1, torch's repeat_kv is a view; memspec decides it at the
    bound sizes too, so every row matches, not only the totals (issue #11)."""
    result = compile_spec(SPECS / spec, convention="autograd", set=sizes, use=["math"])
    assert _mismatches(result)[1] == []
    reps = [d for d in result.graph.decisions if d.subject.endswith(("k_rep", "v_rep"))]
    assert [d.outcome for d in reps if d.outcome.startswith("is")] == ["is a view of its input"] * 2
    # at H / KV = 1 backward hands k and v the output's gradient, viewed back: no sum
    mha = sizes["KV"] == sizes["H"]
    assert [d.outcome.split(" for ")[0] for d in reps if not d.outcome.startswith("is")] == [
        "gives in backward its output's gradient viewed"
    ] * (2 if mha else 0)

"""Mixtral 8x7B v0.1 (Hugging Face MixtralForCausalLM): Mistral's decoder with a sparse
mixture-of-experts MLP.

The published total lives in test_zoo.py's table, rendering in test_every_spec.py. Here: the
symbolic total and active parameter formulas (exact sympy equality), the active count, HF's
state_dict names, the autograd activations of one MoE block derived by hand, and `verify`
at small sizes with zero difference in every row, for specs/mixtral.mspec (transformers
5.x: 3-D experts, grouped_mm; tests/reference/test_mixtral.py checks it against the
library) and for tests/specs/mixtral_per_expert.mspec (transformers 4.x's per-expert
modules and loop, `route` over an expert bank: balanced routing, nested repeats).
"""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.errors import MemspecError
from memspec.inference import Inference
from memspec.lora import Lora
from memspec.lower.module import LoweredModel
from memspec.passes.active_parameters import count_active_parameters
from memspec.quantize import Weights
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import ROOT, SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, V, D, N, H, KV, F, E, k = map(S, ["B", "L", "V", "D", "N", "H", "KV", "F", "E", "k"])
MIXTRAL = SPECS / "mixtral.mspec"
ROUTED = ROOT / "tests" / "specs" / "mixtral_per_expert.mspec"

# embed_tokens and lm_head (VD each), model.norm (D); per layer q_proj and o_proj (D^2
# each), k_proj and v_proj (D x KV*D/H each), the router gate (D x E), two RMSNorms, and
# the expert MLPs (w1, w2, w3: DF each): E of them stored, k of them used per token.
SHARED = 2 * V * D + D + N * (2 * D**2 + 2 * D * KV * D / H + D * E + 2 * D)
TOTAL = SHARED + N * E * 3 * D * F
ACTIVE = SHARED + N * k * 3 * D * F


@pytest.mark.parametrize("spec", [MIXTRAL, ROUTED], ids=["grouped", "per_expert"])
def test_symbolic_total_and_active_parameter_formulas(spec):
    result = compile_spec(spec)
    total = result.categories["parameters"].elements
    assert sp.expand(total - TOTAL) == 0
    assert total.free_symbols == {V, D, N, H, KV, F, E}
    active = count_active_parameters(result.graph).elements
    assert sp.expand(active - ACTIVE) == 0


@pytest.mark.parametrize("spec", [MIXTRAL, ROUTED], ids=["grouped", "per_expert"])
def test_active_parameters_at_mixtral_8x7b(spec):
    result = compile_spec(spec, preset="mixtral_8x7b")
    assert result.value(result.categories["parameters"].elements) == 46_702_792_704
    assert result.value(count_active_parameters(result.graph).elements) == 12_879_925_248
    assert [e.text for e in result.expects][-1] == "active_params == 12,879,925,248 at mixtral_8x7b"


@pytest.mark.parametrize(
    "options",
    [
        {"lora": Lora(8)},  # the adapters are PEFT's: the model's own count is the expect's
        {"weights": Weights("nf4")},  # packed weights count as the out x in they hold
        {"freeze": ("model.embed_tokens.*",)},  # frozen parameters are used all the same
        {"inference": Inference(16, 4)},  # nothing is trained, everything used
    ],
    ids=["lora", "nf4", "frozen", "inference"],
)
def test_the_active_count_is_the_model_s_whatever_the_run(options):
    """Active parameters are the ones a token uses, trained or not: the spec's `expect`
    holds under LoRA, packed weights, freezing and inference, and the report's count is
    every parameter the run holds, experts k of E."""
    result = compile_spec(MIXTRAL, preset="mixtral_8x7b", set={"B": 1}, **options)
    assert [e.text for e in result.expects][-1] == "active_params == 12,879,925,248 at mixtral_8x7b"
    counted = result.value(count_active_parameters(result.graph).elements)
    unused = (8 - 2) * 32 * 3 * 4096 * 14336  # E - k experts' three [D, F] matrices a layer
    assert counted == result.value(result.categories["parameters"].elements) - unused


def test_a_wrong_active_count_fails_loudly():
    text = MIXTRAL.read_text().replace("12_879_925_248", "12_879_925_249")
    with pytest.raises(MemspecError, match="active_params at mixtral_8x7b is 12,879,925,248"):
        compile_spec(text)


def test_experts_are_3d_parameters_named_as_in_transformers_5():
    sizes = {"B": 1, "L": 4, "V": 8, "D": 4, "N": 2, "H": 2, "KV": 1, "F": 6, "E": 4, "k": 2}
    result = compile_spec(MIXTRAL, set=sizes)
    names = {n: tuple(p.shape) for n, p in
             LoweredModel(result.graph, result.substitutions()).named_parameters()}
    for layer in range(2):
        prefix = f"model.layers.{layer}.mlp"
        assert names[f"{prefix}.gate.weight"] == (4, 4)  # MixtralTopKRouter.weight [E, D]
        assert names[f"{prefix}.experts.gate_up_proj"] == (4, 12, 4)  # [E, 2F, D]
        assert names[f"{prefix}.experts.down_proj"] == (4, 4, 6)  # [E, D, F]
    assert not any(n.endswith(".bias") for n in names)
    assert "lm_head.weight" in names  # untied
    c = result.categories
    for name in ("gradients", "optimizer_state"):
        assert result.value(c[name].elements) == result.value(c["parameters"].elements) * (
            1 if name == "gradients" else 2
        )


def test_grouped_experts_make_no_routing_assumption():
    """Every tensor of grouped_mm's path has k*B*L, B*L or E rows: no divisibility, any
    k and E compile (3 tokens, top-1 of 2 experts)."""
    texts = [a.text for a in compile_spec(MIXTRAL).graph.assumptions]
    assert not any("divides B*L*k" in t for t in texts)
    sizes = {"B": 1, "L": 3, "V": 8, "D": 4, "N": 1, "H": 2, "KV": 1, "F": 4, "E": 2, "k": 1}
    assert compile_spec(MIXTRAL, set=sizes).peak.value > 0


def _grouped_block_bytes() -> sp.Expr:
    """fp32 bytes autograd saves inside one grouped_mm MoE block (T = B*L tokens, S = k*T
    (token, choice) pairs), tensor by tensor, as transformers 5.x saves them.

    Router: softmax's probabilities [T, E]; topk's int64 indices [T, k]; the in-place
    renormalization a clone of the top values [T, k] and their sum [T, 1]. Experts: the
    int64 perm // k, perm and the inverse permutation [S] (three gathers); the gathered
    tokens [S, D] and the int32 offsets [E] (both grouped products); the gate_up output
    [S, 2F] (its halves saved by silu and the product), silu's output and the product
    [S, F]; the sorted routing weights [S] and the down output [S, D] (the weighting mul).
    The gate's input, post_attention_layernorm's output, is counted with that norm.
    """
    T = B * L
    S_ = k * T
    floats = T * E + T * k + T + S_ * (2 * D + 4 * F + 1) + E
    ints = T * k + 3 * S_
    return 4 * floats + 8 * ints


def test_grouped_moe_block_activations_by_hand():
    result = compile_spec(MIXTRAL, convention="autograd")
    items = result.categories["activations"].items
    block = [i for i in items if i.path.startswith("model.layers.mlp.")]
    got = sp.expand(sum((i.bytes for i in block), sp.Integer(0)))
    assert sp.expand(got - N * _grouped_block_bytes()) == 0


@pytest.mark.parametrize("variant", ["sdpa", "eager"])
@pytest.mark.parametrize("sizes", [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24, "E": 4, "k": 2},
    {"B": 1, "L": 6, "V": 16, "D": 8, "N": 1, "H": 2, "KV": 1, "F": 8, "E": 3, "k": 1},
])
def test_grouped_verify_at_small_sizes(sizes, variant):
    result = compile_spec(MIXTRAL, convention="autograd", set=sizes, use=[variant])
    tables = compare(result, measure_step(result))
    assert all(t.measured > 0 for t in tables)
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []


def test_every_expert_is_stored_trained_and_named_as_in_hf_4():
    sizes = {"B": 1, "L": 4, "V": 8, "D": 4, "N": 2, "H": 2, "KV": 1, "F": 6, "E": 4, "k": 2}
    result = compile_spec(ROUTED, set=sizes)
    names = dict(LoweredModel(result.graph, result.substitutions()).named_parameters())
    for layer in range(2):
        prefix = f"model.layers.{layer}.block_sparse_moe"
        assert tuple(names[f"{prefix}.gate.weight"].shape) == (4, 4)  # [E, D], no bias
        for e in range(4):
            assert tuple(names[f"{prefix}.experts.{e}.w1.weight"].shape) == (6, 4)
            assert tuple(names[f"{prefix}.experts.{e}.w2.weight"].shape) == (4, 6)
            assert tuple(names[f"{prefix}.experts.{e}.w3.weight"].shape) == (6, 4)
    assert not any(n.endswith(".bias") for n in names)
    assert "lm_head.weight" in names  # untied
    # Gradients and AdamW's two moments exist for all E experts, not only the active k.
    c = result.categories
    for name in ("gradients", "optimizer_state"):
        assert result.value(c[name].elements) == result.value(c["parameters"].elements) * (
            1 if name == "gradients" else 2
        )


def test_balanced_routing_is_an_assumption_and_is_checked():
    result = compile_spec(ROUTED)
    texts = [a.text for a in result.graph.assumptions]
    assert "E divides B*L*k" in texts
    routed = [r for r in result.graph.regions if r.active is not None]
    assert [(r.path, r.count, r.active) for r in routed] == [
        ("model.layers.block_sparse_moe.experts", E, k)
    ]
    # 1 * 3 tokens, top-1 of 2 experts: 3 slots cannot be shared evenly.
    sizes = {"B": 1, "L": 3, "V": 8, "D": 4, "N": 1, "H": 2, "KV": 1, "F": 6, "E": 2, "k": 1}
    with pytest.raises(MemspecError, match="E divides B\\*L\\*k"):
        compile_spec(ROUTED, set=sizes)


@pytest.mark.parametrize("spec", [MIXTRAL, ROUTED], ids=["grouped", "per_expert"])
def test_forward_flops_follow_the_active_parameters(spec):
    """2 FLOPs per active weight per token (the embedding is a lookup, norms are not
    products), plus the attention products QK^T and PV (2 * 2 * B * L^2 * D per layer).
    The grouped products count each (token, choice) pair once: k experts per token."""
    result = compile_spec(spec, use=["eager"] if spec == MIXTRAL else [])
    matmul_weights = ACTIVE - V * D - D - 2 * N * D
    want = 2 * B * L * matmul_weights + 4 * B * L**2 * D * N
    if spec == MIXTRAL:
        want += D * L / H  # HF's rotary: inv_freq [d/2] times the L positions, once a forward
    assert sp.expand(result.flops.forward - want) == 0


# --- activations by hand ----------------------------------------------------------------


def _moe_block_bytes() -> sp.Expr:
    """fp32 bytes autograd saves inside one MoE block (T = B*L tokens), tensor by tensor.

    Router: softmax's probabilities [T, E]; topk's int64 indices [T, k]; the division by
    the sum saves the top weights [T, k] and the sum [T, 1]. Per expert, on k*T/E slots
    (E experts, so k*T slots in all): torch.where's int64 (idx, top_x) pairs [2, k*T/E];
    the gathered tokens (saved by w1 and w3); w1's and w3's outputs, silu's output and
    their product (saved by w2): four [k*T/E, F]; the expert output and the gathered
    routing weight (the mul); the weighted output (index_add_'s source). The gate's input,
    post_attention_layernorm's output, is counted with that norm.
    """
    T = B * L
    floats = T * E + T * k + T + k * T * (3 * D + 4 * F + 1)
    ints = T * k + 2 * k * T
    return 4 * floats + 8 * ints


def _autograd_bytes(flash: bool) -> sp.Expr:
    """The whole model: Mistral's accounting with the dense MLP's 4 [B, L, F] replaced.

    Per layer outside the MoE block: the layer input, x * rsqrt and the output of
    input_layernorm; RoPE'd q, the expanded k and v; the merged heads; the mid-block
    residual, x * rsqrt and the output of post_attention_layernorm: 10 [B, L, D]; two
    rsqrt [B, L, 1]; math attention adds the probabilities [B, H, L, L] and the bool mask
    [L, L], flash its output [B, L, D] and logsumexp [B, H, L]. Outside the layers: the
    last layer's output, x * rsqrt and model.norm's output, one rsqrt, the log-probs
    [B, L, V], the int64 tokens and targets, nll_loss's float32 total_weight.
    """
    per_layer = 10 * B * L * D + 2 * B * L
    per_layer += B * L * D + B * H * L if flash else B * H * L**2
    outside = 4 * (3 * B * L * D + B * L + B * L * V) + 2 * 8 * B * L + 4
    return N * (4 * per_layer + (0 if flash else L**2) + _moe_block_bytes()) + outside


def test_moe_block_activations_by_hand():
    result = compile_spec(ROUTED, convention="autograd")
    items = result.categories["activations"].items
    block = [i for i in items if i.path.startswith("model.layers.block_sparse_moe.")]
    got = sp.expand(sum((i.bytes for i in block), sp.Integer(0)))
    assert sp.expand(got - N * _moe_block_bytes()) == 0


@pytest.mark.parametrize("variant", ["math", "flash"])
def test_autograd_activations_by_hand(variant):
    result = compile_spec(ROUTED, convention="autograd", use=[variant])
    got = result.categories["activations"].bytes
    assert sp.expand(got - _autograd_bytes(variant == "flash")) == 0


def test_course_counts_router_and_expert_outputs():
    """course: the router's logits and softmax [T, E]; w1, silu, w3 [k*T, F] and w2 [k*T, D]
    over all experts; the renormalizing sum [T], written as an einsum, which course lists;
    no routing bookkeeping (slots, gathers, index_add_)."""
    result = compile_spec(ROUTED, convention="course")
    items = result.categories["activations"].items
    block = [i for i in items if i.path.startswith("model.layers.block_sparse_moe.")]
    got = sp.expand(sum((i.total_elements for i in block), sp.Integer(0)))
    T = B * L
    assert sp.expand(got - N * (2 * T * E + T + k * T * (3 * F + D))) == 0


# --- verify at small sizes --------------------------------------------------------------

TINY = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24}
SMALL = [
    ({**TINY, "E": 4, "k": 2}, "math"),
    ({**TINY, "E": 4, "k": 2}, "flash"),
    ({**TINY, "E": 8, "k": 3}, "math"),  # k*T/E = 6: a token's experts are not a pair
    ({**TINY, "E": 2, "k": 1}, "math"),  # top-1 routing
]


@pytest.mark.parametrize(("sizes", "variant"), SMALL)
def test_verify_at_small_sizes(sizes, variant):
    result = compile_spec(ROUTED, convention="autograd", set=sizes, use=[variant])
    tables = compare(result, measure_step(result))
    assert all(t.measured > 0 for t in tables)
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    routed = {r.name for t in tables for r in t.rows if ".experts." in r.name}
    assert "model.layers.block_sparse_moe.experts.current_hidden_states" in routed


def test_active_parameters_in_the_report_and_the_json():
    result = compile_spec(MIXTRAL, preset="mixtral_8x7b")
    doc = json.loads(result.to_json())
    assert doc["values"]["active_parameters"] == {"elements": 12_879_925_248}
    assert doc["values"]["parameters"]["elements"] == 46_702_792_704
    assert "= 12,879,925,248." in result.to_markdown()


def test_peak_of_the_nested_expert_bank_is_exact(monkeypatch):
    """The experts are a repeat inside the layers' repeat: both are replayed three times
    and their left-out repetitions added back, which equals replaying all of them, here
    where the step peaks inside an expert's backward."""
    from memspec.passes.peak import StepOptions
    from memspec.passes.peak import repeats as peak_repeats

    sizes = {"B": 4, "L": 16, "V": 16, "D": 8, "N": 4, "H": 2, "KV": 1, "F": 256, "E": 4,
             "k": 2}
    for options in (StepOptions(), StepOptions(set_to_none=False)):
        short = compile_spec(ROUTED, set=sizes, use=["math"], step=options)
        monkeypatch.setattr(peak_repeats, "REPLAY_LIMIT", 10)
        full = compile_spec(ROUTED, set=sizes, use=["math"], step=options)
        monkeypatch.undo()
        assert short.peak.value == full.peak.value
        assert short.peak.winner().label() == (
            "backward: model.layers.block_sparse_moe.experts.mul [model.layers N] "
            "[model.layers.block_sparse_moe.experts E]"
        )
    symbolic = compile_spec(ROUTED)
    assert [a.split(":")[0] for a in symbolic.peak.assumptions] == ["N >= 3", "E >= 3"]
    bound = compile_spec(ROUTED, preset="mixtral_8x7b", set={"B": 1, "L": 4096})
    assert bound.peak.winner().label() == "optimizer step: updating lm_head.weight"
    assert bound.peak.value == 748_295_438_340

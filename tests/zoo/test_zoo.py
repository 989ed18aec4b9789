"""The architecture zoo: published parameter counts to the unit, hand-derived formulas,
and `verify` at small sizes with zero difference in every row."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, V, D, N, H, F, P, KV, C = map(S, ["B", "L", "V", "D", "N", "H", "F", "P", "KV", "C"])
IMG = S("I")

PUBLISHED = [
    # (spec, preset, published count, source)
    ("mlp.mspec", "quickstart", 669_706),            # PyTorch Quickstart NeuralNetwork
    ("gpt2.mspec", "small", 124_439_808),            # HF gpt2
    ("llama.mspec", "llama2_7b", 6_738_415_616),     # Llama-2-7b
    ("mistral.mspec", "mistral_7b", 7_241_732_096),  # Mistral-7B-v0.1
    ("cs336_lm_swiglu.mspec", "tinystories", 22_696_448),  # CS336 handout
    ("bert.mspec", "base", 109_482_240),             # bert-base-uncased BertModel
    ("vit.mspec", "b16", 86_567_656),                # torchvision vit_b_16
    ("resnet18.mspec", "imagenet", 11_689_512),      # torchvision resnet18
    ("t5.mspec", "small", 60_506_624),               # t5-small (v1.0)
]


@pytest.mark.parametrize(("spec", "preset", "count"), PUBLISHED)
def test_published_parameter_count(spec, preset, count):
    result = compile_spec(SPECS / spec, preset=preset)
    assert result.value(result.categories["parameters"].elements) == count
    assert result.expects and all(e.holds for e in result.expects)


FORMULAS = {
    "mlp.mspec": IMG**2 * F + F + F * F + F + F * C + C,
    # wte, wpe; per block: two LayerNorms (4D), c_attn (3D^2 + 3D), c_proj (D^2 + D),
    # c_fc (DF + F), c_proj (FD + D); ln_f (2D). The head is wte itself.
    "gpt2.mspec": V * D + P * D + N * (4 * D**2 + 2 * D * F + F + 9 * D) + 2 * D,
    # q and o (D^2 each), k and v (D * KV * D/H each), three SwiGLU matrices, two norms.
    # word, position, token-type embeddings and their LayerNorm; per layer Q, K, V, output
    # (4D^2 + 4D), two LayerNorms (4D), intermediate (DF + F), output (FD + D); pooler.
    "bert.mspec": V * D + P * D + 2 * D + 2 * D + N * (4 * D**2 + 2 * D * F + F + 9 * D)
    + D**2 + D,
    "mistral.mspec": 2 * V * D + N * (2 * D**2 + 2 * D**2 * KV / H + 3 * D * F + 2 * D) + D,
}


@pytest.mark.parametrize("spec", sorted(FORMULAS))
def test_symbolic_parameter_formula(spec):
    result = compile_spec(SPECS / spec)
    got = result.resolve(result.categories["parameters"].elements)
    assert sp.expand(got - result.resolve(FORMULAS[spec])) == 0  # same defaults (F) on both


def test_llama_d_ff_follows_metas_rule():
    result = compile_spec(SPECS / "llama.mspec", set={"D": 4096})
    (dff,) = [d for d in result.symbols.ordered() if d.long_name == "d_ff"]
    assert dff.default.xreplace({D: 4096}) == 11_008
    result = compile_spec(SPECS / "llama.mspec", set={"D": 4096, "V": 32000, "N": 32, "H": 32,
                                                       "KV": 32})
    assert result.value(result.categories["parameters"].elements) == 6_738_415_616


def test_tied_head_counts_once_in_every_state_category():
    result = compile_spec(SPECS / "gpt2.mspec", preset="small")
    params = result.value(result.categories["parameters"].elements)
    assert result.value(result.categories["gradients"].elements) == params
    assert result.value(result.categories["optimizer_state"].elements) == 2 * params
    assert not [i for i in result.categories["parameters"].items if "lm_head" in i.path]


SMALL = {
    "gpt2.mspec": [({"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 2, "H": 4}, ["math"])],
    "llama.mspec": [({"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24}, v)
                    for v in (["math"], ["flash"])],
    "bert.mspec": [({"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 2, "H": 4}, ["math"])],
    # mlp, vit and resnet18 are verified in test_vision.py.
    "t5.mspec": [({"B": 2, "S": 5, "T": 4, "V": 32, "D": 8, "K": 2, "H": 2, "F": 12, "N": 2,
                   "R": 8}, [])],
    "mistral.mspec": [({"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24,
                        "W": 3}, ["math"])],
}
CASES = [(spec, sizes, use) for spec, runs in SMALL.items() for sizes, use in runs]


@pytest.mark.parametrize(("spec", "sizes", "use"), CASES)
def test_verify_at_small_sizes(spec, sizes, use):
    result = compile_spec(SPECS / spec, convention="autograd", set=sizes, use=use)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []


def test_resnet_buffers_are_batch_norm_statistics():
    result = compile_spec(SPECS / "resnet18.mspec", preset="imagenet")
    items = result.categories["buffers"].items
    floats = sum(int(i.total_elements) for i in items if i.dtype.value == "float32")
    counters = [i for i in items if i.dtype.value == "int64"]
    assert floats == 9_600  # running_mean and running_var of 20 BatchNorms
    assert sum(int(i.total_elements) for i in counters) == 20  # num_batches_tracked, scalars
    assert result.value(result.categories["buffers"].bytes) == 9_600 * 4 + 20 * 8


def test_t5_inner_width_is_not_d_model():
    # t5-3b: H * d_kv = 32 * 128 = 4096 while D = 1024; only the attention matrices change.
    K, R = S("K"), S("R")
    result = compile_spec(SPECS / "t5.mspec")
    want = (V * D + N * (4 * D * H * K + 2 * D * F + 2 * D) + N * (8 * D * H * K + 2 * D * F
            + 3 * D) + 2 * R * H + 2 * D)
    assert sp.expand(result.resolve(result.categories["parameters"].elements)
                     - result.resolve(want)) == 0
    big = compile_spec(SPECS / "t5.mspec", set={"V": 32128, "D": 1024, "K": 128, "H": 32,
                                                "F": 16384, "N": 24})
    assert big.value(big.categories["parameters"].elements) == 2_851_598_336

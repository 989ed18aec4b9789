"""GPT-2 (Hugging Face GPT2LMHeadModel) and BERT (Hugging Face BertModel).

Per spec (published counts live in test_zoo.py, rendering in test_every_spec.py): a hand-
derived symbolic parameter formula (exact sympy equality), the lowered module's state_dict
names and shapes against Hugging Face's, and `verify` at small sizes with zero difference in
every row.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.errors import MemspecError
from memspec.lower.module import LoweredModel
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, P, V, D, N, H, F, T = map(S, ["B", "L", "P", "V", "D", "N", "H", "F", "T"])

# --- hand-derived symbolic parameter formulas -------------------------------------------


def _gpt2_params() -> sp.Expr:
    """wte, wpe; per block ln_1, c_attn, c_proj, ln_2, c_fc, c_proj; ln_f; no lm_head."""
    block = (
        (2 * D)  # ln_1 weight and bias
        + (D * 3 * D + 3 * D)  # attn.c_attn, Conv1D D -> 3D
        + (D * D + D)  # attn.c_proj
        + (2 * D)  # ln_2
        + (D * F + F)  # mlp.c_fc
        + (F * D + D)  # mlp.c_proj
    )
    return V * D + P * D + N * block + 2 * D


def _bert_params() -> sp.Expr:
    """Embeddings and their LayerNorm; per layer Q, K, V, output, two LayerNorms, FFN; pooler."""
    embeddings = V * D + P * D + T * D + 2 * D
    layer = (
        3 * (D * D + D)  # attention.self.query, key, value
        + (D * D + D)  # attention.output.dense
        + (2 * D)  # attention.output.LayerNorm
        + (D * F + F)  # intermediate.dense
        + (F * D + D)  # output.dense
        + (2 * D)  # output.LayerNorm
    )
    return embeddings + N * layer + (D * D + D)  # pooler.dense


FORMULAS = {"gpt2.mspec": _gpt2_params(), "bert.mspec": _bert_params()}


@pytest.mark.parametrize("spec", sorted(FORMULAS))
def test_symbolic_parameter_formula(spec):
    result = compile_spec(SPECS / spec)
    got = result.resolve(result.categories["parameters"].elements)
    assert sp.expand(got - result.resolve(FORMULAS[spec])) == 0  # same defaults (F = 4D, T = 2)


def test_formulas_give_the_published_counts():
    gpt2 = {V: 50_257, P: 1_024, D: 768, N: 12, F: 3_072}
    bert = {V: 30_522, P: 512, T: 2, D: 768, N: 12, F: 3_072}
    assert _gpt2_params().subs(gpt2) == 124_439_808
    assert _bert_params().subs(bert) == 109_482_240


def test_gpt2_tied_head_counts_once_in_every_state_category():
    result = compile_spec(SPECS / "gpt2.mspec", preset="small")
    params = result.value(result.categories["parameters"].elements)
    assert result.value(result.categories["gradients"].elements) == params
    assert result.value(result.categories["optimizer_state"].elements) == 2 * params  # AdamW
    assert not [i for i in result.categories["parameters"].items if "lm_head" in i.path]
    assert result.value(result.categories["buffers"].elements) == 0  # no causal-mask buffer


def test_bert_buffers_are_position_and_token_type_ids():
    result = compile_spec(SPECS / "bert.mspec", preset="base")
    items = {i.path: i for i in result.categories["buffers"].items}
    assert sorted(items) == ["embeddings.position_ids", "embeddings.token_type_ids"]
    assert all(i.dtype.value == "int64" for i in items.values())
    assert result.value(result.categories["buffers"].bytes) == 2 * 8 * 512


@pytest.mark.parametrize(
    ("spec", "variants"),
    [
        ("gpt2.mspec", (("attention", "sdpa"), ("gpt2_activation", "gelu_new"),
                        ("hf_causal_mask", "sdpa"), ("kv_cache", "no_cache"))),
        ("bert.mspec", (("attention", "sdpa"),)),
    ],
)
def test_reports_state_the_variants_and_the_tying(spec, variants):
    # Compiling and rendering under both conventions is test_every_spec.py's job.
    result = compile_spec(SPECS / spec)
    assert result.variants_used == variants
    assert "tied" in result.to_markdown()  # the tying assumption is listed in the report


@pytest.mark.parametrize(
    ("spec", "sizes"), [("gpt2.mspec", "GPT2_SMALL"), ("bert.mspec", "BERT_SMALL")]
)
def test_flash_is_refused_with_dropout_on_probabilities(spec, sizes):
    """flash_attention is modelled without dropout, so both specs stay on math."""
    with pytest.raises(MemspecError, match="dropout"):
        compile_spec(SPECS / spec, use=["flash"], set=globals()[sizes])


# --- the lowered module against Hugging Face's state_dict -------------------------------

GPT2_SMALL = {"B": 2, "L": 8, "P": 16, "V": 32, "D": 16, "N": 2, "H": 4, "F": 64}
BERT_SMALL = {"B": 2, "L": 8, "P": 16, "V": 32, "D": 16, "N": 2, "H": 4, "F": 32, "T": 2}


def _state_shapes(spec: str, sizes: dict) -> dict[str, tuple[int, ...]]:
    result = compile_spec(SPECS / spec, set=sizes)
    model = LoweredModel(result.graph, result.substitutions())
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_gpt2_state_dict_is_hugging_faces():
    """GPT2LMHeadModel's keys without the `transformer.` prefix and the tied lm_head alias;
    Conv1D weights are stored [in, out]."""
    d, f, v, p = 16, 64, 32, 16
    expected = {"wte.weight": (v, d), "wpe.weight": (p, d)}
    for i in range(2):
        expected |= {
            f"h.{i}.ln_1.weight": (d,),
            f"h.{i}.ln_1.bias": (d,),
            f"h.{i}.attn.c_attn.weight": (d, 3 * d),
            f"h.{i}.attn.c_attn.bias": (3 * d,),
            f"h.{i}.attn.c_proj.weight": (d, d),
            f"h.{i}.attn.c_proj.bias": (d,),
            f"h.{i}.ln_2.weight": (d,),
            f"h.{i}.ln_2.bias": (d,),
            f"h.{i}.mlp.c_fc.weight": (d, f),
            f"h.{i}.mlp.c_fc.bias": (f,),
            f"h.{i}.mlp.c_proj.weight": (f, d),
            f"h.{i}.mlp.c_proj.bias": (d,),
        }
    expected |= {"ln_f.weight": (d,), "ln_f.bias": (d,)}
    assert _state_shapes("gpt2.mspec", GPT2_SMALL) == expected


def test_bert_state_dict_is_hugging_faces():
    """BertModel's parameter keys exactly, plus its two (non-persistent) id buffers."""
    d, f, v, p = 16, 32, 32, 16
    expected = {
        "embeddings.position_ids": (1, p),
        "embeddings.token_type_ids": (1, p),
        "embeddings.word_embeddings.weight": (v, d),
        "embeddings.position_embeddings.weight": (p, d),
        "embeddings.token_type_embeddings.weight": (2, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
        "pooler.dense.weight": (d, d),
        "pooler.dense.bias": (d,),
    }
    for i in range(2):
        pre = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            expected |= {
                f"{pre}.attention.self.{name}.weight": (d, d),
                f"{pre}.attention.self.{name}.bias": (d,),
            }
        expected |= {
            f"{pre}.attention.output.dense.weight": (d, d),
            f"{pre}.attention.output.dense.bias": (d,),
            f"{pre}.attention.output.LayerNorm.weight": (d,),
            f"{pre}.attention.output.LayerNorm.bias": (d,),
            f"{pre}.intermediate.dense.weight": (f, d),
            f"{pre}.intermediate.dense.bias": (f,),
            f"{pre}.output.dense.weight": (d, f),
            f"{pre}.output.dense.bias": (d,),
            f"{pre}.output.LayerNorm.weight": (d,),
            f"{pre}.output.LayerNorm.bias": (d,),
        }
    assert _state_shapes("bert.mspec", BERT_SMALL) == expected


# --- activations: what the spec's structure implies --------------------------------------


@pytest.mark.parametrize(("spec", "preset"), [("gpt2.mspec", "small"), ("bert.mspec", "base")])
def test_one_dropout_mask_per_dropout(spec, preset):
    """Embedding dropout once; per block the attention probabilities and both residuals."""
    result = compile_spec(SPECS / spec, convention="autograd", preset=preset)
    masks = [
        i for i in result.categories["activations"].items if i.note == "saved by dropout (mask)"
    ]
    assert len(masks) == 4
    total = sum((i.total_elements for i in masks), sp.Integer(0))
    assert sp.expand(result.resolve(total) - (B * L * D + N * (B * H * L**2 + 2 * B * L * D))) == 0


# --- verify at small sizes --------------------------------------------------------------

SMALL = [
    ("gpt2.mspec", GPT2_SMALL, ["math"]),
    ("bert.mspec", BERT_SMALL, ["math"]),
]


@pytest.mark.parametrize(("spec", "sizes", "use"), SMALL)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd_momentum"])
def test_verify_at_small_sizes(spec, sizes, use, optimizer):
    result = compile_spec(
        SPECS / spec, convention="autograd", set=sizes, use=use, optimizer=optimizer
    )
    measured = measure_step(result)
    tables = compare(result, measured)
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    assert all(t.measured > 0 for t in tables if t.category != "buffers")
    assert measured.loss > 0

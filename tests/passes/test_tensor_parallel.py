"""Tensor parallelism (`--tp`, `--sp`): the graph elaborated as one rank runs it, from the
spec's `tp_plan`s; formulas in the degree TP, and the errors a plan can make."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from tests.conftest import SPECS

SWIGLU = SPECS / "cs336_lm_swiglu.mspec"
LLAMA = SPECS / "llama.mspec"
MEGATRON = SPECS / "megatron_gpt.mspec"


def _symbols(result, names):
    return [result.symbols.lookup(n).symbol for n in names]


def _shape(result, path):
    (value,) = [v for v in result.graph.values if v.path == path]
    return value.shape, value.shard


def test_planned_parameters_are_one_ranks_shard():
    result = compile_spec(LLAMA, tp="TP")
    V, D, H, KV, TP = _symbols(result, ["V", "D", "H", "KV", "TP"])
    assert _shape(result, "model.layers.self_attn.q_proj.weight") == ((D / TP, D), 0)
    assert _shape(result, "model.layers.self_attn.k_proj.weight") == ((D * KV / (H * TP), D), 0)
    assert _shape(result, "model.layers.self_attn.o_proj.weight") == ((D, D / TP), 1)
    assert _shape(result, "model.embed_tokens.weight") == ((V / TP, D), 0)
    assert _shape(result, "lm_head.weight") == ((V / TP, D), 0)
    assert _shape(result, "model.norm.weight") == ((D,), None)  # replicated


def test_parameters_and_gradients_per_rank():
    """Every matrix 1/TP on each rank, the norms whole; the gradient of the
    vocab-parallel embedding is the whole table (DTensor makes it Replicate)."""
    result = compile_spec(SWIGLU, tp="TP")
    V, D, N, F, TP = _symbols(result, "VDNF") + _symbols(result, ["TP"])
    params = result.categories["parameters"].elements
    assert (
        sp.expand(params - (N * (4 * D**2 + 3 * D * F) / TP + 2 * N * D + D + 2 * V * D / TP)) == 0
    )
    grads = result.categories["gradients"].elements
    assert sp.expand(grads - params - (V * D - V * D / TP)) == 0
    (embedding,) = [i for i in result.categories["gradients"].items if "token_embed" in i.path]
    assert "whole table" in embedding.note


def test_expects_count_the_whole_model():
    """llama.mspec's `expect params == 68_976_648_192 at llama2_70b` holds at TP 8: the
    spec's counts are of the model, a rank holds 1/8 of its matrices."""
    result = compile_spec(LLAMA, tp=8, preset="llama2_70b", set={"B": 1})
    assert all(e.holds for e in result.expects) and len(result.expects) == 5
    per_rank = result.resolve(result.categories["parameters"].elements).subs(result.substitutions())
    assert per_rank == (68_976_648_192 - 8192 * (2 * 80 + 1)) // 8 + 8192 * (2 * 80 + 1)


def test_sequence_parallel_conventions_differ_by_the_gathered_inputs():
    """PyTorch's DTensor keeps each gathered input of the column-parallel members whole,
    Megatron-LM its 1/TP shard: per layer two gathers (attention, MLP) and the LM
    head's, float32, (1 - 1/TP) of [B, L, D] each."""
    pytorch = compile_spec(SWIGLU, tp="TP", sp=True, convention="autograd")
    megatron = compile_spec(
        SWIGLU, tp="TP", sp=True, sp_convention="megatron", convention="autograd"
    )
    B, L, D, N, TP = _symbols(pytorch, "BLDN") + _symbols(pytorch, ["TP"])
    gap = pytorch.categories["activations"].bytes - megatron.categories["activations"].bytes
    assert sp.expand(gap - (2 * N + 1) * 4 * B * L * D * (1 - 1 / TP)) == 0


def test_sequence_parallel_inserts_gathers_and_reduce_scatters():
    result = compile_spec(
        LLAMA, tp=2, sp=True, set={"B": 2, "L": 8, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2}
    )
    ops = [
        (o.op, o.path)
        for o in result.graph.ops
        if o.op in ("all_gather", "reduce_scatter", "all_reduce")
    ]
    assert ops == [
        ("reduce_scatter", "model.inputs_embeds.reduce_scatter"),
        ("all_gather", "model.layers.input_layernorm.all_gather"),  # once for q, k, v
        ("reduce_scatter", "model.layers.self_attn.o_proj.reduce_scatter"),
        ("all_gather", "model.layers.post_attention_layernorm.all_gather"),
        ("reduce_scatter", "model.layers.mlp.down_proj.reduce_scatter"),
        ("all_gather", "model.all_gather"),  # the final norm's, into the LM head
    ]


def _megatron_per_layer(**flags):
    result = compile_spec(MEGATRON, tp="TP", **flags)
    s, b, h, a, n, t = _symbols(result, "LBDHN") + _symbols(result, ["TP"])
    activations = sp.expand(result.resolve(result.categories["activations"].bytes))
    return activations.coeff(n), (s, b, h, a, t)


def test_korthikanti_table_2_tensor_parallel_row():
    """Korthikanti et al. 2022, Table 2, tensor parallelism: sbh (10 + 24/t + 5as/(ht))
    per layer (the LayerNorms' inputs and the column-parallel members' inputs whole on
    every rank, the dropout masks after the row-parallel ones too), with PyTorch's one
    addition named: two LayerNorms' float32 mean and rstd per token, 16 sb bytes."""
    per_layer, (s, b, h, a, t) = _megatron_per_layer()
    paper = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert sp.expand(per_layer - paper - 16 * s * b) == 0


def test_korthikanti_table_2_sequence_parallel_row():
    """Table 2's tensor + sequence parallelism: sbh (34/t + 5as/(ht)) under Megatron's
    convention (a column-parallel member keeps its input's shard); PyTorch's DTensor
    keeps the two gathered inputs (QKV's and the first MLP projection's) whole, 2 x 2 sbh
    (1 - 1/t) more, and the LayerNorm statistics are per local token, 16 sb / t."""
    megatron, (s, b, h, a, t) = _megatron_per_layer(sp=True, sp_convention="megatron")
    paper = s * b * h * (34 / t + 5 * a * s / (h * t))
    assert sp.expand(megatron - paper - 16 * s * b / t) == 0
    pytorch, _ = _megatron_per_layer(sp=True)
    assert sp.expand(pytorch - megatron - 2 * 2 * s * b * h * (1 - 1 / t)) == 0


def test_the_train_block_sets_tensor_parallelism():
    text = LLAMA.read_text().replace(
        "train { precision fp32; optimizer adamw; use sdpa }",
        "train { precision fp32; optimizer adamw; use sdpa; tp 4; sp true; "
        "sp_convention megatron }",
    )
    parallel = compile_spec(text).config.parallel
    assert (parallel.tp, parallel.sp, parallel.sp_convention) == (4, True, "megatron")


def test_json_gives_the_tensor_parallel_ranks():
    """Tensor parallelism alone: one class of ranks that hold alike, the report's own
    numbers (values.peak is theirs)."""
    out = json.loads(
        _run(
            [
                "compile",
                str(LLAMA),
                "--tp",
                "2",
                "--preset",
                "llama2_7b",
                "--set",
                "B=1",
                "--format",
                "json",
            ]
        )
    )
    (ranks,) = out["ranks"]
    assert ranks["ranks"] == [0, 1] and ranks["peak"] == out["values"]["peak"]
    assert ranks["categories"]["parameters"]["bytes"] == out["values"]["parameters"]["bytes"]


def test_json_names_the_configuration():
    out = json.loads(
        _run(
            [
                "compile",
                str(LLAMA),
                "--tp",
                "2",
                "--sp",
                "--preset",
                "llama2_7b",
                "--set",
                "B=1",
                "--format",
                "json",
            ]
        )
    )
    tp = out["config"]["tensor_parallel"]
    assert tp["degree"] == 2 and "sequence parallel" in tp["description"]
    assert tp["plan"]["model.layers.self_attn.o_proj"] == "rowwise"
    assert tp["plan"]["lm_head"] == "loss_parallel"


def _run(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("source", "flags", "message"),
    [
        (
            MEGATRON.read_text().replace("tp_plan", "# tp_plan"),
            {"tp": 2},
            "no layer of this model has a tp_plan",
        ),
        (None, {"tp": 3, "set": {"V": 48, "D": 48, "H": 4, "KV": 4, "F": 96}}, "TP divides H"),
        (None, {"tp": 0}, "at least 1"),
        (None, {"sp": True}, "--sp shards the sequence across the tensor-parallel ranks"),
        (None, {"tp": 2, "sp_convention": "megatron"}, "give --sp"),
    ],
    ids=["no-plan", "heads", "degree", "sp-without-tp", "convention-without-sp"],
)
def test_bad_configurations_are_clear_errors(source, flags, message):
    spec = source if source is not None else LLAMA
    with pytest.raises(MemspecError, match=message):
        compile_spec(spec, **flags)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            "tp_plan LlamaMLP { gate_proj colwize }",
            "unknown tensor-parallel style 'colwize'; did you mean 'colwise'",
        ),
        (
            "tp_plan LlamaMLP { gate_pro colwise }",
            "'gate_pro' is not a \\(single\\) sublayer of LlamaMLP",
        ),
        ("tp_plan LlamaMLPs { gate_proj colwise }", "tp_plan for unknown layer 'LlamaMLPs'"),
        ("tp_plan LlamaDecoderLayer { input_layernorm rowwise }", "the style is for a Linear"),
    ],
    ids=["style", "member", "layer", "not-a-linear"],
)
def test_bad_plans_are_located_errors(plan, message):
    text = LLAMA.read_text().replace("tp_plan LlamaMLP {", "tp_plan Unused {", 1)
    text = text.replace(
        "tp_plan Unused { gate_proj colwise; up_proj colwise; down_proj rowwise }", plan
    )
    with pytest.raises(MemspecError, match=message) as caught:
        compile_spec(text, tp=2, set={"B": 1, "L": 8, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2})
    assert caught.value.span is not None


def test_solve_for_the_data_parallel_degree_under_tensor_parallelism():
    """`solve --for DP` on the true peak, which is not monotone in the degree (a unit's
    gathered parameters are ceil(d0 / DP) DP rows): every degree is tried in order.
    LLaMA-2-70B at TP 8, bf16 mixed, full recomputation: 2 data-parallel ranks fit
    80 GB (71.1 GB), 1 does not (139.6 GB)."""
    out = _run(
        [
            "solve",
            str(LLAMA),
            "--preset",
            "llama2_70b",
            "--set",
            "B=1",
            "--budget",
            "80GB",
            "--for",
            "DP",
            "--zero",
            "3",
            "--tp",
            "8",
            "--precision",
            "mixed_bf16",
            "--recompute",
            "full",
        ]
    )
    assert "smallest DP within 80,000,000,000 bytes: 2" in out
    flags = {"tp": 8, "zero": 3, "precision": "mixed_bf16", "recompute": "full"}
    for dp, peak in ((1, 139_592_630_788), (2, 71_018_889_732)):
        result = compile_spec(LLAMA, preset="llama2_70b", set={"B": 1}, dp=dp, **flags)
        assert result.peak.value == peak

"""`--weights nf4|fp4` (issue #14): the Linear layers' weights as bitsandbytes' Linear4bit
stores them, with QLoRA on top. Layout formulas (tests/reference/test_bitsandbytes.py
checks them against bitsandbytes itself), counts as PEFT prints them, bad input, and the
step against memspec's lowering (an emulation of MatMul4Bit's tensors) to the byte."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from memspec.lora import Lora
from memspec.quantize import Weights
from tests.conftest import SPECS

LLAMA = SPECS / "llama.mspec"
MLP = SPECS / "mlp.mspec"

ONE_LINEAR = """
use std
dim batch_size as B
dim d_in as I
dim d_out as O
model M {
    lin = Linear(I, O)
    forward(x: [B, I], y: [B, O]) { return mse_loss(lin(x), y) }
}
"""


def layer_bytes(out: int, into: int, double_quant: bool = True) -> int:
    """The packed weight and its quant_state, in bytes (bitsandbytes' quantize_4bit)."""
    n = out * into
    blocks = -(-n // 64)
    packed = -(-n // 2)
    if double_quant:
        return packed + blocks + 4 * -(-blocks // 256) + 4 * 256 + 4 + 4 * 16
    return packed + 4 * blocks + 4 * 16


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize(("out", "into"), [(256, 512), (100, 37), (7, 9), (4096, 11008)])
def test_a_packed_layer_holds_half_a_byte_a_weight_and_its_quant_state(out, into, double_quant):
    # 100 x 37 is no multiple of 64 (a partial last block); 7 x 9 is odd (half a byte pads)
    weights = Weights("nf4", double_quant=double_quant)
    result = compile_spec(ONE_LINEAR, set={"B": 2, "I": into, "O": out}, weights=weights)
    held = result.categories["parameters"].bytes + result.categories["buffers"].bytes
    assert result.value(held) == layer_bytes(out, into, double_quant)


def test_the_output_layer_stays_and_the_rest_is_packed():
    result = compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, weights=Weights("nf4"))
    params = {i.path: i for i in result.categories["parameters"].items}
    q = params["model.layers.self_attn.q_proj.weight"]
    assert q.dtype.value == "uint8"
    assert [result.value(s) for s in q.shape] == [4096 * 4096 // 2, 1]
    assert params["lm_head.weight"].dtype.value == "float32"
    # nothing is trained without adapters: the packed weights are frozen, the rest not
    assert q.note.startswith("frozen")


@pytest.mark.parametrize(("fmt", "compute"), [("nf4", "bfloat16"), ("int8", None)])
def test_quantized_lora_counts_as_peft_prints_them(fmt, compute, capsys):
    args = ["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1", "--weights", fmt]
    args += ["--lora", "64", "--lora-alpha", "16"]
    assert main([*args, "--format", "md"]) == 0
    out = capsys.readouterr().out
    # PEFT counts a packed 4-bit weight twice (numel * 2), an Int8Params' numel is out x in
    # already: both lines are out x in
    assert (
        "`trainable params: 159,907,840 || all params: 6,898,323,456 || trainable%: 2.3181`" in out
    )
    assert "$7 N$ = 224 Linear modules packed" in out
    assert main([*args, "--format", "json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["weights"]["format"] == fmt
    assert config["weights"]["compute_dtype"] == compute
    assert config["weights"]["fused_rows"] == (4 if fmt == "nf4" else None)
    assert config["weights"]["packed"] == 224


def test_the_spec_s_expect_counts_the_weights_unpacked():
    # llama.mspec's `expect params == ...` (symbolic) holds with every Linear packed
    result = compile_spec(LLAMA, weights=Weights("nf4"), lora=Lora(8))
    assert result.expects


def test_the_packed_bytes_are_exact_symbolically():
    result = compile_spec(ONE_LINEAR, weights=Weights("fp4"))
    d_in, d_out = (sp.Symbol(s, integer=True, positive=True) for s in "IO")
    blocks = sp.ceiling(d_in * d_out / 64)
    want = sp.ceiling(d_in * d_out / 2) + blocks + 4 * sp.ceiling(blocks / 256) + 4 * 256 + 4 + 64
    held = result.categories["parameters"].bytes + result.categories["buffers"].bytes
    assert sp.expand(result.resolve(held) - want) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "fp8", "--compute-dtype", "float16"], "which --weights fp8 does not"),
        (["--weights", "fp8", "--no-double-quant"], "FP8Linear's kernel returns x's dtype"),
        (["--weights", "nf3"], "--weights takes one of nf4, fp4, int8, fp8"),
        (["--weights", "int8", "--compute-dtype", "float16"], "--compute-dtype is a 4-bit"),
        (["--weights", "int8", "--no-double-quant"], "--no-double-quant is a 4-bit setting"),
        (["--weights", "int8", "--recompute", "full"], "MatMul8bitLt keeps each Linear's"),
        (["--weights", "int8", "--weights-skip", "lm_hed"], "did you mean 'lm_head'"),
        (["--weights", "nf4", "--compute-dtype", "int8"], "--compute-dtype takes one of"),
        (["--weights", "nf4", "--weights-skip", "lm_hed"], "did you mean 'lm_head'"),
        (["--weights", "nf4", "--tp", "2"], "--weights with --tp is not modelled"),
    ],
)
def test_bad_flags_are_usage_errors(args, message, capsys):
    assert main(["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1", *args]) == 2
    assert message in capsys.readouterr().err


def _product_workspace(weights: Weights, **sizes) -> sp.Expr:
    """matmul_4bit's forward workspace in ONE_LINEAR at `sizes` (unbound: symbolic)."""
    from memspec.ops.registry import lookup

    result = compile_spec(ONE_LINEAR, set=sizes, weights=weights)
    product = next(op for op in result.graph.ops if op.op == "matmul_4bit")
    workspace = lookup("matmul_4bit").workspace(product, result.graph)
    return result.value(workspace) if sizes else workspace


@pytest.mark.parametrize(
    ("weights", "rows", "into", "dequantized"),
    [
        # every CUDA GPU runs the fused kernel to 4 rows (7 in float32 compute)
        (Weights("nf4"), 4, 64, False),
        (Weights("nf4"), 5, 64, True),
        (Weights("nf4", compute="float32"), 7, 64, False),
        (Weights("nf4", compute="float32"), 8, 64, True),
        # where the GPU's choice is stated, and the CPU's default kernel (0)
        (Weights("nf4", fused_rows=16), 16, 64, False),
        (Weights("nf4", fused_rows=16), 17, 64, True),
        (Weights("nf4", fused_rows=0), 1, 64, True),
        # in_features not a whole number of 64-blocks: dequantized at any row count
        (Weights("nf4"), 1, 96, True),
    ],
)
def test_a_4bit_product_dequantizes_the_weight_above_the_fused_rows(
    weights, rows, into, dequantized
):
    """bitsandbytes' gemm_4bit: its fused kernel makes the output alone; its fallback the
    weight in the compute dtype, beside two float32 copies of double-quantized maxima."""
    out = 128
    weight = out * into * weights.compute_dtype.itemsize
    maxima = 2 * 4 * (out * into // 64)
    want = weight + maxima if dequantized else 0
    assert _product_workspace(weights, B=rows, I=into, O=out) == want


def test_without_double_quantization_the_fallback_holds_the_weight_alone():
    """Float32 maxima are used as they are: no float32 copies beside the weight."""
    assert _product_workspace(Weights("nf4", double_quant=False), B=8, I=64, O=128) == 128 * 64 * 2


def test_unbound_rows_are_taken_to_be_more_than_the_fused_kernel_serves():
    i, o = (sp.Symbol(s, integer=True, positive=True) for s in "IO")
    want = 2 * o * i + 8 * sp.ceiling(i * o / 64)
    assert sp.expand(_product_workspace(Weights("nf4")) - want) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "nf4", "--bnb-fused-rows", "1537"], "--bnb-fused-rows takes 0 to 1,536"),
        (["--weights", "int8", "--bnb-fused-rows", "8"], "--bnb-fused-rows is a 4-bit"),
        (["--weights", "fp8", "--bnb-fused-rows", "8"], "--bnb-fused-rows is a 4-bit"),
    ],
)
def test_bad_fused_rows_are_usage_errors(args, message, capsys):
    assert main(["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1", *args]) == 2
    assert message in capsys.readouterr().err


def test_decode_runs_the_fused_kernel_and_the_prefill_dequantizes():
    """Under --mode inference a decode step's products have B rows, the prefill's B P: at
    B = 3 a decode step's 4-bit products hold no dequantized weight, the prefill's (15
    rows) do; with --bnb-fused-rows 0 (the CPU's default kernel) decode's do too."""
    from memspec.inference import Inference
    from memspec.passes.peak.moments import Phase

    sizes = {"V": 64, "D": 64, "F": 128, "N": 2, "H": 4, "KV": 2, "B": 3}
    up = "model.layers.mlp.up_proj.matmul_4bit"
    workspace = 128 * 64 * 2 + 2 * 4 * (128 * 64 // 64)  # [F, D] bfloat16, two maxima copies

    def products(weights: Weights) -> dict:
        """{(phase, the product's op): the largest of its moments}"""
        result = compile_spec(
            LLAMA, set=sizes, precision="bf16", inference=Inference(5, 6), weights=weights
        )
        got: dict = {}
        for moment, value in zip(result.peak.candidates, result.peak.values, strict=True):
            if "matmul_4bit" in moment.where:
                key = (moment.phase, moment.where.split(" [")[0])
                got[key] = max(got.get(key, 0), value)
        return got

    fused, everywhere = products(Weights("nf4")), products(Weights("nf4", fused_rows=0))
    up, down = (f"model.layers.mlp.{p}.matmul_4bit" for p in ("up_proj", "down_proj"))
    assert fused[(Phase.PREFILL, up)] == everywhere[(Phase.PREFILL, up)]
    assert everywhere[(Phase.DECODE, down)] - fused[(Phase.DECODE, down)] == workspace


@pytest.mark.parametrize(
    ("spec", "args", "message"),
    [
        (SPECS / "gpt2.mspec", ["--preset", "small"], "this model has none"),
        (
            LLAMA,
            ["--preset", "llama2_7b", "--weights-skip",
             "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"],
            "every one of this model's is skipped",
        ),
    ],
    ids=["conv1d", "all-skipped"],
)
def test_weights_that_would_store_nothing_quantized_are_refused(spec, args, message, capsys):
    """GPT-2's projections are Conv1D: a report of its float weights under --weights nf4
    would be wrong (transformers quantizes Conv1D too), so it is an error."""
    assert main(["compile", str(spec), "--set", "B=1", "--weights", "nf4", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_pattern_error_has_no_traceback():
    with pytest.raises(MemspecError, match="names no Linear layer"):
        compile_spec(MLP, preset="quickstart", weights=Weights("nf4", skip=("fc9",)))


@pytest.mark.parametrize(
    ("spec", "sizes", "flags"),
    [
        # QLoRA as prepare_model_for_kbit_training leaves it: float32 around the 4-bit
        # products, which run in bfloat16
        (
            LLAMA,
            {"B": 2, "L": 16, "V": 64, "D": 64, "N": 2, "H": 4, "KV": 2, "F": 128},
            ["--weights", "nf4", "--lora", "8"],
        ),
        (
            LLAMA,
            {"B": 2, "L": 16, "V": 64, "D": 64, "N": 3, "H": 4, "KV": 2, "F": 128},
            ["--weights", "nf4", "--lora", "8", "--recompute", "full", "--precision", "bf16"],
        ),
        # 4 rows: every product's forward in the fused kernel, backward's dequantizing
        (
            LLAMA,
            {"B": 1, "L": 4, "V": 64, "D": 64, "N": 2, "H": 4, "KV": 2, "F": 128},
            ["--weights", "nf4", "--lora", "8"],
        ),
        # biases, cast to the compute dtype inside the product
        (MLP, {"B": 4, "I": 8, "F": 64, "C": 10}, ["--weights", "fp4", "--lora", "4"]),
        (MLP, {"B": 4, "I": 8, "F": 64, "C": 10}, ["--weights", "nf4", "--no-double-quant"]),
        # LLM.int8(): x's int8 rows, the int32 product, x kept in the node's ctx to the
        # step's end (at N = 3 the peak is in the first layer, past two layers' inputs)
        (
            LLAMA,
            {"B": 2, "L": 16, "V": 64, "D": 64, "N": 2, "H": 4, "KV": 2, "F": 128},
            ["--weights", "int8", "--lora", "8"],
        ),
        (
            LLAMA,
            {"B": 1, "L": 8, "V": 128, "D": 128, "N": 3, "H": 4, "KV": 4, "F": 256},
            ["--weights", "int8", "--lora", "8"],
        ),
        (MLP, {"B": 4, "I": 8, "F": 64, "C": 10}, ["--weights", "int8", "--lora", "4"]),
        (MLP, {"B": 4, "I": 8, "F": 64, "C": 10}, ["--weights", "int8"]),
        (
            LLAMA,
            {"B": 2, "L": 8, "V": 32, "D": 200, "N": 2, "H": 4, "KV": 2, "F": 300},
            ["--weights", "fp8", "--lora", "4", "--precision", "bf16"],
        ),
        (MLP, {"B": 4, "I": 8, "F": 130, "C": 10}, ["--weights", "fp8", "--lora", "4"]),
    ],
    ids=[
        "qlora",
        "qlora-bf16-full",
        "qlora-fused-rows",
        "mlp-bias",
        "biases-trained",
        "int8-lora",
        "int8-lora-N3",
        "int8-mlp-bias",
        "int8-biases-trained",
        "fp8-lora-bf16-partial-blocks",
        "fp8-mlp-bias",
    ],
)
def test_the_step_torch_runs_matches_to_the_byte(spec, sizes, flags, capsys):
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(spec), "--peak", *flags, *args]) == 0
    assert "equal to the byte in every category and in total" in capsys.readouterr().out


def int8_layer_bytes(out: int, into: int) -> int:
    """LLM.int8()'s weight (int8 [out, in]) and its row scales (SCB, float32 [out])."""
    return out * into + 4 * out


@pytest.mark.parametrize(("out", "into"), [(256, 512), (100, 37), (7, 9), (4096, 11008)])
def test_an_int8_layer_holds_a_byte_a_weight_and_a_scale_a_row(out, into):
    result = compile_spec(ONE_LINEAR, set={"B": 2, "I": into, "O": out}, weights=Weights("int8"))
    categories = result.categories
    assert result.value(categories["parameters"].bytes) == out * into
    assert result.value(categories["buffers"].bytes) == 4 * out  # SCB, counted as a buffer
    assert [i.path for i in categories["buffers"].items] == ["lin.SCB"]
    held = categories["parameters"].bytes + categories["buffers"].bytes
    assert result.value(held) == int8_layer_bytes(out, into)


def test_the_int8_product_s_tensors_are_exact_symbolically():
    """x [B, I] float32 into O outputs: forward, x in float16 (2BI), |x| and its mask (3BI)
    beside the int8 rows (BI) and their scales (4B); then the int32 product (4BO) and its
    float16 dequantization (2BO) beside the output (4BO) and the rows. Nothing saved (x
    needs no gradient), no [O, I] weight in floating point."""
    result = compile_spec(ONE_LINEAR, weights=Weights("int8"))
    graph = result.graph
    quant = next(op for op in graph.ops if op.op == "int8_vectorwise_quant")
    product = next(op for op in graph.ops if op.op == "matmul_8bit")
    b, i, o = (sp.Symbol(s, integer=True, positive=True) for s in "BIO")
    from memspec.ops.registry import lookup

    assert sp.expand(lookup("int8_vectorwise_quant").workspace(quant, graph) - 5 * b * i) == 0
    assert sp.expand(lookup("matmul_8bit").workspace(product, graph) - 6 * b * o) == 0
    assert lookup("matmul_8bit").saved(product, graph) == ()
    held = result.categories["parameters"].bytes + result.categories["buffers"].bytes
    assert sp.expand(result.resolve(held) - (i * o + 4 * o)) == 0


def test_a_trained_bias_of_an_int8_layer_needs_a_2d_input():
    spec = ONE_LINEAR.replace("dim d_out as O", "dim d_out as O\ndim seq as S")
    spec = spec.replace("Linear(I, O)", "Linear(I, O, bias = true)")
    spec = spec.replace("x: [B, I], y: [B, O]", "x: [B, S, I], y: [B, S, O]")
    with pytest.raises(MemspecError, match="a trained bias needs a 2-D x"):
        compile_spec(spec, set={"B": 2, "S": 3, "I": 4, "O": 5}, weights=Weights("int8"))


def test_an_int8_input_held_only_in_ctx_is_invisible_to_saved_tensor_hooks(capsys):
    """In bfloat16 LoRA saves its own float32 copy of x, so MatMul8bitLt's ctx alone keeps
    the bfloat16 x: the peak matches to the byte, while verify's table of saved tensors
    (saved_tensors_hooks, blind to ctx attributes) misses exactly those inputs."""
    sizes = {"B": 1, "L": 8, "V": 128, "D": 128, "N": 3, "H": 4, "KV": 4, "F": 256}
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    flags = ["--weights", "int8", "--lora", "8", "--precision", "bf16"]
    assert main(["verify", str(LLAMA), "--peak", *flags, *args]) == 3  # a mismatch
    out = capsys.readouterr().out
    assert "equal to the byte in every category and in total" in out
    misses = [line for line in out.splitlines() if "hint: memspec:" in line and "saved by" in line]
    assert misses and all("saved by matmul_8bit (input)" in line for line in misses)

"""`--mode inference` (issue #14): the K/V cache as a formula, the report and JSON of
generation, and bad input. tests/reference/test_inference.py checks the numbers against
transformers to the byte."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.inference import Inference
from tests.conftest import SPECS

LLAMA = SPECS / "llama.mspec"
TINY = ["--set", "V=64", "--set", "D=32", "--set", "N=2", "--set", "H=4", "--set", "KV=2"]


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


def test_the_cache_is_two_tensors_per_layer_of_kv_heads():
    result = compile_spec(LLAMA, inference=Inference(1000, 25))
    B, D, N, H, KV = map(S, ["B", "D", "N", "H", "KV"])
    elements, nbytes = result.kv_cache
    # keys and values, N layers, [B, KV, P + T - 1, D / H], float32
    assert sp.expand(elements - 2 * N * B * KV * 1024 * D / H) == 0
    assert sp.expand(nbytes - 4 * elements) == 0


def test_llama3_8b_holds_128_kib_a_token_in_bf16():
    result = compile_spec(
        LLAMA, preset="llama3_8b", set={"B": 1}, precision="bf16", inference=Inference(8191, 2)
    )
    # 32 layers x 2 x 8 KV heads x 128 x 2 bytes = 131,072 bytes per position
    assert result.value(result.kv_cache[1]) == 8192 * 131_072


def test_json_gives_the_cache_and_the_phase_of_the_peak(capsys):
    args = ["compile", str(LLAMA), "--mode", "inference", "--prompt-len", "16"]
    args += ["--new-tokens", "4", "--set", "B=2", "--set", "F=64", *TINY, "--format", "json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["values"]["kv_cache"] == {"elements": 2 * 2 * 2 * 2 * 19 * 8, "bytes": 9728}
    assert doc["peak"]["phase"] == "prefill"
    assert doc["peak"]["moment"].startswith("prefill: model.layers.mlp")
    assert doc["config"]["inference"]["new_tokens"] == 4
    assert doc["categories"]["gradients"]["elements"] == "0"
    assert doc["categories"]["activations"]["elements"] == "0"  # nothing saved


def test_the_report_is_of_generation(capsys):
    args = ["compile", str(LLAMA), "--mode", "inference", "--prompt-len", "5"]
    args += ["--new-tokens", "40", "--set", "B=3", "--set", "F=64", *TINY, "--format", "md"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "**True peak** of generation" in out
    assert "at the moment *decode:" in out
    assert "then 39 decode steps of one token" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "inference"], "--mode inference needs --prompt-len"),
        (["--prompt-len", "8"], "--prompt-len is for --mode inference"),
        (["--kv-cache", "paged"], "--kv-cache is for --mode inference"),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-cache", "paged", "--kv-block", "0"],
            "--kv-block must be at least 1",
        ),
        (["--mode", "inference", "--prompt-len", "0"], "--prompt-len must be at least 1"),
        (["--loop", "forward"], "--loop is for --mode inference"),
        (["--kv-dtype", "fp8"], "--kv-dtype is for --mode inference"),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-dtype", "fp8_e5m2"],
            "stores float8_e4m3fn (--kv-dtype fp8)",
        ),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-cache", "static", "--kv-dtype",
             "fp8"],
            "StaticCache has no quantized layers",
        ),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-cache", "paged", "--kv-dtype",
             "int4"],
            "--kv-dtype takes one of fp8",
        ),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-cache", "static", "--loop",
             "forward"],
            "--kv-cache static runs under --loop generate",
        ),
        (["--mode", "inference", "--prompt-len", "8", "--loop", "beam"], "--loop takes one of"),
        (
            ["--mode", "inference", "--prompt-len", "8", "--kv-cache", "paged", "--loop",
             "generate"],
            "transformers' generate has no paged cache",
        ),
        (["--mode", "inference", "--prompt-len", "8", "--recompute", "full"], "no meaning"),
        (["--mode", "inference", "--prompt-len", "8", "--weights", "int8"], "CUDA's kernels"),
        (["--mode", "inference", "--prompt-len", "8", "--use", "eager"], "`use eager`"),
    ],
)
def test_bad_flags_are_usage_errors(args, message, capsys):
    assert main(["compile", str(LLAMA), "--set", "B=1", *TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_a_model_without_a_generate_block_says_so(capsys):
    args = ["compile", str(SPECS / "cs336_lm.mspec"), "--mode", "inference", "--prompt-len", "8"]
    assert main(args) == 2
    assert "which model TransformerLM has not" in capsys.readouterr().err


def test_a_paged_cache_is_whole_blocks_from_the_start():
    """vLLM's blocks: ceil((P + T - 1) / block) a sequence, before the prefill, written in
    place. Against the contiguous cache: at the prefill's last MLP every layer's cache is
    there in both, so the peaks differ by the blocks' spare positions alone (both under
    a serving loop: transformers' generate has no paged cache)."""
    sizes = {"B": 3, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2, "F": 64}
    contiguous = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5, loop="forward"))
    paged = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5, "paged", 16))
    per_position = 2 * 2 * 3 * 2 * 8 * 4  # N layers x K and V x [B, KV, ., D/H] float32
    assert paged.value(paged.kv_cache[1]) == 32 * per_position  # 24 positions -> 2 blocks
    assert contiguous.value(contiguous.kv_cache[1]) == 24 * per_position
    prefill = {p.peak.winner().phase.value for p in (paged, contiguous)}
    assert prefill == {"prefill"}
    assert paged.peak.value - contiguous.peak.value == (32 - 20) * per_position


def test_solve_gives_the_longest_prompt_that_fits(capsys):
    sizes = {"B": 2, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2, "F": 64}
    fixed = compile_spec(LLAMA, set=sizes, inference=Inference(1, 8))
    budget = fixed.peak.value + 40_000
    args = ["solve", str(LLAMA), "--mode", "inference", "--new-tokens", "8", "--for", "P"]
    args += [f"--set={k}={v}" for k, v in sizes.items()]
    assert main([*args, "--budget", str(budget), "--format", "json"]) == 0
    answer = json.loads(capsys.readouterr().out)["maximum"]
    at = compile_spec(LLAMA, set=sizes, inference=Inference(answer, 8)).peak.value
    above = compile_spec(LLAMA, set=sizes, inference=Inference(answer + 1, 8)).peak.value
    assert at <= budget < above


def test_verify_says_what_checks_inference(capsys):
    args = ["verify", str(LLAMA), "--mode", "inference", "--prompt-len", "4", "--set", "B=1"]
    assert main([*args, "--set", "F=64", *TINY]) == 2
    assert "tests/reference/test_inference.py" in capsys.readouterr().err


def test_an_fp8_paged_cache_is_a_byte_an_element():
    """vLLM's kv_cache_dtype fp8: the same blocks, one byte an element; the peak is
    lower by the cache's other half exactly (it is held from the start)."""
    sizes = {"B": 3, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2, "F": 64}
    paged = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5, "paged", 16))
    fp8 = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5, "paged", 16, kv_dtype="fp8"))
    elements = 32 * 2 * 2 * 3 * 2 * 8  # 2 blocks x N layers x K and V x [B, KV, ., D/H]
    assert paged.value(paged.kv_cache[0]) == fp8.value(fp8.kv_cache[0]) == elements
    assert (paged.value(paged.kv_cache[1]), fp8.value(fp8.kv_cache[1])) == (4 * elements, elements)
    assert paged.peak.value - fp8.peak.value == 3 * elements


def test_a_static_cache_holds_the_whole_generation_from_the_prefill():
    """StaticCache: P + T - 1 positions a layer from its first update in the prefill, so
    the prefill's moments after the last layer's update hold what a DynamicCache holds
    only at the end; under generate its cumulative_length (8 B a layer) beside it."""
    sizes = {"B": 3, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2, "F": 64}
    static = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5, "static"))
    dynamic = compile_spec(LLAMA, set=sizes, inference=Inference(20, 5))
    per_position = 2 * 2 * 3 * 2 * 8 * 4  # N layers x K and V x [B, KV, ., D/H] float32
    assert static.value(static.kv_cache[1]) == dynamic.value(dynamic.kv_cache[1])
    assert static.value(static.kv_cache[1]) == 24 * per_position
    assert {p.peak.winner().phase.value for p in (static, dynamic)} == {"prefill"}
    # at the prefill's last MLP: 24 positions against 20, and cumulative_length
    assert static.peak.value - dynamic.peak.value == 4 * per_position + 8 * 2


MISTRAL = SPECS / "mistral.mspec"
WINDOWED = {"V": 64, "D": 32, "F": 64, "N": 2, "H": 4, "KV": 2, "W": 8, "B": 2}


@pytest.mark.parametrize(
    ("prompt", "new", "positions"),
    [(5, 1, 5), (5, 3, 7), (5, 4, 8), (5, 8, 8), (16, 1, 16), (16, 2, 8), (16, 6, 8)],
)
def test_a_sliding_window_keeps_only_the_window(prompt, new, positions):
    """A DynamicSlidingWindowLayer's storage at the end: the prompt's cat after the
    prefill alone, min(P + T - 1, W) positions once a decode step has run (the cat of the
    last W - 1 and the token, whose view the layer keeps)."""
    result = compile_spec(MISTRAL, set=WINDOWED, inference=Inference(prompt, new))
    # keys and values, 2 layers, [B, KV, positions, D / H], float32
    assert result.value(result.kv_cache[1]) == 2 * 2 * 2 * 2 * positions * 8 * 4


def test_the_window_decides_the_positions_at_the_bound_sizes():
    """window_positions: (storage before, after) of an update of s positions with `past`
    gone through the layer; the first decode step's storage before is the prompt's."""
    from memspec.ir.sizes import BoundSizes
    from memspec.ops.cache import window_positions

    W, past, s = S("W"), S("Lpast"), S("L")
    bound = BoundSizes.of({W: 8, past: 16, s: 1}, {})
    assert window_positions(sp.Integer(0), W, 16, s, bound) == (0, s)
    assert window_positions(past, W, 16, s, bound) == (past, W - 1 + s)  # the first decode
    assert window_positions(past, W, 5, s, bound) == (W, W - 1 + s)  # a later one
    short = BoundSizes.of({W: 8, past: 6, s: 1}, {})
    assert window_positions(past, W, 5, s, short) == (past, past + s)  # below the window


def test_an_fp8_cache_holds_float8_positions_and_two_scales_a_layer():
    """--kv-dtype fp8 with a contiguous cache (transformers' QuantizedCache, fp8 backend):
    one byte an element of P + T - 1 positions, and a float32 scale for the keys and one
    for the values, a layer; the model's dtype does not change it."""
    sizes = {"V": 64, "D": 32, "F": 64, "N": 2, "H": 4, "KV": 2, "B": 2}
    for precision in ("fp32", "bf16"):
        run = Inference(5, 4, kv_dtype="fp8")
        result = compile_spec(LLAMA, set=sizes, precision=precision, inference=run)
        elements, nbytes = (result.value(x) for x in result.kv_cache)
        assert elements == 2 * 2 * 2 * 2 * 8 * 8  # layers, k and v, [B, KV, 8, D / H]
        assert nbytes == elements + 2 * 8


def test_an_fp8_cache_a_spec_does_not_take_is_refused(capsys):
    """A spec whose attention does not go through std's kv_fp8_cache (Mistral's window)
    is refused, not counted as a DynamicCache."""
    sizes = [f"--set={k}={v}" for k, v in WINDOWED.items()]
    args = ["compile", str(MISTRAL), *sizes, "--mode", "inference", "--prompt-len", "5"]
    assert main([*args, "--new-tokens", "3", "--kv-dtype", "fp8"]) == 2
    assert "std's kv_fp8_cache does" in capsys.readouterr().err


def test_an_unmodelled_window_is_refused(capsys):
    """vLLM's window is refused, not counted as a plain cache's."""
    sizes = [f"--set={k}={v}" for k, v in WINDOWED.items()]
    args = ["compile", str(MISTRAL), *sizes, "--mode", "inference", "--prompt-len", "5"]
    assert main([*args, "--new-tokens", "8", "--kv-cache", "paged"]) == 2
    assert "vLLM's block management for a window" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prompt", "new", "positions"), [(5, 3, 7), (5, 4, 8), (5, 8, 8), (16, 1, 8), (16, 6, 8)]
)
def test_a_static_cache_with_a_window_holds_at_most_the_window(prompt, new, positions):
    """A StaticCache's layers hold P + T - 1 positions below the window, W from it on
    (StaticSlidingWindowLayer), whatever the prompt."""
    run = Inference(prompt, new, "static")
    result = compile_spec(MISTRAL, set=WINDOWED, inference=run)
    assert result.value(result.kv_cache[1]) == 2 * 2 * 2 * 2 * positions * 8 * 4


def test_the_report_lists_the_tensors_of_the_winning_moment():
    """generate's tensors the report lists at a peak after the forward are that moment's
    own: with the cache, the parameters and the buffers they are the peak, to the byte."""
    from memspec.report.build import build_report

    sizes = {"B": 3, "V": 512, "D": 32, "F": 48, "N": 3, "H": 4, "KV": 1}
    result = compile_spec(LLAMA, set=sizes, precision="bf16", inference=Inference(5, 40, "static"))
    assert result.peak.winner().where.startswith("after the forward")
    listed = build_report(result).inference[2]
    fixed = result.categories["parameters"].bytes + result.categories["buffers"].bytes
    held = sum(q.value for _, q in listed) + result.value(result.kv_cache[1] + fixed)
    assert held == result.peak.value


# A repeat whose input is a tensor nothing else reads: `for block in layers: x = block(x)`
# frees it when the second block starts, as rebinding x does; a spec that keeps it (a
# caller's other reference) says so with hold.
RELEASED = """
use std
dim batch_size as B
dim context_length as L
dim d_model as D
dim num_layers as N
layer Block(d) {
    lin = Linear(d, d)
    forward(x: [b, s, d]) -> [b, s, d] { return hold(lin(x), x) }
}
model M {
    emb = Embedding(16, D)
    layers = repeat N of Block(D)
    forward(tokens: int64[B, L]) { return mse_loss(layers(emb(tokens)), emb(tokens)) }
    generate(tokens: int64[B, L]) {
        x = emb(tokens) * 2.0
        return returned(KEPT)
    }
}
"""


@pytest.mark.parametrize(("kept", "units"), [("layers(x)", 2), ("hold(layers(x), x)", 3)])
def test_a_repeat_frees_its_first_input_after_the_first_repetition(kept, units):
    """From the second block on the first input is gone unless the spec holds it: the
    peak is the block's input and output (and the held first input), [B, L, D] each."""
    sizes = {"B": 2, "L": 3, "D": 4, "N": 3}
    result = compile_spec(
        RELEASED.replace("KEPT", kept), set=sizes, inference=Inference(3, 1, loop="forward")
    )
    fixed = result.value(result.categories["parameters"].bytes)
    tokens = 8 * 2 * 3  # the prompt's ids
    assert result.peak.value - fixed - tokens == units * 4 * 2 * 3 * 4


def test_gpt2_generates_within_its_position_table(capsys):
    """wpe has P rows (1,024 for GPT-2 small): a generation past them is refused at the
    spec's line, and solve --for P stops there whatever the budget."""
    gpt2 = str(SPECS / "gpt2.mspec")
    args = ["--preset", "small", "--mode", "inference", "--set", "B=1"]
    assert main(["compile", gpt2, *args, "--prompt-len", "1000", "--new-tokens", "30"]) == 2
    assert "exceeds size P (-5 at these sizes)" in capsys.readouterr().err
    assert main(["compile", gpt2, *args, "--prompt-len", "1000", "--new-tokens", "25"]) == 0
    capsys.readouterr()
    assert main(["solve", gpt2, *args, "--new-tokens", "25", "--for", "P", "--budget", "8GB"]) == 0
    out = capsys.readouterr().out
    assert "largest P within 8,000,000,000 bytes: 1,000;" in out
    assert "P = 1,001 the spec refuses: narrow" in out

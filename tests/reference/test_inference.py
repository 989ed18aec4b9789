"""`--mode inference` against transformers itself: LlamaForCausalLM built from a config,
run by `model.generate()` (`--loop generate`, the default) and by a serving loop under
torch.no_grad() (`--loop forward`: `model(input_ids, cache=DynamicCache,
logits_to_keep=1)`, the prompt, then one token at a time), measured by
`inference_harness.LiveTracker` on real tensors, to the byte: the prefill's peak, the
last decode step's (decode steps grow with the cache, so it is theirs), and the cache at
the end. The one named difference: the prompt's ids, the caller's tensor, which the
harness does not count and memspec does (8 B P per sequence: the serving loop's prefill
input; under generate, held by the caller through the call). Three shapes of model: A
(GQA, the MLP decides), B (MQA, a large vocabulary: the logits decide), C (a wider
head); float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.inference import Inference
from memspec.passes.peak.moments import Phase
from tests.conftest import SPECS
from tests.reference.inference_harness import (
    gpt2,
    llama,
    measure_decode,
    measure_generate,
    mistral,
    mixtral,
)

MODELS = {
    "A": {"V": 64, "D": 32, "F": 64, "N": 2, "H": 4, "KV": 2},
    "B": {"V": 512, "D": 32, "F": 48, "N": 3, "H": 4, "KV": 1},
    "C": {"V": 64, "D": 48, "F": 96, "N": 2, "H": 6, "KV": 3},
}
# (B, P, T): the MLP's moment in the prefill, and a long generation where decode wins
LOOPS = [(1, 8, 4), (2, 16, 4), (3, 5, 40)]
# a narrow MLP: the attention's output projection decides, with q (a local of the
# attention) alive; a long generation: a StaticCache's decode masks are long
NARROW = {"V": 64, "D": 32, "F": 16, "N": 2, "H": 4, "KV": 2}


def fixed_bytes(result) -> int:
    """memspec's parameters and buffers: what the harness counts from (its baseline)."""
    parameters = result.value(result.categories["parameters"].bytes)
    return parameters + result.value(result.categories["buffers"].bytes)


def phase_peak(result, phase: Phase) -> int:
    """memspec's peak of one phase, less the parameters and buffers (the harness's
    baseline)."""
    fixed = fixed_bytes(result)
    values = [
        v
        for c, v in zip(result.peak.candidates, result.peak.values, strict=True)
        if c.phase is phase
    ]
    return max(values) - fixed


# the families whose generation is checked: (the library's model at sizes, memspec's spec)
FAMILIES = {
    "llama": (llama, "llama.mspec"),
    "mixtral": (mixtral, "mixtral.mspec"),
    "gpt2": (gpt2, "gpt2.mspec"),
}


@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MODELS)
def test_generation_equals_transformers(name, precision, loop):
    check_serving_loop(MODELS[name], precision, loop)


def check_serving_loop(dims: dict, precision: str, loop: tuple, family: str = "llama") -> None:
    """The serving loop (`--loop forward`): the prefill's peak, the largest decode step's
    (the last: decode steps grow with the cache), the peak's phase and the cache at the
    end."""
    batch, prompt, new = loop
    build, spec = FAMILIES[family]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build(dims, dtype)
    ids = torch.randint(3, dims["V"], (batch, prompt))
    steps = measure_decode(model, ids, new, logits_to_keep=1)
    result = compile_spec(
        SPECS / spec,
        set={**dims, "B": batch},
        precision=precision,
        inference=Inference(prompt, new, loop="forward"),
    )
    prompt_ids = 8 * batch * prompt
    assert phase_peak(result, Phase.PREFILL) - prompt_ids == steps[0].peak
    assert phase_peak(result, Phase.DECODE) == max(s.peak for s in steps[1:])
    assert steps[-1].peak == max(s.peak for s in steps[1:])  # the last step is the largest
    elements, nbytes = result.kv_cache
    assert result.value(nbytes) == steps[-1].cache_bytes
    assert result.value(elements) * dtype.itemsize == steps[-1].cache_bytes
    winner = result.peak.winner()
    measured = max(steps[0].peak + prompt_ids, max(s.peak for s in steps[1:]))
    fixed = fixed_bytes(result)
    assert result.peak.value - fixed == measured
    assert winner.phase is (
        Phase.PREFILL if steps[0].peak + prompt_ids == measured else Phase.DECODE
    )


@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MODELS)
def test_an_fp8_cache_in_a_serving_loop_equals_transformers(name, precision, loop):
    """The serving loop with transformers' QuantizedCache(backend="fp8"): the prefill
    quantizes k and v and attends to them as they are; a decode step appends the token's
    float8 positions (the old tensors alive to the update's return) and attends to the
    whole cache dequantized (float32 copies of v beside k's result at the largest moment):
    the prefill's peak, the largest decode step's, and the float8 cache and its float32
    scales at the end."""
    batch, prompt, new = loop
    dims = MODELS[name]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = llama(dims, dtype)
    ids = torch.randint(3, dims["V"], (batch, prompt))
    steps = measure_decode(model, ids, new, logits_to_keep=1, kind="fp8")
    result = compile_spec(
        SPECS / "llama.mspec",
        set={**dims, "B": batch},
        precision=precision,
        inference=Inference(prompt, new, loop="forward", kv_dtype="fp8"),
    )
    assert phase_peak(result, Phase.PREFILL) - 8 * batch * prompt == steps[0].peak
    assert phase_peak(result, Phase.DECODE) == max(s.peak for s in steps[1:])
    layer = 2 * batch * dims["KV"] * (dims["D"] // dims["H"]) * (prompt + new - 1) + 8
    assert steps[-1].cache_bytes == dims["N"] * layer
    assert result.value(result.kv_cache[1]) == steps[-1].cache_bytes


@pytest.mark.parametrize("cache", ["dynamic", "static", "fp8"])
@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MODELS)
def test_generate_equals_transformers(name, precision, loop, cache):
    check_generate(MODELS[name], precision, loop, cache)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_with_a_narrow_mlp_equals_transformers(precision, cache):
    check_generate(NARROW, precision, (2, 4, 60), cache)


def check_generate(
    dims: dict, precision: str, loop: tuple, cache: str, family: str = "llama"
) -> None:
    """`model.generate(ids, max_new_tokens=T, do_sample=False)` with a DynamicCache, a
    StaticCache of P + T - 1 positions or an FP8 QuantizedCache ("fp8"): the peak, its
    phase, the largest decode step, the cache at the end, and (DynamicCache,
    QuantizedCache) the prefill's step alone (a step runs from its forward to the next
    one's: generate's token selection after a forward is the step's)."""
    batch, prompt, new = loop
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    build, spec = FAMILIES[family]
    model = build(dims, dtype)
    ids = torch.randint(3, dims["V"], (batch, prompt))
    measured = measure_generate(model, ids, new, cache)
    assert measured.forwards == new and measured.sequences_shape == (batch, prompt + new)
    kv = {"dynamic": "contiguous", "static": "static", "fp8": "contiguous"}[cache]
    kv_dtype = "fp8" if cache == "fp8" else ""
    result = compile_spec(
        SPECS / spec,
        set={**dims, "B": batch},
        precision=precision,
        inference=Inference(prompt, new, kv, kv_dtype=kv_dtype),
    )
    caller_ids = 8 * batch * prompt  # the caller's prompt, which the harness leaves out
    fixed = fixed_bytes(result)
    assert result.peak.value - fixed - caller_ids == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase
    if measured.peak_phase == "decode":  # the last step is the largest
        assert measured.step_peaks[-1] == max(measured.step_peaks[1:])
    assert result.value(result.kv_cache[1]) == measured.cache_bytes
    if cache == "fp8":
        assert phase_peak(result, Phase.DECODE) - caller_ids == max(measured.step_peaks[1:])
    if cache != "static":  # a StaticCache's length is the whole generation's
        # the prefill's step alone: generate's steps do not depend on how many follow
        first = compile_spec(
            SPECS / spec,
            set={**dims, "B": batch},
            precision=precision,
            inference=Inference(prompt, 1, kv_dtype=kv_dtype),
        )
        assert first.peak.value - fixed - caller_ids == measured.step_peaks[0]


# Mistral's sliding window (W = 8): a DynamicCache of DynamicSlidingWindowLayers keeps
# the cat of the window's last W - 1 positions and the step's, a view of its last W - 1:
# prompts shorter and longer than the window, generations crossing it; the first decode
# step frees the prompt's storage (P > W: larger than the last), and from W keys on the
# model hands SDPA a mask (packed GQA in decode, repeat_kv in the prefill).
WINDOWED = {"V": 64, "D": 32, "F": 64, "N": 2, "H": 4, "KV": 2, "W": 8}
WINDOW_LOOPS = [(2, 5, 8), (2, 16, 6), (2, 7, 4), (1, 3, 12)]


def compile_mistral(dims: dict, batch: int, precision: str, run: Inference):
    return compile_spec(
        SPECS / "mistral.mspec", set={**dims, "B": batch}, precision=precision, inference=run
    )


@pytest.mark.parametrize("loop", WINDOW_LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sliding_window_serving_loop_equals_transformers(precision, loop):
    """The serving loop (`--loop forward`) over MistralForCausalLM: the prefill's peak,
    the decode steps' largest (the first one's where the prompt is longer than the
    window), and the cache at the end, C(min(P + T - 1, W))."""
    batch, prompt, new = loop
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = mistral(WINDOWED, dtype)
    ids = torch.randint(3, WINDOWED["V"], (batch, prompt))
    steps = measure_decode(model, ids, new, logits_to_keep=1)
    result = compile_mistral(WINDOWED, batch, precision, Inference(prompt, new, loop="forward"))
    prompt_ids = 8 * batch * prompt
    assert phase_peak(result, Phase.PREFILL) - prompt_ids == steps[0].peak
    assert phase_peak(result, Phase.DECODE) == max(s.peak for s in steps[1:])
    itemsize = dtype.itemsize
    layer = 2 * batch * WINDOWED["KV"] * (WINDOWED["D"] // WINDOWED["H"]) * itemsize
    assert steps[-1].cache_bytes == WINDOWED["N"] * layer * min(prompt + new - 1, WINDOWED["W"])
    assert result.value(result.kv_cache[1]) == steps[-1].cache_bytes


@pytest.mark.parametrize("loop", [*WINDOW_LOOPS, (2, 9, 4)], ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sliding_window_generate_equals_transformers(precision, loop):
    """`model.generate()` with a DynamicCache over MistralForCausalLM: the peak, its phase,
    the largest decode step, and the cache at the end."""
    batch, prompt, new = loop
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = mistral(WINDOWED, dtype)
    ids = torch.randint(3, WINDOWED["V"], (batch, prompt))
    measured = measure_generate(model, ids, new, "dynamic")
    result = compile_mistral(WINDOWED, batch, precision, Inference(prompt, new))
    caller_ids = 8 * batch * prompt
    fixed = fixed_bytes(result)
    assert result.peak.value - fixed - caller_ids == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase
    assert phase_peak(result, Phase.DECODE) - caller_ids == max(measured.step_peaks[1:])
    assert result.value(result.kv_cache[1]) == measured.cache_bytes


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sliding_window_decode_wins_in_generate(precision):
    """A large vocabulary and a long generation past the window: generate's decode
    bookkeeping (ids grown each step, the float32 logits rows) makes a decode step's
    moment the peak, though the cache stopped growing at W."""
    dims = {**MODELS["B"], "W": 8}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = mistral(dims, dtype)
    ids = torch.randint(3, dims["V"], (3, 5))
    measured = measure_generate(model, ids, 40, "dynamic")
    result = compile_mistral(dims, 3, precision, Inference(5, 40))
    fixed = fixed_bytes(result)
    assert result.peak.value - fixed - 8 * 3 * 5 == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase == "decode"
    assert result.value(result.kv_cache[1]) == measured.cache_bytes


# A StaticCache over the sliding window: below it (P + T - 1 < W) the layers are plain
# static ones; from it on StaticSlidingWindowLayers of W positions, with generate's masks
# over max(P, W) positions in the prefill and W in a decode step, and a roll of the keys
# and values in each decode step once full: prompts shorter than, equal to and longer than
# the window; generations that reach it, fill it and run long past it.
STATIC_WINDOW_LOOPS = [
    (2, 3, 4),
    (2, 5, 4),
    (2, 5, 8),
    (2, 7, 4),
    (2, 8, 3),
    (2, 16, 6),
    (1, 3, 12),
]


@pytest.mark.parametrize("loop", STATIC_WINDOW_LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sliding_window_static_cache_equals_transformers(precision, loop):
    """`model.generate()` with a StaticCache of P + T - 1 positions over
    MistralForCausalLM: the prefill's peak, the largest decode step, the peak and its
    phase, and the cache at the end."""
    batch, prompt, new = loop
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = mistral(WINDOWED, dtype)
    ids = torch.randint(3, WINDOWED["V"], (batch, prompt))
    measured = measure_generate(model, ids, new, "static")
    result = compile_mistral(WINDOWED, batch, precision, Inference(prompt, new, "static"))
    caller_ids = 8 * batch * prompt
    fixed = fixed_bytes(result)
    assert phase_peak(result, Phase.PREFILL) - caller_ids == measured.step_peaks[0]
    assert phase_peak(result, Phase.DECODE) - caller_ids == max(measured.step_peaks[1:])
    assert result.peak.value - fixed - caller_ids == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase
    assert result.value(result.kv_cache[1]) == measured.cache_bytes


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sliding_window_static_cache_decode_wins(precision):
    """A large vocabulary and a generation far past the window with a StaticCache: the
    decode steps' rolls and generate's bookkeeping make a decode step the peak."""
    dims = {**MODELS["B"], "W": 8}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = mistral(dims, dtype)
    ids = torch.randint(3, dims["V"], (3, 5))
    measured = measure_generate(model, ids, 40, "static")
    result = compile_mistral(dims, 3, precision, Inference(5, 40, "static"))
    fixed = fixed_bytes(result)
    assert result.peak.value - fixed - 8 * 3 * 5 == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase == "decode"
    assert result.value(result.kv_cache[1]) == measured.cache_bytes


# Mixtral: LLaMA's attention and caches with a sparse MoE MLP (grouped_mm experts, whose
# tensors have k B s, B s or E rows whatever the routing; the router's softmax and the
# routing weights in float32, so the experts' weighted outputs are float32 in bfloat16
# too; the locals transformers' MoE code holds to its return). D and F multiples of 8:
# torch's CPU grouped_mm wants 16-byte row strides.
MIXTRAL = {
    "E4-k2": {"V": 64, "D": 32, "F": 48, "N": 2, "H": 4, "KV": 2, "E": 4, "k": 2},
    "E8-k3": {"V": 48, "D": 24, "F": 32, "N": 1, "H": 6, "KV": 3, "E": 8, "k": 3},
}


@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MIXTRAL)
def test_mixtral_serving_loop_equals_transformers(name, precision, loop):
    check_serving_loop(MIXTRAL[name], precision, loop, "mixtral")


@pytest.mark.parametrize("cache", ["dynamic", "static", "fp8"])
@pytest.mark.parametrize("loop", LOOPS[1:], ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MIXTRAL)
def test_mixtral_generate_equals_transformers(name, precision, loop, cache):
    check_generate(MIXTRAL[name], precision, loop, cache, "mixtral")


# GPT-2: learned positions (wpe), Conv1D projections with biases, LayerNorm, gelu_new in
# Python ops, the head tied to wte; in eval mode no dropout. Its fused QKV output lives
# until the attention returns (the query is a view of it), the attention's output until
# the block returns, and the embeddings' sum only through the first block.
GPT2 = {
    "D32-H4": {"V": 64, "D": 32, "N": 2, "H": 4},
    "D24-H2": {"V": 96, "D": 24, "N": 3, "H": 2},
}


@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", GPT2)
def test_gpt2_serving_loop_equals_transformers(name, precision, loop):
    check_serving_loop({**GPT2[name], "P": 4096}, precision, loop, "gpt2")


@pytest.mark.parametrize("cache", ["dynamic", "static", "fp8"])
@pytest.mark.parametrize("loop", LOOPS[1:], ids=lambda p: "B{}-P{}-T{}".format(*p))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", GPT2)
def test_gpt2_generate_equals_transformers(name, precision, loop, cache):
    check_generate({**GPT2[name], "P": 4096}, precision, loop, cache, "gpt2")

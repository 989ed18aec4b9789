"""`--weights nf4 --mode inference` against transformers' 4-bit LlamaForCausalLM
(BitsAndBytesConfig(load_in_4bit=True, nf4, bfloat16 compute) loaded from a bfloat16
checkpoint), generating under `inference_harness.LiveTracker` on the CPU, to the byte: the
prefill's peak, the largest decode step's, and generate's peak with a DynamicCache, a
StaticCache and an FP8 QuantizedCache.

The CPU runs bitsandbytes' default 4-bit kernel, which dequantizes the weight for every
product (`--bnb-fused-rows 0`; CUDA's fused kernel, which serves few rows without it, is
not on the CPU), and the tracker runs that kernel's Python under itself so that the
dequantized weight and block maxima count. Bitsandbytes' AVX512-BF16 path (a CPU layout
the weights are repacked into at the first eval forward) is turned off: it is the CPU's
own, not CUDA's. Named differences: the caller's prompt ids (8 B P, as in
test_inference.py) and, under double quantization, the float32 copy of the block maxima
that CUDA's fallback holds beside the weight and the CPU's kernel has freed by then
(4 bytes a block of the product at the peak, an MLP's here)."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.inference import Inference
from memspec.passes.peak.moments import Phase
from memspec.quantize import Weights
from tests.conftest import SPECS
from tests.reference.torchvision_import import import_torchvision

import_torchvision()  # transformers' models import torchvision

import bitsandbytes as bnb  # noqa: E402
from transformers import BitsAndBytesConfig, LlamaForCausalLM  # noqa: E402

from tests.reference.inference_harness import (  # noqa: E402
    llama,
    measure_decode,
    measure_generate,
)
from tests.reference.test_inference import fixed_bytes, phase_peak  # noqa: E402

DIMS = {"V": 64, "D": 64, "F": 128, "N": 2, "H": 4, "KV": 2}
# (B, P, T): the prefill's MLP decides; three sequences, decode steps beside a longer cache
LOOPS = [(2, 16, 4), (3, 5, 6)]
MLP_BLOCKS = DIMS["D"] * DIMS["F"] // 64  # the block maxima of an MLP product's weight


def nf4_llama(folder, double_quant: bool) -> LlamaForCausalLM:
    """`inference_harness.llama` in bfloat16, saved and loaded in 4 bits, in eval mode,
    on bitsandbytes' default CPU kernel."""
    llama(DIMS, torch.bfloat16).save_pretrained(folder)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = LlamaForCausalLM.from_pretrained(
        folder, quantization_config=quantization, dtype=torch.bfloat16, device_map="cpu"
    ).eval()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 7 * DIMS["N"]  # every Linear but lm_head
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return model


def predicted(batch: int, prompt: int, new: int, double_quant: bool, **cache):
    return compile_spec(
        SPECS / "llama.mspec",
        set={**DIMS, "B": batch},
        precision="bf16",
        inference=Inference(prompt, new, **cache),
        weights=Weights("nf4", double_quant=double_quant, fused_rows=0),
    )


def cpu_difference(result, phase: Phase | None, double_quant: bool) -> int:
    """The float32 maxima copy CUDA's fallback holds and the CPU's kernel does not, at a
    peak (of `phase`, or the whole) that is an MLP product's: 4 bytes a block."""
    if not double_quant:
        return 0
    moments = [
        (v, c)
        for c, v in zip(result.peak.candidates, result.peak.values, strict=True)
        if phase is None or c.phase is phase
    ]
    _, top = max(moments, key=lambda m: m[0])
    assert top.where.startswith("model.layers.mlp.") and ".matmul_4bit" in top.where
    return 4 * MLP_BLOCKS


@pytest.mark.parametrize("double_quant", [False, True], ids=["float32-maxima", "double-quant"])
@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
def test_a_serving_loop_on_4bit_weights_equals_bitsandbytes(loop, double_quant, tmp_path):
    batch, prompt, new = loop
    model = nf4_llama(tmp_path, double_quant)
    ids = torch.randint(3, DIMS["V"], (batch, prompt))
    steps = measure_decode(model, ids, new, logits_to_keep=1)
    result = predicted(batch, prompt, new, double_quant, loop="forward")
    prefill = phase_peak(result, Phase.PREFILL) - 8 * batch * prompt
    assert prefill - cpu_difference(result, Phase.PREFILL, double_quant) == steps[0].peak
    decode = phase_peak(result, Phase.DECODE)
    assert decode - cpu_difference(result, Phase.DECODE, double_quant) == max(
        s.peak for s in steps[1:]
    )
    assert result.value(result.kv_cache[1]) == steps[-1].cache_bytes


@pytest.mark.parametrize("cache", ["dynamic", "static", "fp8"])
@pytest.mark.parametrize("loop", LOOPS, ids=lambda p: "B{}-P{}-T{}".format(*p))
def test_generate_on_4bit_weights_equals_bitsandbytes(loop, cache, tmp_path):
    batch, prompt, new = loop
    model = nf4_llama(tmp_path, double_quant=False)
    ids = torch.randint(3, DIMS["V"], (batch, prompt))
    measured = measure_generate(model, ids, new, cache)
    kv = {"dynamic": {}, "static": {"cache": "static"}, "fp8": {"kv_dtype": "fp8"}}[cache]
    result = predicted(batch, prompt, new, False, **kv)
    assert result.peak.value - fixed_bytes(result) - 8 * batch * prompt == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase
    assert result.value(result.kv_cache[1]) == measured.cache_bytes

"""`--weights fp8` against transformers' FP8Linear (5.24, on the CPU): every parameter's
bytes as `replace_with_fp8_linear` makes them under FineGrainedFP8Config(), and a LoRA
step (PEFT on every Linear of transformers' LlamaForCausalLM whose Linears are FP8Linear,
AdamW) under MemTracker, every category to the byte, and generation under no_grad.

fp8_linear's kernels are CUDA's (Triton, DeepGEMM), so the steps run with a stand-in for
the fused Triton kernel that makes what it makes, the output in x's dtype, and adds the
bias in place. The rest is transformers' own code: FP8Linear's dispatch
(`_apply_if_grad`), FP8LinearFunction's save and its backward, which dequantizes the
weight as `_dequantize_fp8_weight` does it (on the CPU as on CUDA)."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.inference import Inference
from memspec.ir.types import numel
from memspec.lora import Lora
from memspec.quantize import Weights
from tests.conftest import SPECS
from tests.reference.inference_harness import llama, measure_generate
from tests.reference.test_transformers import (
    LLAMA_SIZES,
    assert_same_step,
    causal_lm_step,
    decoder_config,
)
from tests.reference.torchvision_import import import_torchvision

import_torchvision()  # peft imports transformers' models, which import torchvision

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import FineGrainedFP8Config, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.integrations import finegrained_fp8  # noqa: E402


def fused_kernel(input, weight, weight_scale_inv, block_size=None, bias=None, *args, **kwargs):
    """What the fused Triton kernel allocates: its output, in x's dtype (values: zeros)."""
    output = torch.zeros((*input.shape[:-1], weight.shape[0]), dtype=input.dtype)
    if bias is not None:
        output.add_(bias)
    return output


@pytest.fixture(autouse=True)
def cpu_kernel(monkeypatch):
    monkeypatch.setattr(finegrained_fp8, "fp8_linear", fused_kernel)


def to_fp8(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every Linear but lm_head an FP8Linear, as FineGrainedFP8Config()
    loads one (made on the meta device, then given memory and finite values)."""
    finegrained_fp8.replace_with_fp8_linear(
        model, modules_to_not_convert=["lm_head"], quantization_config=FineGrainedFP8Config()
    )
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype == torch.float8_e4m3fn:
                p.copy_(torch.randn(p.shape).to(p.dtype))
            else:
                p.uniform_(0.5, 1.0)  # weight scales and the rest
        for module in model.modules():  # to_empty left the rotary tables uninitialized
            if hasattr(module, "inv_freq"):
                module.inv_freq.copy_(module.original_inv_freq)
    return model


def fp8_llama(sizes: dict, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """transformers' Llama at `sizes` with FP8 weights."""
    return to_fp8(LlamaForCausalLM._from_config(decoder_config(LlamaConfig, sizes), dtype=dtype))


@pytest.mark.parametrize(
    "sizes",
    [*LLAMA_SIZES[:2], {"B": 2, "L": 8, "V": 64, "D": 256, "N": 2, "H": 4, "KV": 2, "F": 300}],
    ids=lambda s: "D{D}-F{F}".format(**s),
)
def test_the_parameters_are_fp8linears(sizes):
    # D = 16: a partial block; D = 256, F = 300: two whole blocks and a partial one
    model = fp8_llama(sizes)
    theirs = {n: p.numel() * p.element_size() for n, p in model.named_parameters()}
    result = compile_spec(SPECS / "llama.mspec", set=sizes, weights=Weights("fp8"))
    items = result.categories["parameters"].items
    ours = {i.path: result.value(numel(i.shape) * i.dtype.itemsize) for i in items}
    # one layer's tensors by name (memspec names the repeated layer's once), then all
    layer = {n.replace(".layers.0.", ".layers."): b for n, b in theirs.items() if ".0." in n}
    assert {p: b for p, b in ours.items() if ".layers." in p} == layer
    assert result.value(result.categories["parameters"].bytes) == sum(theirs.values())
    assert result.value(result.categories["buffers"].bytes) == sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


@pytest.mark.parametrize("sizes", LLAMA_SIZES[:2], ids=lambda s: "B{B}-D{D}".format(**s))
def test_a_lora_step_on_fp8_equals_transformers_and_peft(sizes):
    def make_model():
        model = fp8_llama(sizes)
        return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))

    options = {"lora": Lora(4, 8), "weights": Weights("fp8")}
    measured, result = causal_lm_step(make_model, "llama.mspec", sizes, (), **options)
    assert_same_step(result, measured)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("loop", [(1, 8, 4), (2, 16, 4)], ids=lambda p: "B{}-P{}-T{}".format(*p))
def test_generate_with_fp8_weights_equals_transformers(loop, cache):
    # generate under no_grad: FP8Linear calls the kernel directly (no autograd Function)
    batch, prompt, new = loop
    dims = {"V": 64, "D": 256, "F": 300, "N": 2, "H": 4, "KV": 2}  # whole and partial blocks
    model = to_fp8(llama(dims, torch.bfloat16))
    ids = torch.randint(3, dims["V"], (batch, prompt))
    measured = measure_generate(model, ids, new, cache)
    kv = {"dynamic": "contiguous", "static": "static"}[cache]
    result = compile_spec(
        SPECS / "llama.mspec",
        set={**dims, "B": batch},
        precision="bf16",
        weights=Weights("fp8"),
        inference=Inference(prompt, new, kv),
    )
    caller_ids = 8 * batch * prompt  # the caller's prompt, which the harness leaves out
    fixed = result.value(result.categories["parameters"].bytes)
    fixed += result.value(result.categories["buffers"].bytes)
    parameters = result.value(result.categories["parameters"].bytes)
    assert parameters == sum(p.numel() * p.element_size() for p in model.parameters())
    assert result.peak.value - fixed - caller_ids == measured.peak
    assert result.peak.winner().phase.value == measured.peak_phase
    assert result.value(result.kv_cache[1]) == measured.cache_bytes

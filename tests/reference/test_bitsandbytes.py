"""`--weights nf4|fp4` against bitsandbytes itself (0.50.2, on the CPU): the packed
layout byte for byte, and a QLoRA step (transformers' 4-bit LlamaForCausalLM, loaded from
a bfloat16 checkpoint as BitsAndBytesConfig(load_in_4bit=True, nf4, double quantization,
bfloat16 compute) loads it, `prepare_model_for_kbit_training`, PEFT's LoRA on every
Linear, AdamW) under MemTracker, every category to the byte. The one named difference:
the quant_state tensors (block maxima, codes, offset), which are no module's buffers, so
the tracker never sees them, while memspec counts them with the buffers. The CPU's
default 4-bit kernel also holds one float32 [blocks] copy fewer in forward than CUDA's
dequantizing fallback, which memspec models; these steps peak in backward, where the two
run the same code."""

from __future__ import annotations

import tempfile

import pytest
import torch

from memspec import compile_spec
from memspec.lora import Lora
from memspec.quantize import Weights
from memspec.verify.peak import TRACKER_NAMES
from tests.conftest import SPECS
from tests.elaborate.test_quantized import ONE_LINEAR, int8_layer_bytes, layer_bytes
from tests.reference.test_transformers import causal_lm_step, decoder_config
from tests.reference.torchvision_import import import_torchvision

import_torchvision()  # peft imports transformers' models, which import torchvision

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnbf  # noqa: E402
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: E402
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402


def quantized_bytes(out: int, into: int, quant_type: str, double_quant: bool) -> int:
    """The bytes of bitsandbytes' packed weight and every tensor of its quant_state."""
    weight = torch.randn(out, into, dtype=torch.bfloat16)
    packed, state = bnbf.quantize_4bit(
        weight, blocksize=64, compress_statistics=double_quant, quant_type=quant_type
    )
    tensors = [packed, state.absmax, state.code]
    if state.nested:
        tensors += [state.state2.absmax, state.state2.code, state.offset]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize(("out", "into"), [(256, 512), (100, 37), (7, 9), (300, 1000)])
def test_the_layout_is_bitsandbytes(out, into, quant_type, double_quant):
    # 100 x 37: a partial last block; 7 x 9: odd, half a byte of padding; 300 x 1000:
    # 4,688 blocks, a partial last group of 256 under double quantization
    want = quantized_bytes(out, into, quant_type, double_quant)
    assert layer_bytes(out, into, double_quant) == want
    weights = Weights(quant_type, double_quant=double_quant)
    result = compile_spec(ONE_LINEAR, set={"B": 2, "I": into, "O": out}, weights=weights)
    held = result.categories["parameters"].bytes + result.categories["buffers"].bytes
    assert result.value(held) == want


SIZES = [
    {"B": 2, "L": 16, "V": 64, "D": 64, "N": 2, "H": 4, "KV": 2, "F": 128},
    {"B": 1, "L": 8, "V": 128, "D": 128, "N": 3, "H": 4, "KV": 4, "F": 256},
]


def quant_state_bytes(model: torch.nn.Module) -> int:
    total = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):  # not PEFT's wrapper of one
            continue
        state = module.weight.quant_state
        tensors = [state.absmax, state.code]
        if state.nested:
            tensors += [state.state2.absmax, state.state2.code, state.offset]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def qlora_model(sizes: dict, folder, checkpointing: bool):
    """make_model of the QLoRA recipe on a LLaMA saved in bfloat16 to `folder`: 4-bit NF4
    with double quantization and bfloat16 compute, prepare_model_for_kbit_training (with
    its gradient checkpointing or without), PEFT's LoRA r = 8 on every Linear."""
    torch.manual_seed(0)
    config = decoder_config(LlamaConfig, sizes)
    LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )

    def make_model():
        model = LlamaForCausalLM.from_pretrained(
            folder, quantization_config=quantization, dtype=torch.bfloat16, device_map="cpu"
        )
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
        # from_pretrained leaves eval mode, where transformers checkpoints nothing
        model.train()
        return model

    return make_model


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "D{D}-N{N}".format(**s))
def test_a_qlora_step_equals_bitsandbytes_and_peft(sizes, tmp_path):
    make_model = qlora_model(sizes, tmp_path, checkpointing=False)

    # prepare_model_for_kbit_training casts every parameter not packed to float32
    options = {"precision": "fp32", "lora": Lora(8, 16), "weights": Weights("nf4")}
    measured, result = causal_lm_step(make_model, "llama.mspec", sizes, (), **options)
    states = quant_state_bytes(make_model())
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["activations"].bytes) == measured.saved
    tracker = dict(measured.peak_by_category)
    for category, expr in result.peak.winner().breakdown:
        got, want = value(expr), tracker[TRACKER_NAMES[category]]
        if category == "optimizer_state":  # AdamW's step counters, as in test_transformers
            got += measured.optimizer_scalars
        if category == "buffers":  # the quant_state tensors the tracker does not see
            want += states
        assert got == want, category
    assert result.peak.value + measured.optimizer_scalars == measured.peak + states


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "D{D}-N{N}".format(**s))
def test_a_qlora_step_under_gradient_checkpointing_equals_the_library(sizes, tmp_path):
    """QLoRA as its recipe runs it: prepare_model_for_kbit_training's default turns
    transformers' activation checkpointing on, which makes the frozen embedding's output
    require a gradient: every layer a checkpoint, the first one's 4-bit products
    dequantizing for its input's gradient too (memspec's --recompute full). Every
    category to the byte."""
    from tests.reference.harness import measure_library
    from tests.reference.test_checkpointing import causal_lm_parts, keyword_inputs, tracker_split
    from tests.reference.test_encoders import unbuffered_input_gradients

    make_model = qlora_model(sizes, tmp_path, checkpointing=True)
    make, batch, step = causal_lm_parts(make_model, sizes)
    with unbuffered_input_gradients():
        measured = measure_library(make, batch, step)
    result = compile_spec(SPECS / "llama.mspec", set=sizes, convention="autograd",
                          recompute="full", precision="fp32", lora=Lora(8, 16),
                          weights=Weights("nf4"))
    states = quant_state_bytes(make_model())  # which the tracker does not see
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["activations"].bytes) - keyword_inputs(result) == (
        measured.saved
    )
    tracker = dict(measured.peak_by_category)
    for category, expr in tracker_split(result).breakdown:
        got, want = value(expr), tracker[TRACKER_NAMES[category]]
        if category == "optimizer_state":  # AdamW's step counters, as in test_transformers
            got += measured.optimizer_scalars
        if category == "buffers":
            want += states
        assert got == want, category
    assert result.peak.value + measured.optimizer_scalars == measured.peak + states


def test_peft_prints_what_memspec_prints():
    sizes = SIZES[0]
    with tempfile.TemporaryDirectory() as tmp:
        config = decoder_config(LlamaConfig, sizes)
        LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
        model = LlamaForCausalLM.from_pretrained(
            tmp, quantization_config=quantization, dtype=torch.bfloat16, device_map="cpu"
        )
        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
        trainable, every = model.get_nb_trainable_parameters()
    result = compile_spec(SPECS / "llama.mspec", set=sizes, lora=Lora(8), weights=Weights("nf4"))
    items = result.categories["parameters"].items
    packed = sum(result.value(i.total_elements) for i in items if i.dtype.value == "uint8")
    assert result.value(result.categories["gradients"].elements) == trainable
    assert result.value(result.categories["parameters"].elements) + packed == every


# --weights int8 (LLM.int8(), BitsAndBytesConfig(load_in_8bit=True)) against bitsandbytes.
# Int8Params keeps its row scales, SCB, as an attribute (no module's buffer): memspec
# counts them with the buffers, MemTracker never sees them as such; it sees the storage of
# a layer's SCB first in backward, through SCB.unsqueeze(1), and counts it as a temporary
# from then on. The step runs MatMul8bitLt, CUDA's autograd function, with the CPU's int8
# kernels (bitsandbytes' matmul picks MatMul8bitFp, which dequantizes the whole weight in
# forward, for a module in training mode on the CPU; the 8-bit modules are put in eval
# mode, which changes nothing else: no dropout). Backward is the same code on both
# devices; the CPU kernels' forward temporaries (float32 copies of x and the weight for
# the int32 product) differ from CUDA's, which memspec models: these steps peak in
# backward.


@pytest.mark.parametrize(("out", "into"), [(256, 512), (100, 37), (7, 9)])
def test_the_int8_layout_is_bitsandbytes(out, into):
    layer = bnb.nn.Linear8bitLt(into, out, bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb.nn.Int8Params(
        torch.randn(out, into, dtype=torch.float16), requires_grad=False, has_fp16_weights=False
    )
    layer = layer.to("cpu")  # quantizes
    weight, scb = layer.weight, layer.weight.SCB
    assert weight.dtype is torch.int8 and scb.dtype is torch.float32
    want = weight.numel() * weight.element_size() + scb.numel() * scb.element_size()
    assert int8_layer_bytes(out, into) == want
    result = compile_spec(ONE_LINEAR, set={"B": 2, "I": into, "O": out}, weights=Weights("int8"))
    assert result.value(result.categories["parameters"].bytes) == weight.numel()
    assert result.value(result.categories["buffers"].bytes) == scb.numel() * 4


def int8_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]


# (sizes, the Linear whose backward memspec's peak is in): the tracker has seen the SCB of
# every 8-bit layer whose backward has begun by then (last layer first, down_proj first)
INT8_STEPS = [(SIZES[0], "layers.1.mlp.down_proj"), (SIZES[1], "layers.0.mlp.up_proj")]


@pytest.mark.parametrize(("sizes", "peak_at"), INT8_STEPS, ids=["D64-N2", "D128-N3"])
def test_a_lora_step_on_int8_equals_bitsandbytes_and_peft(sizes, peak_at, tmp_path):
    torch.manual_seed(0)
    config = decoder_config(LlamaConfig, sizes)
    LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path)
    quantization = BitsAndBytesConfig(load_in_8bit=True)

    def make_model():
        model = LlamaForCausalLM.from_pretrained(
            tmp_path, quantization_config=quantization, dtype=torch.bfloat16, device_map="cpu"
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
        model.train()
        for _, layer in int8_layers(model):
            layer.eval()  # MatMul8bitLt, as on CUDA
        return model

    options = {"precision": "fp32", "lora": Lora(8, 16), "weights": Weights("int8")}
    measured, result = causal_lm_step(make_model, "llama.mspec", sizes, (), **options)
    layers = int8_layers(make_model())
    assert layers[0][1].state.threshold == 6.0  # transformers' llm_int8_threshold
    scbs = [4 * layer.out_features for _, layer in layers]
    # backward runs the layers in reverse: those up to the peak's own have been seen
    order = [name[name.index("layers.") :].removesuffix(".base_layer") for name, _ in layers]
    seen = sum(scbs[order.index(peak_at) :])
    value = result.value
    winner = result.peak.winner()
    assert winner.where.split(" ")[0].endswith(peak_at.split(".", 2)[-1] + ".result")
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["activations"].bytes) == measured.saved
    tracker = dict(measured.peak_by_category)
    for category, expr in winner.breakdown:
        got, want = value(expr), tracker[TRACKER_NAMES[category]]
        if category == "optimizer_state":  # AdamW's step counters, as in test_transformers
            got += measured.optimizer_scalars
        if category == "buffers":  # every SCB, which the tracker does not see as a buffer
            want += sum(scbs)
        if category == "temporaries":  # the SCB the tracker has seen in backward
            got += seen
        assert got == want, category
    assert result.peak.value + measured.optimizer_scalars + seen == measured.peak + sum(scbs)


def test_peft_prints_what_memspec_prints_for_int8():
    sizes = SIZES[0]
    with tempfile.TemporaryDirectory() as tmp:
        config = decoder_config(LlamaConfig, sizes)
        LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
        quantization = BitsAndBytesConfig(load_in_8bit=True)
        model = LlamaForCausalLM.from_pretrained(
            tmp, quantization_config=quantization, dtype=torch.bfloat16, device_map="cpu"
        )
        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
        trainable, every = model.get_nb_trainable_parameters()
    result = compile_spec(SPECS / "llama.mspec", set=sizes, lora=Lora(8), weights=Weights("int8"))
    # an Int8Params' numel is out x in: PEFT counts it as it is
    assert result.value(result.categories["gradients"].elements) == trainable
    assert result.value(result.categories["parameters"].elements) == every

"""LoRA against PEFT: `get_peft_model` on transformers' own LlamaForCausalLM, built
from a config, one real CPU step under MemTracker, compared with `--lora` to the byte:
parameters, the bytes autograd saves, and the steady-state peak category by category
(the one named difference is AdamW's `step` counters, as in test_transformers.py).

PEFT's model is float32 here: a bfloat16 LLaMA differs from memspec's lowering in
transformers' own RMSNorm (it multiplies the weight by x cast back to bfloat16) and in
the CPU's bfloat16 matmuls, without LoRA as with it; tests/elaborate/test_lora.py checks
the float32 adapters on a bfloat16 model against memspec's lowering."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.lora import Lora
from tests.conftest import SPECS
from tests.reference.test_transformers import (
    LLAMA_SIZES,
    assert_same_step,
    causal_lm_step,
    decoder_config,
)
from tests.reference.torchvision_import import import_torchvision

import_torchvision()  # peft imports transformers' models, which import torchvision

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

# (r, lora_alpha, lora_dropout, target_modules as PEFT takes them)
ADAPTERS = [
    (4, 8, 0.0, ["q_proj", "v_proj"]),  # the LoRA paper's choice
    (2, 16, 0.0, "all-linear"),  # QLoRA's: every Linear but lm_head
    (4, 4, 0.1, ["o_proj", "down_proj"]),  # dropout on the adapters' input
]


def peft_model(sizes: dict, adapter: tuple):
    """(make_model: PEFT's LoRA on transformers' LLaMA at `sizes`, the same as --lora)."""
    r, alpha, dropout, targets = adapter

    def make_model():
        model = LlamaForCausalLM(decoder_config(LlamaConfig, sizes))
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
        return get_peft_model(model, config)

    names = (targets,) if isinstance(targets, str) else tuple(targets)
    return make_model, Lora(r, alpha, dropout, names)


def peft_step(sizes: dict, adapter: tuple):
    make_model, lora = peft_model(sizes, adapter)
    return causal_lm_step(make_model, "llama.mspec", sizes, (), lora=lora)


@pytest.mark.parametrize(
    "sizes", LLAMA_SIZES[:3], ids=lambda s: "B{B}-L{L}-D{D}-KV{KV}".format(**s)
)
@pytest.mark.parametrize("adapter", ADAPTERS, ids=["q-v", "all-linear", "dropout"])
def test_lora_step_equals_peft(sizes, adapter):
    measured, result = peft_step(sizes, adapter)
    assert_same_step(result, measured)


def test_the_trainable_count_is_the_one_peft_prints():
    sizes = LLAMA_SIZES[0]
    model = get_peft_model(
        LlamaForCausalLM(decoder_config(LlamaConfig, sizes)),
        LoraConfig(r=4, target_modules="all-linear"),
    )
    trainable, every = model.get_nb_trainable_parameters()
    result = compile_spec(SPECS / "llama.mspec", set=sizes, lora=Lora(4))
    assert result.value(result.categories["gradients"].elements) == trainable
    assert result.value(result.categories["parameters"].elements) == every
    names = {n.removeprefix("base_model.model.") for n, p in model.named_parameters()}
    ours = {i.path for i in result.categories["parameters"].items}
    # memspec's first layer runs apart behind the frozen embedding: layers.0 and layers[1:]
    assert {n for n in names if ".layers.0." in n} == {p for p in ours if ".layers.0." in p}


@pytest.mark.parametrize(
    "sizes", LLAMA_SIZES[:3], ids=lambda s: "B{B}-L{L}-D{D}-KV{KV}".format(**s)
)
@pytest.mark.parametrize("adapter", ADAPTERS, ids=["q-v", "all-linear", "dropout"])
def test_lora_with_activation_checkpointing_equals_peft(sizes, adapter):
    """LoRA under transformers' activation checkpointing, against PEFT to the byte.
    activation_checkpointing_enable makes the frozen embedding's output a leaf that
    needs a gradient (enable_input_require_grads, std's hf_input_embeds): every layer,
    the first too, is a checkpoint that makes its input's gradient, and the last one
    made stays on the leaf until the graph is freed. Before memspec modelled it, the
    first layer, set apart behind the frozen embedding, was no checkpoint at all (at
    B2-L8-D16, q-v: 16,644 saved bytes against the library's 5,316, a peak of 61,304
    against 50,232). With dropout on the adapters the peak is in the recomputation of
    down_proj's adapters, where the layer's input is still held by PEFT's forward (and
    its caller) though dropout made its last use (memspec freed it there: 56,632
    against the library's 56,888 at B2-L8-D16)."""
    from tests.reference.harness import measure_library
    from tests.reference.test_checkpointing import (
        assert_same_checkpointed_step,
        causal_lm_parts,
        checkpointed,
        keyword_inputs,
    )
    from tests.reference.test_encoders import unbuffered_input_gradients

    make_model, lora = peft_model(sizes, adapter)
    make, batch, step = causal_lm_parts(make_model, sizes)
    with unbuffered_input_gradients():
        measured = measure_library(checkpointed(make), batch, step)
    result = compile_spec(SPECS / "llama.mspec", set=sizes, convention="autograd",
                          recompute="full", lora=lora)
    assert not any(".layers.0." in i.path for i in result.categories["activations"].items)
    assert_same_checkpointed_step(result, measured, keyword_inputs(result))

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


def peft_step(sizes: dict, adapter: tuple):
    r, alpha, dropout, targets = adapter

    def make_model():
        model = LlamaForCausalLM(decoder_config(LlamaConfig, sizes))
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
        return get_peft_model(model, config)

    names = (targets,) if isinstance(targets, str) else tuple(targets)
    lora = Lora(r, alpha, dropout, names)
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

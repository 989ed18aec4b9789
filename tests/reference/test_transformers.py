"""The zoo against Hugging Face transformers: the library's own model, built from a
config, one real CPU step, compared with memspec to the byte.

Parameters and buffers (elements), the bytes autograd saves (each storage once), and
the peak of a steady-state AdamW step under PyTorch's MemTracker (real tensors: the
sizes are small), category by category. The one difference is a named, computed term:
AdamW's `step` counters, a 4-byte tensor per parameter tensor, which the tracker counts
in OPT and memspec leaves out (they are CPU tensors when training on a GPU).
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from memspec import compile_spec
from memspec.passes.peak import peak_memory
from memspec.verify.peak import TRACKER_NAMES
from tests.conftest import SPECS
from tests.reference.harness import measure_library


def assert_same_step(result, measured) -> None:
    """memspec's compile `result` against the library's `measured` step, to the byte."""
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["buffers"].elements) == measured.buffers
    assert value(result.categories["activations"].bytes) == measured.saved
    tracker = dict(measured.peak_by_category)
    moment = result.peak.winner()
    for category, expr in moment.breakdown:
        named = measured.optimizer_scalars if category == "optimizer_state" else 0
        assert value(expr) + named == tracker[TRACKER_NAMES[category]], category
    assert result.peak.value + measured.optimizer_scalars == measured.peak


def out_of_place_sums(result) -> int:
    """Bytes the tracker's step holds beyond memspec's peak, at memspec's peak under the
    tracker: the second gradients of a tensor, which autograd adds out of place under a
    TorchDispatchMode (in place otherwise)."""
    traced = traced_peak(result)
    return result.value(traced.bytes) - result.peak.value


def traced_peak(result):
    return peak_memory(
        result.graph,
        result.config,
        result.categories,
        result.peak.options,
        result.bindings,
        result.resolve,
        sums_in_place=False,
    ).winner()


def assert_same_traced_step(result, measured) -> None:
    """assert_same_step, where the tracker's step adds a tensor's second gradient out
    of place: memspec's peak of that step, category by category, and its own peak plus
    the named sum in total."""
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["buffers"].elements) == measured.buffers
    assert value(result.categories["activations"].bytes) == measured.saved
    tracker = dict(measured.peak_by_category)
    named = {"optimizer_state": measured.optimizer_scalars}
    for category, expr in traced_peak(result).breakdown:
        assert value(expr) + named.get(category, 0) == tracker[TRACKER_NAMES[category]], category
    total = result.peak.value + measured.optimizer_scalars
    assert total + out_of_place_sums(result) == measured.peak


def causal_lm_step(make_model, spec: str, sizes: dict, use: tuple, **options):
    """(the library's step, memspec's compile): a causal LM trained on [B, L] token ids
    with `labels=input_ids`, the library's own loss, as a Trainer runs it; `options` go to
    compile_spec (a precision, LoRA, quantized weights)."""

    def batch() -> tuple:
        tokens = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))
        return tokens, tokens.clone()

    def step(model, b) -> torch.Tensor:
        return model(input_ids=b[0], labels=b[1], use_cache=False).loss

    measured = measure_library(make_model, batch, step)
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd", **options)
    return measured, result


GPT2_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16},
    {"B": 3, "L": 16, "V": 64, "D": 32, "N": 3, "H": 2, "P": 32},
    {"B": 4, "L": 4, "V": 48, "D": 24, "N": 1, "H": 3, "P": 8},
    {"B": 1, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16},  # views decided at B = 1
]
# (memspec --use, the config's attn_implementation and activation_function)
GPT2_PATHS = [
    ((), "sdpa", "gelu_new"),  # transformers' defaults
    (("eager",), "eager", "gelu_new"),
    (("gelu_tanh",), "sdpa", "gelu_pytorch_tanh"),
]


def gpt2_config(sizes: dict, attention: str | None = None, activation: str = "gelu_new"):
    """GPT2Config at `sizes`; attention None is the library's own pick (sdpa here)."""
    return GPT2Config(
        vocab_size=sizes["V"],
        n_positions=sizes["P"],
        n_embd=sizes["D"],
        n_layer=sizes["N"],
        n_head=sizes["H"],
        attn_implementation=attention,
        activation_function=activation,
        bos_token_id=0,
        eos_token_id=0,
    )


def gpt2_step(sizes: dict, use: tuple, attention: str, activation: str):
    """(the library's step, memspec's compile) of GPT-2 at `sizes` on one path."""
    config = gpt2_config(sizes, attention, activation)
    return causal_lm_step(lambda: GPT2LMHeadModel(config), "gpt2.mspec", sizes, use)


@pytest.mark.parametrize("sizes", GPT2_SIZES, ids=lambda s: "B{B}-L{L}-D{D}-N{N}".format(**s))
@pytest.mark.parametrize(("use", "attention", "activation"), GPT2_PATHS, ids=lambda p: str(p))
def test_gpt2_step_equals_transformers(sizes, use, attention, activation):
    assert_same_step(*reversed(gpt2_step(sizes, use, attention, activation)))


LLAMA_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32},
    {"B": 3, "L": 6, "V": 48, "D": 24, "N": 1, "H": 6, "KV": 3, "F": 40},
    {"B": 2, "L": 4, "V": 64, "D": 32, "N": 3, "H": 4, "KV": 4, "F": 48},
    {"B": 1, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 1, "F": 32},  # MQA at B = 1
]


# LLaMA and Mistral take the same config fields; Mistral adds its window W.
DECODERS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def decoder_config(config_class, sizes: dict, attention: str | None = None, **extra):
    """The config LLaMA, Mistral and Mixtral share at `sizes` (Mistral's window W where
    given); `extra` adds a family's own fields."""
    window = {"sliding_window": sizes["W"]} if "W" in sizes else {}
    return config_class(
        vocab_size=sizes["V"],
        hidden_size=sizes["D"],
        intermediate_size=sizes["F"],
        num_hidden_layers=sizes["N"],
        num_attention_heads=sizes["H"],
        num_key_value_heads=sizes["KV"],
        max_position_embeddings=sizes["L"],
        attn_implementation=attention,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **window,
        **extra,
    )


def decoder_step(family: str, sizes: dict, use: tuple, attention: str):
    """(the library's step, memspec's compile) of LLaMA or Mistral at `sizes` on one path."""
    config_class, model_class = DECODERS[family]
    config = decoder_config(config_class, sizes, attention)
    return causal_lm_step(lambda: model_class(config), f"{family}.mspec", sizes, use)


LLAMA_PATHS = [((), "sdpa"), (("eager",), "eager")]  # transformers' default first


@pytest.mark.parametrize("sizes", LLAMA_SIZES, ids=lambda s: "B{B}-L{L}-D{D}-KV{KV}".format(**s))
@pytest.mark.parametrize(("use", "attention"), LLAMA_PATHS, ids=lambda p: str(p))
def test_llama_step_equals_transformers(sizes, use, attention):
    assert_same_step(*reversed(decoder_step("llama", sizes, use, attention)))


# The window shorter than the context, as at Mistral 7B's preset (4096 < 8192): transformers
# then builds the mask (at L <= W the step is LLaMA's).
MISTRAL_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32, "W": 3},
    {"B": 3, "L": 6, "V": 48, "D": 24, "N": 1, "H": 6, "KV": 3, "F": 40, "W": 4},
    {"B": 1, "L": 8, "V": 64, "D": 32, "N": 3, "H": 4, "KV": 1, "F": 48, "W": 5},
    # L <= W: below W transformers skips the window mask and the step is LLaMA's; at L = W
    # it builds the mask still
    {"B": 2, "L": 6, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32, "W": 8},
    {"B": 1, "L": 6, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 1, "F": 32, "W": 6},
]
MISTRAL_PATHS = [((), "sdpa"), (("eager",), "eager")]  # transformers' default first


@pytest.mark.parametrize("sizes", MISTRAL_SIZES, ids=lambda s: "B{B}-L{L}-W{W}-KV{KV}".format(**s))
@pytest.mark.parametrize(("use", "attention"), MISTRAL_PATHS, ids=lambda p: str(p))
def test_mistral_step_equals_transformers(sizes, use, attention):
    assert_same_step(*reversed(decoder_step("mistral", sizes, use, attention)))


def table_rows():
    for use, attention, activation in GPT2_PATHS:
        for sizes in GPT2_SIZES:
            measured, result = gpt2_step(sizes, use, attention, activation)
            path = f"attn_implementation={attention}, activation_function={activation}"
            yield "gpt2", sizes, ", ".join(use) or "(default)", path, measured, result
    for family, paths, all_sizes in (
        ("llama", LLAMA_PATHS, LLAMA_SIZES),
        ("mistral", MISTRAL_PATHS, MISTRAL_SIZES),
    ):
        for use, attention in paths:
            for sizes in all_sizes:
                measured, result = decoder_step(family, sizes, use, attention)
                path = f"attn_implementation={attention}"
                if "W" in sizes:
                    path += f", sliding_window={sizes['W']}"
                yield family, sizes, ", ".join(use) or "(default)", path, measured, result

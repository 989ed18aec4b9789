"""Mixtral against Hugging Face transformers: `MixtralForCausalLM` built from a config, one
real CPU step with `labels=input_ids`, compared with memspec to the byte (parameters,
buffers, saved activations, the MemTracker peak by category; AdamW's step counters are
the one named term, as for LLaMA).

transformers 5.x runs the experts with `grouped_mm` by default: every tensor has
k*B*L, B*L or E rows, so the measurement does not depend on which experts the router
picks; the test checks that too, by measuring once more with the router's choice
replaced by another one.
"""

from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.models.mixtral import modeling_mixtral

from tests.reference.test_transformers import assert_same_step, causal_lm_step, decoder_config

# D and F multiples of 4: torch's CPU grouped_mm wants 16-byte row strides in fp32. The
# step peaks in the optimizer step at the first three sizes; at the fourth in the experts'
# backward (silu * up); at the fifth, under eager attention, in the last layer's experts'
# forward (where transformers' locals and its float mask are alive).
MIXTRAL_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 24, "E": 4, "k": 2},
    {"B": 3, "L": 6, "V": 48, "D": 24, "N": 1, "H": 6, "KV": 3, "F": 32, "E": 8, "k": 3},
    {"B": 1, "L": 8, "V": 64, "D": 32, "N": 3, "H": 4, "KV": 1, "F": 16, "E": 4, "k": 1},
    {"B": 4, "L": 16, "V": 8, "D": 8, "N": 1, "H": 2, "KV": 1, "F": 64, "E": 4, "k": 2},
    {"B": 4, "L": 32, "V": 16, "D": 8, "N": 2, "H": 2, "KV": 1, "F": 8, "E": 4, "k": 2},
]
# (memspec --use, the config's attn_implementation, experts_implementation)
MIXTRAL_PATHS = [((), "sdpa", "grouped_mm"), (("eager",), "eager", "grouped_mm")]


def mixtral_config(sizes: dict, attention: str, experts: str) -> MixtralConfig:
    return decoder_config(
        MixtralConfig,
        sizes,
        attention,
        num_local_experts=sizes["E"],
        num_experts_per_tok=sizes["k"],
        experts_implementation=experts,
    )


def mixtral_step(sizes: dict, use: tuple, attention: str, experts: str):
    """(the library's step, memspec's compile) of Mixtral at `sizes` on one path."""
    config = mixtral_config(sizes, attention, experts)
    return causal_lm_step(lambda: MixtralForCausalLM(config), "mixtral.mspec", sizes, use)


def test_the_library_defaults_are_the_ones_checked():
    """grouped_mm experts and sdpa attention are what transformers picks on this CPU
    when the config names neither; no router logits, so no auxiliary loss."""
    sizes = MIXTRAL_SIZES[0]
    config = MixtralConfig(
        vocab_size=sizes["V"], hidden_size=sizes["D"], intermediate_size=sizes["F"],
        num_hidden_layers=1, num_attention_heads=sizes["H"], num_key_value_heads=sizes["KV"],
        num_local_experts=sizes["E"], num_experts_per_tok=sizes["k"],
    )
    model = MixtralForCausalLM(config)
    assert model.config._experts_implementation == "grouped_mm"
    assert model.config._attn_implementation == "sdpa"
    assert config.output_router_logits is False and config.sliding_window is None
    assert config.router_jitter_noise == 0 and config.attention_dropout == 0


@pytest.mark.parametrize(
    "sizes", MIXTRAL_SIZES, ids=lambda s: "B{B}-L{L}-D{D}-E{E}-k{k}".format(**s)
)
@pytest.mark.parametrize(("use", "attention", "experts"), MIXTRAL_PATHS, ids=lambda p: str(p))
def test_mixtral_step_equals_transformers(sizes, use, attention, experts):
    assert_same_step(*reversed(mixtral_step(sizes, use, attention, experts)))


def _route_everything_to_expert_zero(monkeypatch) -> None:
    """The router's choice replaced by experts 0..k-1 for every token: the most uneven
    routing there is (the other experts get no rows)."""
    original = modeling_mixtral.MixtralTopKRouter.forward

    def forward(self, hidden_states):
        logits, scores, indices = original(self, hidden_states)
        fixed = torch.arange(indices.shape[-1]).expand_as(indices).contiguous()
        return logits, scores, fixed

    monkeypatch.setattr(modeling_mixtral.MixtralTopKRouter, "forward", forward)


def test_grouped_mm_memory_does_not_depend_on_the_routing(monkeypatch):
    sizes = MIXTRAL_SIZES[3]  # the step peaks in the experts' backward
    measured, result = mixtral_step(sizes, (), "sdpa", "grouped_mm")
    _route_everything_to_expert_zero(monkeypatch)
    skewed, _ = mixtral_step(sizes, (), "sdpa", "grouped_mm")
    assert skewed == measured
    assert_same_step(result, skewed)


def table_rows():
    """(spec, sizes, use label, library config label, measured, result) per size and path,
    as tests/reference/table.py's rows."""
    for use, attention, experts in MIXTRAL_PATHS:
        for sizes in MIXTRAL_SIZES:
            measured, result = mixtral_step(sizes, use, attention, experts)
            label = f"attn_implementation={attention}, experts_implementation={experts}"
            yield "mixtral", sizes, ", ".join(use) or "(default)", label, measured, result

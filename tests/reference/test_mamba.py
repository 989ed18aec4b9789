"""Mamba against Hugging Face transformers: `MambaForCausalLM` built from a config, one
real CPU step with `labels=input_ids`, compared with memspec's default (`use slow`).

On the CPU, without the mamba_ssm and causal_conv1d packages, transformers runs its
torch fallbacks: `causal_conv1d_fn` (a padded depthwise conv1d sliced to the first L
outputs, then SiLU) and `mamba_selective_scan`'s Python loop over the sequence (dA and
dB*u materialised for all L, one new state per step, `torch.stack` of the read-outs),
which is what specs/std/ssm.mspec's `slow` variant writes. The `fused` variant models
mamba_ssm's CUDA `selective_scan_fn`; it has no CPU kernel, so it is not checked here.

Parameters, buffers, the saved bytes (each storage once) and the peak, category by
category, equal the library's to the byte; so does the peak of the library's step against
memspec's own lowering measured the same way. The peak falls in the scan's backward, where
each step's state gets two gradients (from the next step's product and from its read-out):
MemTracker's dispatch mode makes autograd add them out of place, (L - 1) state-sized
[B, E*D, S] sums more than a real step, which adds in place. That is the named term memspec
computes by replaying the tracker's step (`peak_memory(sums_in_place=False)`), as for
ResNet's block inputs.
"""

from __future__ import annotations

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from memspec.lower.module import LoweredModel
from tests.reference.harness import tracked_peak
from tests.reference.test_transformers import (
    assert_same_traced_step,
    causal_lm_step,
    out_of_place_sums,
)

SIZES = [
    {"B": 2, "L": 5, "V": 32, "D": 16, "N": 2, "S": 4, "K": 4, "E": 2},
    {"B": 1, "L": 8, "V": 48, "D": 24, "N": 1, "S": 3, "K": 3, "E": 2},
    {"B": 3, "L": 4, "V": 40, "D": 16, "N": 3, "S": 2, "K": 2, "E": 2},
]


def mamba_config(sizes: dict) -> MambaConfig:
    return MambaConfig(
        vocab_size=sizes["V"],
        hidden_size=sizes["D"],
        state_size=sizes["S"],
        num_hidden_layers=sizes["N"],
        conv_kernel=sizes["K"],
        expand=sizes["E"],
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )


def mamba_step(sizes: dict, use: tuple = ()):
    """(the library's step, memspec's compile) of Mamba at `sizes`."""
    config = mamba_config(sizes)
    return causal_lm_step(lambda: MambaForCausalLM(config), "mamba.mspec", sizes, use)


def lowered_peak(result, sizes: dict):
    """memspec's own lowering of the spec, measured as the library is (real tensors)."""

    def batch() -> tuple:
        tokens = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))
        return tokens, tokens.clone()

    def make() -> LoweredModel:
        return LoweredModel(result.graph, result.substitutions())

    return tracked_peak(make, batch, lambda model, b: model(*b))


def ids(sizes: dict) -> str:
    return "B{B}-L{L}-D{D}-N{N}-S{S}".format(**sizes)


@pytest.mark.parametrize("sizes", SIZES, ids=ids)
def test_mamba_step_is_the_librarys(sizes):
    measured, result = mamba_step(sizes)
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["buffers"].elements) == measured.buffers
    assert value(result.categories["activations"].bytes) == measured.saved
    peak, by_category, scalars = lowered_peak(result, sizes)
    assert (peak, by_category, scalars) == (
        measured.peak,
        measured.peak_by_category,
        measured.optimizer_scalars,
    )


@pytest.mark.parametrize("sizes", SIZES, ids=ids)
def test_mamba_peak_equals_the_librarys_with_the_trackers_sums(sizes):
    """Category by category at memspec's replay of the tracker's step; in total, memspec's
    peak + the step counters + the out-of-place sums, (L - 1) [B, E*D, S] float32 here."""
    measured, result = mamba_step(sizes)
    assert result.peak.winner().label().startswith(
        "backward: backbone.layers.mixer.selective_scan.ssm_recurrence")
    state = sizes["B"] * sizes["E"] * sizes["D"] * sizes["S"] * 4
    assert out_of_place_sums(result) == (sizes["L"] - 1) * state
    assert_same_traced_step(result, measured)


def table_rows():
    """(spec, sizes, --use label, library config label, measured, result) per row."""
    for sizes in SIZES:
        measured, result = mamba_step(sizes)
        terms = (("gradient sums out of place under MemTracker's dispatch mode",
                  out_of_place_sums(result)),)
        config = "MambaForCausalLM (CPU slow path)"
        yield "mamba", sizes, "(default)", config, measured, result, terms

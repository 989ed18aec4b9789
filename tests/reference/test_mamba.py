"""Mamba against Hugging Face transformers: `MambaForCausalLM` built from a config, one
real CPU step with `labels=input_ids`, compared with memspec's default (`use slow`).

On the CPU, without the mamba_ssm and causal_conv1d packages, transformers runs its
torch fallbacks: `causal_conv1d_fn` (a padded depthwise conv1d sliced to the first L
outputs, then SiLU) and `mamba_selective_scan`'s Python loop over the sequence (dA and
dB*u materialised for all L, one new state per step, `torch.stack` of the read-outs),
which is what specs/std/ssm.mspec's `slow` variant writes. The `fused` variant models
mamba_ssm's CUDA `selective_scan_fn`; it has no CPU kernel, so it is not checked here.

Parameters, buffers and the saved bytes (each storage once) equal the library's to the
byte. So does the peak of the library's step against memspec's own lowering measured
the same way (real tensors): the spec is the library's step. memspec's peak model is
exact against its lowering under `verify --peak` (fake tensors, tests/zoo/
test_peak_exact.py), but the real-tensor tracker sees (L - 1) state-sized [B, E*D, S]
float32 temporaries more at the scan's backward, in the library and in memspec's
lowering alike; that difference is not yet explained, and is pinned to the byte below.
"""

from __future__ import annotations

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from memspec.lower.module import LoweredModel
from memspec.verify.peak import TRACKER_NAMES
from tests.reference.harness import tracked_peak
from tests.reference.test_transformers import causal_lm_step

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


@pytest.mark.parametrize("sizes", SIZES[:2], ids=ids)
def test_mamba_peak_gap_is_pinned(sizes):
    """The one known gap, pinned to the byte so that it cannot grow unseen: every other
    category equals the library's (AdamW's step counters named, as in assert_same_step);
    the temporaries are (L - 1) [B, E*D, S] float32 states short. Explaining it makes this
    test fail: then assert_same_step(result, measured) here instead."""
    measured, result = mamba_step(sizes)
    assert result.peak.winner().label().startswith(
        "backward: backbone.layers.mixer.selective_scan.ssm_recurrence")
    tracker = dict(measured.peak_by_category)
    state = sizes["B"] * sizes["E"] * sizes["D"] * sizes["S"] * 4
    gap = {"temporaries": (sizes["L"] - 1) * state, "optimizer_state": measured.optimizer_scalars}
    for category, expr in result.peak.winner().breakdown:
        assert result.value(expr) + gap.get(category, 0) == tracker[TRACKER_NAMES[category]]
    assert result.peak.value + sum(gap.values()) == measured.peak


def table_rows():
    """(spec, sizes, --use label, library config label, measured, result) per row."""
    for sizes in SIZES:
        measured, result = mamba_step(sizes)
        state = sizes["B"] * sizes["E"] * sizes["D"] * sizes["S"] * 4
        terms = (("(L - 1) [B, E*D, S] scan states the real-tensor tracker sees (open)",
                  (sizes["L"] - 1) * state),)
        config = "MambaForCausalLM (CPU slow path)"
        yield "mamba", sizes, "(default)", config, measured, result, terms

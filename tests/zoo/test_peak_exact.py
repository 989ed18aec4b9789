"""`verify --peak` to the byte on every bundled spec at small sizes: memspec's peak plus
the named terms it computes equals PyTorch's tracker in every category, at the same phase.

Mixtral is left out: its routing (`nonzero`) has a data-dependent output shape, which
fake tensors cannot run (tests/verify/test_verify.py checks that refusal).
"""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS

T5 = {"B": 2, "S": 5, "T": 4, "V": 32, "D": 8, "K": 2, "H": 2, "F": 12, "N": 2, "R": 8}
LLAMA = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "F": 24}

CASES = [
    ("mlp.mspec", {"B": 2, "I": 4, "F": 8, "C": 3}, []),
    ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 2, "H": 2, "F": 16, "C": 5}, ["math"]),
    ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 3, "H": 2, "F": 16, "C": 5}, ["flash"]),
    ("resnet18.mspec", {"B": 2, "I": 32, "C": 10}, []),  # peaks in the optimizer step
    ("resnet18.mspec", {"B": 16, "I": 64, "C": 10}, []),  # in backward, at a block's input
    ("gpt2.mspec", {"B": 2, "L": 8, "P": 16, "V": 32, "D": 16, "N": 2, "H": 4, "F": 64},
     ["math"]),
    ("bert.mspec", {"B": 1, "L": 4, "P": 8, "V": 64, "D": 8, "N": 3, "H": 2, "F": 16, "T": 2},
     ["math"]),
    ("llama.mspec", {**LLAMA, "KV": 2}, ["math"]),
    ("llama.mspec", {**LLAMA, "N": 3, "KV": 4}, ["flash"]),
    ("mistral.mspec", {**LLAMA, "KV": 2, "W": 3}, ["math"]),
    ("t5.mspec", T5, []),
    ("t5.mspec", {**T5, "B": 1, "V": 128, "N": 3}, []),
    ("t5.mspec", {**T5, "B": 1, "S": 3, "T": 6}, ["eager"]),
    ("cs336_lm.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4}, ["math"]),
    ("cs336_lm.mspec", {"B": 1, "L": 4, "V": 128, "D": 16, "N": 2, "H": 2}, ["flash"]),
    # the slow scan's backward frees its states step by step (ssm_recurrence's moments)
    ("mamba.mspec", {"B": 2, "L": 5, "V": 30, "D": 20, "N": 2, "S": 3, "K": 4, "E": 2}, ["slow"]),
    ("mamba.mspec", {"B": 1, "L": 7, "V": 30, "D": 16, "N": 1, "S": 4, "K": 3, "E": 2}, ["slow"]),
    ("cs336_lm_swiglu.mspec", {"B": 1, "L": 4, "V": 512, "D": 64, "N": 5, "H": 4, "F": 128},
     []),
    # its own precision, mixed_bf16, keeps a float32 master copy that a plain torch
    # optimizer has not: the step is checked in fp32 (its bf16 rows symbolically, in
    # tests/verify/test_korthikanti.py)
    ("megatron_gpt.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4}, [], "fp32"),
]


@pytest.mark.parametrize(("spec", "sizes", "use", "precision"),
                         [(*c, None)[:4] for c in CASES])
def test_verify_peak_is_exact(spec, sizes, use, precision):
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd",
                          precision=precision)
    comparison = compare_peak(result, measure_peak(result))
    mismatches = [(c, m, e) for c, m, e in comparison.rows if m != e]
    assert mismatches == [], comparison.terms
    assert comparison.expected == comparison.measured
    assert comparison.phases[0] == comparison.phases[1]
    assert comparison.ok


def test_the_cases_cover_the_zoo():
    covered = {case[0] for case in CASES}
    assert covered | {"mixtral.mspec"} == {p.name for p in SPECS.glob("*.mspec")}


def test_resnet_block_input_gradients_are_summed_out_of_place_under_the_tracker():
    """layer3.b0's input gets two gradients (conv1's and the downsample's); the tracker
    adds them out of place, a [16, 128, 16, 16] float32 sum, 262,144 bytes, named."""
    result = compile_spec(SPECS / "resnet18.mspec", set={"B": 16, "I": 64, "C": 10},
                          convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert comparison.moment == "backward: layer3.b0.conv1"
    assert [(t.name, t.bytes) for t in comparison.terms] == [
        ("AdamW step counters", 4 * 62), ("gradient sums out of place", 262_144)]
    assert comparison.ok

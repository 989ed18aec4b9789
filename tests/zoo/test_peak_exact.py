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
    ("cs336_lm_swiglu.mspec", {"B": 1, "L": 4, "V": 512, "D": 64, "N": 5, "H": 4, "F": 128},
     []),
]
MAMBA = {"B": 2, "L": 5, "V": 30, "D": 20, "N": 2, "S": 3, "K": 4, "E": 2}


@pytest.mark.parametrize(("spec", "sizes", "use"), CASES)
def test_verify_peak_is_exact(spec, sizes, use):
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    mismatches = [(c, m, e) for c, m, e in comparison.rows if m != e]
    assert mismatches == [], comparison.terms
    assert comparison.expected == comparison.measured
    assert comparison.phases[0] == comparison.phases[1]
    assert comparison.ok


def test_the_cases_cover_the_zoo():
    covered = {case[0] for case in CASES} | {"mamba.mspec"}  # Mamba: the test below
    assert covered | {"mixtral.mspec"} == {p.name for p in SPECS.glob("*.mspec")}


def test_mamba_scan_backward_is_the_one_known_gap():
    """The known gap, pinned to the byte so that it cannot grow unseen: the slow scan's
    backward is a bulk estimate (`ssm_recurrence`'s backward_temporaries), while autograd
    runs L steps that free the saved states as they go and sum each step's
    select_backward tensors; memspec is over by 1,200 B here. Fixing the rule makes this
    test fail: then move Mamba into CASES."""
    result = compile_spec(SPECS / "mamba.mspec", set=MAMBA, use=["slow"],
                          convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert comparison.expected - comparison.measured == 1_200
    assert not comparison.ok


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

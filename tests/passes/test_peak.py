"""The true peak of a training step: symbolic checks, and the tracker's own figures.

The tracker is PyTorch's MemTracker on fake tensors (`memspec verify --peak`), run on
the spec's own lowering with the same knobs. memspec's prediction must equal it byte for
byte in every category, once the named terms `compare_peak` computes are added: AdamW's
`step` counters (a 4-byte tensor per parameter tensor; CPU tensors when training on a
GPU) and the gradient sums the tracker's dispatch mode makes out of place.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.passes.peak import StepOptions
from memspec.passes.peak import repeats as peak_repeats
from memspec.symbolic.dominance import dominates
from memspec.symbolic.polys import poly
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, L, V, D, N, H, F = map(S, "BLVDNHF")


def test_steady_state_peak_is_the_start_of_backward_at_gpt2_xl():
    """Issue #6's figures: every saved tensor plus the log-probs' and logits' gradients."""
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", preset="gpt2_xl", set={"B": 1})
    autograd = compile_spec(SPECS / "cs336_lm_swiglu.mspec", convention="autograd")
    moment = result.peak.winner()
    assert moment.label() == "backward: cross_entropy.log_probs"
    part = dict(moment.breakdown)
    c = result.categories
    assert part["parameters"] == result.resolve(c["parameters"].bytes)
    assert part["optimizer_state"] == result.resolve(c["optimizer_state"].bytes)
    assert part["gradients"] == 0  # zero_grad(set_to_none=True)
    assert part["temporaries"] == 8 * B * L * V  # two fp32 [B, L, V] gradients
    # saved tensors, the loss and backward's seed; nll_loss's total_weight is gone
    saved = result.resolve(autograd.categories["activations"].bytes)
    assert sp.expand(part["activations"] - saved) == 4
    assert result.value(moment.bytes) == 39_437_295_880  # MemTracker: + 1,740 step counters


def _step_counters(result) -> int:
    """Bytes of AdamW's `step` tensors: one float32 scalar per parameter tensor."""
    if result.config.optimizer.name not in ("adamw", "adam"):
        return 0
    items = result.categories["parameters"].items
    return 4 * sum(result.value(i.multiplicity) for i in items)


SWIGLU = "cs336_lm_swiglu.mspec"
ACTIVATIONS_HEAVY = {"B": 2, "L": 16, "V": 64, "D": 32, "N": 4, "H": 4, "F": 48}
PARAMETERS_HEAVY = {"B": 1, "L": 4, "V": 512, "D": 64, "N": 5, "H": 4, "F": 128}

CASES = [
    # (spec, sizes, variants, step options, the moment memspec finds)
    (SWIGLU, ACTIVATIONS_HEAVY, [], StepOptions(), "backward: cross_entropy.log_probs"),
    (SWIGLU, PARAMETERS_HEAVY, [], StepOptions(), "optimizer step: updating lm_head"),
    (SWIGLU, PARAMETERS_HEAVY, [], StepOptions(optimizer_impl="foreach"), "optimizer step"),
    (SWIGLU, ACTIVATIONS_HEAVY, [], StepOptions(set_to_none=False), "backward: cross_entropy"),
    (SWIGLU, ACTIVATIONS_HEAVY, [], StepOptions(grad_accum=2), "backward: cross_entropy"),
    # a fresh model has no gradients to keep: the first step peaks in step() either way
    (SWIGLU, ACTIVATIONS_HEAVY, [], StepOptions(first_step=True, set_to_none=False),
     "optimizer step"),
    # gradients of a tied weight are summed before AccumulateGrad: in flight till then
    ("gpt2.mspec", {"B": 2, "L": 8, "P": 16, "V": 32, "D": 16, "N": 2, "H": 4, "F": 64},
     ["math", "gelu_tanh"], StepOptions(), "backward: h.mlp.c_proj"),
    ("cs336_lm.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4}, ["flash"],
     StepOptions(), "backward: layers.ffn.w2"),
    ("t5.mspec", {"B": 2, "S": 5, "T": 4, "V": 32, "D": 8, "K": 2, "H": 2, "F": 12, "N": 2,
                  "R": 8}, [], StepOptions(), "backward: cross_entropy.log_probs"),
]


@pytest.mark.parametrize(("spec", "sizes", "use", "options", "moment"), CASES)
def test_peak_equals_the_trackers_byte_for_byte(spec, sizes, use, options, moment):
    result = compile_spec(SPECS / spec, set=sizes, use=use, step=options,
                          convention="autograd")
    comparison = compare_peak(result, measure_peak(result, options))
    assert comparison.moment.startswith(moment)
    counters = _step_counters(result)
    terms = {t.name: t.bytes for t in comparison.terms}
    assert terms.get("AdamW step counters", 0) == counters
    assert comparison.expected == comparison.measured
    assert all(measured == expected for _, measured, expected in comparison.rows)
    assert comparison.ok


T5_LARGER_VOCABULARY = {"B": 1, "S": 5, "T": 4, "V": 128, "D": 8, "K": 2, "H": 2, "F": 12,
                        "N": 3, "R": 8}


def test_tied_embedding_gradients_are_summed_after_the_node_returns():
    """T5's shared embedding gets three gradients (LM head, decoder and encoder inputs).
    Autograd adds the second into the first once the embedding's backward node has
    returned (its saved indices and incoming gradient freed). The first is the LM head's,
    a linear's weight gradient: a view out of TBackward, into which autograd adds nothing
    in place, so the sum is out of place in a real step too (old, new and sum alive at
    once), not only under the tracker. memspec had the in-place sum, 240 bytes low, and
    then named the 240 bytes a tracker term; it is the step's."""
    result = compile_spec(SPECS / "t5.mspec", set=T5_LARGER_VOCABULARY, convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert comparison.phases == ("backward", "backward")
    assert all(measured == expected for _, measured, expected in comparison.rows)
    assert {c: m for c, m, _ in comparison.rows} == {"PARAM": 13_984, "GRAD": 5_760, "OPT": 28_240,
                                     "ACT": 9_820, "TEMP": 12_448, "BUFFER": 0}
    assert [(t.name, t.bytes) for t in comparison.terms] == [("AdamW step counters", 272)]
    assert comparison.measured == 70_252 and comparison.ok


PREFIX_ROWS = """use std
dim rows as R
dim tokens as T
dim width as D
dim extra as E
model Prefix {
    param prefix: [R, D]
    head = Linear(D, E, bias = false)
    forward(x: [T, D], target: [R + T, E]) {
        return mse_loss(head(cat(prefix, x, dim = 0)), target)
    }
}
"""
PREFIX_COLUMNS = """use std
dim rows as R
dim width as D
dim extra as E
model Side {
    param prefix: [R, D]
    head = Linear(D + E, E, bias = false)
    forward(x: [R, E], target: [R, E]) {
        return mse_loss(head(cat(prefix, x, dim = 1)), target)
    }
}
"""


@pytest.mark.parametrize(
    ("text", "sizes", "beyond"),
    [
        # rows of a row-major gradient: the view's strides are the parameter's own
        (PREFIX_ROWS, {"R": 2, "T": 6, "D": 16, "E": 16}, 4 * 6 * 16),
        # columns of a single row: its only dim of size > 1 has stride 1, as the parameter's
        (PREFIX_COLUMNS, {"R": 1, "D": 4, "E": 6}, 4 * 6),
        # columns of 3 rows: row stride D + E, not D; AccumulateGrad copies the view
        (PREFIX_COLUMNS, {"R": 3, "D": 4, "E": 6}, 0),
    ],
)
def test_a_parameter_gradient_that_is_a_narrowed_view_keeps_its_whole_storage(
    tmp_path, text, sizes, beyond
):
    """cat's backward hands each input a narrowed view of the output's gradient; a
    parameter's AccumulateGrad keeps that view as `.grad` when nothing else holds it and
    its strides obey the gradient layout contract (torch/csrc/autograd/functions/
    accumulate_grad.h), so the whole gradient of the concatenation lives until zero_grad,
    through the optimizer step; else it copies the view into a tensor of its own."""
    spec = tmp_path / "prefix.mspec"
    spec.write_text(text)
    result = compile_spec(spec, set=sizes, convention="autograd")
    moment = result.peak.winner()
    assert moment.phase == "optimizer step"
    own = result.value(result.categories["gradients"].bytes)
    assert result.value(dict(moment.breakdown)["gradients"]) == own + beyond
    comparison = compare_peak(result, measure_peak(result))
    assert all(measured == expected for _, measured, expected in comparison.rows)
    assert comparison.expected == comparison.measured and comparison.ok


def test_first_step_peaks_in_the_optimizer_where_state_is_made():
    """Step 1 runs forward and backward without optimizer state; its peak is the step."""
    options = StepOptions(first_step=True)
    result = compile_spec(SPECS / SWIGLU, set=ACTIVATIONS_HEAVY, step=options)
    steady = compile_spec(SPECS / SWIGLU, set=ACTIVATIONS_HEAVY)
    first = result.peak.winner()
    assert first.phase == "optimizer step"
    assert result.value(first.bytes) < steady.value(steady.peak.bytes)
    comparison = compare_peak(result, measure_peak(result, options))
    # the state is created by step() itself, all of it before the first update
    assert comparison.predicted + _step_counters(result) == comparison.measured
    assert comparison.phases == ("optimizer step", "optimizer step")
    assert comparison.ok


def test_left_out_repetitions_are_added_back_exactly(monkeypatch):
    """Replaying 3 of N = 7 layers and adding 4 middle ones back equals replaying all 7."""
    sizes = {**ACTIVATIONS_HEAVY, "N": 7}
    for options in (StepOptions(), StepOptions(first_step=True), StepOptions(grad_accum=2)):
        short = compile_spec(SPECS / SWIGLU, set=sizes, step=options)
        monkeypatch.setattr(peak_repeats, "REPLAY_LIMIT", 10)
        full = compile_spec(SPECS / SWIGLU, set=sizes, step=options)
        monkeypatch.undo()
        values_short = sorted(short.value(c.bytes) for c in short.peak.candidates)
        assert short.value(short.peak.bytes) == full.value(full.peak.bytes)
        assert values_short[-1] == max(full.value(c.bytes) for c in full.peak.candidates)


def test_symbolic_peak_keeps_n_and_states_its_assumption():
    result = compile_spec(SPECS / "cs336_lm.mspec")
    assert result.peak.assumptions == (
        "N >= 3: the peak formula replays the first, a middle and the last repetition of "
        "layers and counts the other N - 3 like the middle one",
    )
    assert isinstance(result.peak.bytes, sp.Max)
    assert N in result.peak.bytes.free_symbols
    # no candidate is at most another one for every size
    polys = [poly(c.bytes) for c in result.peak.candidates]
    for i, a in enumerate(polys):
        assert not any(dominates(b, a) for j, b in enumerate(polys) if j != i)


def test_a_bound_count_below_four_is_replayed_in_full():
    result = compile_spec(SPECS / "cs336_lm.mspec", set={"N": 2})
    assert result.peak.assumptions == ()
    # parameters, gradients and state stay formulas in N; what the replay saw does not
    assert all(N not in c.part("activations").free_symbols for c in result.peak.candidates)


def test_dominance_is_a_proof_over_dims_at_least_one():
    assert dominates(poly(B * D + D), poly(B * D))
    assert dominates(poly(2 * B * D), poly(B * D + D))  # B*D >= D as B >= 1
    assert not dominates(poly(B * D), poly(B * D + D))
    assert not dominates(poly(V * D), poly(B * L * D))  # either can be larger
    assert dominates(poly(D), poly(D / H))  # H >= 1
    e = sp.Dummy("e", integer=True, nonnegative=True)
    assert not dominates(poly(e * D), poly(D))  # e may be 0

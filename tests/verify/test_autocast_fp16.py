"""fp16 autocast with torch.amp.GradScaler (`--precision autocast_fp16`): the forward
under torch.autocast in float16 on the CPU, the loss scaled, the gradients unscaled
before each optimizer steps. The scaler's scalars are few bytes, and each is counted:
verified against the real step (state per tensor, saved tensors) and MemTracker's peak
to the byte, at every moment that can be the peak (backward, unscaling, the step)."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from memspec.passes.peak import StepOptions
from memspec.passes.peak.moments import Phase
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS

SWIGLU = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 3, "F": 64}
# the step outweighs backward, so the optimizer's moments decide the peak
STEP_HEAVY = {"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 3, "F": 64}
# a model so small that unscale_'s 16 bytes of scalars are the peak
TINY_MLP = {"B": 1, "I": 1, "F": 2, "C": 2}

# autocast_fp16 as std declares it, without the loss scaler: what the scaler adds
UNSCALED = """
precision unscaled_fp16 {
    param float32; grad float32; state float32; activation float32
    cast float16 of linear, matmul, einsum, addmm, conv1d, conv2d, flash_attention
    cast float32 of nll_loss, mse_loss
    cast widest of cat
}
"""


def _compile(spec, sizes, optimizer=None, options=None, **kw):
    return compile_spec(
        spec,
        set=sizes,
        precision="autocast_fp16",
        optimizer=optimizer,
        step=options or StepOptions(),
        **kw,
    )


def _peak_ok(result, options):
    comparison = compare_peak(result, measure_peak(result, options))
    assert comparison.ok, (comparison.rows, comparison.phases, comparison.terms)
    return comparison


def test_real_step_matches_every_category():
    """State per tensor (the scaler's _scale and _growth_tracker beside AdamW's) and
    every saved tensor, in the dtype fp16 autocast saves it."""
    result = _compile(SPECS / "cs336_lm_swiglu.mspec", SWIGLU, use=["math"], convention="autograd")
    tables = compare(result, measure_step(result))
    assert [r for t in tables for r in t.rows if r.difference] == []
    state = {r.name: r.measured for t in tables for r in t.rows if t.category == "optimizer_state"}
    assert state["scaler._scale"] == state["scaler._growth_tracker"] == 1
    saved = {r.name for t in tables if t.category == "activations" for r in t.rows}
    assert "layers.ffn.w1.weight.float16" in saved  # the weight's fp16 copy autocast saved


@pytest.mark.parametrize(
    "options",
    [
        StepOptions(),
        StepOptions(grad_accum=2),
        StepOptions(set_to_none=False),
        StepOptions(keep_outputs=True),
    ],
    ids=["steady", "grad_accum", "zero_in_place", "keep_outputs"],
)
def test_peak_in_backward_to_the_byte(options):
    result = _compile(SPECS / "cs336_lm_swiglu.mspec", SWIGLU, options=options, use=["math"])
    comparison = _peak_ok(result, options)
    # _scale and _growth_tracker: memspec's optimizer state, the tracker's own tensors
    (moved,) = [t for t in comparison.terms if t.moved_from]
    assert (moved.category, moved.moved_from, moved.bytes) == ("OTH", "OPT", 8)


# torch.optim.Muon has one implementation, its for_loop
FIRST_STEPS = [
    (optimizer, impl)
    for optimizer in ("adamw", "muon", "sgd_momentum", "adagrad")
    for impl in ("for_loop", "foreach", "fused")
    if optimizer != "muon" or impl == "for_loop"
]


@pytest.mark.parametrize(("optimizer", "impl"), FIRST_STEPS)
def test_first_step_peaks_in_the_step_to_the_byte(optimizer, impl):
    """The step holds found_inf's copy (4 B), a fused one also the found_inf sum and
    grad_scale it reads (8 B more); Muon's chain unscales and steps AdamW's
    parameters after its own, with Muon's found_inf still held; Adagrad's state exists
    before the step."""
    options = StepOptions(first_step=True, optimizer_impl=impl)
    result = _compile(SPECS / "cs336_lm_swiglu.mspec", STEP_HEAVY, optimizer, options, use=["math"])
    comparison = _peak_ok(result, options)
    assert comparison.phases[1] in ("optimizer step", "backward")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_unscale_moment_is_the_peak_to_the_byte(optimizer):
    """unscale_ holds two float64 scalars (the reciprocal of the scale), then found_inf
    and inv_scale with their per-device copies: 16 bytes beside the loss and the batch.
    A fused AdamW has no temporaries, so unscaling outweighs its step."""
    options = StepOptions(optimizer_impl="fused")
    result = _compile(SPECS / "mlp.mspec", TINY_MLP, optimizer, options)
    winner = result.peak.winner()
    assert winner.phase is Phase.UNSCALE
    comparison = _peak_ok(result, options)
    assert comparison.phases == ("unscaling gradients", "unscaling gradients")


def test_what_the_scaler_adds_exactly():
    """Against the same autocast without a scaler, symbolically: 8 B of state; in
    backward the scaled loss (4 B) and, at the seed, its 4-B gradient; in the step
    found_inf's copy (4 B)."""
    spec = (SPECS / "cs336_lm_swiglu.mspec").read_text() + UNSCALED
    scaled = compile_spec(spec, precision="autocast_fp16", use=["math"])
    plain = compile_spec(spec, precision="unscaled_fp16", use=["math"])
    state = scaled.categories["optimizer_state"].bytes - plain.categories["optimizer_state"].bytes
    assert sp.expand(state) == 8

    def moments(result, phase):
        return {c.where: dict(c.breakdown) for c in result.peak.candidates if c.phase is phase}

    steps = moments(scaled, Phase.OPTIMIZER_STEP)
    for where, parts in moments(plain, Phase.OPTIMIZER_STEP).items():
        assert sp.expand(steps[where]["activations"] - parts["activations"]) == 4
        assert sp.expand(steps[where]["optimizer_state"] - parts["optimizer_state"]) == 8


def test_scaler_arguments_reach_verify(tmp_path):
    """`scaler GradScaler(ARGS)` is what verify runs (its arguments passed on), and a
    class that is no GradScaler is refused."""
    spec = (
        (SPECS / "mlp.mspec").read_text()
        + """
precision low_scale {
    param float32; grad float32; state float32; activation float32
    cast float16 of linear, addmm
    cast float32 of nll_loss
    scaler GradScaler(init_scale = 1024.0, growth_interval = 10)
}
precision odd_scaler {
    param float32; grad float32; state float32; activation float32
    cast float16 of linear, addmm
    scaler torch.optim:SGD()
}
"""
    )
    path = tmp_path / "mlp.mspec"
    path.write_text(spec)
    sizes = [f"--set={k}={v}" for k, v in TINY_MLP.items()]
    assert main(["verify", str(path), "--precision", "low_scale", "--peak", *sizes]) == 0
    assert main(["verify", str(path), "--precision", "odd_scaler", *sizes]) == 2


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "param float32; grad float16; state float32; activation float32\n"
            "cast float16 of linear\nscaler GradScaler()",
            "GradScaler refuses float16 gradients",
        ),
        (
            "param float32; grad float32; state float32; activation float32\n"
            "cast float16 of linear\nscaler GradScaler()\nscaler GradScaler()",
            "names a loss scaler twice",
        ),
    ],
)
def test_bad_scaler_is_a_located_error(body, message):
    spec = (SPECS / "mlp.mspec").read_text() + f"precision bad {{\n{body}\n}}\n"
    with pytest.raises(MemspecError, match=message) as err:
        compile_spec(spec, precision="bad")
    assert err.value.span is not None

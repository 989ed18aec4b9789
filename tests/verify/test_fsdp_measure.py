"""FSDP2 per rank on the fake process group (`memspec.verify.fsdp`): what each rank holds,
against values computed here from the parameter shapes alone.

V = 65 and F = 66 divide by neither 4 nor 8: FSDP2 pads each such shard to ceil(d0 / W)
rows, equally on every rank, while the optimizer state follows each rank's unpadded
rows, so the last rank holds less."""

from __future__ import annotations

import math

import pytest

from memspec import compile_spec
from memspec.verify.fsdp import measure_fsdp
from tests.conftest import ROOT

SIZES = {"B": 2, "L": 8, "V": 65, "D": 16, "N": 2, "H": 4, "F": 66}
V, D, N, H, F, L = (SIZES[k] for k in "VDNHFL")
ROOT_PARAMS = {"token_embeddings.weight": (V, D), "ln_final.weight": (D,),
               "lm_head.weight": (V, D)}
UNIT_PARAMS = {"ln1.weight": (D,), "attn.q_proj.weight": (D, D), "attn.k_proj.weight": (D, D),
               "attn.v_proj.weight": (D, D), "attn.output_proj.weight": (D, D),
               "ln2.weight": (D,), "ffn.w1.weight": (F, D), "ffn.w2.weight": (D, F),
               "ffn.w3.weight": (F, D)}
PARAMS = {**ROOT_PARAMS, **{f"layers.{i}.{k}": s for i in range(N) for k, s in UNIT_PARAMS.items()}}

# (W, mixed_bf16, reshard_after_forward)
CASES = [(w, mixed, raf) for w in (4, 8) for mixed in (False, True) for raf in (True, False)]


def rest(shape):
    return math.prod(shape[1:])


def padded(shape, w):
    """Elements of a rank's shard as FSDP2 stores it: ceil(d0 / W) rows on every rank."""
    return -(-shape[0] // w) * rest(shape)


def local(shape, w, rank):
    """Elements of the rank's unpadded rows (torch.chunk's split of dim 0)."""
    rows = -(-shape[0] // w)
    return max(0, min(rows, shape[0] - rank * rows)) * rest(shape)


@pytest.fixture(scope="module")
def result():
    return compile_spec(ROOT / "specs/cs336_lm_swiglu.mspec", set=SIZES)


@pytest.fixture(scope="module")
def measured(result):
    cache = {}

    def get(w, mixed, raf):
        if (w, mixed, raf) not in cache:
            cache[(w, mixed, raf)] = measure_fsdp(
                result, w, reshard_after_forward=raf, mixed_bf16=mixed, ranks=[0, w - 1])
        return cache[(w, mixed, raf)]

    return get


@pytest.mark.parametrize(("w", "mixed", "raf"), CASES)
def test_what_each_rank_holds_after_the_step(measured, w, mixed, raf):
    """Shards padded alike on every rank; gradients the unpadded rows of one flat
    reduce-scatter output per unit (padded); AdamW's state the unpadded rows: the
    ranks differ by the state alone. float32 whatever the compute dtype."""
    ranks = measured(w, mixed, raf)
    for m in ranks:
        r = m.rank
        assert dict(m.params) == {n: 4 * padded(s, w) for n, s in PARAMS.items()}
        assert dict(m.params_local) == {n: 4 * local(s, w, r) for n, s in PARAMS.items()}
        assert dict(m.grads) == {n: 4 * local(s, w, r) for n, s in PARAMS.items()}
        assert m.grad_storage == sum(4 * padded(s, w) for s in PARAMS.values())
        expected = {}
        for n, s in PARAMS.items():
            expected |= {f"{n}.step": 4, f"{n}.exp_avg": 4 * local(s, w, r),
                         f"{n}.exp_avg_sq": 4 * local(s, w, r)}
        assert dict(m.optimizer_state) == expected
    first, last = ranks
    assert first.total - last.total == 8 * sum(
        local(s, w, 0) - local(s, w, w - 1) for s in PARAMS.values()) > 0


@pytest.mark.parametrize(("w", "mixed", "raf"), CASES)
def test_the_peak_by_category(measured, w, mixed, raf):
    """At the peak: every shard; the gathered (padded, W x shard) parameters in the
    compute dtype of the root and the unit that runs, with the next unit's all-gather
    output prefetched (reshard_after_forward: backward of the last unit), or of every
    unit with the last unit's all-gather output not yet freed (no resharding: the
    root's forward); no gradient yet (zero_grad(set_to_none=True))."""
    ranks = measured(w, mixed, raf)
    c = 2 if mixed else 4
    unit = sum(padded(s, w) for s in UNIT_PARAMS.values())
    root = sum(padded(s, w) for s in ROOT_PARAMS.values())
    tables = N * 2 * L * (D // H // 2) * c  # RoPE's cos and sin per layer
    for m in ranks:
        peak = dict(m.peak)
        assert peak["Sharded Param"] == 4 * sum(padded(s, w) for s in PARAMS.values())
        assert peak["OptState"] == sum(b for _, b in m.optimizer_state)
        assert peak["Buffer"] == tables
        assert peak["Sharded Grad"] == peak["Unsharded Grad"] == peak["Reduce Scatter"] == 0
        assert peak["All Gather"] == w * c * unit
        if raf:
            assert peak["Unsharded Param"] == w * c * (root + unit)
            assert (m.phase, m.modules[-1]) == ("backward", f"FSDPLoweredModel.layers.{N - 1}")
        else:
            assert peak["Unsharded Param"] == w * c * (root + N * unit)
            assert (m.phase, m.modules) == ("forward", ("FSDPLoweredModel",))
        assert m.total == sum(peak.values())
    # activations and temporaries do not depend on the rank
    first, last = ranks
    assert {k: v for k, v in first.peak if k != "OptState"} == {
        k: v for k, v in last.peak if k != "OptState"}


def test_fake_tensors_measure_what_real_ones_hold(result, measured):
    """The step on allocated tensors (small sizes) holds what the fake one does, byte
    for byte, in every category and after the step."""
    fake = measured(4, False, True)[1]
    (real,) = measure_fsdp(result, 4, ranks=[3], real=True)
    assert real == fake


def test_a_rank_outside_the_world_is_refused(result):
    from memspec.errors import UsageError

    with pytest.raises(UsageError, match=r"rank 4 is not in 0\.\.3"):
        measure_fsdp(result, 4, ranks=[4])


def test_units_run_each_repetition_as_a_call_of_its_module(result):
    """units=True: the same step (loss and every gradient equal) with each repetition of
    `layers` a call of module `layers.<i>`, so that FSDP2's hooks run around it."""
    import torch

    from memspec.lower.module import LoweredModel

    runs = []
    for units in (False, True):
        torch.manual_seed(0)
        model = LoweredModel(result.graph, result.substitutions(), units=units)
        calls = []
        for i in range(N):
            model.get_submodule(f"layers.{i}").register_forward_hook(
                lambda m, a, o, i=i, calls=calls: calls.append(i))
        torch.manual_seed(1)
        loss = model(*model.make_inputs())
        loss.backward()
        runs.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, calls))
    (loss0, grads0, calls0), (loss1, grads1, calls1) = runs
    assert loss0 == loss1 and grads0.keys() == grads1.keys() == PARAMS.keys()
    assert all(torch.equal(grads0[n], grads1[n]) for n in grads0)
    assert (calls0, calls1) == ([], list(range(N)))

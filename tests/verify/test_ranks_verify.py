"""`memspec verify --dp N --zero K`: every rank of FSDP2 run on torch's fake process
group, one process per rank, what it holds after the step against memspec's per-rank
categories, to the byte (the last rank's optimizer state is smaller at these sizes)."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.cli import main
from memspec.verify.fsdp import measure_fsdp
from memspec.verify.ranks import compare_ranks
from tests.conftest import SPECS

SWIGLU = {"B": 2, "L": 8, "D": 16, "H": 4, "V": 65, "N": 2, "F": 66}
LLAMA = {"B": 2, "L": 8, "D": 16, "H": 4, "KV": 2, "V": 65, "N": 2, "F": 44}


@pytest.mark.parametrize(
    ("spec", "sizes", "flags"),
    [
        ("cs336_lm_swiglu.mspec", SWIGLU, ["--zero", "3", "--dp", "4"]),
        ("cs336_lm_swiglu.mspec", SWIGLU, ["--zero", "2", "--dp", "8", "--precision=mixed_bf16"]),
        ("llama.mspec", LLAMA, ["--zero", "3", "--dp", "4"]),
    ],
    ids=["swiglu-zero3-w4", "swiglu-zero2-w8-mixed", "llama-zero3-w4"],
)
def test_every_rank_matches(spec, sizes, flags, capsys):
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(SPECS / spec), *flags, *args]) == 0
    out = capsys.readouterr().out
    world = int(flags[flags.index("--dp") + 1])
    assert out.count("optimizer_state") == world
    assert "every rank matches exactly" in out


def test_a_wrong_prediction_is_caught():
    """The comparison reads memspec's rank classes: measured against a configuration
    that shards differently (ZeRO-3 measured, DeepSpeed's flat partitions predicted),
    the optimizer state of the last rank differs."""
    fsdp2 = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=SWIGLU, zero=3, dp=4)
    flat = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=SWIGLU, zero=3, dp=4,
                        runtime="deepspeed")
    measured = measure_fsdp(fsdp2, 4, ranks=[3])
    assert all(r.ok for r in compare_ranks(fsdp2, measured))
    wrong = [r for r in compare_ranks(flat, measured) if not r.ok]
    assert {r.category for r in wrong} >= {"optimizer_state"}


@pytest.mark.parametrize(
    ("flags", "sizes"),
    [
        (["--dp", "4", "--peak"], SWIGLU),
        (["--dp", "4", "--peak", "--optimizer-impl", "foreach"],
         {"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 2, "F": 64}),
        (["--dp", "4", "--zero", "1", "--peak"], SWIGLU),
        (["--dp", "4", "--zero", "1", "--peak"],
         {"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 2, "F": 64}),
    ],
    ids=["ddp-backward-peak", "ddp-step-peak", "zero1-backward-peak", "zero1-step-peak"],
)
def test_ddp_ranks_match(flags, sizes, capsys):
    """DDP: gradients, optimizer state and the reducer's buckets (a copy of every
    gradient) on every rank, and each rank's peak (a replica's step plus the buckets,
    in backward or in a foreach step). ZeRO-1: each rank's own parameters' state, and
    each rank's peak, which differs by rank (its state, and its step over its own
    parameters, largest first, in the optimizer-step case)."""
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(SPECS / "cs336_lm_swiglu.mspec"), *flags, *args]) == 0
    out = capsys.readouterr().out
    assert out.count("gradient buckets") == 4
    if "--peak" in flags:
        assert out.count("(equal;") == 4


def test_ddp_json_gives_every_rank_the_peak():
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=SWIGLU, dp=4)
    import json

    doc = json.loads(result.to_json())
    (every,) = doc["ranks"]
    assert every["ranks"] == [0, 1, 2, 3]
    assert every["peak"] == doc["values"]["peak"] == result.value(result.peak.winner().bytes)
    single = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=SWIGLU)
    buckets = result.value(single.categories["gradients"].bytes)
    assert every["peak"] == result.value(single.peak.winner().bytes) + buckets


def test_zero1_json_gives_each_rank_class_its_peak():
    import json

    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", zero=1, dp=4,
                          set={"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 2, "F": 64})
    doc = json.loads(result.to_json())
    by_rank = {r: c["peak"] for c in doc["ranks"] for r in c["ranks"]}
    # verify measured 371,420 and 371,160: the tracker also counts AdamW's 6 CPU step
    # counters of 4 B each on every rank, which memspec names and does not count
    assert by_rank == {0: 371_396, 1: 371_140, 2: 371_140, 3: 371_140}
    assert doc["values"]["peak"] == 371_396  # the rank that peaks highest


@pytest.mark.parametrize(
    ("spec", "sizes", "flags"),
    [
        # five units: the left-out repetitions' sharded gradients
        ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 5}, ["--dp", "4"]),
        # 3 ranks, V = 509 and F = 130 split unevenly: rank 2 holds less state
        ("cs336_lm_swiglu.mspec", {"B": 1, "L": 2, "D": 64, "H": 4, "V": 509, "N": 3,
                                   "F": 130}, ["--dp", "3"]),
        ("cs336_lm_swiglu.mspec", {"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 3,
                                   "F": 64}, ["--dp", "4", "--first-step"]),
        ("llama.mspec", {**LLAMA, "N": 3}, ["--dp", "4"]),
        # every unit a checkpoint: its recomputation runs between its gather and its
        # reduce-scatter
        ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 5}, ["--dp", "4", "--recompute", "full"]),
    ],
    ids=["swiglu-n5", "swiglu-uneven-w3", "swiglu-first-step", "llama", "swiglu-full-recompute"],
)
def test_fsdp2_peak_of_every_rank(spec, sizes, flags, capsys):
    """FSDP2 (--zero 3): every rank's peak, FSDPMemTracker's total, equal to memspec's
    (its gathers, prefetches and reduce-scatters replayed at the units' boundaries), with
    AdamW's CPU step counters the one named term."""
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(SPECS / spec), "--zero", "3", "--peak", *flags, *args]) == 0
    out = capsys.readouterr().out
    world = int(flags[flags.index("--dp") + 1])
    assert out.count("(equal)") == world


@pytest.mark.parametrize(("n", "world"), [(2, 4), (3, 4), (2, 8)])
def test_fsdp2_mixed_precision_peak_of_every_rank(n, world, capsys):
    """FSDP2's bf16 mixed precision: float32 shards, each all-gather sending a bfloat16
    copy of them, gathered parameters and gradients in bfloat16, float32 reduce-scatters
    (at N = 3 the next unit's reduce-scatter input and its sharded gradient are in the
    peak); every rank equal to the byte. std's mixed_bf16 makes the RoPE tables (untyped
    buffers) bfloat16, as the run does (MixedPrecisionPolicy casts no buffer, so
    verify.fsdp casts them): when they stayed float32, q and k, and everything after
    them, were float32 in memspec (384,924 bytes against the measured 316,824 at
    B = 2, L = 16, D = 32, two ranks)."""
    args = [f"--set={k}={v}" for k, v in {**SWIGLU, "N": n}.items()]
    flags = ["--zero", "3", "--dp", str(world), "--precision", "mixed_bf16", "--peak"]
    spec = SPECS / "cs336_lm_swiglu.mspec"
    assert main(["verify", str(spec), *flags, *args]) == 0
    assert capsys.readouterr().out.count("(equal)") == world


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_fsdp2_zero2_peak_of_every_rank(recompute, capsys):
    """--zero 2 (reshard_after_forward=False): every unit's parameters stay gathered from
    its forward to its post-backward, no all-gather in backward; with five units the
    left-out repetitions' gathered parameters count like what they saved."""
    args = [f"--set={k}={v}" for k, v in {**SWIGLU, "N": 5}.items()]
    flags = ["--zero", "2", "--dp", "4", "--recompute", recompute, "--peak"]
    assert main(["verify", str(SPECS / "cs336_lm_swiglu.mspec"), *flags, *args]) == 0
    assert capsys.readouterr().out.count("(equal)") == 4

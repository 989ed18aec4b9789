"""`memspec verify --tp N [--sp]`: every rank of torch's own tensor parallelism
(`parallelize_module` with the stock styles, `loss_parallel()`, on the fake process
group, one process per rank) against memspec's rank: parameters, gradients, optimizer
state and saved activations on real tensors, the true peak on fake ones, to the byte.

The sizes put the peak in different places: in the middle of a layer's backward, at
the final norm, and in the loss's backward (a large vocabulary: loss_parallel's fused
backward holds three [N, V/TP] tensors at once)."""

from __future__ import annotations

import pytest

from memspec.cli import main
from tests.conftest import SPECS

SWIGLU = {"B": 4, "L": 64, "V": 64, "D": 32, "N": 2, "H": 4, "F": 64}
LLAMA = {"B": 4, "L": 64, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2}
LLAMA_MHA = {**LLAMA, "KV": 4}
BIG_VOCAB = {"B": 4, "L": 64, "V": 512, "D": 32, "N": 1, "H": 4, "F": 64}

CASES = {
    "swiglu-tp2": ("cs336_lm_swiglu.mspec", SWIGLU, ["--tp", "2"]),
    "swiglu-tp4-sp": ("cs336_lm_swiglu.mspec", SWIGLU, ["--tp", "4", "--sp"]),
    "swiglu-tp2-sp-vocab": ("cs336_lm_swiglu.mspec", BIG_VOCAB, ["--tp", "2", "--sp"]),
    "swiglu-tp2-sp-full": (
        "cs336_lm_swiglu.mspec",
        SWIGLU,
        ["--tp", "2", "--sp", "--recompute", "full"],
    ),
    "llama-tp2": ("llama.mspec", LLAMA, ["--tp", "2"]),
    "llama-tp4": ("llama.mspec", LLAMA_MHA, ["--tp", "4"]),
    "llama-tp2-sp": ("llama.mspec", LLAMA, ["--tp", "2", "--sp"]),
    "llama-tp4-sp": ("llama.mspec", LLAMA_MHA, ["--tp", "4", "--sp"]),
    "llama-tp2-eager": ("llama.mspec", LLAMA, ["--tp", "2", "--use", "eager"]),
}


@pytest.mark.parametrize(("spec", "sizes", "flags"), CASES.values(), ids=CASES.keys())
def test_every_rank_matches_to_the_byte(spec, sizes, flags, capsys):
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(SPECS / spec), "--peak", *flags, *args]) == 0
    out = capsys.readouterr().out
    degree = int(flags[flags.index("--tp") + 1])
    for rank in range(degree):
        assert f"## Tensor-parallel rank {rank} of {degree}" in out
    assert out.count("verify --peak: equal to the byte in every category and in total") == degree


def test_a_wrong_prediction_is_caught(capsys):
    """Measured under sequence parallelism, predicted without: the saved activations
    and the peak differ, and verify says so (exit 1)."""
    from memspec import compile_spec
    from memspec.verify import tp

    sizes = {"set": LLAMA, "convention": "autograd"}
    plain = compile_spec(SPECS / "llama.mspec", tp=2, **sizes)
    parallel = compile_spec(SPECS / "llama.mspec", tp=2, sp=True, **sizes)
    measured = tp._in_processes(parallel, [0], True, False)
    from memspec.verify.compare import compare

    tables = compare(plain, measured[0][0])
    activations = next(t for t in tables if t.category == "activations")
    assert not activations.ok and activations.measured < activations.predicted

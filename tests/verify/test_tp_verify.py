"""`memspec verify --tp N [--sp] [--dp N --zero K]`: every rank of torch's own tensor parallelism
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
    # the sliding-window mask (L >= W) and K and V repeated to H heads (repeat_kv)
    "mistral-tp2": ("mistral.mspec", {**LLAMA, "L": 16, "F": 64, "W": 8}, ["--tp", "2"]),
    "cs336-tp2-sp": ("cs336_lm.mspec", {**SWIGLU, "L": 16}, ["--tp", "2", "--sp"]),
    # bfloat16 logits: loss_parallel's log-softmax computes in float32 (a float32 copy,
    # x - max and the result beside the bfloat16 output): llama's peak is there, 810,036
    # B a rank, where memspec said 789,624, in backward
    "llama-tp2-bf16": ("llama.mspec", LLAMA, ["--tp", "2", "--precision", "bf16"]),
    # transformers' checkpointing makes the frozen embedding's output, sharded on the
    # sequence by SP, a leaf that needs a gradient (requires_grad_ on a DTensor)
    "llama-tp2-sp-full-frozen": (
        "llama.mspec",
        {**LLAMA, "F": 64},
        ["--tp", "2", "--sp", "--recompute", "full", "--freeze", "model.embed_tokens.*"],
    ),
    "swiglu-tp2-sp-bf16-vocab": (
        "cs336_lm_swiglu.mspec",
        BIG_VOCAB,
        ["--tp", "2", "--sp", "--precision", "bf16"],
    ),
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
    from memspec.verify.processes import in_processes

    sizes = {"set": LLAMA, "convention": "autograd"}
    plain = compile_spec(SPECS / "llama.mspec", tp=2, **sizes)
    parallel = compile_spec(SPECS / "llama.mspec", tp=2, sp=True, **sizes)
    measured = in_processes("memspec.verify.tp", [(parallel, 0, True, False)], "rank")
    from memspec.verify.compare import compare

    tables = compare(plain, measured[0][0])
    activations = next(t for t in tables if t.category == "activations")
    assert not activations.ok and activations.measured < activations.predicted


TWO_D = {
    "llama-tp2-fsdp2": ("llama.mspec", {**LLAMA, "L": 16}, ["--dp", "2", "--zero", "3"]),
    # uneven: gate/up/down's 22 local rows in chunks of 6 (the last rank holds 4)
    "llama-tp2-fsdp4-uneven": (
        "llama.mspec",
        {**LLAMA, "L": 16, "F": 44},
        ["--dp", "4", "--zero", "3"],
    ),
    "llama-tp2-zero2": ("llama.mspec", {**LLAMA, "L": 16}, ["--dp", "2", "--zero", "2"]),
    "swiglu-tp2-sp-fsdp2": (
        "cs336_lm_swiglu.mspec",
        {**SWIGLU, "L": 16},
        ["--dp", "2", "--zero", "3", "--sp"],
    ),
}


@pytest.mark.parametrize(("spec", "sizes", "flags"), TWO_D.values(), ids=TWO_D.keys())
def test_tensor_parallel_under_fsdp2(spec, sizes, flags, capsys):
    """TP 2 within each of DP data-parallel groups: parallelize_module on the "tp" dim
    of a 2-D mesh, then fully_shard on the "dp" dim (FSDP2 shards the local rows, the
    whole vocab-parallel gradient redistributed to its table's placement first); every
    data-parallel rank's categories after the step and its peak, on real tensors."""
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(SPECS / spec), "--peak", "--tp", "2", *flags, *args]) == 0
    out = capsys.readouterr().out
    assert "verify: every rank matches exactly" in out
    world = int(flags[flags.index("--dp") + 1])
    assert out.count("peak: measured") == world


def test_a_replicated_row_parallel_output_enters_the_region_by_sequence_scatter(tmp_path, capsys):
    """Megatron's embedding under SP: the vocab-parallel output all-reduced whole
    (`replicated`, RowwiseParallel(output_layouts=Replicate())) and then scattered into
    the sequence-parallel region by the spec's `sequence_scatter`."""
    text = (SPECS / "cs336_lm_swiglu.mspec").read_text()
    text = text.replace(
        "tp_plan TransformerLM { token_embeddings vocab_parallel;",
        "tp_plan TransformerLM { token_embeddings vocab_parallel replicated;",
    ).replace(
        "x      = layers(token_embeddings(tokens))",
        "x      = layers(sequence_scatter(token_embeddings(tokens)))",
    )
    spec = tmp_path / "scattered.mspec"
    spec.write_text(text)
    args = [f"--set={k}={v}" for k, v in {**SWIGLU, "L": 16}.items()]
    assert main(["verify", str(spec), "--peak", "--tp", "2", "--sp", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("verify --peak: equal to the byte in every category and in total") == 2

"""Activation recomputation (`--recompute full`) against the step torch runs with
`torch.utils.checkpoint(use_reentrant=False)` around every repetition of every repeated
layer: the peak under PyTorch's MemTracker and the tensors kept for backward, to the
byte; the kept inputs and the recomputed FLOPs as exact formulas."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.passes.peak import StepOptions
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT, SPECS

SWIGLU = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "F": 64}

# (spec, sizes, variants): each zoo family with a repeated layer, on its default path
ZOO = [
    ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 1}, ()),
    ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 2}, ()),
    ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 5}, ()),  # left-out repetitions
    ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 3}, ("flash",)),
    ("gpt2.mspec", {"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("llama.mspec", {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4, "KV": 2, "F": 24}, ()),
    ("bert.mspec", {"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 3, "H": 2, "C": 5}, ()),
    ("mamba.mspec", {"B": 2, "L": 5, "V": 32, "D": 16, "N": 3, "S": 4, "K": 4, "E": 2}, ()),
    (
        "t5.mspec",
        {"B": 1, "S": 6, "T": 8, "V": 40, "D": 16, "K": 4, "H": 4, "F": 32, "N": 3, "R": 8},
        (),
    ),
]


def _peak(spec: str, sizes: dict, use=(), options: StepOptions | None = None):
    options = options or StepOptions()
    result = compile_spec(SPECS / spec, set=sizes, use=use, recompute="full", step=options)
    return result, compare_peak(result, measure_peak(result, options))


@pytest.mark.parametrize(("spec", "sizes", "use"), ZOO, ids=lambda x: str(x))
def test_full_recompute_peak_equals_the_tracker(spec, sizes, use):
    result, comparison = _peak(spec, sizes, use)
    assert comparison.ok, (comparison.rows, comparison.phases, comparison.moment)
    # the recomputation is no free lunch only where the model has a repeated layer
    plain = compile_spec(SPECS / spec, set=sizes, use=use)
    assert result.peak.value <= plain.peak.value


STEPS = [
    StepOptions(first_step=True),
    StepOptions(grad_accum=2),
    StepOptions(optimizer_impl="foreach"),
    StepOptions(set_to_none=False),
    StepOptions(keep_outputs=True),
]


@pytest.mark.parametrize("options", STEPS, ids=lambda o: o.describe()[:40])
def test_full_recompute_peak_for_each_training_loop(options):
    """With gradients alive through backward the peak falls where a recomputed tensor
    and a gradient tie; the tracker keeps the first such moment, and so does memspec."""
    _, comparison = _peak("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 3}, (), options)
    assert comparison.ok, (comparison.rows, comparison.phases, comparison.moment)


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 3}),
        ("gpt2.mspec", {"B": 2, "L": 6, "P": 8, "V": 32, "D": 16, "N": 2, "H": 4}),
    ],
)
def test_full_recompute_saved_tensors_equal_torch(spec, sizes, monkeypatch, capsys):
    """`memspec verify`: what the real step saves (a checkpoint's inputs, not its ops'
    tensors), storage by storage, and every other category."""
    monkeypatch.chdir(ROOT)
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", f"specs/{spec}", "--recompute", "full", *args]) == 0
    out = capsys.readouterr().out
    assert "verify: every category matches exactly" in out
    assert "(carried)" in out  # each later checkpoint keeps the previous layer's output


def test_kept_activations_are_the_checkpoint_inputs():
    """Under full recomputation the autograd convention keeps, of the layers, only what
    each checkpoint holds: the layer's input, B*L*D floats per layer; the rest is the
    head's (final norm, LM head, loss), exactly as without recomputation."""
    full = compile_spec(SPECS / "cs336_lm_swiglu.mspec", convention="autograd", recompute="full")
    B, L, D, V, N = (full.symbols.lookup(n).symbol for n in "BLDVN")
    expected = (
        4 * B * L * D * N  # token_embeddings, then N - 1 carried layer outputs
        + 4 * B * L * D * 3  # x into the final norm, its x*rsqrt, its output into lm_head
        + 4 * B * L  # the final norm's rsqrt
        + 4 * B * L * V  # log-probabilities
        + 8 * B * L * 2  # tokens and targets (int64)
        + 4  # nll_loss's total_weight
    )
    assert sp.expand(full.categories["activations"].bytes - expected) == 0


@pytest.mark.parametrize("n", [2, 4])
def test_a_layer_set_apart_is_a_checkpoint_too(n):
    """Frozen embeddings leave the first layer's input without a gradient, so memspec
    sets that layer apart from the repeat (`layers.0`, then `layers[1:]`): under full
    recomputation it is a checkpoint like the others (it kept everything it saves);
    the lowering wraps it in torch.utils.checkpoint too, and the tracker agrees."""
    sizes = {**SWIGLU, "N": n}
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=sizes, recompute="full",
                          freeze=("token_embeddings.*",), convention="autograd")
    kept = {i.path: i.note for i in result.categories["activations"].items}
    assert kept["token_embeddings"] == (
        "input of each checkpoint of layers.0 (it runs again in backward)")
    assert not any(p.startswith("layers.0.") and "saved by" in note for p, note in kept.items())
    comparison = compare_peak(result, measure_peak(result, StepOptions()))
    assert comparison.ok, (comparison.rows, comparison.phases, comparison.moment)
    trained = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=sizes, recompute="full",
                           convention="autograd")
    # what a trained embedding's checkpoints keep, less the token ids the embedding
    # saves for its weight's gradient (int64 [B, L])
    kept_bytes = result.value(result.categories["activations"].bytes)
    expected = 8 * sizes["B"] * sizes["L"]
    assert trained.value(trained.categories["activations"].bytes) - kept_bytes == expected


def test_recomputed_flops_stop_at_the_last_saved_tensor():
    """Backward runs each layer's forward again up to down-projection's input (W2 saves
    only its inputs, so torch stops before computing it): Q, K, V, O, both attention
    products, W1 and W3."""
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", recompute="full")
    B, L, D, F, N = (result.symbols.lookup(n).symbol for n in "BLDFN")
    per_layer = 4 * 2 * B * L * D * D + 2 * 2 * B * L * L * D + 2 * 2 * B * L * D * F
    assert sp.expand(result.flops.recompute - N * per_layer) == 0
    assert sp.expand(result.flops.with_recompute - result.flops.total - N * per_layer) == 0
    assert compile_spec(SPECS / "cs336_lm_swiglu.mspec").flops.recompute == 0


def test_json_names_the_recomputation():
    import json

    result = compile_spec(
        SPECS / "cs336_lm_swiglu.mspec", recompute="full", preset="gpt2_xl", set={"B": 1}
    )
    doc = json.loads(result.to_json())
    assert doc["config"] == {"recompute": "full"}
    assert doc["flops"]["recompute"] == "8*B*D**2*L*N + 4*B*D*F*L*N + 4*B*D*L**2*N"
    # 48 * (8 * 1024 * 1600^2 + 4 * 1024 * 1600 * 6400 + 4 * 1024^2 * 1600)
    assert doc["values"]["flops"]["recompute"] == 3_342_021_427_200
    total = doc["values"]["flops"]["total"]
    assert doc["values"]["flops"]["with_recompute"] == total + 3_342_021_427_200


def test_unknown_recompute_policy_lists_the_ones_that_exist(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["compile", "specs/cs336_lm_swiglu.mspec", "--recompute", "ful"])
    err = capsys.readouterr().err
    assert code == 2
    known = "(known: full, none, save_matmuls, selective)"
    assert f"unknown recompute policy 'ful'; did you mean 'full'? {known}" in err
    assert "Traceback" not in err


# Selective recomputation (Megatron-LM's, `--recompute selective`): each run of ops in a
# call of std's attention fns (or the fused op) is one checkpoint, keeping Q, K and V.
SELECTIVE = [
    # the peak falls in the attention backward right after its recomputation
    ("cs336_lm_swiglu.mspec", {"B": 2, "L": 64, "D": 16, "H": 8, "V": 64, "N": 3, "F": 32}, ()),
    ("cs336_lm_swiglu.mspec", {"B": 2, "L": 64, "D": 16, "H": 8, "V": 64, "N": 3, "F": 32},
     ("flash",)),
    ("gpt2.mspec", {"B": 2, "L": 24, "P": 32, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("gpt2.mspec", {"B": 2, "L": 24, "P": 32, "V": 32, "D": 16, "N": 3, "H": 4}, ("eager",)),
    ("llama.mspec", {"B": 2, "L": 32, "V": 32, "D": 16, "N": 3, "H": 4, "KV": 2, "F": 24}, ()),
    ("llama.mspec", {"B": 2, "L": 32, "V": 32, "D": 16, "N": 3, "H": 4, "KV": 2, "F": 24},
     ("eager",)),
    ("bert.mspec", {"B": 2, "L": 24, "P": 32, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("t5.mspec",
     {"B": 1, "S": 12, "T": 16, "V": 40, "D": 16, "K": 4, "H": 4, "F": 32, "N": 3, "R": 8}, ()),
]


@pytest.mark.parametrize(("spec", "sizes", "use"), SELECTIVE, ids=lambda x: str(x))
def test_selective_recompute_peak_equals_the_tracker(spec, sizes, use):
    result = compile_spec(SPECS / spec, set=sizes, use=use, recompute="selective")
    comparison = compare_peak(result, measure_peak(result, StepOptions()))
    assert comparison.ok, (comparison.rows, comparison.phases, comparison.moment)


def test_selective_recompute_saved_tensors_equal_torch(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    sizes = ["--set=B=2", "--set=L=24", "--set=P=32", "--set=V=32", "--set=D=16",
             "--set=N=2", "--set=H=4"]
    assert main(["verify", "specs/gpt2.mspec", "--recompute", "selective", *sizes]) == 0


def test_selective_recompute_drops_the_attention_core():
    """Of each layer, the attention core's own tensors go (softmax's probabilities, the
    causal mask); Q, K and V stay, kept by the checkpoint instead of the products."""
    plain = compile_spec(SPECS / "cs336_lm_swiglu.mspec", convention="autograd")
    selective = compile_spec(
        SPECS / "cs336_lm_swiglu.mspec", convention="autograd", recompute="selective"
    )
    B, L, H, N = (plain.symbols.lookup(n).symbol for n in "BLHN")
    dropped = N * (4 * B * H * L**2 + L**2)  # float32 probabilities, a bool [L, L] mask
    before, after = (r.categories["activations"].bytes for r in (plain, selective))
    assert sp.expand(before - after - dropped) == 0
    # backward runs Q K^T again; the last product (probabilities x V) saves only its
    # inputs, so torch stops before it
    D = plain.symbols.lookup("D").symbol
    assert sp.expand(selective.flops.recompute - N * 2 * B * L**2 * D) == 0


SWIGLU_TEXT = (SPECS / "cs336_lm_swiglu.mspec").read_text()


def test_a_spec_checkpoints_its_own_repeated_layer():
    """`repeat N of checkpoint Block(...)` in the spec is the full policy, layer by
    layer: the same peak formula, the report says so, and torch agrees to the byte."""
    text = SWIGLU_TEXT.replace("repeat N of Block", "repeat N of checkpoint Block")
    marked = compile_spec(text)
    full = compile_spec(SPECS / "cs336_lm_swiglu.mspec", recompute="full")
    assert sp.expand(marked.peak.bytes - full.peak.bytes) == 0
    assert "the spec makes each repetition of layers a checkpoint" in marked.to_markdown()
    sized = compile_spec(text, set={**SWIGLU, "N": 3})
    comparison = compare_peak(sized, measure_peak(sized, StepOptions()))
    assert comparison.ok, (comparison.rows, comparison.moment)



# PyTorch's selective activation checkpointing (`save_matmuls`: every layer a
# checkpoint whose matrix products' outputs are kept, MUST_SAVE, and handed to the
# recomputation instead of being computed again)
SAC = [
    ("cs336_lm_swiglu.mspec", {**SWIGLU, "N": 3}, ()),
    ("cs336_lm_swiglu.mspec", {"B": 2, "L": 64, "D": 16, "H": 8, "V": 64, "N": 3, "F": 32}, ()),
    ("gpt2.mspec", {"B": 2, "L": 24, "P": 32, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("llama.mspec", {"B": 2, "L": 32, "V": 32, "D": 16, "N": 3, "H": 4, "KV": 2, "F": 24},
     ("eager",)),
    ("bert.mspec", {"B": 2, "L": 24, "P": 32, "V": 32, "D": 16, "N": 3, "H": 4}, ()),
    ("t5.mspec",
     {"B": 1, "S": 12, "T": 16, "V": 40, "D": 16, "K": 4, "H": 4, "F": 32, "N": 3, "R": 8}, ()),
    ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 3, "H": 2, "C": 5}, ()),
]


@pytest.mark.parametrize(("spec", "sizes", "use"), SAC, ids=lambda x: str(x))
def test_selective_checkpointing_peak_equals_the_tracker(spec, sizes, use):
    for options in (StepOptions(), StepOptions(set_to_none=False)):
        result = compile_spec(
            SPECS / spec, set=sizes, use=use, recompute="save_matmuls", step=options
        )
        comparison = compare_peak(result, measure_peak(result, options))
        assert comparison.ok, (comparison.rows, comparison.phases, comparison.moment)


def test_selective_checkpointing_keeps_the_products(monkeypatch, capsys):
    """The kept outputs are what the real step holds for backward (read from the
    caching mode's storage), and backward computes no matrix product again."""
    monkeypatch.chdir(ROOT)
    args = [f"--set={k}={v}" for k, v in {**SWIGLU, "N": 3}.items()]
    assert main(["verify", "specs/cs336_lm_swiglu.mspec", "--recompute", "save_matmuls",
                 *args]) == 0
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", recompute="save_matmuls")
    assert result.flops.recompute == 0
    notes = [i.note for i in result.categories["activations"].items]
    assert "output of linear, kept by selective checkpointing (aten.mm, aten.addmm)" in notes


def test_selective_checkpointing_of_an_ops_own_products_is_refused(capsys, monkeypatch):
    """Mamba's scan runs a bmm per step for its own intermediates: a policy saving bmm
    would keep them in torch, which memspec does not model, so it says so."""
    monkeypatch.chdir(ROOT)
    code = main(["compile", "specs/mamba.mspec", "--recompute", "save_matmuls"])
    assert code == 2
    assert "runs for intermediates of its own (bmm): not modelled yet" in capsys.readouterr().err


def test_the_previous_micro_batchs_loss_lives_through_the_next_forward():
    """`out = model(batch); loss = ...` in a loop: the previous micro-batch's loss is
    bound until the next forward returns. Here the step peaks in micro-batch 2's forward
    (every layer recomputed, so backward is small), where those 4 bytes count."""
    sizes = {**SWIGLU, "N": 5}
    options = StepOptions(grad_accum=2)
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=sizes, recompute="full",
                          precision="autocast_bf16", step=options)
    assert result.peak.winner().label() == "forward: cross_entropy (micro-batches 2..2)"
    comparison = compare_peak(result, measure_peak(result, options, explicit_casts=False))
    assert comparison.ok, (comparison.rows, comparison.moment)

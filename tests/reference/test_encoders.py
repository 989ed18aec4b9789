"""BERT and T5 against Hugging Face transformers: the library's own model, built from a
config, one real CPU step, compared with memspec to the byte (see test_transformers.py).

The peak is the real step's: PyTorch's MemTracker, with its module tracker's multi-input
gradient hooks made to fire on the first gradient instead of buffering every input's
gradient until the last arrives. For a module with two tensor inputs (HF's `BertOutput`
and `BertSelfOutput`, T5's cross-attention) the buffering keeps the first gradient alive
until the second is complete, a moment no untracked step has: at BERT B=2, L=8, D=16,
F=64 it holds a [B, L, F] gradient through the intermediate dense's backward and moves
the tracked peak to another moment (+256 B). Without the buffering every category
equals memspec's.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from memspec import compile_spec
from tests.conftest import SPECS
from tests.reference.harness import measure_library
from tests.reference.test_transformers import assert_same_step


@contextlib.contextmanager
def unbuffered_input_gradients():
    """MemTracker's module tracker without its gradient buffer: each `mode="all"` hook it
    registers on a module's inputs becomes `mode="any"` (it still marks the module's
    backward, from the first input gradient; it keeps no gradient alive)."""
    import torch.distributed._tools.mod_tracker as mod_tracker

    register = mod_tracker.register_multi_grad_hook

    def first_gradient(tensors, fn, mode="all"):
        return register(tensors, fn, mode="any")

    mod_tracker.register_multi_grad_hook = first_gradient
    try:
        yield
    finally:
        mod_tracker.register_multi_grad_hook = register


def measure(make_model, batch, step):
    with unbuffered_input_gradients():
        return measure_library(make_model, batch, step)


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """memspec's cross_entropy as it lowers: log_softmax, then nll_loss over flat rows."""
    log_probs = logits.log_softmax(-1)
    return F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), targets.reshape(-1))


BERT_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16, "T": 2, "F": 64},
    {"B": 3, "L": 6, "V": 48, "D": 24, "N": 1, "H": 3, "P": 8, "T": 2, "F": 40},
    {"B": 1, "L": 8, "V": 40, "D": 32, "N": 3, "H": 4, "P": 12, "T": 3, "F": 48},
]
BERT_PATHS = [((), "sdpa"), (("eager",), "eager")]  # transformers' default first


def bert_parts(sizes: dict, attention: str):
    """(make_model, batch, step) of HF's BertModel at `sizes` with the spec's loss
    (BertModel has no head): masked-LM cross-entropy of the sequence output and
    cross-entropy of the pooled output, both through the word embeddings."""
    config = BertConfig(
        vocab_size=sizes["V"],
        hidden_size=sizes["D"],
        num_hidden_layers=sizes["N"],
        num_attention_heads=sizes["H"],
        intermediate_size=sizes["F"],
        max_position_embeddings=sizes["P"],
        type_vocab_size=sizes["T"],
        attn_implementation=attention,
        pad_token_id=0,
    )

    def batch() -> tuple:
        b, length, v = sizes["B"], sizes["L"], sizes["V"]
        return (torch.randint(0, v, (b, length)), torch.randint(0, v, (b, length)),
                torch.randint(0, v, (b,)))

    def step(model, b) -> torch.Tensor:
        out = model(input_ids=b[0])
        words = model.embeddings.word_embeddings.weight
        return (nll(F.linear(out.last_hidden_state, words), b[1])
                + nll(F.linear(out.pooler_output, words), b[2]))

    return (lambda: BertModel(config)), batch, step


def bert_step(sizes: dict, use: tuple, attention: str):
    """(the library's step, memspec's compile) of BERT at `sizes` on one path."""
    measured = measure(*bert_parts(sizes, attention))
    result = compile_spec(SPECS / "bert.mspec", set=sizes, use=use, convention="autograd")
    return measured, result


@pytest.mark.parametrize("sizes", BERT_SIZES, ids=lambda s: "B{B}-L{L}-D{D}-N{N}".format(**s))
@pytest.mark.parametrize(("use", "attention"), BERT_PATHS, ids=lambda p: str(p))
def test_bert_step_equals_transformers(sizes, use, attention):
    assert_same_step(*reversed(bert_step(sizes, use, attention)))


def test_the_tracker_buffers_a_two_input_modules_gradient():
    """The artifact the measurement removes is real: with the buffering, MemTracker's
    peak of the same BERT step is higher than the step's (so it is not what memspec
    models)."""
    sizes, (use, attention) = BERT_SIZES[0], BERT_PATHS[0]
    measured, result = bert_step(sizes, use, attention)
    buffered = measure_library(*bert_parts(sizes, attention))
    assert measured.peak == result.peak.value + measured.optimizer_scalars
    assert buffered.peak > measured.peak


def test_autograd_adds_into_a_linear_weight_gradient_out_of_place():
    """The rule memspec's peak follows (`Grad.VIEW`), on a real step with no dispatch mode
    (the profiler is none): a tied weight whose first gradient comes from a linear (the
    transpose TBackward hands on) gets its second one added out of place (`aten::add`);
    first from an embedding, in place (`aten::add_`)."""
    from torch.profiler import ProfilerActivity, profile

    def sums(linear_first: bool) -> list[str]:
        weight = torch.randn(12, 4, requires_grad=True)
        ids = torch.randint(0, 12, (2, 3))
        h = F.embedding(ids, weight)
        if linear_first:  # backward runs the later-made node first
            loss = (h * 2).sum() + F.linear(torch.randn(2, 4), weight).sum()
        else:
            loss = F.linear(torch.randn(2, 4), weight).sum() + (F.embedding(ids, weight)).sum()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            loss.backward()
        return [e.name for e in prof.events() if e.name in ("aten::add", "aten::add_")]

    assert sums(linear_first=True) == ["aten::add"]
    assert sums(linear_first=False) == ["aten::add_"]


def table_rows():
    """Rows of the README's reference table, as tests/reference/table.py::rows() yields them:
    (spec, sizes, memspec --use, the library's config, measured, result)."""
    for use, attention in BERT_PATHS:
        for sizes in BERT_SIZES:
            measured, result = bert_step(sizes, use, attention)
            path = f"BertModel, attn_implementation={attention}, peak without MemTracker's "
            path += "two-input gradient buffering"
            yield "bert", sizes, ", ".join(use) or "(default)", path, measured, result

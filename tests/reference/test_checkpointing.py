"""`--recompute full` against Hugging Face's own gradient checkpointing: the library's
model built from a config with `activation_checkpointing_enable` (torch.utils.checkpoint,
use_reentrant=False, around every decoder or encoder layer), one real CPU step, compared
with memspec's `recompute="full"` to the byte: parameters, buffers, saved bytes and
MemTracker's peak, category by category and in total (see test_transformers.py).

Two differences are named and computed, neither a difference in memory:

- MemTracker's ACT/TEMP split of the recomputation. The tracker counts a tensor made in
  backward as an activation only while a module recomputes its forward (`_in_ac`, set
  by the first module whose forward pre-hook fires in backward and reset when that
  module returns). transformers' GradientCheckpointingLayer checkpoints the layer's
  `forward`, not its `__call__` (so that hooks such as FSDP2's stay outside the
  checkpoint): in the recomputation the layer's own hooks do not fire, each of its
  submodules in turn sets and resets the flag, and what the layer's forward computes
  between its submodule calls (the residual sums) lands in TEMP. memspec's lowering
  checkpoints a module call, so all of it is ACT there. `tracker_split` computes the
  bytes: memspec's replay of the same step with the recomputed tensors of the ops called
  directly in the repeated layer (outside any sublayer; a `fn` is no module) counted as
  temporaries.
- The checkpoint inputs LLaMA and Mistral pass by keyword: torch's checkpoint saves
  positional tensor arguments (`_CheckpointFrame.save_inputs`, through the saved-tensor
  hooks), while keyword arguments (the position ids, the rotary tables, the mask) live
  in the recompute function's closure. Both are kept until the frame is freed, so the
  peak is the same; memspec counts every checkpoint input as kept (its own lowering
  passes them all positionally), so the saved bytes the hooks see differ by the
  keyword ones' (`keyword_inputs`). GPT-2 and BERT pass theirs positionally.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import pytest
import torch
from transformers import GPT2LMHeadModel

from memspec import compile_spec
from memspec.passes.peak import peak_memory
from memspec.passes.peak import recompute as recompute_pass
from memspec.syntax.imports import load_program, read_source
from memspec.verify.peak import TRACKER_NAMES
from tests.conftest import SPECS
from tests.reference.harness import measure_library
from tests.reference.test_encoders import bert_parts, unbuffered_input_gradients
from tests.reference.test_transformers import DECODERS, decoder_config, gpt2_config


def checkpointed(make_model):
    """`make_model` with transformers' activation checkpointing on every layer."""

    def make() -> torch.nn.Module:
        model = make_model()
        model.activation_checkpointing_enable({"use_reentrant": False})
        return model

    return make


def causal_lm_parts(make_model, sizes: dict):
    """(make_model, batch, step) of a causal LM trained on [B, L] ids, labels = inputs."""

    def batch() -> tuple:
        tokens = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))
        return tokens, tokens.clone()

    def step(model, b) -> torch.Tensor:
        return model(input_ids=b[0], labels=b[1], use_cache=False).loss

    return make_model, batch, step


def parts(family: str, sizes: dict, attention: str):
    if family == "gpt2":
        config = gpt2_config(sizes, attention)
        return causal_lm_parts(lambda: GPT2LMHeadModel(config), sizes)
    if family in DECODERS:
        config_class, model_class = DECODERS[family]
        config = decoder_config(config_class, sizes, attention)
        return causal_lm_parts(lambda: model_class(config), sizes)
    return bert_parts(sizes, attention)


def checkpointed_step(family: str, sizes: dict, use: tuple, attention: str):
    """(the library's checkpointed step, memspec's compile under --recompute full)."""
    make_model, batch, step = parts(family, sizes, attention)
    # without the tracker's two-input gradient buffering (test_encoders.py): BERT's
    # modules take two tensors; the decoders' take one, where it changes nothing
    with unbuffered_input_gradients():
        measured = measure_library(checkpointed(make_model), batch, step)
    result = compile_spec(
        SPECS / f"{family}.mspec", set=sizes, use=use, convention="autograd", recompute="full"
    )
    return measured, result


# -- the tracker's split -------------------------------------------------------------


def layer_direct_ops(result) -> frozenset[int]:
    """The ops each checkpointed layer calls directly in its forward: in none of its
    sublayers (a `fn` is a function, not a module: an op inside one is still the
    layer's own)."""
    graph = result.graph
    callee = {c.path: c.callee for c in graph.call_outputs}
    path = Path(result.spec)
    fns = set(load_program(read_source(path, path.name), path).fns)
    direct = set()
    for op in graph.ops:
        chain = graph.region_chain(op.region)
        if not chain:
            continue
        layer = callee[chain[0].path]
        inner = op.calls[op.calls.index(layer) + 1 :]
        if all(name in fns for name in inner):
            direct.add(op.id)
    return frozenset(direct)


@contextlib.contextmanager
def layer_ops_recomputed_as_temporaries(direct: frozenset[int]):
    """memspec's recomputation, with what the ops in `direct` make counted as
    temporaries (the tracker's reading of a checkpointed `forward`)."""
    base = recompute_pass._Recomputation

    class AsTracked(base):
        def run_op(self, op, inputs, index):
            self.category = "temporaries" if op.id in direct else "activations"
            return super().run_op(op, inputs, index)

    with mock.patch.object(recompute_pass, "_Recomputation", AsTracked):
        yield


def tracker_split(result):
    """memspec's peak moment as MemTracker splits it under transformers' checkpointing
    (the layer's own recomputed tensors in TEMP): the same moment, the same total."""
    with layer_ops_recomputed_as_temporaries(layer_direct_ops(result)):
        tracked = peak_memory(
            result.graph,
            result.config,
            result.categories,
            result.peak.options,
            result.bindings,
            result.resolve,
        )
    moment = tracked.winner()
    assert moment.moment == result.peak.winner().moment
    assert tracked.value == result.peak.value
    return moment


def recomputed_in_temp(result) -> int:
    """Bytes of the named term: the layer's own recomputed tensors alive at the peak,
    which the tracker counts in TEMP and memspec in activations."""
    moment = tracker_split(result)
    return result.value(result.peak.winner().part("activations") - moment.part("activations"))


def keyword_inputs(result) -> int:
    """Bytes of the checkpoint inputs (beside the hidden states) that LLaMA's and
    Mistral's models pass to each layer by keyword: kept by the recompute closure, not
    saved through the hooks."""
    graph = result.graph
    carried = {graph.value(graph.value(i).storage).path for _, i, _ in graph.carried}
    kept = [
        i
        for i in result.categories["activations"].items
        if i.note.startswith("input of each checkpoint") and i.path not in carried
    ]
    return sum(result.value(i.bytes) for i in kept)


def assert_same_checkpointed_step(result, measured, keyword: int = 0) -> None:
    """assert_same_step under checkpointing: the saved bytes less the keyword inputs,
    the peak by category as the tracker splits it, and the peak in total."""
    value = result.value
    assert value(result.categories["parameters"].elements) == measured.parameters
    assert value(result.categories["buffers"].elements) == measured.buffers
    assert value(result.categories["activations"].bytes) - keyword == measured.saved
    tracker = dict(measured.peak_by_category)
    for category, expr in tracker_split(result).breakdown:
        named = measured.optimizer_scalars if category == "optimizer_state" else 0
        assert value(expr) + named == tracker[TRACKER_NAMES[category]], category
    assert result.peak.value + measured.optimizer_scalars == measured.peak


GPT2_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16},
    {"B": 3, "L": 16, "V": 64, "D": 32, "N": 3, "H": 2, "P": 32},
    {"B": 1, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16},
]
LLAMA_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32},
    {"B": 3, "L": 6, "V": 48, "D": 24, "N": 1, "H": 6, "KV": 3, "F": 40},
    {"B": 1, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 1, "F": 32},
]
# the window below the context (sdpa builds the bool mask), at it (B = 1) and above it
MISTRAL_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32, "W": 3},
    {"B": 1, "L": 6, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 1, "F": 32, "W": 6},
    {"B": 2, "L": 6, "V": 32, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32, "W": 8},
]
BERT_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4, "P": 16, "T": 2, "F": 64},
    {"B": 1, "L": 8, "V": 40, "D": 32, "N": 3, "H": 4, "P": 12, "T": 3, "F": 48},
]
PATHS = [((), "sdpa"), (("eager",), "eager")]  # transformers' default first
CASES = [
    *(("gpt2", sizes, *path) for path in PATHS for sizes in GPT2_SIZES),
    *(("llama", sizes, *path) for path in PATHS for sizes in LLAMA_SIZES),
    *(("mistral", sizes, *path) for path in PATHS for sizes in MISTRAL_SIZES),
    *(("bert", sizes, *path) for path in PATHS for sizes in BERT_SIZES),
]


def case_id(case) -> str:
    family, sizes, use, _ = case
    return f"{family}-{'-'.join(use) or 'default'}-" + "-".join(f"{k}{v}" for k, v in sizes.items())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_checkpointed_step_equals_transformers(case):
    family, sizes, use, attention = case
    measured, result = checkpointed_step(family, sizes, use, attention)
    keyword = keyword_inputs(result) if family in ("llama", "mistral") else 0
    assert_same_checkpointed_step(result, measured, keyword)


def test_the_residual_sums_are_what_the_tracker_moves():
    """The named term is the layer's own recomputed tensors: at GPT-2 B=2, L=8, D=16 one
    residual sum [B, L, D] float32 (the one after attention, which ln_2 saves, alive at
    the peak in the MLP's backward); BERT's sums run inside its output modules: none."""
    gpt2 = compile_spec(SPECS / "gpt2.mspec", set=GPT2_SIZES[0], recompute="full")
    assert recomputed_in_temp(gpt2) == 2 * 8 * 16 * 4
    assert {gpt2.graph.ops[i].path for i in layer_direct_ops(gpt2)} >= {"h.x"}
    bert = compile_spec(SPECS / "bert.mspec", set=BERT_SIZES[0], recompute="full")
    assert recomputed_in_temp(bert) == 0


def test_visible_is_transformers_sliding_window_mask():
    """`visible(s, s, W)`, Mistral's sdpa mask, is the boolean mask transformers builds
    for a sliding window at s >= W: the same values, one [1, 1, s, s] storage."""
    from memspec.ops import lookup

    config = decoder_config(DECODERS["mistral"][0], MISTRAL_SIZES[0], "sdpa")
    from transformers.masking_utils import create_sliding_window_causal_mask

    s, window = MISTRAL_SIZES[0]["L"], MISTRAL_SIZES[0]["W"]
    embeds = torch.zeros(2, s, 16)
    mask = create_sliding_window_causal_mask(
        config=config, inputs_embeds=embeds, attention_mask=None, cache=None,
        position_ids=torch.arange(s)[None],
    )
    ours = lookup("visible").lower((), {"n_q": s, "n_k": s, "window": window})
    assert torch.equal(mask[0, 0], ours)
    assert mask.untyped_storage().nbytes() == ours.untyped_storage().nbytes() == s * s


def table_rows():
    """Rows of the README's reference table, as tests/reference/table.py::rows() yields
    them: (spec, sizes, memspec --use, the library's config, measured, result). The named
    terms change no total (the tracker's split; LLaMA's and Mistral's keyword inputs,
    kept by a closure, not saved through the hooks)."""
    for family, sizes, use, attention in CASES:
        measured, result = checkpointed_step(family, sizes, use, attention)
        path = "activation_checkpointing_enable(use_reentrant=False), "
        path += f"attn_implementation={attention}"
        if "W" in sizes:
            path += f", sliding_window={sizes['W']}"
        label = "gradient checkpointing, " + (", ".join(use) or "(default)")
        yield family, sizes, label, path, measured, result

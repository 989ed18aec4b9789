"""`use_cache` and a loop that keeps the model's outputs, against transformers, to the byte.

A hand-written loop, `out = model(input_ids, labels=...); out.loss.backward();
optimizer.step()`, keeps `out` until the step ends: its `logits` and, with the config's
default `use_cache=True`, its `past_key_values`, whose DynamicCache holds per layer
`torch.cat([empty, k], dim=-2)`, a copy of K and of V that attention then reads (transformers
5.x, cache_utils.DynamicLayer.update). A Trainer keeps neither: it sets
`config.use_cache = TrainingArguments.use_cache` (False) and `compute_loss` returns only
`outputs.loss`, which is memspec's default step. memspec states the loop with
`--keep-outputs` (StepOptions.keep_outputs) and the cache with `--use cache`.

What the cache costs depends on the attention path: GPT-2's SDPA math path (dropout 0.1)
copies K and V for its matmuls anyway, so V's cache copy is the one it saves and only K's
copy is new; LLaMA's flash kernel saves K and V as given, so the copies replace the
rotary output and v_proj's output and cost nothing beyond a kept outputs object's logits.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from memspec import compile_spec
from memspec.passes.peak import StepOptions
from memspec.verify.measure import _optimizer
from tests.conftest import SPECS
from tests.reference.harness import LibraryMeasurement, saved_bytes
from tests.reference.test_transformers import assert_same_step, decoder_config, gpt2_config

GPT2_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 5, "H": 4, "P": 16},  # N > 3: left-out repetitions
    {"B": 1, "L": 6, "V": 48, "D": 24, "N": 2, "H": 3, "P": 8},
]
LLAMA_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 4, "H": 4, "KV": 2, "F": 32},
    {"B": 1, "L": 6, "V": 48, "D": 24, "N": 2, "H": 6, "KV": 1, "F": 40},
]
# (use_cache, the loop keeps `out`): a hand-written loop on the config's default, the same
# loop without the cache, and the cache with the outputs dropped before backward
LOOPS = [(True, True), (False, True), (True, False)]


def _gpt2(sizes: dict) -> torch.nn.Module:
    return GPT2LMHeadModel(gpt2_config(sizes))


def _llama(sizes: dict) -> torch.nn.Module:
    return LlamaForCausalLM(decoder_config(LlamaConfig, sizes))


MODELS = {"gpt2": (_gpt2, GPT2_SIZES), "llama": (_llama, LLAMA_SIZES)}


def measure_loop(make_model, make_batch, use_cache: bool, keep: bool) -> LibraryMeasurement:
    """The library's step as the loop runs it: `out` held to the step's end when `keep`,
    else only `out.loss` (a Trainer's compute_loss). Saved bytes as the harness counts
    them; the peak of the second step under MemTracker on real tensors."""
    from torch.distributed._tools.mem_tracker import MemTracker

    def forward(model, batch):
        out = model(input_ids=batch[0], labels=batch[1], use_cache=use_cache)
        return out if keep else out.loss

    torch.manual_seed(0)
    model = make_model()
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    saved = saved_bytes(model, make_batch(), lambda m, b: m(input_ids=b[0], labels=b[1],
                                                             use_cache=use_cache).loss)
    torch.manual_seed(0)
    model = make_model()
    optimizer = _optimizer("adamw", model.parameters())
    tracker = MemTracker()

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        batch = make_batch()
        out = forward(model, batch)
        (out.loss if keep else out).backward()
        optimizer.step()

    one()
    tracker.track_external(model, optimizer)
    with tracker:
        one()
    (device,) = tracker.get_tracker_snapshot("peak").values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device.items()}
    peak = by_name.pop("Total")
    scalars = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    return LibraryMeasurement(parameters, buffers, saved, peak, tuple(sorted(by_name.items())),
                              scalars)


def loop_step(family: str, sizes: dict, use_cache: bool, keep: bool):
    """(the library's step, memspec's compile) of `family` at `sizes` in that loop."""
    make, _ = MODELS[family]

    def batch() -> tuple:
        tokens = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))
        return tokens, tokens.clone()

    measured = measure_loop(lambda: make(sizes), batch, use_cache, keep)
    result = compile_spec(
        SPECS / f"{family}.mspec",
        set=sizes,
        use=("cache",) if use_cache else (),
        convention="autograd",
        step=StepOptions(keep_outputs=keep),
    )
    return measured, result


CASES = [
    (family, sizes, use_cache, keep)
    for family, (_, all_sizes) in MODELS.items()
    for sizes in all_sizes
    for use_cache, keep in LOOPS
]


@pytest.mark.parametrize(
    ("family", "sizes", "use_cache", "keep"),
    CASES,
    ids=[
        f"{f}-B{s['B']}-N{s['N']}-cache{int(c)}-keep{int(k)}" for f, s, c, k in CASES
    ],
)
def test_the_loop_equals_transformers(family, sizes, use_cache, keep):
    measured, result = loop_step(family, sizes, use_cache, keep)
    assert_same_step(result, measured)


def test_keeping_the_outputs_holds_the_logits_and_the_cache():
    """At N = 5 GPT-2 layers (two left out of the replay), the kept outputs add the
    logits and each layer's K copy (its V copy is what attention saves) to the peak."""
    sizes = GPT2_SIZES[0]
    peaks = {
        loop: compile_spec(
            SPECS / "gpt2.mspec",
            set=sizes,
            use=("cache",) if loop[0] else (),
            convention="autograd",
            step=StepOptions(keep_outputs=loop[1]),
        ).peak.value
        for loop in [(False, False), *LOOPS]
    }
    logits = sizes["B"] * sizes["L"] * sizes["V"] * 4
    k_copies = sizes["N"] * sizes["B"] * sizes["L"] * sizes["D"] * 4
    assert peaks[(False, True)] - peaks[(False, False)] == logits
    assert peaks[(True, True)] - peaks[(False, True)] == k_copies


def table_rows():
    """Rows for the README's reference table, as tests/reference/table.py::rows()."""
    for family, sizes, use_cache, keep in CASES:
        measured, result = loop_step(family, sizes, use_cache, keep)
        use = "cache" if use_cache else "(default)"
        if keep:
            use += ", --keep-outputs"
        loop = "out = model(...); out.loss.backward()" if keep else "loss = model(...).loss"
        config = f"use_cache={use_cache}, {loop}"
        yield family, sizes, use, config, measured, result

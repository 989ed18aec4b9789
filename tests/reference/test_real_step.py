"""The peak of a real training step on the CPU, without a dispatch mode, against memspec.

PyTorch's MemTracker is a TorchDispatchMode, under which autograd adds every second
gradient of a tensor out of place; a real step adds it in place where it can (not into a
view). `torch.profiler` is no dispatch mode: with `profile_memory=True` (and the
shapes and stacks its memory profile needs) it records every allocation and free of the
CPU allocator in order, with its size (`prof._memory_profile().timeline`), so the live
bytes at each moment, and their maximum, are exact. The step is memspec's own lowering
(`LoweredModel`) at small sizes, trained as `memspec verify --peak` trains it; the one
named term is AdamW's `step` counters (a float32 scalar per parameter tensor), which
memspec does not model.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action

from memspec import compile_spec
from memspec.lower.module import LoweredModel
from memspec.verify.measure import _optimizer
from memspec.verify.peak import step_counters
from tests.conftest import SPECS

_MARK = 12_345  # bytes of a marker allocated just before the measured step


def real_step_peak(result) -> int:
    """Peak live bytes of the second step (zero_grad(set_to_none=True), forward,
    backward, AdamW's step), everything made inside the profiler."""
    # the memory profile needs shapes and stacks as well as memory events
    options = {"profile_memory": True, "record_shapes": True, "with_stack": True}
    with profile(activities=[ProfilerActivity.CPU], **options) as prof:
        torch.manual_seed(0)
        model = LoweredModel(result.graph, result.substitutions())
        optimizer = _optimizer(result.config.optimizer.name, model.parameters())

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            batch = model.make_inputs()
            out = model(*batch)
            loss = out if out.dim() == 0 else out.float().sum()
            loss.backward()
            del batch, out, loss
            optimizer.step()

        step()
        mark = torch.empty(_MARK, dtype=torch.uint8)
        del mark
        step()
    live, peak, measuring = 0, 0, False
    for _, action, _, size in prof._memory_profile().timeline:
        if action in (Action.CREATE, Action.PREEXISTING):
            live += size
        elif action is Action.DESTROY:
            live -= size
            measuring = measuring or size == _MARK
        if measuring:
            peak = max(peak, live)
    assert measuring, "the marker between the steps was not seen"
    return peak


T5 = {"B": 2, "T": 2, "V": 8, "K": 2, "H": 2, "F": 12, "N": 2, "R": 8}

CASES = [
    # (spec, sizes, variants, where memspec's peak is)
    ("llama.mspec", {"B": 2, "L": 8, "V": 64, "D": 16, "N": 2, "H": 4, "KV": 2, "F": 32}, [],
     "backward: cross_entropy.log_probs"),
    ("t5.mspec", {"B": 1, "S": 5, "T": 4, "V": 128, "D": 8, "K": 2, "H": 2, "F": 12, "N": 3,
                  "R": 8}, [], "backward: shared_1"),
    # the encoder's output feeds every decoder layer's cross-attention k and v linears: a
    # 3-D input's gradient from a linear is mm's result viewed, so its second gradient is
    # added out of place (old, new and sum alive at once), at the peak here; memspec had
    # it in place, 6,144 B low
    ("t5.mspec", {**T5, "S": 64, "D": 16}, [], "backward: decoder.block.EncDecAttention.k"),
]


# Open, pinned to the byte so that they cannot grow unseen: since T5's sdpa path writes
# q * 1.0 and k * 1.0 (no scale) and its decoder input is made from the labels, the real
# step holds 8-byte CPU allocations at these moments that neither memspec nor MemTracker
# sees: the profiler records them outside every op (as Python numbers wrapped into
# tensors are made, before dispatch), and saved_tensors_hooks sees none of them; the
# count rose from 13 to 28 allocations with that spec change. Likely the wrapped scalars
# MulBackward0 keeps (CPU tensors even when training on a GPU); not yet proven. Explaining
# them makes this fail: then drop the entries.
OPEN = {"backward: shared_1": 6 * 8, "backward: decoder.block.EncDecAttention.k": 10 * 8}


@pytest.mark.parametrize(("spec", "sizes", "use", "moment"), CASES)
def test_real_step_peak_equals_memspecs(spec, sizes, use, moment):
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd")
    assert result.peak.winner().label().startswith(moment)
    _, counters = step_counters(result)
    assert real_step_peak(result) == result.peak.value + counters + OPEN.get(moment, 0)

"""Measures one training step of a library's own model (Hugging Face transformers,
built from a config) the way `memspec verify` measures memspec's lowering: parameters,
buffers, the bytes autograd saves (each storage once), and the peak of a steady-state
step under PyTorch's MemTracker. The sizes are small, so the tracker runs on real
tensors: under FakeTensorMode, transformers' SDPA call with enable_gqa keeps q- and
k-sized tensors alive that a real step does not (1,536 B a layer at B=2, L=8, H=4,
KV=2), an artifact of the fake kernel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from memspec.verify.measure import _optimizer
from memspec.verify.trackers import phase_tracker

Step = Callable[[torch.nn.Module, tuple], torch.Tensor]  # (model, batch) -> loss


@dataclass(frozen=True)
class LibraryMeasurement:
    parameters: int  # elements
    buffers: int  # elements
    saved: int  # bytes autograd saved in forward and loss, each storage once
    peak: int  # bytes, MemTracker's steady-state peak
    peak_by_category: tuple[tuple[str, int], ...]
    optimizer_scalars: int  # bytes of AdamW's `step` tensors


def saved_bytes(model: torch.nn.Module, batch: tuple, step: Step) -> int:
    """Bytes of every storage autograd saves during forward and loss, each once;
    parameters and buffers excluded."""
    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step(model, batch)
    loss.backward()
    return sum(seen.values())


def tracked_peak(
    make_model: Callable[[], torch.nn.Module], make_batch: Callable[[], tuple], step: Step
) -> tuple[int, tuple[tuple[str, int], ...], int]:
    """MemTracker's peak of the second step (AdamW state allocated), on real tensors
    (verify's tracker, which lets a frozen parameter be)."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = _optimizer("adamw", model.parameters())
    tracker = phase_tracker()

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        batch = make_batch()  # held by the loop through the step, as a data loader's
        loss = step(model, batch)
        loss.backward()
        optimizer.step()

    one()
    tracker.track_external(model, optimizer)
    with tracker:
        one()
    snapshot = tracker.get_tracker_snapshot("peak")
    scalars = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    (device,) = snapshot.values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device.items()}
    total = by_name.pop("Total")
    return total, tuple(sorted(by_name.items())), scalars


def measure_library(
    make_model: Callable[[], torch.nn.Module], make_batch: Callable[[], tuple], step: Step
) -> LibraryMeasurement:
    torch.manual_seed(0)
    model = make_model()
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    saved = saved_bytes(model, make_batch(), step)
    peak, by_category, scalars = tracked_peak(make_model, make_batch, step)
    return LibraryMeasurement(parameters, buffers, saved, peak, by_category, scalars)

"""Peak memory of a training step at full size, without allocating it.

PyTorch's own tracker (`torch.distributed._tools.mem_tracker.MemTracker`) runs on fake
tensors (`FakeTensorMode`): shapes and dtypes are real, no memory is allocated. The
first step runs untracked so the optimizer's state exists; the second, the steady
state, is tracked: `zero_grad(set_to_none=True)`, forward, loss, backward, step.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.compile import CompileResult
from memspec.lower.module import LoweredModel
from memspec.verify.measure import _optimizer

__all__ = ["PeakMeasurement", "measure_peak"]

# MemTracker's categories, in the order a report lists them.
CATEGORIES = ("PARAM", "BUFFER", "GRAD", "ACT", "TEMP", "OPT", "OTH")


@dataclass(frozen=True)
class PeakMeasurement:
    total: int
    by_category: tuple[tuple[str, int], ...]


def measure_peak(result: CompileResult) -> PeakMeasurement:
    """Steady-state peak bytes of one training step, by MemTracker category."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode():
        model = LoweredModel(result.graph, result.substitutions())
        optimizer = _optimizer(result.config.optimizer.name, model.parameters())
        inputs = model.make_inputs()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            out = model(*inputs)
            loss = out if out.dim() == 0 else out.float().sum()
            loss.backward()
            optimizer.step()

        step()
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            step()
        snapshot = tracker.get_tracker_snapshot("peak")
    (device_snapshot,) = snapshot.values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device_snapshot.items()}
    return PeakMeasurement(by_name["Total"], tuple((c, by_name.get(c, 0)) for c in CATEGORIES))

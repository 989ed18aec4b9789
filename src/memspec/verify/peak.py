"""Peak memory of a training step at full size, without allocating it.

PyTorch's own tracker (`torch.distributed._tools.mem_tracker.MemTracker`) runs on fake
tensors (`FakeTensorMode`): shapes and dtypes are real, no memory is allocated. The
step is the one `passes.peak` models, with the same knobs (`StepOptions`): each
micro-batch is made inside the step (the batch is memory too), `zero_grad` runs before
the first micro-batch, `optimizer.step()` after the last. For the steady state one
untracked step runs first, so that the optimizer's state exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.compile import CompileResult
from memspec.lower.module import LoweredModel
from memspec.passes.peak import StepOptions
from memspec.verify.measure import _optimizer

__all__ = ["CATEGORIES", "PeakMeasurement", "measure_peak"]

# MemTracker's categories, in the order a report lists them.
CATEGORIES = ("PARAM", "BUFFER", "GRAD", "ACT", "TEMP", "OPT", "OTH")


@dataclass(frozen=True)
class PeakMeasurement:
    total: int
    by_category: tuple[tuple[str, int], ...]

    def get(self, category: str) -> int:
        return dict(self.by_category)[category]


def measure_peak(result: CompileResult, options: StepOptions | None = None) -> PeakMeasurement:
    """Peak bytes of one training step under `options`, by MemTracker category."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    options = options or StepOptions()
    with FakeTensorMode():
        model = LoweredModel(result.graph, result.substitutions())
        optimizer = _optimizer(
            result.config.optimizer.name, model.parameters(), options.optimizer_impl
        )

        tracker = MemTracker()

        def step() -> None:
            optimizer.zero_grad(set_to_none=options.set_to_none)
            for i in range(options.grad_accum):
                if i:
                    tracker.reset_mod_stats()  # per-module stats only; the peak stays
                batch = model.make_inputs()  # held by the loop until the next batch
                out = model(*batch)
                loss = out if out.dim() == 0 else out.float().sum()
                loss.backward()
            optimizer.step()

        if not options.first_step:
            step()
        tracker.track_external(model, optimizer)
        with tracker:
            step()
        snapshot = tracker.get_tracker_snapshot("peak")
    (device_snapshot,) = snapshot.values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device_snapshot.items()}
    return PeakMeasurement(by_name["Total"], tuple((c, by_name.get(c, 0)) for c in CATEGORIES))

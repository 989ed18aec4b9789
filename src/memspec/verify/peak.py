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

from memspec.errors import UsageError
from memspec.lower.module import LoweredModel
from memspec.passes.peak import StepOptions
from memspec.result import CompileResult
from memspec.verify.measure import _optimizer

__all__ = ["CATEGORIES", "PeakComparison", "PeakMeasurement", "compare_peak", "measure_peak"]

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
    from torch._subclasses.fake_tensor import DynamicOutputShapeException

    options = options or StepOptions()
    try:
        return _measure(result, options)
    except DynamicOutputShapeException as err:
        raise UsageError(
            f"verify --peak runs on fake tensors, which cannot run an op whose output "
            f"shape depends on the data ({err.func}); this spec's step has one"
        ) from None


def _measure(result: CompileResult, options: StepOptions) -> PeakMeasurement:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

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


# memspec's peak categories, as MemTracker names them.
TRACKER_NAMES = {
    "parameters": "PARAM",
    "buffers": "BUFFER",
    "gradients": "GRAD",
    "activations": "ACT",
    "temporaries": "TEMP",
    "optimizer_state": "OPT",
}
TOLERANCE = 0.01  # per category and in total, relative to the measured total


@dataclass(frozen=True)
class PeakComparison:
    moment: str
    rows: tuple[tuple[str, int, int], ...]  # (MemTracker category, measured, predicted)
    measured: int
    predicted: int

    @property
    def ok(self) -> bool:
        limit = TOLERANCE * self.measured
        return abs(self.predicted - self.measured) <= limit and all(
            abs(p - m) <= limit for _, m, p in self.rows
        )


def compare_peak(result: CompileResult, measurement: PeakMeasurement) -> PeakComparison:
    """memspec's peak moment, category by category, against the tracker's peak."""
    winner = result.peak.winner()
    rows = tuple(
        (TRACKER_NAMES[name], measurement.get(TRACKER_NAMES[name]), result.value(expr))
        for name, expr in winner.breakdown
    )
    return PeakComparison(winner.label(), rows, measurement.total, result.value(winner.bytes))

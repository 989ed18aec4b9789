"""Peak memory of a training step at full size, without allocating it.

PyTorch's own tracker (`torch.distributed._tools.mem_tracker.MemTracker`) runs on fake
tensors (`FakeTensorMode`): shapes and dtypes are real, no memory is allocated. The
step is the one `passes.peak` models, with the same knobs (`StepOptions`): each
micro-batch is made inside the step (the batch is memory too), `zero_grad` runs before
the first micro-batch, `optimizer.step()` after the last. For the steady state one
untracked step runs first, so that the optimizer's state exists.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.passes.parameters import trained_items
from memspec.passes.peak import StepOptions
from memspec.passes.peak.moments import Phase
from memspec.passes.peak.optimizer_step import STEPPED
from memspec.result import CompileResult
from memspec.verify.measure import _optimizer, lowered_model, training_step
from memspec.verify.trackers import always_stepping as _always_stepping
from memspec.verify.trackers import phase_tracker as _phase_tracker

__all__ = [
    "CATEGORIES",
    "PeakComparison",
    "PeakMeasurement",
    "Term",
    "compare_peak",
    "measure_peak",
    "step_counters",
]

# MemTracker's categories, in the order a report lists them.
CATEGORIES = ("PARAM", "BUFFER", "GRAD", "ACT", "TEMP", "OPT", "OTH")


@dataclass(frozen=True)
class PeakMeasurement:
    total: int
    by_category: tuple[tuple[str, int], ...]
    phase: str  # of the step at the first moment the peak is reached, as memspec names it

    def get(self, category: str) -> int:
        return dict(self.by_category)[category]


def measure_peak(
    result: CompileResult,
    options: StepOptions | None = None,
    explicit_casts: bool = True,
    real: bool = False,
    prepare=None,
) -> PeakMeasurement:
    """Peak bytes of one training step under `options`, by MemTracker category
    (`explicit_casts`: as for `measure_step`); on real tensors (allocated: small sizes
    only) where `real`, for a step that reads values (Adafactor's `.item()`). `prepare`
    parallelizes the model before the optimizer is made (tensor parallelism)."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
    )

    options = options or StepOptions()
    try:
        return _measure(result, options, explicit_casts, real, prepare)
    except DynamicOutputShapeException as err:
        raise UsageError(
            f"verify --peak runs on fake tensors, which cannot run an op whose output "
            f"shape depends on the data ({err.func}); this spec's step has one"
        ) from None
    except DataDependentOutputException as err:
        raise UsageError(
            f"verify --peak runs on fake tensors, whose values cannot be read ({err.func}); "
            "this optimizer's step reads them (Adafactor's .item()): measure_peak with "
            "real=True runs it on real tensors, at sizes that fit in memory"
        ) from None
    except RuntimeError as err:
        # torch 2.13's fake (meta) grouped_mm accepts bfloat16 only; its CPU kernel, which
        # the real step runs, takes float32 too.
        if "Expected inputs of BF16 type" not in str(err):
            raise
        raise UsageError(
            f"verify --peak runs on fake tensors, whose grouped_mm takes bfloat16 only "
            f"({err}); the real step (verify without --peak) runs it at any precision"
        ) from None


def _measure(
    result: CompileResult, options: StepOptions, explicit_casts: bool, real: bool, prepare
) -> PeakMeasurement:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with contextlib.nullcontext() if real else FakeTensorMode():
        model = lowered_model(result, explicit_casts)
        if prepare is not None:
            prepare(model)
        model.keep_outputs = options.keep_outputs
        optimizer = _optimizer(result.config.optimizer, model.parameters(), options.optimizer_impl)

        tracker = _phase_tracker()
        members = getattr(optimizer, "optimizers", (optimizer,))
        precision = result.config.precision
        scaler = _always_stepping(precision.scaler, tracker) if precision.scaler else None

        def step() -> None:
            training_step(
                model,
                optimizer,
                set_to_none=options.set_to_none,
                micro_batches=options.grad_accum,
                scaler=scaler,
                between=tracker.reset_mod_stats,  # per-module stats only; the peak stays
            )

        if not options.first_step:
            step()
        made = scaler is not None and scaler._scale is not None
        scaler_state = (scaler._scale, scaler._growth_tracker) if made else ()
        tracker.track_external(model, *members, *scaler_state)
        with tracker:
            step()
        snapshot = tracker.get_tracker_snapshot("peak")
    (device_snapshot,) = snapshot.values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device_snapshot.items()}
    categories = tuple((c, by_name.get(c, 0)) for c in CATEGORIES)
    return PeakMeasurement(by_name["Total"], categories, tracker.peak_phase)


# memspec's peak categories, as MemTracker names them.
TRACKER_NAMES = {
    "parameters": "PARAM",
    "buffers": "BUFFER",
    "gradients": "GRAD",
    "activations": "ACT",
    "temporaries": "TEMP",
    "optimizer_state": "OPT",
}


@dataclass(frozen=True)
class Term:
    """A difference between memspec's step and the tracker's that memspec computes: what
    it is, the tracker category it lands in ("" for the whole moment), and its bytes;
    with `moved_from`, bytes memspec counts in that category and the tracker in this
    one (the total is the same)."""

    name: str
    category: str
    bytes: int
    why: str
    moved_from: str = ""  # where memspec counts these bytes, when it counts them


@dataclass(frozen=True)
class PeakComparison:
    """memspec's peak moment against the tracker's, category by category.

    `rows`: (category, measured, memspec's with the named terms added). `phases`: the
    tracker's phase at its peak and memspec's at its moment of the tracker's step."""

    moment: str
    predicted: int  # memspec's peak of the step as a GPU runs it
    terms: tuple[Term, ...]
    rows: tuple[tuple[str, int, int], ...]
    measured: int
    phases: tuple[str, str]

    @property
    def expected(self) -> int:
        return self.predicted + sum(t.bytes for t in self.terms if not t.moved_from)

    @property
    def ok(self) -> bool:
        """Equal to the byte in every category and in total, at the same phase."""
        return (
            self.expected == self.measured
            and all(m == e for _, m, e in self.rows)
            and self.phases[0] == self.phases[1]
        )


def step_counters(
    result: CompileResult, made: set[str] | None = None, categories: dict | None = None
) -> tuple[int, int]:
    """(tensors, bytes) of the optimizer's scalar state (`state step: scalar`: Adam's,
    AdamW's, Adagrad's, RMSprop's `step`): a float32 scalar per parameter tensor each,
    made with the rest of the state; `made`: of these optimizers of a chain only;
    `categories`: a rank's (of the parameters it steps, where it steps some only)."""
    optimizer, bound = result.config.optimizer, result.graph.bound
    categories = categories or result.categories
    if STEPPED in categories:
        items = categories[STEPPED].items
    else:
        items = trained_items(categories["parameters"].items)  # frozen ones take no step
    count = 0
    for item in items:
        owner = optimizer.owner(item.shape, bound)
        if made is None or owner.name in made:
            count += len(owner.own_scalars) * result.value(item.multiplicity)
    return count, 4 * count


def _made(result: CompileResult, traced) -> set[str] | None:
    """The optimizers of the chain whose state exists at a moment of a first step:
    those whose constructor makes it, and those whose step() has begun (None: all)."""
    if not result.step.first_step:
        return None
    chain = result.config.optimizer.chain()
    made = {o.name for o in chain if o.eager}
    names = [o.name for o in chain]
    if traced.phase is Phase.OPTIMIZER_STEP:
        made.update(names[: names.index(traced.optimizer) + 1] if traced.optimizer else names)
    elif traced.phase is Phase.UNSCALE:
        made.update(names[: names.index(traced.optimizer)])
    return made


def _counting(optimizer) -> str:
    """The torch class whose step counters these are (AdamW's, beside Muon)."""
    for member in optimizer.chain():
        if member.own_scalars:
            return (member.torch_class or member.name).rsplit(":", 1)[-1]
    return "optimizer"


def compare_peak(
    result: CompileResult,
    measurement: PeakMeasurement,
    extra: tuple[Term, ...] = (),
    categories: dict | None = None,
) -> PeakComparison:
    """memspec's peak against the tracker's, with every difference between the two steps
    a named term that memspec computes: AdamW's `step` counters, and the gradient sums
    the tracker's dispatch mode makes out of place (`peak_memory(sums_in_place=False)`).
    `categories`: one rank's (data parallelism), whose step is replayed for both."""
    from memspec.passes.peak import peak_memory

    options = result.step

    def replayed(sums_in_place: bool):
        return peak_memory(
            result.graph,
            result.config,
            categories,
            options,
            result.bindings,
            result.resolve,
            sums_in_place=sums_in_place,
        ).winner()

    if categories is None:
        # a replica's categories under DDP (its buckets among the buffers)
        categories = result.ranks.largest.categories if result.ranks else result.categories
        real = result.peak.winner()
    else:
        real = replayed(True)
    traced = replayed(False)
    terms = []
    tensors, counters = step_counters(result, _made(result, traced), categories)
    if counters:
        terms.append(
            Term(
                f"{_counting(result.config.optimizer)} step counters",
                "OPT",
                counters,
                f"4 B x {tensors:,} parameter tensors; CPU tensors when training on a GPU "
                "(for_loop, foreach), which the tracker on the CPU counts",
            )
        )
    sums = result.value(traced.bytes) - result.value(real.bytes)
    if sums:
        terms.append(
            Term(
                "gradient sums out of place",
                "",
                sums,
                "the tracker is a TorchDispatchMode, under which autograd adds every second "
                "gradient of a tensor out of place (in place where it can otherwise); "
                f"memspec's peak of that step: {traced.label()}",
            )
        )
    terms += _scaler_state(result, traced)
    terms += extra
    extra: dict[str, int] = {}
    for t in terms:
        if t.category:
            extra[t.category] = extra.get(t.category, 0) + t.bytes
        if t.moved_from:
            extra[t.moved_from] = extra.get(t.moved_from, 0) - t.bytes
    rows = tuple(
        (
            TRACKER_NAMES[name],
            measurement.get(TRACKER_NAMES[name]),
            result.value(expr) + extra.get(TRACKER_NAMES[name], 0),
        )
        for name, expr in traced.breakdown
    )
    if "OTH" in extra:
        rows += (("OTH", measurement.get("OTH"), extra["OTH"]),)
    phases = (measurement.phase, traced.phase.value)
    predicted = result.value(real.bytes)
    return PeakComparison(real.label(), predicted, tuple(terms), rows, measurement.total, phases)


def _scaler_state(result: CompileResult, traced) -> list[Term]:
    """A loss scaler's _scale and _growth_tracker, which memspec counts with the
    optimizer state: the tracker counts them as tensors of its own (OTH) when they were
    made before it started, and as activations when the tracked step's `scale()` made
    them (a first step)."""
    scaler = result.config.precision.scaler
    if scaler is None or not result.value(dict(traced.breakdown)["optimizer_state"]):
        return []
    first = result.step.first_step
    return [
        Term(
            "the loss scaler's state",
            "ACT" if first else "OTH",
            scaler.state_bytes,
            "_scale (float32) and _growth_tracker (int32), counted by memspec with the "
            + (
                "optimizer state; made by scale() in the tracked step"
                if first
                else "optimizer state; made before the tracker started"
            ),
            moved_from="OPT",
        )
    ]

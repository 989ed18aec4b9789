"""The true peak of a training step: the largest memory at any moment, as a formula.

`passes.peak.replay` replays the step and records the replayed categories at every
moment; this pass adds what does not change during it (parameters, buffers, optimizer
state, and gradients when they outlive `zero_grad`), adds back the repetitions of each
repeat region the replay left out (`passes.peak.repeats`), adds the optimizer step's
moments (`passes.peak.optimizer_step`), and keeps the candidates that no other one
dominates for all positive sizes (`symbolic.dominance`). The peak is their `Max`; with
every size bound, the largest candidate is the phase where the step peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.ir.types import DType, numel
from memspec.parallel import DP
from memspec.passes.peak import repeats
from memspec.passes.peak.forward import SUM_MOMENT
from memspec.passes.peak.fsdp import fsdp_plan
from memspec.passes.peak.moments import Phase
from memspec.passes.peak.optimizer_step import state_before, step_moments
from memspec.passes.peak.replay import SCALE_MOMENT, PeakUnavailable, Replay, replay
from memspec.passes.peak.result import CATEGORIES, PeakCandidate, PeakResult, StepOptions
from memspec.passes.results import CategoryResult
from memspec.policies import IMPLEMENTATIONS
from memspec.recompute import cached_ops, checkpointed_ops, checkpointed_regions
from memspec.symbolic.dominance import TooMany, undominated
from memspec.symbolic.polys import Poly, add_into, evaluate, poly, scaled, substitute, to_expr
from memspec.symbolic.symbols import dim_symbol

__all__ = ["Moment", "peak_memory", "peak_result"]


@dataclass
class Moment:
    """One moment of the step, its memory by category (left-out repetitions symbolic)."""

    phase: Phase
    where: str
    micro_batch: str
    parts: dict[str, Poly]
    optimizer: str = ""  # the optimizer of a chain whose step it is in

    def total(self) -> Poly:
        out: Poly = {}
        for p in self.parts.values():
            add_into(out, p)
        return out


# The most moments the peak keeps as candidates (none at most another for every size):
# each new one is compared with those kept, and the report lists them all (1,000
# distinct Linears keep 1,001 of 1,004 moments: 1 s; 15,000 pass this bound at 14 s)
MAX_CANDIDATES = 12_000


def peak_memory(
    graph: Graph,
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    options: StepOptions,
    bindings: Mapping[sp.Symbol, int],
    resolve: Callable[[sp.Expr], sp.Expr],
    sums_in_place: bool = True,
    fsdp: bool = False,
) -> PeakResult:
    """The step's peak; `resolve` substitutes dims' defaults (F -> 4*D) into a formula.
    `sums_in_place=False` replays autograd under a TorchDispatchMode, which adds every
    second gradient of a tensor out of place (what `memspec verify --peak` measures).
    `fsdp`: the step of FSDP2's rank 0 (`categories` are what that rank holds)."""
    if options.optimizer_impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown optimizer implementation {options.optimizer_impl!r}")
    p = repeats.plan(graph, bindings)
    cache: dict[sp.Expr, Poly] = {}

    def measure(expr: sp.Expr) -> Poly:
        if expr not in cache:
            cache[expr] = poly(resolve(expr))
        return cache[expr]

    fixed = {c: measure(categories[c].bytes) for c in ("parameters", "buffers")}
    state = measure(categories["optimizer_state"].bytes)
    scaler = config.precision.scaler
    # a loss scaler's state, made by the first scale(): in a first step, from then on
    scaler_state = measure(sp.Integer(scaler.state_bytes)) if scaler else {}
    # the state before a first step's step(), made once: step_moments starts from it
    before = state_before(config, categories, graph.bound, measure) if options.first_step else None
    plan = None
    if fsdp:
        master, reshard = config.precision.master, config.parallel.reshard_after_forward
        plan = fsdp_plan(graph, dim_symbol(DP), measure, master, reshard)
    # FSDP2's unsharded gradients are in the compute dtype, its parameters'
    grad_dtype = config.precision.grad_for
    if plan is not None:
        grad_dtype = lambda dtype: dtype  # noqa: E731
    # (micro-batches, whether gradients exist before their backward): a fresh model's
    # first step has none whatever zero_grad does
    kept = not options.set_to_none and not options.first_step
    runs = [("", kept)]
    if options.grad_accum > 1:
        runs = [("micro-batch 1", kept), (f"micro-batches 2..{options.grad_accum}", True)]
    moments: list[Moment] = []
    last: Replay | None = None
    previous = _previous_micro_batch(graph, measure)
    checkpoints = (
        checkpointed_regions(graph, config.recompute),
        checkpointed_ops(graph, config.recompute),
        cached_ops(graph, config.recompute),
    )
    for micro_batch, grads_exist in runs:
        last = replay(
            graph,
            p.repetitions,
            grad_dtype,
            grads_exist,
            measure,
            sums_in_place,
            options.keep_outputs,
            *checkpoints,
            scaler.scaled_loss if scaler else 0,
            plan,
        )
        beyond = _beyond(last, p)
        grads = dict(measure(categories["gradients"].bytes)) if grads_exist else {}
        if grads_exist:
            add_into(grads, beyond)
        region_shares = repeats.shares(graph, last, p)
        for point in last.points:
            if point.phase is Phase.OPTIMIZER_STEP:
                continue
            memory = dict(point.memory)
            for reading in repeats.readings(point, region_shares):
                parts = {**fixed, "gradients": dict(memory["gradients"])}
                add_into(parts["gradients"], grads)
                add_into(parts["gradients"], reading.gradients)
                parts["optimizer_state"] = dict(before if options.first_step else state)
                if options.first_step and _scaled(point, micro_batch):
                    add_into(parts["optimizer_state"], scaler_state)
                parts["activations"] = dict(memory["activations"])
                add_into(parts["activations"], reading.saved)
                if micro_batch.startswith("micro-batches 2") and point.phase is Phase.FORWARD:
                    add_into(parts["activations"], previous[point.op_path == SUM_MOMENT])
                parts["temporaries"] = dict(memory["temporaries"])
                where = repeats.label(graph, point, reading, p)
                moments.append(Moment(point.phase, where, micro_batch, parts))
    (after,) = [q for q in last.points if q.phase is Phase.OPTIMIZER_STEP]
    # what the loop's outputs object still holds of the left-out repetitions
    (left_out,) = repeats.readings(after, repeats.shares(graph, last, p))
    for phase, where, optimizer, parts in step_moments(
        config,
        categories,
        options.optimizer_impl,
        after,
        fixed,
        state,
        measure,
        beyond,
        graph.bound,
        before,
    ):
        add_into(parts["activations"], left_out.saved)
        moments.append(Moment(phase, where, "", parts, optimizer))
    return _result(graph, moments, p, options, bindings, measure)


def _scaled(point, micro_batch: str) -> bool:
    """Whether a loss scaler has made its state by this moment of a first step: from
    micro-batch 1's `scale(loss)` on."""
    return (
        micro_batch.startswith("micro-batches 2")
        or point.phase is Phase.BACKWARD
        or point.op_path == SCALE_MOMENT
    )


def _previous_micro_batch(graph: Graph, measure) -> tuple[Poly, Poly]:
    """What the loop's variables still hold of the previous micro-batch during this
    one's forward (`out = model(batch); loss = ...; loss.backward()` in a loop): its
    output until `out` is bound again as the forward returns, its loss until `loss` is
    (a scalar output is the loss). Returned as (during the forward, at the sum into
    the loss)."""
    out = graph.value(graph.outputs[0])
    size = measure(numel(out.shape) * out.dtype.itemsize)
    if not out.shape:
        return size, size
    loss = measure(sp.Integer(DType.float32.itemsize))
    both = dict(size)
    add_into(both, loss)
    return both, loss


def _beyond(rep: Replay, p: repeats.Plan) -> Poly:
    """The bytes of parameter gradients beyond the parameters' own size (views of larger
    gradients), in every repetition: one born in a middle repetition stands for the
    left-out ones too."""
    out: Poly = {}
    for born, size in rep.beyond:
        total = dict(size)
        for region, i in born:
            if i == 1 and region in p.extra:
                add_into(total, scaled(total, p.extra[region]))
        add_into(out, total)
    return out


def _result(graph, moments: list[Moment], p: repeats.Plan, options, bindings, measure):
    """The step's peak result, with the replay's assumption for each symbolic count."""
    counts = {p.extra[r]: measure(e) for r, e in p.counts.items()}
    limit = repeats.REPLAY_LIMIT
    assumptions = tuple(
        f"{graph.regions[r].count} >= {limit}: the peak formula replays the first, "
        f"a middle and the last repetition of {graph.regions[r].path} and counts the other "
        f"{graph.regions[r].count} - {limit} like the middle one"
        for r, e in p.counts.items()
        if not e.is_Integer
    )
    return peak_result(moments, counts, options, bindings, assumptions)


def peak_result(
    moments: list[Moment],
    counts: Mapping[sp.Dummy, Poly],
    options: StepOptions,
    bindings: Mapping[sp.Symbol, int],
    assumptions: tuple[str, ...] = (),
) -> PeakResult:
    """The moments no other one dominates, with the left-out repetitions' symbols
    (`counts`) replaced by their counts, and their values where every size is bound."""
    candidates, totals = [], []
    try:
        kept = undominated([m.total() for m in moments], limit=MAX_CANDIDATES)
    except TooMany:
        raise PeakUnavailable(
            f"more than {MAX_CANDIDATES:,} of the step's {len(moments):,} moments can each "
            "be the peak for some sizes (their comparison grows as the square of that); "
            "the categories are exact, the peak is not computed (a `repeat` of identical "
            "layers keeps the moments few)"
        ) from None
    for i in kept:
        m = moments[i]
        parts = {k: substitute(m.parts[k], counts) for k in CATEGORIES}
        total: Poly = {}
        for part in parts.values():
            add_into(total, part)
        totals.append(total)
        breakdown = tuple((k, to_expr(parts[k])) for k in CATEGORIES)
        candidates.append(
            PeakCandidate(
                m.phase, m.where, m.micro_batch, breakdown, to_expr(total), i, m.optimizer
            )
        )
    values = [evaluate(t, dict(bindings)) for t in totals]
    bound = None if any(v is None for v in values) else tuple(int(v) for v in values)
    return PeakResult(options, tuple(candidates), assumptions, bound)

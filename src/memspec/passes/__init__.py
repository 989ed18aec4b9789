"""Every analysis of a compile, in order: the pipeline a report tells.

Reading `PIPELINE` tells the story of a report: the five memory categories (parameters,
gradients, optimizer state, activations, buffers), activations under every declared
convention, FLOPs, the parameters one token uses (mixtures of experts), the spec's
`expect` checks, and the true peak of a training step. Every analysis has one signature,
`run(context) -> result`: the context holds the IR, the configuration, the bindings and
what the earlier analyses returned, by name (the peak starts from the categories). The
passes themselves are pure functions in modules of their own; the stages here only say
what each one reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.activations import count_activations, count_activations_under
from memspec.passes.active_parameters import count_active_parameters, has_experts
from memspec.passes.buffers import count_buffers
from memspec.passes.expects import ExpectResult, check_expects
from memspec.passes.flops import FlopsResult, count_flops
from memspec.passes.gradients import count_gradients
from memspec.passes.optimizer_state import count_optimizer_state
from memspec.passes.parameters import count_parameters, trained_items, whole_parameters
from memspec.passes.peak import PeakResult, PeakUnavailable, StepOptions, peak_memory
from memspec.passes.peak.inference import inference_peak
from memspec.passes.peak.moments import Phase
from memspec.passes.ranks import RanksResult, count_ranks
from memspec.passes.results import CATEGORY_TITLES, CategoryResult
from memspec.policies import Convention
from memspec.symbolic.bind import Bindings, resolve_defaults
from memspec.symbolic.bind import evaluate as evaluate_bound
from memspec.symbolic.symbols import SymbolTable
from memspec.syntax.imports import Program
from memspec.syntax.nodes import Expr

__all__ = ["PIPELINE", "Analysis", "AnalysisContext", "run_pipeline"]


@dataclass(frozen=True, kw_only=True)
class AnalysisContext:
    """What an analysis may read: the program, its IR and bindings, and earlier results."""

    graph: Graph
    config: TrainConfig
    program: Program
    symbols: SymbolTable
    bindings: Bindings
    evaluate: Callable[[Expr], sp.Expr]  # a spec expression in the global scope
    conventions: Mapping[str, Convention]  # every declared convention, by name
    step: StepOptions  # the training loop whose peak is modelled
    # --mode inference: (phase, graph, sizes) of the prefill and the last decode step
    phases: tuple = ()
    # `memspec check`'s stated answers (expect declarations), checked without raising
    checks: tuple = ()
    earlier: Mapping[str, object] = field(default_factory=dict)  # by analysis name

    def resolve(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with unbound defaults substituted (F -> 4*D), expanded."""
        return sp.expand(resolve_defaults(expr, self.symbols, self.bindings))

    def categories(self) -> dict[str, CategoryResult]:
        """The memory categories counted so far, in pipeline order."""
        return {k: self.earlier[k] for k in CATEGORY_TITLES if k in self.earlier}


@dataclass(frozen=True, slots=True)
class Analysis:
    """One stage: its name (the key of its result) and what it runs."""

    name: str
    run: Callable[[AnalysisContext], object]


def _category(
    count: Callable[[Graph, TrainConfig], CategoryResult],
) -> Callable[[AnalysisContext], CategoryResult]:
    """A memory category's stage: its pass reads only the graph and the configuration."""
    return lambda context: count(context.graph, context.config)


def _conventions(context: AnalysisContext) -> dict[str, CategoryResult]:
    """Activations under every declared convention, for the side-by-side comparison
    (with the configured recomputation)."""
    return {
        name: count_activations_under(context.graph, policy, context.config.recompute)
        for name, policy in context.conventions.items()
    }


def _flops(context: AnalysisContext) -> FlopsResult:
    # the optimizer updates the trained parameters only (a frozen one has no gradient)
    trained = trained_items(context.earlier["parameters"].items)
    elements = sp.expand(sp.Add(*(i.total_elements for i in trained)))
    return count_flops(context.graph, context.config, elements)


def _active_parameters(context: AnalysisContext) -> CategoryResult | None:
    """Only with an expert bank do they differ from the parameters; none otherwise."""
    if not has_experts(context.graph):
        return None
    return count_active_parameters(context.graph)


def _quantities(context: AnalysisContext) -> dict[str, sp.Expr]:
    """The elements of each quantity an `expect` may name (`passes.expects.QUANTITIES`)."""
    categories = context.categories()
    changed = context.config.lora is not None or context.config.weights is not None
    # the report's count (every parameter the run holds) where the run adds or packs none
    earlier = None if changed else context.earlier["active_parameters"]
    active = earlier or count_active_parameters(context.graph, model_only=changed)
    quantities = {
        **{k: c.elements for k, c in categories.items()},
        "total": sp.Add(*(c.elements for c in categories.values())),
        "active_parameters": active.elements,
    }
    if context.config.parallel.tensor_parallel or changed:
        # the spec's counts are of its model: not of one rank's shards, nor with the
        # adapters --lora adds or the weights --weights packs
        quantities["parameters"] = whole_parameters(context.graph, model_only=changed)
    return quantities


def _expects(context: AnalysisContext) -> tuple[ExpectResult, ...]:
    program = context.program
    return check_expects(
        program.expects, _quantities(context), context.symbols, program.presets, context.evaluate
    )


def _checks(context: AnalysisContext) -> tuple[ExpectResult, ...]:
    """`memspec check`'s answers: each holds or not, with its difference."""
    if not context.checks:
        return ()
    program = context.program
    return check_expects(
        context.checks,
        _quantities(context),
        context.symbols,
        program.presets,
        context.evaluate,
        strict=False,
    )


@dataclass(frozen=True, slots=True)
class PeakAnswer:
    """The true peak (of the rank that peaks highest, under data parallelism), or why
    there is none; `ranks`: each rank class's peak, in `RanksResult.classes` order."""

    peak: PeakResult | None
    unavailable: str | None = None
    ranks: tuple[int | None, ...] = ()


def _peak(context: AnalysisContext) -> PeakAnswer:
    """The true peak, or None and why the replay cannot model this step."""
    if context.config.inference is not None:
        categories = context.categories()
        run = context.config.inference
        return PeakAnswer(
            inference_peak(context.phases, categories, context.bindings, context.resolve, run)
        )
    parallel = context.config.parallel
    ranks = context.earlier["ranks"]
    if parallel.runtime == "ddp" and parallel.distributed:
        # a replica's step, with the reducer's buckets held throughout: every rank alike
        answer = _replayed(context, ranks.largest.categories)
        return replace(answer, ranks=(_winner(context, answer.peak),) * len(ranks.classes))
    if parallel.runtime == "zero_redundancy":
        # each rank steps its own parameters, in its own order
        answers = [_replayed(context, c.stepping) for c in ranks.classes]
        values = tuple(_winner(context, a.peak) for a in answers)
        if None in values:
            return replace(answers[0], ranks=values)
        return replace(answers[values.index(max(values))], ranks=values)
    if parallel.runtime == "fsdp2":
        reason = _fsdp_modelled(context)
        return PeakAnswer(None, reason) if reason else _fsdp_peaks(context, ranks)
    if parallel.distributed:
        return PeakAnswer(
            None,
            f"not modelled yet for a rank under {parallel.label()}: the runtime's buffers "
            "and transients are not counted; what each rank holds at rest is in the "
            "per-rank section",
        )
    return _replayed(context, context.categories())


def _fsdp_peaks(context: AnalysisContext, ranks: RanksResult) -> PeakAnswer:
    """FSDP2's ranks: rank 0 holds the most (full chunks of every parameter, the most
    state); another rank differs in its state only, and its step's temporaries are
    counted on rank 0's (padded) shapes, so its peak is known where the step is not
    where it peaks."""
    answer = _replayed(context, ranks.largest.categories, fsdp=True)
    values = []
    for c in ranks.classes:
        if 0 in c.ranks:
            values.append(_winner(context, answer.peak))
            continue
        own = _replayed(context, c.categories, fsdp=True).peak
        winner = own.winner() if own is not None else None
        stepping = winner is None or winner.phase is Phase.OPTIMIZER_STEP
        values.append(None if stepping else _winner(context, own))
    return replace(answer, ranks=tuple(values))


def _fsdp_modelled(context: AnalysisContext) -> str | None:
    """Why FSDP2's per-rank peak is not modelled for this step, or None where it is."""
    config, step = context.config, context.step
    prefix = "a rank's true peak under FSDP2"
    if config.precision.autocast is not None:
        return f"{prefix} under autocast is not modelled yet"
    if config.recompute.name not in ("none", "full"):
        return f"{prefix} with selective recomputation is not modelled yet"
    if step.grad_accum != 1 or not step.set_to_none:
        return (
            f"{prefix} with gradient accumulation or zero_grad(set_to_none=False) is not "
            "modelled yet"
        )
    if len(context.graph.top_regions()) != 1:
        return f"{prefix} is modelled for a model with one top-level repeat (its units)"
    return None


def _replayed(
    context: AnalysisContext, categories: dict[str, CategoryResult], fsdp: bool = False
) -> PeakAnswer:
    try:
        peak = peak_memory(
            context.graph,
            context.config,
            categories,
            context.step,
            context.bindings,
            context.resolve,
            fsdp=fsdp,
        )
    except PeakUnavailable as err:
        return PeakAnswer(None, str(err))
    return PeakAnswer(peak)


def _winner(context: AnalysisContext, peak: PeakResult | None) -> int | None:
    winner = peak.winner() if peak is not None else None
    return evaluate_bound(winner.bytes, context.symbols, context.bindings) if winner else None


def _ranks(context: AnalysisContext) -> RanksResult | None:
    """What each data-parallel rank holds (None on one device)."""

    def evaluate(expr: sp.Expr) -> int | None:
        return evaluate_bound(expr, context.symbols, context.bindings)

    return count_ranks(context.config, context.categories(), evaluate)


PIPELINE: tuple[Analysis, ...] = (
    Analysis("parameters", _category(count_parameters)),
    Analysis("gradients", _category(count_gradients)),
    Analysis("optimizer_state", _category(count_optimizer_state)),
    Analysis("activations", _category(count_activations)),
    Analysis("buffers", _category(count_buffers)),
    Analysis("conventions", _conventions),
    Analysis("flops", _flops),
    Analysis("active_parameters", _active_parameters),
    Analysis("expects", _expects),
    Analysis("checks", _checks),
    Analysis("ranks", _ranks),
    Analysis("peak", _peak),
)


def run_pipeline(context: AnalysisContext) -> dict[str, object]:
    """Every analysis's result, by name, in pipeline order; each sees the earlier ones."""
    results: dict[str, object] = {}
    for analysis in PIPELINE:
        earlier = MappingProxyType(dict(results))
        results[analysis.name] = analysis.run(replace(context, earlier=earlier))
    return results

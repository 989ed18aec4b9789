"""The peak of generation (`--mode inference`): the prefill's forward and the last decode
step's, each replayed as the step interpreter runs it under torch.no_grad().

Nothing is saved for backward (no parameter is trained, so no op records a node): a
tensor lives until its last use; what the spec keeps in the model's outputs (`returned`:
the cache's new part, the logits) lives to the end of the forward. The decode step is
the forward elaborated at one token with `past_length` positions cached; the positions
the cache held before it are counted from its start (`kv_append`'s `cached_bytes`, over
every layer), and each `kv_append` holds the old tensor beside the new one while it
copies it (its workspace). Decode steps grow with the cache, so the last one, at
P + T - 2 cached positions, is the largest of them.

Under transformers' generate (`--loop generate`) every moment of a forward also holds
generate's own tensors (`memspec.inference.generate_terms`), and each forward is followed
by a moment of its own: generate's float32 copy of the last logits row made beside the
logits, the previous step's copy and the cache after the forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy as sp

from memspec.inference import PAST, Inference, Term, generate_terms, static_mask_moment
from memspec.ir.graph import Graph
from memspec.ir.types import numel
from memspec.passes.peak import repeats
from memspec.passes.peak.forward import SUM_MOMENT, ForwardReplay
from memspec.passes.peak.ledger import Ledger
from memspec.passes.peak.moments import Phase
from memspec.passes.peak.replay import PeakUnavailable, Replay, shares_of
from memspec.passes.peak.result import PeakResult, StepOptions
from memspec.passes.peak.true_peak import Moment, peak_result
from memspec.passes.results import CategoryResult
from memspec.symbolic.polys import Poly, add_into, poly
from memspec.symbolic.symbols import dim_symbol

__all__ = ["cache_bytes", "cache_elements", "generate_step_terms", "inference_peak"]


def cache_elements(graph: Graph, run: Inference, before: bool = False) -> tuple[sp.Expr, sp.Expr]:
    """(elements, bytes) every layer's cache holds: a DynamicCache's `past` positions
    (kv_append's), a paged cache's positions of whole blocks (kv_write's, allocated before
    the prefill, in --kv-dtype when given), a static cache's `length` (kv_static's;
    `before` a forward, none in the prefill, whose updates allocate it)."""
    from memspec.ops.cache import KV_APPEND, KV_STATIC, KV_WRITE, cached_bytes, position_bytes

    reserved = run.paged_positions
    elements, nbytes = sp.Integer(0), sp.Integer(0)
    for op in graph.ops:
        if op.op not in (KV_APPEND, KV_WRITE, KV_STATIC):
            continue
        itemsize = graph.value(op.inputs[0]).dtype.itemsize
        if op.op == KV_APPEND:
            size = cached_bytes(op, graph) / itemsize
        elif op.op == KV_WRITE and reserved is not None:
            size = position_bytes(op, graph) / itemsize * reserved
            itemsize = run.kv_itemsize or itemsize
        elif op.op == KV_STATIC and not (before and not op.attr("allocated")):
            size = position_bytes(op, graph) / itemsize * op.attr("length")
        else:
            continue
        size *= graph.multiplicity(op.region)
        elements += size
        nbytes += size * itemsize
    return sp.expand(elements), sp.expand(nbytes)


def cache_bytes(graph: Graph, run: Inference, before: bool = False) -> sp.Expr:
    """The bytes every layer's cache holds (`cache_elements`)."""
    return cache_elements(graph, run, before)[1]


def _forward(graph: Graph, repetitions: Mapping[int, int], measure) -> Replay:
    """The forward alone, its outputs kept (the cache's new part, the logits)."""
    ledger = Ledger()
    forward = ForwardReplay(
        graph, ledger, repetitions, measure, PeakUnavailable, True, frozenset(), None, frozenset()
    )
    forward.step()
    alive = [b for b in ledger.blocks.values() if b.category == "activations"]
    return Replay(tuple(ledger.points), shares_of(graph, repetitions, forward, alive, []))


def generate_step_terms(
    run: Inference,
    graph: Graph,
    step: int,
    bindings: Mapping[sp.Symbol, int],
    with_mask: bool = True,
) -> tuple[tuple[Term, ...], tuple[tuple[str, tuple[Term, ...]], ...]]:
    """generate's tensors beside forward `step` of this graph (its output is the logits
    [B, 1, V]): `memspec.inference.generate_terms`."""
    logits = graph.value(graph.outputs[0])
    batch = logits.shape[0]
    b = sp.sympify(sp.sympify(batch).xreplace(dict(bindings)))
    batched = not (b.is_number and b <= 1)  # an unbound batch is taken as more than one
    vocab = numel(logits.shape) / (batch * logits.shape[1])
    from memspec.ops.cache import KV_STATIC

    # a layer's keys and values each go through its cache
    layers = sum((graph.multiplicity(op.region) for op in graph.ops if op.op == KV_STATIC), 0) / 2
    return generate_terms(
        run, step, batch, vocab, logits.dtype.itemsize, batched, sp.sympify(layers), with_mask
    )


def _total(terms: tuple[Term, ...]) -> sp.Expr:
    return sp.Add(*(t.bytes for t in terms))


def inference_peak(
    phases: tuple[tuple[Phase, Graph, Mapping[sp.Symbol, sp.Expr]], ...],
    categories: dict[str, CategoryResult],
    bindings: Mapping[sp.Symbol, int],
    resolve: Callable[[sp.Expr], sp.Expr],
    run: Inference,
) -> PeakResult:
    """The largest moment of the phases' forwards: (phase, its graph, the sizes it runs
    at beside the bindings: the sequence length, the cached positions)."""
    fixed = {c: poly(resolve(categories[c].bytes)) for c in ("parameters", "buffers")}
    moments: list[Moment] = []
    counts: dict[sp.Dummy, Poly] = {}

    def moment(phase: Phase, where: str, activations: Poly, temporaries: Poly) -> Moment:
        parts = {**fixed, "gradients": {}, "optimizer_state": {}}
        parts["activations"], parts["temporaries"] = activations, temporaries
        return Moment(phase, where, "", parts)

    for phase, graph, sizes in phases:
        p = repeats.plan(graph, bindings)
        counts.update({p.extra[r]: poly(resolve(e)) for r, e in p.counts.items()})

        def measure(expr: sp.Expr, sizes=sizes) -> Poly:
            return poly(resolve(sp.sympify(expr).xreplace(dict(sizes))))

        run_ = _forward(graph, p.repetitions, measure)
        before = measure(cache_bytes(graph, run, before=True))
        beside: Poly = {}
        if run.loop == "generate":
            step = 0 if phase is Phase.PREFILL else run.new_tokens - 1
            during, afters = generate_step_terms(run, graph, step, bindings)
            beside = measure(_total(during))
            # after the forward: the cache grown by the step's positions, and generate's
            # tensors beside it
            past = dim_symbol(PAST)
            (length,) = (s for s in sizes if s != past)  # the sequence length
            grown = cache_bytes(graph, run).xreplace({past: past + length})
            for where, after in afters:
                parts = measure(grown + _total(during) + _total(after))
                moments.append(moment(phase, where, parts, {}))
            if run.static_length is not None:
                # a static cache's decode mask is made before each decode forward: the
                # prefill's step makes step 1's; the last decode forward's is made in the
                # step before it (the largest such moment of the decode steps)
                ahead = 1 if phase is Phase.PREFILL else step
                if ahead < run.new_tokens and (phase is Phase.PREFILL or ahead >= 2):
                    held, _ = generate_step_terms(run, graph, ahead, bindings, with_mask=False)
                    extra = static_mask_moment(run, ahead, graph.value(graph.outputs[0]).shape[0])
                    parts = measure(grown + _total(held) + _total(extra))
                    where = f"before decode step {ahead}: generate's attention mask"
                    moments.append(moment(phase, where, parts, {}))
        region_shares = repeats.shares(graph, run_, p)
        for point in run_.points:
            if point.op_path == SUM_MOMENT:  # a training step's sum into the loss
                continue
            memory = dict(point.memory)
            for reading in repeats.readings(point, region_shares):
                activations = dict(memory["activations"])
                add_into(activations, reading.saved)
                add_into(activations, before)
                add_into(activations, beside)
                where = repeats.label(graph, point, reading, p)
                moments.append(moment(phase, where, activations, dict(memory["temporaries"])))
    return peak_result(moments, counts, StepOptions(), bindings)

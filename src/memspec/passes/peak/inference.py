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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy as sp

from memspec.ir.graph import Graph
from memspec.passes.peak import repeats
from memspec.passes.peak.forward import SUM_MOMENT, ForwardReplay
from memspec.passes.peak.ledger import Ledger
from memspec.passes.peak.moments import Phase
from memspec.passes.peak.replay import PeakUnavailable, Replay, shares_of
from memspec.passes.peak.result import PeakResult, StepOptions
from memspec.passes.peak.true_peak import Moment, peak_result
from memspec.passes.results import CategoryResult
from memspec.symbolic.polys import Poly, add_into, poly

__all__ = ["cache_bytes", "cache_elements", "inference_peak"]


def cache_elements(graph: Graph, reserved: int | None = None) -> tuple[sp.Expr, sp.Expr]:
    """(elements, bytes) every layer's cache holds before this forward: a DynamicCache's
    `past` positions (kv_append's), or a paged cache's `reserved` positions of blocks
    (kv_write's), allocated before the prefill."""
    from memspec.ops.cache import KV_APPEND, KV_WRITE, cached_bytes, position_bytes

    elements, nbytes = sp.Integer(0), sp.Integer(0)
    for op in graph.ops:
        if op.op == KV_APPEND:
            size = cached_bytes(op, graph)
        elif op.op == KV_WRITE and reserved is not None:
            size = position_bytes(op, graph) * reserved
        else:
            continue
        size *= graph.multiplicity(op.region)
        nbytes += size
        elements += size / graph.value(op.inputs[0]).dtype.itemsize
    return sp.expand(elements), sp.expand(nbytes)


def cache_bytes(graph: Graph, reserved: int | None = None) -> sp.Expr:
    """The bytes every layer's cache holds before this forward (`cache_elements`)."""
    return cache_elements(graph, reserved)[1]


def _forward(graph: Graph, repetitions: Mapping[int, int], measure) -> Replay:
    """The forward alone, its outputs kept (the cache's new part, the logits)."""
    ledger = Ledger()
    forward = ForwardReplay(
        graph, ledger, repetitions, measure, PeakUnavailable, True, frozenset(), None, frozenset()
    )
    forward.step()
    alive = [b for b in ledger.blocks.values() if b.category == "activations"]
    return Replay(tuple(ledger.points), shares_of(graph, repetitions, forward, alive, []))


def inference_peak(
    phases: tuple[tuple[Phase, Graph, Mapping[sp.Symbol, sp.Expr]], ...],
    categories: dict[str, CategoryResult],
    bindings: Mapping[sp.Symbol, int],
    resolve: Callable[[sp.Expr], sp.Expr],
    reserved: int | None = None,
) -> PeakResult:
    """The largest moment of the phases' forwards: (phase, its graph, the sizes it runs
    at beside the bindings: the sequence length, the cached positions). `reserved`: a
    paged cache's positions a sequence, allocated before the prefill."""
    fixed = {c: poly(resolve(categories[c].bytes)) for c in ("parameters", "buffers")}
    moments: list[Moment] = []
    counts: dict[sp.Dummy, Poly] = {}
    for phase, graph, sizes in phases:
        p = repeats.plan(graph, bindings)
        counts.update({p.extra[r]: poly(resolve(e)) for r, e in p.counts.items()})

        def measure(expr: sp.Expr, sizes=sizes) -> Poly:
            return poly(resolve(sp.sympify(expr).xreplace(dict(sizes))))

        run = _forward(graph, p.repetitions, measure)
        before = measure(cache_bytes(graph, reserved))
        region_shares = repeats.shares(graph, run, p)
        for point in run.points:
            if point.op_path == SUM_MOMENT:  # a training step's sum into the loss
                continue
            memory = dict(point.memory)
            for reading in repeats.readings(point, region_shares):
                parts = {**fixed, "gradients": {}, "optimizer_state": {}}
                parts["activations"] = dict(memory["activations"])
                add_into(parts["activations"], reading.saved)
                add_into(parts["activations"], before)
                parts["temporaries"] = dict(memory["temporaries"])
                where = repeats.label(graph, point, reading, p)
                moments.append(Moment(phase, where, "", parts))
    return peak_result(moments, counts, StepOptions(), bindings)

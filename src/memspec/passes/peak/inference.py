"""The peak of generation (`--mode inference`): the prefill's forward and the last decode
step's, each replayed as the step interpreter runs it under torch.no_grad().

Nothing is saved for backward (no parameter is trained, so no op records a node): a
tensor lives until its last use; what the spec keeps in the model's outputs (`returned`:
the cache's new part, the logits) lives to the end of the forward. The decode step is
the forward elaborated at one token with `past_length` positions cached; the positions
the cache held before it are counted from its start (`kv_append`'s `cached_bytes`, over
every layer), and each `kv_append` holds the old tensor beside the new one while it
copies it (its workspace). Decode steps grow with the cache, so the last one, at
P + T - 2 cached positions, is the largest of them. A sliding window's cache (`kv_window`,
transformers' DynamicSlidingWindowLayer) stops growing at the window and its update frees
the layer's previous tensors as it returns (`Ledger.release`); its first decode step,
which frees the prompt's storage, is a phase of its own (`compile.inference_phases`).

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
from memspec.ir.sizes import note_relation
from memspec.ir.types import numel
from memspec.ops import lookup
from memspec.ops.cache import (
    KV_APPEND,
    KV_FP8,
    KV_STATIC,
    KV_WINDOW,
    KV_WRITE,
    cached_bytes,
    fp8_storage,
    position_bytes,
    window_storage,
)
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

__all__ = [
    "cache_bytes",
    "cache_elements",
    "generate_moments",
    "generate_step_terms",
    "inference_peak",
    "moment_step",
]


def cache_elements(graph: Graph, run: Inference, before: bool = False) -> tuple[sp.Expr, sp.Expr]:
    """(elements, bytes) every layer's cache holds after the forward (`before`: before
    it): a DynamicCache's `past` positions and the forward's (kv_append's), a sliding
    window's storage (kv_window's `window_storage`), an FP8 QuantizedCache's float8
    positions and scales (kv_fp8's `fp8_storage`), a paged cache's positions of whole
    blocks (kv_write's, allocated before the prefill, in --kv-dtype when given), a static
    cache's `length` (kv_static's; `before` a forward, none in the prefill, whose updates
    allocate it)."""
    reserved = run.paged_positions
    elements, nbytes = sp.Integer(0), sp.Integer(0)
    for op in graph.ops:
        if op.op == KV_FP8:  # float8 keys and values, and their two float32 scales
            size, stored = fp8_storage(op, graph, before)
            elements += size * graph.multiplicity(op.region)
            nbytes += stored * graph.multiplicity(op.region)
            continue
        if op.op not in (KV_APPEND, KV_WRITE, KV_STATIC, KV_WINDOW):
            continue
        itemsize = graph.value(op.inputs[0]).dtype.itemsize
        if op.op == KV_APPEND:
            size = cached_bytes(op, graph) / itemsize
            if not before:  # and the forward's positions
                size += position_bytes(op, graph) / itemsize * graph.value(op.inputs[0]).shape[-2]
        elif op.op == KV_WINDOW:  # keys and values, one dtype
            size = window_storage(op, graph, before) / itemsize
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


def cache_terms(graph: Graph) -> tuple[Term, ...]:
    """What the cache's layers hold beside their keys and values, from the cache's
    construction (before the prefill) to the end: a DynamicSlidingWindowLayer's
    `_sliding_window_tensor`, a 0-d int64 (kv_window's; a StaticCache's
    `cumulative_length` is generate's, `generate_terms`)."""
    # one update of a layer's keys and values
    layers = sum((graph.multiplicity(op.region) for op in graph.ops if op.op == KV_WINDOW), 0)
    if not layers:
        return ()
    return (Term("the sliding window's size, a 0-d int64 a layer", 8 * sp.sympify(layers)),)


def cache_bytes(graph: Graph, run: Inference, before: bool = False) -> sp.Expr:
    """The bytes every layer's cache holds (`cache_elements`)."""
    return cache_elements(graph, run, before)[1]


class _Generation(ForwardReplay):
    """The forward of a generation step: as a training step's under no_grad, with three
    differences. A sliding-window cache's update (kv_window) frees the layer's previous
    tensor, counted from the forward's start, as it returns (`Ledger.release`), as an FP8
    QuantizedCache's (kv_fp8) frees its previous float8 tensors, which update()'s locals
    hold until then; that cache's prefill makes the layer's scales, kept to the end.
    What an op makes only to save for backward (SDPA's logsumexp and the float copy of
    its window mask) its kernel returns under no_grad too: alive at the op, freed as it
    returns."""

    def run_op(self, op, inputs, index):
        outputs = super().run_op(op, inputs, index)
        if op.op == KV_FP8 and fp8_storage(op, self.graph, before=True)[1] == 0:
            # the prefill fixes the layer's two float32 scales, kept to the end
            self.ledger.alloc(self.measure(sp.Integer(8)), self.category, self.running)
        for saved in lookup(op.op).saved(op, self.graph):
            if saved.value is None:
                size = numel(saved.shape) * saved.dtype.itemsize * saved.count
                self._transient.append(
                    self.ledger.alloc(self.measure(size), self.category, self.running)
                )
        return outputs

    def op_done(self, op, inputs, outputs) -> None:
        super().op_done(op, inputs, outputs)
        if op.op == KV_WINDOW:
            old = self.measure(window_storage(op, self.graph, before=True))
            self.ledger.release(old, self.category, self.running)
        if op.op == KV_FP8:  # update()'s locals held the old float8 tensors to its return
            _, old = fp8_storage(op, self.graph, before=True)
            if old != 0:  # the scales stay
                self.ledger.release(self.measure(old - 8), self.category, self.running)


def _forward(graph: Graph, repetitions: Mapping[int, int], measure) -> Replay:
    """The forward alone, its outputs kept (the cache's new part, the logits)."""
    ledger = Ledger()
    forward = _Generation(
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
    if not b.is_number:
        note_relation(sp.Gt, b, 1)
    vocab = numel(logits.shape) / (batch * logits.shape[1])
    statics = [op for op in graph.ops if op.op == KV_STATIC]
    # a layer's keys and values each go through its cache
    layers = sum((graph.multiplicity(op.region) for op in statics), 0) / 2
    keys, prefill = static_mask_keys(run, graph)
    return generate_terms(
        run,
        step,
        batch,
        vocab,
        logits.dtype.itemsize,
        batched,
        sp.sympify(layers),
        with_mask,
        keys,
        prefill,
    )


def static_mask_keys(run: Inference, graph: Graph) -> tuple[sp.Expr | None, sp.Expr | None]:
    """(M, K): the key positions of generate's decode-step mask (its layers' length) and,
    for StaticSlidingWindowLayers (kv_static's `sliding`), of its prefill mask, max(P,
    W); (None, None) without a static cache. Layers of two lengths are refused: each kind
    would have a mask of its own, which is not modelled."""
    statics = [op for op in graph.ops if op.op == KV_STATIC]
    lengths = {sp.sympify(op.attr("length")) for op in statics}
    if not lengths:
        return None, None
    if len(lengths) > 1:
        raise PeakUnavailable(
            "a static cache whose layers hold different numbers of positions "
            f"({', '.join(sorted(map(str, lengths)))}): generate's mask for each kind of "
            "layer is not modelled"
        )
    (length,) = lengths
    sliding = any(op.attr("sliding", False) for op in statics)
    return length, (sp.Max(run.prompt_len, length) if sliding else None)


def decode_step(run: Inference, sizes: Mapping[sp.Symbol, sp.Expr]) -> int:
    """The step a phase's forward is (0: the prefill, t: the t-th decode forward), from
    the positions it starts with cached (P + t - 1 in decode)."""
    past = int(sizes[dim_symbol(PAST)])
    return past - run.prompt_len + 1 if past else 0


_STEP = "decode step "  # the label prefix of a decode step other than the last


def _labelled(run: Inference, step: int, where: str) -> str:
    """A moment's label: a decode step other than the last (a sliding window's first)
    says which."""
    return f"{_STEP}{step}: {where}" if 0 < step < run.new_tokens - 1 else where


def moment_step(run: Inference, phase: Phase, where: str) -> int:
    """The step a moment of `inference_peak` belongs to, from its phase and label."""
    if phase is Phase.PREFILL:
        return 0
    if where.startswith(_STEP):
        return int(where[len(_STEP) :].split(":", 1)[0])
    return run.new_tokens - 1


def generate_moments(
    run: Inference, graph: Graph, step: int, bindings: Mapping[sp.Symbol, int], phase: Phase
) -> tuple[tuple[Term, ...], tuple[tuple[str, tuple[Term, ...]], ...]]:
    """Under transformers' generate, forward `step`'s: (the tensors generate holds during
    it, (label, every tensor of generate's) of each moment outside it: after the forward,
    and a static cache's decode mask made before the next one)."""
    during, afters = generate_step_terms(run, graph, step, bindings)
    moments = [(_labelled(run, step, where), (*during, *after)) for where, after in afters]
    if run.static_length is not None:
        # a static cache's decode mask is made before each decode forward: the prefill's
        # step makes step 1's; the last decode forward's is made in the step before it
        # (the largest such moment of the decode steps)
        ahead = 1 if phase is Phase.PREFILL else step
        if ahead < run.new_tokens and (phase is Phase.PREFILL or ahead >= 2):
            kept, _ = generate_step_terms(run, graph, ahead, bindings, with_mask=False)
            batch = graph.value(graph.outputs[0]).shape[0]
            keys, _ = static_mask_keys(run, graph)
            moments.append(
                (
                    f"before decode step {ahead}: generate's attention mask",
                    (*kept, *static_mask_moment(run, ahead, batch, keys)),
                )
            )
    return during, tuple(moments)


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
        held = cache_bytes(graph, run, before=True) + _total(cache_terms(graph))
        before = measure(held)
        beside: Poly = {}
        step = decode_step(run, sizes)
        if run.loop == "generate":
            during, outside = generate_moments(run, graph, step, bindings, phase)
            beside = measure(_total(during))
            # outside the forward: the cache after it, and generate's tensors
            cached = cache_bytes(graph, run) + _total(cache_terms(graph))
            for where, terms in outside:
                moments.append(moment(phase, where, measure(cached + _total(terms)), {}))
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
                where = _labelled(run, step, repeats.label(graph, point, reading, p))
                moments.append(moment(phase, where, activations, dict(memory["temporaries"])))
    return peak_result(moments, counts, StepOptions(), bindings)

"""The true peak of a training step: the largest memory at any moment, as a formula.

`passes.lifetimes` replays the step and records the replayed categories at every
moment; this pass adds what does not change during it (parameters, buffers, optimizer
state, and gradients when they outlive `zero_grad`), adds back the repetitions of each
repeat region the replay left out, and keeps the candidates that no other candidate
dominates for all positive sizes. The peak is their `Max`; with every size bound, the
largest candidate is the phase where the step peaks.

Knobs (`StepOptions`), as in a PyTorch training loop:
- `first_step`: AdamW creates its state lazily inside the first `step()`, so the
  forward and backward of step 1 run without optimizer state.
- `set_to_none`: `zero_grad(set_to_none=True)` (PyTorch's default) frees gradients
  before the forward; with False they stay allocated through it, and backward adds
  into them.
- `grad_accum`: K micro-batches per optimizer step; micro-batches 2..K run forward and
  backward with the gradients of the earlier ones allocated.
- `optimizer_impl`: how torch.optim runs the step (for_loop, foreach, fused), which
  sets the step's temporaries (declared per optimizer in `std/train.mspec`).

The optimizer step is one moment per parameter for `for_loop` (the temporaries of the
parameter being updated) and one moment for `foreach` (those of every parameter).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.lifetimes import PeakUnavailable, Point, Replay, replay
from memspec.passes.results import CategoryResult
from memspec.policies import IMPLEMENTATIONS
from memspec.symbolic.polys import Poly, add_into, dominates, evaluate, poly, scaled, to_expr

__all__ = [
    "CATEGORIES",
    "PeakCandidate",
    "PeakResult",
    "PeakUnavailable",
    "StepOptions",
    "peak_memory",
]

CATEGORIES = (
    "parameters",
    "gradients",
    "optimizer_state",
    "activations",
    "temporaries",
    "buffers",
)
REPLAY_LIMIT = 3  # repetitions of a repeat region the replay runs: first, middle, last


@dataclass(frozen=True, slots=True)
class StepOptions:
    first_step: bool = False
    set_to_none: bool = True
    grad_accum: int = 1
    optimizer_impl: str = "for_loop"

    def describe(self) -> str:
        step = (
            "the first step (no optimizer state before step())"
            if self.first_step
            else ("the steady state (optimizer state allocated)")
        )
        zero = (
            "zero_grad(set_to_none=True)" if self.set_to_none else ("zero_grad(set_to_none=False)")
        )
        accum = (
            f"{self.grad_accum} micro-batches per step"
            if self.grad_accum > 1
            else "no gradient accumulation"
        )
        impl = f"{self.optimizer_impl} optimizer ({IMPLEMENTATIONS[self.optimizer_impl]})"
        return f"{step}; {zero}; {accum}; {impl}"


@dataclass(frozen=True, slots=True)
class PeakCandidate:
    """Memory at one moment of the step, by category; a candidate for the peak."""

    phase: str  # "forward", "backward" or "optimizer step"
    where: str  # the op (and repetition) running, or the parameter being updated
    micro_batch: str  # "" or which micro-batches of gradient accumulation
    breakdown: tuple[tuple[str, sp.Expr], ...]  # CATEGORIES order
    bytes: sp.Expr  # their sum

    def part(self, category: str) -> sp.Expr:
        return dict(self.breakdown)[category]

    def label(self) -> str:
        text = f"{self.phase}: {self.where}" if self.where else self.phase
        return f"{text} ({self.micro_batch})" if self.micro_batch else text


@dataclass(frozen=True)
class PeakResult:
    options: StepOptions
    candidates: tuple[PeakCandidate, ...]  # none dominates another; largest-looking first
    assumptions: tuple[str, ...] = ()
    values: tuple[int, ...] | None = None  # each candidate's bytes, when every size is bound

    @property
    def bytes(self) -> sp.Expr:
        totals = [c.bytes for c in self.candidates]
        return totals[0] if len(totals) == 1 else sp.Max(*totals, evaluate=False)

    @property
    def value(self) -> int | None:
        return max(self.values) if self.values else None

    def winner(self) -> PeakCandidate | None:
        """The largest candidate, where only one remains or every size is bound."""
        if len(self.candidates) == 1:
            return self.candidates[0]
        if self.values is None:
            return None
        return self.candidates[self.values.index(max(self.values))]


@dataclass
class _Raw:
    phase: str
    where: str
    micro_batch: str
    parts: dict[str, Poly]

    def total(self) -> Poly:
        out: Poly = {}
        for p in self.parts.values():
            add_into(out, p)
        return out


def _repetitions(graph: Graph, bindings: dict) -> tuple[dict[int, int], dict[int, sp.Expr]]:
    """How many repetitions of each region to replay, and how many left-out middle
    repetitions (`count - 3`) where some are. A bound count keeps its symbol, so the
    formula stays one in `N`, unless it is below 4 (then all of them are replayed)."""
    subs = {k: sp.Integer(v) for k, v in bindings.items()}
    repetitions, extra = {}, {}
    for region in graph.regions:
        count = region.count.xreplace(subs)
        if count.is_Integer and (region.count.is_Integer or int(count) <= REPLAY_LIMIT):
            # a literal count, or a bound one too small for the formula in the symbol
            repetitions[region.id] = min(int(count), REPLAY_LIMIT)
            if int(count) > REPLAY_LIMIT:
                extra[region.id] = count - REPLAY_LIMIT
        else:
            repetitions[region.id] = REPLAY_LIMIT
            extra[region.id] = region.count - REPLAY_LIMIT
    return repetitions, extra


@dataclass(frozen=True)
class _Share:
    """What each left-out middle repetition of a region adds, its own nested left-out
    repetitions included, and the replayed repetitions of the regions around it
    (`instances`: one tuple of enclosing (region, repetition) pairs per replayed copy)."""

    region: int
    saved: Poly
    gradients: Poly
    instances: tuple[tuple[tuple[int, int], ...], ...]


def _shares(graph: Graph, rep: Replay, repetitions, extra_symbols) -> list[_Share]:
    """Per region with left-out repetitions: S(R) = replayed(R) + sum over regions D
    nested in it of (replayed copies of D in one repetition of R) * e_D * S(D)."""
    replayed = {s.region: s for s in rep.shares}
    totals: dict[int, tuple[Poly, Poly]] = {}

    def total(region_id: int) -> tuple[Poly, Poly]:
        if region_id not in totals:
            saved = dict(replayed[region_id].saved)
            grads = dict(replayed[region_id].gradients)
            for inner in graph.regions:
                chain = [r.id for r in graph.region_chain(inner.id)]
                if inner.id not in extra_symbols or region_id not in chain[:-1]:
                    continue
                between = chain[chain.index(region_id) + 1 : -1]
                copies = math.prod(repetitions[m] for m in between)
                inner_saved, inner_grads = total(inner.id)
                factor = copies * extra_symbols[inner.id]
                add_into(saved, scaled(inner_saved, factor))
                add_into(grads, scaled(inner_grads, factor))
            totals[region_id] = (saved, grads)
        return totals[region_id]

    shares = []
    for region in graph.regions:
        if region.id not in extra_symbols:
            continue
        saved, grads = total(region.id)
        e = extra_symbols[region.id]
        outer = [r.id for r in graph.region_chain(region.id)[:-1]]
        instances = tuple(
            tuple(zip(outer, index, strict=True))
            for index in itertools.product(*(range(repetitions[o]) for o in outer))
        )
        shares.append(_Share(region.id, scaled(saved, e), scaled(grads, e), instances))
    return shares


def _relation(where: dict, instance: tuple, region: int) -> object:
    """Where a point lies relative to one replayed copy of a region: "before" or "after"
    it in program order, or the repetition of it the point is in."""
    for outer, i in instance:
        at = where.get(outer)
        if at == "before" or (isinstance(at, int) and at < i):
            return "before"
        if at == "after" or (isinstance(at, int) and at > i):
            return "after"
    return where.get(region)


def _views(point: Point, shares: list[_Share]) -> list[tuple[Poly, Poly, dict]]:
    """(added saved bytes, added gradient bytes, tags) for each reading of a point: a
    point in a region's middle repetition stands for the second and the next-to-last."""
    views: list[tuple[Poly, Poly, dict]] = [({}, {}, {})]
    where = dict(point.where)
    for share in shares:
        for instance in share.instances:
            rel = _relation(where, instance, share.region)
            if point.phase == "optimizer step":
                options = [("G", None)]
            elif point.phase == "backward":
                table = {1: [("G", "low"), ("S", "high")], 2: [("S", None)], "after": [("S", None)]}
                options = table.get(rel, [("G", None)])
            else:
                table = {1: [("0", "low"), ("S", "high")], 2: [("S", None)], "after": [("S", None)]}
                options = table.get(rel, [("0", None)])
            grown = []
            for s, g, tags in views:
                for kind, tag in options:
                    s2, g2 = dict(s), dict(g)
                    if kind == "S":
                        add_into(s2, share.saved)
                    elif kind == "G":
                        add_into(g2, share.gradients)
                    grown.append((s2, g2, {**tags, share.region: tag} if tag else tags))
            views = grown
    return views


def _label(graph: Graph, point: Point, tags: dict, extra: dict) -> str:
    """The op and, inside a region, which repetition: `1`, `2`, `N - 1` or `N`."""
    parts = [point.op_path] if point.op_path else []
    for region_id, rel in point.where:
        if not isinstance(rel, int):
            continue
        region = graph.regions[region_id]
        if region_id in extra:
            middle = "2" if tags.get(region_id) == "low" else f"{region.count} - 1"
            k = {0: "1", 1: middle, 2: f"{region.count}"}[rel]
        else:
            k = str(rel + 1)
        parts.append(f"[{region.path} {k}]")
    return " ".join(parts)


def peak_memory(
    graph: Graph,
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    options: StepOptions,
    bindings: dict,
    resolve,
) -> PeakResult:
    """The step's peak; `resolve` substitutes dims' defaults (F -> 4*D) into a formula."""
    if options.optimizer_impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown optimizer implementation {options.optimizer_impl!r}")
    repetitions, extra = _repetitions(graph, bindings)
    extra_symbols = {rid: sp.Dummy(f"e{rid}", integer=True, nonnegative=True) for rid in extra}
    cache: dict[sp.Expr, Poly] = {}

    def measure(expr: sp.Expr) -> Poly:
        if expr not in cache:
            cache[expr] = poly(resolve(expr))
        return cache[expr]

    constant = {c: measure(categories[c].bytes) for c in ("parameters", "buffers")}
    state = measure(categories["optimizer_state"].bytes)
    grads_all = measure(categories["gradients"].bytes)
    # (micro-batches, whether gradients exist before their backward): a fresh model's
    # first step has none whatever zero_grad does
    kept = not options.set_to_none and not options.first_step
    runs = [("", kept)]
    if options.grad_accum > 1:
        runs = [("micro-batch 1", kept), (f"micro-batches 2..{options.grad_accum}", True)]
    raw: list[_Raw] = []
    replays: list[Replay] = []
    for micro_batch, grads_exist in runs:
        rep = replay(graph, repetitions, config.precision.grad, grads_exist, measure)
        replays.append(rep)
        shares = _shares(graph, rep, repetitions, extra_symbols)
        for point in rep.points:
            if point.phase == "optimizer step":
                continue
            memory = dict(point.memory)
            for saved, grads, tags in _views(point, shares):
                parts = {**constant, "gradients": dict(memory["gradients"])}
                if grads_exist:
                    add_into(parts["gradients"], grads_all)
                add_into(parts["gradients"], grads)
                parts["optimizer_state"] = {} if options.first_step else dict(state)
                parts["activations"] = dict(memory["activations"])
                add_into(parts["activations"], saved)
                parts["temporaries"] = dict(memory["temporaries"])
                where = _label(graph, point, tags, extra)
                raw.append(_Raw(point.phase, where, micro_batch, parts))
    raw += _step_moments(config, categories, options, replays[-1], constant, state, measure)
    counts = {extra_symbols[r]: measure(e) for r, e in extra.items()}
    candidates, totals = [], []
    for c in _prune(raw):
        parts = {k: _substitute(c.parts[k], counts) for k in CATEGORIES}
        total: Poly = {}
        for part in parts.values():
            add_into(total, part)
        totals.append(total)
        breakdown = tuple((k, to_expr(parts[k])) for k in CATEGORIES)
        candidates.append(PeakCandidate(c.phase, c.where, c.micro_batch, breakdown, to_expr(total)))
    values = [evaluate(t, dict(bindings)) for t in totals]
    bound = None if any(v is None for v in values) else tuple(int(v) for v in values)
    assumptions = tuple(
        f"{graph.regions[r].count} >= {REPLAY_LIMIT}: the peak formula replays the first, "
        f"a middle and the last repetition of {graph.regions[r].path} and counts the other "
        f"{graph.regions[r].count} - {REPLAY_LIMIT} like the middle one"
        for r, e in extra.items()
        if not e.is_Integer
    )
    return PeakResult(options, tuple(candidates), assumptions, bound)


def _substitute(p: Poly, counts: dict[sp.Dummy, Poly]) -> Poly:
    """Each left-out-repetitions symbol replaced by its count (`N - 3`)."""
    out: Poly = {}
    for monomial, coefficient in p.items():
        term: Poly = {monomial: coefficient}
        for d, count in counts.items():
            if not monomial.has(d):
                continue
            power = int(monomial.as_powers_dict()[d])
            for _ in range(power):
                term = _times(term, d, count)
        add_into(out, term)
    return out


def _times(term: Poly, dummy: sp.Dummy, count: Poly) -> Poly:
    """term / dummy * count, for a term holding the dummy."""
    out: Poly = {}
    for monomial, coefficient in term.items():
        rest = monomial / dummy
        add_into(out, {m: c * coefficient for m, c in scaled(count, rest).items()})
    return out


def _update_order(params) -> list[tuple[object, object]]:
    """(previous parameter, parameter) pairs in the order torch.optim updates them:
    module order, so each repetition of a region's parameters in turn, the last of one
    repetition followed by the first of the next."""
    pairs, previous = [], None
    i = 0
    while i < len(params):
        group = [params[i]]
        while i + len(group) < len(params) and params[i + len(group)].regions == group[0].regions:
            group.append(params[i + len(group)])
        for item in group:
            pairs.append((previous, item))
            previous = item
        if group[0].regions and len(group) > 1:
            pairs.append((group[-1], group[0]))  # into the next repetition
        i += len(group)
    return pairs


def _step_moments(config, categories, options, rep, constant, state, measure) -> list[_Raw]:
    """optimizer.step(): parameters, all gradients, state, what the step's temporaries
    add, and what is still alive of the forward (the inputs and the loss)."""
    (point,) = [p for p in rep.points if p.phase == "optimizer step"]
    memory = dict(point.memory)
    temps = config.optimizer.temps_of(options.optimizer_impl)
    params = categories["parameters"].items
    grads_all = measure(categories["gradients"].bytes)
    moments: list[tuple[str, Poly]] = []
    if temps == 0 or not params:
        moments.append(("", {}))
    elif options.optimizer_impl == "foreach":
        moments.append(
            ("every parameter at once", scaled(measure(categories["parameters"].bytes), temps))
        )
    else:
        itemsize = config.precision.state.itemsize
        seen: set = set()
        for before, item in _update_order(params):
            # `denom`, the last temporary, is a local variable of the loop: the previous
            # parameter's stays alive until this parameter's replaces it
            size = item.elements * itemsize * temps
            if before is not None:
                size += before.elements * itemsize
            size = measure(size)
            key = tuple(sorted(size.items(), key=str))
            if key not in seen:
                seen.add(key)
                moments.append((f"updating {item.path}", size))
    out = []
    for where, temp in moments:
        opt = dict(state)
        add_into(opt, temp)
        parts = {
            **constant,
            "gradients": dict(grads_all),
            "optimizer_state": opt,
            "activations": dict(memory["activations"]),
            "temporaries": dict(memory["temporaries"]),
        }
        out.append(_Raw("optimizer step", where, "", parts))
    return out


def _prune(raw: list[_Raw]) -> list[_Raw]:
    """The candidates no other one dominates, largest (at a reference size) first."""
    return [raw[i] for i in undominated([c.total() for c in raw])]


def undominated(totals: list[Poly]) -> list[int]:
    """Indices of the sums no other one dominates, largest (at a reference size) first.

    Values at a few sizes (every dim 1; every dim near 2^10; mixed) only order them and
    skip proofs that must fail: a sum smaller somewhere cannot dominate. Dominance
    itself is proved by `polys.dominates`; of equal sums the first is kept.
    """
    samples = _sample_values(totals)
    order = sorted(range(len(totals)), key=lambda i: -samples[i][0])
    kept: list[int] = []
    recent: list[int] = []  # kept ones, the latest to dominate another first
    for i in order:
        for n, j in enumerate(recent):
            if all(
                x >= y - 1e-9 * abs(y) for x, y in zip(samples[j], samples[i], strict=True)
            ) and dominates(totals[j], totals[i]):
                recent.insert(0, recent.pop(n))
                break
        else:
            kept.append(i)
            recent.append(i)
    return kept


def _sample_values(totals: list[Poly]) -> list[tuple[float, ...]]:
    """Each candidate's value at a few sizes: the first (every symbol 2^10 + its rank)
    orders them; all of them rule dominance out where it cannot hold."""
    symbols = sorted({s for t in totals for m in t for s in m.free_symbols}, key=str)
    rng = random.Random(0)  # fixed: the same spec gives the same order, byte for byte
    points = [
        {s: sp.Integer(1024 + i) for i, s in enumerate(symbols)},
        {s: sp.Integer(1) for s in symbols},
    ]
    for _ in range(30):
        points.append({s: sp.Integer(int(2 ** rng.uniform(0, 13))) for s in symbols})
    cache: dict = {}

    bases: dict = {}

    def base_values(base: sp.Expr) -> tuple[float, ...]:
        if base not in bases:
            if isinstance(base, sp.Symbol):
                bases[base] = tuple(float(pt[base]) for pt in points)
            else:  # floor(...) of sizes and the like
                bases[base] = tuple(float(base.xreplace(pt)) for pt in points)
        return bases[base]

    def monomial_values(monomial: sp.Expr) -> tuple[float, ...]:
        if monomial not in cache:
            values = [1.0] * len(points)
            for base, exponent in monomial.as_powers_dict().items():
                if base == 1:
                    continue
                power = float(exponent)
                for k, v in enumerate(base_values(base)):
                    if v:
                        values[k] *= v**power
                    elif power > 0:  # a floor(...) that is 0 at a sample size
                        values[k] = 0.0
                    elif power < 0:
                        values[k] = math.inf
            cache[monomial] = tuple(values)
        return cache[monomial]

    def value(p: Poly) -> tuple[float, ...]:
        out = [0.0] * len(points)
        for monomial, coefficient in p.items():
            c = float(coefficient)
            for k, v in enumerate(monomial_values(monomial)):
                out[k] += c * v
        return tuple(out)

    return [value(t) for t in totals]

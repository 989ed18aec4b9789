"""The repetitions of repeat regions the replay leaves out, added back at every moment.

The replay runs a region's first, a middle and its last repetition (`REPLAY_LIMIT`).
Memory at a moment of repetition k is affine in k: each left-out middle repetition
before the moment (in the step's order) holds what it saved; after it, in backward, the
parameter gradients it left (and what the loop's outputs object holds of it). So each
moment is read once per way its replayed middle repetition can stand for a real one
(the second, or the next-to-last), with the left-out repetitions' share added as the
moment's position says. Nested regions: a region's share includes its nested regions'
left-out repetitions, per replayed copy.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.sizes import note_relation
from memspec.passes.peak.moments import Phase, Point, Position, Side
from memspec.passes.peak.replay import PeakUnavailable, Replay
from memspec.symbolic.polys import Poly, add_into, scaled

__all__ = ["REPLAY_LIMIT", "Plan", "Reading", "Share", "label", "plan", "readings", "shares"]

REPLAY_LIMIT = 3  # repetitions of a repeat region the replay runs: first, middle, last
# The most op applications and repetitions one replay runs: nested repeats multiply them
# (3^depth), and the moments' readings grow with their product; six nested repeats (1,092
# repetitions) take 3 s, seven (3,279) 25 s, so past these the peak is refused
MAX_REPLAYED_OPS = 20_000
MAX_REPLAYED_LOOPS = 1_500


class Adds(enum.Enum):
    """What a region's left-out repetitions hold at a moment."""

    NOTHING = "nothing"  # the moment is before them: they have not run
    SAVED = "saved"  # their forward is done, their backward is not
    GRADIENTS = "gradients"  # their backward is done: their parameter gradients


class Middle(enum.Enum):
    """Which real repetition the replayed middle one stands for, at a moment inside it."""

    SECOND = "second"
    NEXT_TO_LAST = "next to last"


@dataclass(frozen=True)
class Plan:
    """How many repetitions of each region to replay, and for the regions with more, a
    symbol for how many are left out (`extra`, standing for `counts`)."""

    repetitions: Mapping[int, int]
    extra: Mapping[int, sp.Dummy]
    counts: Mapping[int, sp.Expr]  # region -> count - REPLAY_LIMIT


def plan(graph: Graph, bindings: Mapping[sp.Symbol, int]) -> Plan:
    """A bound count keeps its symbol, so the formula stays one in `N`, unless it is
    below 4 (then all of them are replayed)."""
    subs = {k: sp.Integer(v) for k, v in bindings.items()}
    repetitions, counts = {}, {}
    for region in graph.regions:
        count = region.count.xreplace(subs)
        if count.is_Integer and (region.count.is_Integer or int(count) <= REPLAY_LIMIT):
            # a literal count, or a bound one too small for the formula in the symbol
            repetitions[region.id] = min(int(count), REPLAY_LIMIT)
            if int(count) > REPLAY_LIMIT:
                counts[region.id] = count - REPLAY_LIMIT
        else:
            repetitions[region.id] = REPLAY_LIMIT
            counts[region.id] = region.count - REPLAY_LIMIT
            note_relation(sp.Ge, count, REPLAY_LIMIT)

    def copies(region_id: int | None) -> int:
        return math.prod(repetitions[r.id] for r in graph.region_chain(region_id))

    ops = sum(copies(op.region) for op in graph.ops)
    loops = sum(copies(r.id) for r in graph.regions)
    if ops > MAX_REPLAYED_OPS or loops > MAX_REPLAYED_LOOPS:
        depth = max((len(graph.region_chain(r.id)) for r in graph.regions), default=0)
        raise PeakUnavailable(
            f"the true peak would replay {ops:,} ops in {loops:,} repetitions ({depth} "
            f"repeats nested, up to {REPLAY_LIMIT} repetitions of each), more than the "
            f"{MAX_REPLAYED_OPS:,} ops or {MAX_REPLAYED_LOOPS:,} repetitions it replays; "
            "the categories are exact, the peak is not computed"
        )
    extra = {rid: sp.Dummy(f"e{rid}", integer=True, nonnegative=True) for rid in counts}
    return Plan(repetitions, extra, counts)


@dataclass(frozen=True)
class Share:
    """What the left-out middle repetitions of a region add, their own nested left-out
    repetitions included, for each replayed copy of the regions around it (`instances`:
    one tuple of enclosing (region, repetition) pairs per copy)."""

    region: int
    saved: Poly
    gradients: Poly
    kept: Poly  # the part of `saved` still held after its backward (`keep_outputs`)
    instances: tuple[tuple[tuple[int, int], ...], ...]
    cached: Poly  # autocast's unsaved parameter copies, alive until the forward ends


def shares(graph: Graph, rep: Replay, p: Plan) -> list[Share]:
    """Per region with left-out repetitions: S(R) = replayed(R) + sum over regions D
    nested in it of (replayed copies of D in one repetition of R) * e_D * S(D)."""
    replayed = {s.region: s for s in rep.shares}
    totals: dict[int, tuple[Poly, Poly, Poly, Poly]] = {}

    def total(region_id: int) -> tuple[Poly, Poly, Poly, Poly]:
        if region_id not in totals:
            saved = dict(replayed[region_id].saved)
            grads = dict(replayed[region_id].gradients)
            kept = dict(replayed[region_id].kept)
            cached = dict(replayed[region_id].cached)
            for inner in graph.regions:
                chain = [r.id for r in graph.region_chain(inner.id)]
                if inner.id not in p.extra or region_id not in chain[:-1]:
                    continue
                between = chain[chain.index(region_id) + 1 : -1]
                copies = math.prod(p.repetitions[m] for m in between)
                factor = copies * p.extra[inner.id]
                for mine, theirs in zip((saved, grads, kept, cached), total(inner.id), strict=True):
                    add_into(mine, scaled(theirs, factor))
            totals[region_id] = (saved, grads, kept, cached)
        return totals[region_id]

    out = []
    for region in graph.regions:
        if region.id not in p.extra:
            continue
        saved, grads, kept, cached = total(region.id)
        e = p.extra[region.id]
        outer = [r.id for r in graph.region_chain(region.id)[:-1]]
        instances = tuple(
            tuple(zip(outer, index, strict=True))
            for index in itertools.product(*(range(p.repetitions[o]) for o in outer))
        )
        out.append(
            Share(
                region.id,
                scaled(saved, e),
                scaled(grads, e),
                scaled(kept, e),
                instances,
                scaled(cached, e),
            )
        )
    return out


def _relation(where: dict[int, Position], instance: tuple, region: int) -> Position:
    """Where a point lies relative to one replayed copy of a region: before or after it
    in program order, or the repetition of it the point is in."""
    for outer, i in instance:
        at = where.get(outer)
        if at is Side.BEFORE or (isinstance(at, int) and at < i):
            return Side.BEFORE
        if at is Side.AFTER or (isinstance(at, int) and at > i):
            return Side.AFTER
    return where[region]


# (what the left-out repetitions add, which one the middle stands for) by the moment's
# phase and position relative to the region; a position not listed reads as `OTHERWISE`
_OPTIONS: dict[Phase, dict[Position, list[tuple[Adds, Middle | None]]]] = {
    Phase.FORWARD: {
        1: [(Adds.NOTHING, Middle.SECOND), (Adds.SAVED, Middle.NEXT_TO_LAST)],
        2: [(Adds.SAVED, None)],
        Side.AFTER: [(Adds.SAVED, None)],
    },
    Phase.BACKWARD: {
        1: [(Adds.GRADIENTS, Middle.SECOND), (Adds.SAVED, Middle.NEXT_TO_LAST)],
        2: [(Adds.SAVED, None)],
        Side.AFTER: [(Adds.SAVED, None)],
    },
    Phase.OPTIMIZER_STEP: {},
}
_OTHERWISE = {
    Phase.FORWARD: [(Adds.NOTHING, None)],
    Phase.BACKWARD: [(Adds.GRADIENTS, None)],
    Phase.OPTIMIZER_STEP: [(Adds.GRADIENTS, None)],
}


@dataclass(frozen=True)
class Reading:
    """A point read with left-out repetitions added: the activation bytes they add
    (what they saved, or after their backward what the loop's outputs hold) and the
    gradient bytes, and which real repetition each region's replayed middle one stands
    for."""

    saved: Poly
    gradients: Poly
    middles: tuple[tuple[int, Middle], ...]


def readings(point: Point, region_shares: list[Share]) -> list[Reading]:
    """Each way to read a point: a point in a region's middle repetition stands for the
    second and the next-to-last."""
    views: list[Reading] = [Reading({}, {}, ())]
    where = dict(point.where)
    for share in region_shares:
        for instance in share.instances:
            rel = _relation(where, instance, share.region)
            options = _OPTIONS[point.phase].get(rel, _OTHERWISE[point.phase])
            grown = []
            for view in views:
                for adds, middle in options:
                    saved, grads = dict(view.saved), dict(view.gradients)
                    if adds is Adds.SAVED:
                        add_into(saved, share.saved)
                        if point.phase is Phase.FORWARD:  # autocast's cache, until it exits
                            add_into(saved, share.cached)
                    elif adds is Adds.GRADIENTS:
                        add_into(grads, share.gradients)
                        add_into(saved, share.kept)
                    middles = view.middles
                    if middle is not None:
                        middles = tuple({**dict(middles), share.region: middle}.items())
                    grown.append(Reading(saved, grads, middles))
            views = grown
    return views


def label(graph: Graph, point: Point, reading: Reading, p: Plan) -> str:
    """The op and, inside a region, which repetition: `1`, `2`, `N - 1` or `N`."""
    parts = [point.op_path] if point.op_path else []
    middles = dict(reading.middles)
    for region_id, rel in point.where:
        if not isinstance(rel, int):
            continue
        region = graph.regions[region_id]
        if region_id in p.extra:
            middle = "2" if middles.get(region_id) is Middle.SECOND else f"{region.count} - 1"
            k = {0: "1", 1: middle, 2: f"{region.count}"}[rel]
        else:
            k = str(rel + 1)
        parts.append(f"[{region.path} {k}]")
    return " ".join(parts)

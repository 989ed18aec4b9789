"""FSDP2's gathers and reductions in one rank's step, as events of the replay (torch
2.13; `docs/runtimes/fsdp2.md` has the timeline this follows).

Each repetition of the top-level repeat is a unit (`fully_shard` on it), the root holds
every other parameter (`fully_shard` on the model, torch's default
`reshard_after_forward=None`: gathered from its forward to its post-backward). A unit's
gather is an all-gather output of G = DP x (its padded shard) elements, copied out into
its unsharded parameters (as many): the previous unit's output lives until that copy is
done. In backward each unit is gathered again, the one before it prefetched; its
post-backward frees its parameters, then the previous unit's reduce-scatter input,
copies its gradients into a new one (G elements) and frees them (all but the last,
which a loop variable holds until the reduce-scatter's output, its sharded gradient,
exists). The root's post-backward runs in the final callback. With
reshard_after_forward=False (--zero 2) a unit stays gathered from its forward to its
post-backward and backward gathers nothing. Under bf16 mixed precision each all-gather
sends a bf16 copy of the float32 shards; gradients are reduced in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.types import DType, Role, numel
from memspec.passes.peak.ledger import Ledger
from memspec.passes.peak.moments import Phase
from memspec.symbolic.polys import Poly

__all__ = ["FsdpPlan", "FsdpRun", "fsdp_plan"]

_GATHERED = "temporaries"  # all-gather and reduce-scatter buffers, gathered parameters


@dataclass(frozen=True)
class FsdpPlan:
    """The sizes FSDP2's events allocate, per rank: a unit's and the root's gathered
    parameters (`unit`, `root`: the all-gather output is as big), reduce-scatter inputs
    (`reduce_*`) and outputs, the sharded gradients (`sharded_*`), and the parameters
    whose gradient outlives the copy into the reduce-scatter input."""

    region: int
    unit: Poly
    root: Poly
    reduce_unit: Poly
    reduce_root: Poly
    sharded_unit: Poly
    sharded_root: Poly
    unit_params: frozenset[int]
    root_params: frozenset[int]
    last_unit: int | None
    last_root: int | None
    # mixed precision: the flat bfloat16 copy of a unit's (the root's) float32 shards that
    # each all-gather sends, alive until the gather is issued; none without
    cast_unit: Poly = field(default_factory=dict)
    cast_root: Poly = field(default_factory=dict)
    reshard: bool = True  # reshard_after_forward on the units


def fsdp_plan(
    graph: Graph,
    degree: sp.Symbol,
    measure: Callable[[sp.Expr], Poly],
    master: DType | None = None,
    reshard: bool = True,
) -> FsdpPlan:
    """The plan of a graph whose one top-level repeat's repetitions are the units. The
    graph's parameters are in the compute dtype; with a `master` dtype (mixed precision)
    the shards, the reduce-scatters and the sharded gradients are in it."""
    (top,) = graph.top_regions()
    unit = root = sp.Integer(0)  # padded shard elements x the compute dtype's bytes
    unit_kept = root_kept = sp.Integer(0)  # ... x the shards' dtype's bytes
    units, roots = [], []
    for v in graph.values:
        if v.role is not Role.PARAMETER:
            continue
        chain = graph.region_chain(v.region)
        first, *rest = v.shape or (sp.Integer(1),)
        shard = sp.ceiling(first / degree) * numel(tuple(rest))
        kept = shard * (master or v.dtype).itemsize
        shard *= v.dtype.itemsize
        if chain:
            copies = sp.Mul(*(r.count for r in chain[1:]))
            unit += shard * copies
            unit_kept += kept * copies
            units.append(v)
        else:
            root += shard
            root_kept += kept
            roots.append(v)
    trained_units = [v.id for v in units if v.requires_grad]
    trained_roots = [v.id for v in roots if v.requires_grad]
    return FsdpPlan(
        top.id,
        measure(degree * unit),
        measure(degree * root),
        measure(degree * unit_kept),
        measure(degree * root_kept),
        measure(unit_kept),
        measure(root_kept),
        frozenset(v.id for v in units),
        frozenset(v.id for v in roots),
        trained_units[-1] if trained_units else None,
        trained_roots[-1] if trained_roots else None,
        measure(unit) if master else {},
        measure(root) if master else {},
        reshard,
    )


@dataclass
class FsdpRun:
    """The blocks FSDP2 holds as the replay runs; `sharded` the reduce-scatter outputs
    made (the sharded gradients, which a finished repetition leaves)."""

    plan: FsdpPlan
    ledger: Ledger
    # reshard_after_forward=False (--zero 2): each unit's parameters stay gathered from
    # its forward to its post-backward, held for backward like what autograd saves
    keep: bool = False
    gathered_root: int | None = None
    gathered: int | None = None  # the running unit's parameters
    kept: dict[int, int] = field(default_factory=dict)  # repetition -> its parameters
    gather_output: int | None = None  # the last all-gather output not yet freed
    reduce_input: int | None = None  # the last reduce-scatter input not yet freed
    sharded: list[int] = field(default_factory=list)

    def _alloc(self, size: Poly, born=()) -> int:
        return self.ledger.alloc(size, _GATHERED, born)

    # -- forward ---------------------------------------------------------------------
    def _gather(self, size: Poly, cast: Poly, phase: Phase, where, path: str) -> int:
        """An all-gather's output; under mixed precision the bfloat16 copy of the shards
        it sends exists beside it until the gather is issued."""
        sent = self._alloc(cast) if cast else None
        output = self._alloc(size)
        if sent is not None:
            self.ledger.mark(phase, f"fsdp: all-gather {path}", where)
            self.ledger.unref(sent)
        return output

    def root_forward(self, where) -> None:
        plan = self.plan
        self.gather_output = self._gather(plan.root, plan.cast_root, Phase.FORWARD, where, "root")
        self.gathered_root = self._alloc(self.plan.root)
        self.ledger.mark(Phase.FORWARD, "fsdp: all-gather root", where)

    def unit_forward(self, where, path: str) -> None:
        """Post-forward of the unit before (its parameters freed), pre-forward of this:
        its all-gather and copy-out, then the previous all-gather output freed."""
        if not self.keep:
            self.ledger.unref(self.gathered)
        output = self._gather(self.plan.unit, self.plan.cast_unit, Phase.FORWARD, where, path)
        if self.keep:
            repetition = dict(where)[self.plan.region]
            born = ((self.plan.region, repetition),)
            self.gathered = self.ledger.alloc(self.plan.unit, "activations", born)
            self.kept[repetition] = self.gathered
        else:
            self.gathered = self._alloc(self.plan.unit)
        self.ledger.mark(Phase.FORWARD, f"fsdp: all-gather {path}", where)
        self.ledger.unref(self.gather_output)
        self.gather_output = output

    def units_done(self) -> None:
        if not self.keep:
            self.ledger.unref(self.gathered)
        self.gathered = None

    def root_forward_done(self) -> None:
        """The root's post-forward frees the last unit's all-gather output."""
        self.ledger.unref(self.gather_output)
        self.gather_output = None

    # -- backward --------------------------------------------------------------------
    def prefetch(self, where) -> None:
        if self.keep:  # the unit is gathered still: unshard() has nothing to do
            return
        plan = self.plan
        self.gather_output = self._gather(
            plan.unit, plan.cast_unit, Phase.BACKWARD, where, "(prefetch)"
        )
        self.ledger.mark(Phase.BACKWARD, "fsdp: prefetch all-gather", where)

    def unit_backward(self, first: bool, where, path: str) -> None:
        """Pre-backward: the copy-out of the prefetched output, which is freed, and the
        prefetch of the unit before (none before the first); nothing where the units
        stay gathered."""
        if self.keep:
            return
        self.gathered = self._alloc(self.plan.unit)
        self.ledger.mark(Phase.BACKWARD, f"fsdp: gather {path}", where)
        self.ledger.unref(self.gather_output)
        self.gather_output = None
        if not first:
            self.prefetch(where)

    def reduce(
        self, grads: list[int], last: int | None, size: Poly, sharded: Poly, born, where, path
    ) -> None:
        """Post-backward: parameters freed, the previous reduce-scatter input freed, the
        gradients copied into a new one and freed but the last, the output made."""
        ledger = self.ledger
        if born and self.keep:
            ledger.unref(self.kept.pop(born[0][1]))
        else:
            ledger.unref(self.gathered)
        self.gathered = None
        ledger.unref(self.reduce_input)
        self.reduce_input = self._alloc(size)
        ledger.mark(Phase.BACKWARD, f"fsdp: reduce-scatter {path}", where)
        for bid in grads:
            if bid != last:
                ledger.unref(bid)
        output = ledger.alloc(sharded, "gradients", born)
        self.sharded.append(output)
        ledger.mark(Phase.BACKWARD, f"fsdp: reduce-scatter {path}", where)
        ledger.unref(last)

    def root_backward(self, param_grads: dict, where) -> None:
        """The final callback: the root's post-backward, then its reduce-scatter input."""
        plan = self.plan
        grads, last = _take(param_grads, plan.root_params, None, plan.last_root)
        self.gathered = self.gathered_root
        self.reduce(grads, last, plan.reduce_root, plan.sharded_root, (), where, "root")
        self.ledger.unref(self.reduce_input)
        self.reduce_input = None

    def moves(self, graph: Graph, param_grads: dict, position, where, now) -> tuple:
        """Backward moves from `where` (in unit `position`) to `now`: the post-backward of
        the unit left, the pre-backward of the one entered; the position and where now."""
        plan = self.plan
        region = graph.regions[plan.region]
        entered = dict(now)[region.id]
        if entered == position:
            return position, now
        if isinstance(position, int):
            grads, last = _take(param_grads, plan.unit_params, position, plan.last_unit)
            born = ((region.id, position),)
            label = f"[{region.path} {position + 1}]"
            self.reduce(grads, last, plan.reduce_unit, plan.sharded_unit, born, where, label)
        if isinstance(entered, int):
            self.unit_backward(entered == 0, now, f"[{region.path} {entered + 1}]")
        return entered, now


def _take(param_grads: dict, params: frozenset[int], repetition: int | None, last_param):
    """The `.grad` blocks of these parameters (of one unit), taken out of `param_grads`
    (keys `("param", value id, repetition indices)`), and the last parameter's (its last
    copy's)."""
    keys = [
        k for k in param_grads if k[1] in params and (repetition is None or k[2][0] == repetition)
    ]
    last_keys = sorted(k for k in keys if k[1] == last_param)
    last = param_grads[last_keys[-1]] if last_keys else None
    return [param_grads.pop(k) for k in keys], last

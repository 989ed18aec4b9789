"""Lifetimes: one training step replayed tensor by tensor, for the true peak.

The step is PyTorch's: forward (`passes.peak.forward`, the step interpreter read as
memory, on the lowering's own schedule), loss, backward (`passes.peak.backward`),
`optimizer.step()`. Memory is recorded at every op, after its allocations and before
its frees: the only moments it can peak.

Only what changes during the step is replayed: activations (every tensor made in the
forward, inputs included), temporaries (gradients of activations, made in backward)
and, when `zero_grad(set_to_none=True)` has freed them, parameter gradients.
Parameters, buffers and optimizer state are added by the peak pass.

A repeat region is replayed `min(count, 3)` times: its first, a middle and its last
repetition (a nested region so within each replayed repetition of the outer one). The
repetitions left out are added back at each point by `passes.peak.repeats`, which is
exact because memory at a point of repetition k is affine in k: a repetition before the
point holds what it saved, one after it holds its parameter gradients (`RegionShare`).

Op-internal workspace (buffers a kernel allocates and frees within one op) is modelled
where an op's rules give its size (`OpDef.workspace`: a collective's staging copy), and
not otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.schedule import schedule
from memspec.ir.types import DType
from memspec.passes.peak.backward import BackwardReplay
from memspec.passes.peak.forward import ForwardReplay
from memspec.passes.peak.fsdp import FsdpPlan, FsdpRun
from memspec.passes.peak.ledger import Block, Born, Ledger
from memspec.passes.peak.moments import Phase, Point, Side
from memspec.symbolic.polys import Poly, add_into, poly

__all__ = ["SCALE_MOMENT", "PeakUnavailable", "RegionShare", "Replay", "replay", "shares_of"]

SCALE_MOMENT = "scaler.scale(loss)"


class PeakUnavailable(Exception):
    """The spec has a structure the lifetime replay does not model."""


@dataclass(frozen=True, slots=True)
class RegionShare:
    """What one middle repetition of a region adds at a point it is far from.

    `saved`: bytes it keeps from its forward until its backward (what it saved);
    `gradients`: parameter-gradient bytes it leaves once its backward is done; `kept`:
    the part of `saved` the loop's outputs object still holds then (`keep_outputs`);
    `cached`: autocast's parameter copies no op saved, held only until the forward ends.
    All as replayed: a nested region's left-out repetitions are not in them.
    """

    region: int
    saved: Poly
    gradients: Poly
    kept: Poly
    cached: Poly = field(default_factory=dict)


@dataclass(frozen=True)
class Replay:
    """`beyond`: (where born, bytes) of each parameter `.grad` that is a view of a larger
    gradient, beyond the parameter's own size: held from its backward until zero_grad
    sets it to None, or for good when gradients are zeroed in place."""

    points: tuple[Point, ...]
    shares: tuple[RegionShare, ...]
    beyond: tuple[tuple[Born, Poly], ...] = ()


def replay(
    graph: Graph,
    repetitions: Mapping[int, int],
    grad_dtype: Callable[[DType], DType],
    grads_exist: bool,
    measure: Callable[[sp.Expr], Poly] = poly,
    sums_in_place: bool = True,
    keep_outputs: bool = False,
    checkpointed: frozenset[int] = frozenset(),
    segments: frozenset[int] = frozenset(),
    sac: frozenset[int] = frozenset(),
    scaled_loss: int = 0,
    fsdp: FsdpPlan | None = None,
) -> Replay:
    """Replay forward and backward; `repetitions[region]` is how many times to run each,
    `measure` turns a byte count into a `Poly` (substituting dims' defaults).

    `grads_exist`: parameter gradients exist before backward (zero_grad without
    set_to_none, or a later micro-batch of gradient accumulation); backward then adds
    into them, and they are counted by the caller, not here. `sums_in_place`: autograd
    adds a second gradient into the first in place where it can (False: never, as under
    a TorchDispatchMode such as PyTorch's memory tracker). `keep_outputs`: the loop
    holds what the model returns beside the loss until the step ends. Each repetition
    of a region in `checkpointed` is a checkpoint, recomputed in backward, and so is
    each run of consecutive ops in `segments` (selective recomputation). `scaled_loss`:
    the bytes of a loss scaler's `scale(loss)`, which backward starts from (0: none).
    `fsdp`: a rank's step under FSDP2, its gathers and reductions (`passes.peak.fsdp`).
    """
    ledger = Ledger()
    forward = ForwardReplay(
        graph,
        ledger,
        repetitions,
        measure,
        PeakUnavailable,
        keep_outputs,
        checkpointed,
        schedule(graph, segments) if segments else None,
        sac,
    )
    if fsdp is not None:
        forward.fsdp = FsdpRun(fsdp, ledger, keep=not fsdp.reshard)
    loss = forward.step()
    alive = [b for b in ledger.blocks.values() if b.category == "activations"]
    after = tuple((r.id, Side.AFTER) for r in graph.regions)
    scaled = None
    if scaled_loss:
        # `scaler.scale(loss).backward()`: the product lives until backward returns
        scaled = ledger.alloc(measure(sp.Integer(scaled_loss)), "activations", ())
        ledger.mark(Phase.FORWARD, SCALE_MOMENT, after)
    backward = BackwardReplay(forward, grad_dtype, grads_exist, sums_in_place)
    backward.run(loss, scaled is not None)
    ledger.unref(scaled)
    ledger.mark(Phase.OPTIMIZER_STEP, "", after)
    made = forward.fsdp.sharded if forward.fsdp is not None else backward.param_grads.values()
    grads = [ledger.blocks[bid] for bid in made]
    shares = shares_of(graph, repetitions, forward, alive, grads)
    return Replay(tuple(ledger.points), shares, tuple(backward.beyond))


def shares_of(
    graph: Graph,
    repetitions: Mapping[int, int],
    forward: ForwardReplay,
    alive: list[Block],
    grads: list[Block],
) -> tuple[RegionShare, ...]:
    """What one middle repetition of each region replayed three times or more adds at
    a point it is far from; `alive`: the activations alive when the forward returned."""
    kept = [forward.ledger.blocks[bid] for bid in dict.fromkeys(forward.kept)]
    return tuple(
        share_of(graph, region.id, alive, grads, kept, forward.released)
        for region in graph.regions
        if repetitions[region.id] >= 3
    )


def share_of(
    graph: Graph,
    region: int,
    alive: list[Block],
    grads: list[Block],
    kept: list[Block],
    released: list[Block],
) -> RegionShare:
    """One middle repetition, inside the middle repetition of each enclosing region."""
    path = tuple((c.id, 1) for c in graph.region_chain(region))

    def born_there(blocks: list[Block]) -> Poly:
        total: Poly = {}
        for block in blocks:
            if block.born[: len(path)] == path:
                add_into(total, block.size)
        return total

    return RegionShare(
        region, born_there(alive), born_there(grads), born_there(kept), born_there(released)
    )

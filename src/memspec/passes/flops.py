"""FLOPs of one training step's matrix products: forward, backward, by op.

Each primitive's FLOP rule counts its products at 2 FLOPs per multiply-add (`linear`,
`matmul`, `einsum`, `conv2d`, fused attention); elementwise work is not counted, as in
the 6 * parameters * tokens rule and torch's FlopCounterMode. The optimizer's step is
counted apart: its elementwise FLOPs per parameter element are declared with the
optimizer (`flops 14 per element` for AdamW in `std/train.mspec`). Backward FLOPs are
the op's rule too (`OpDef.backward_flops_of`): by default one product of the forward's
size per operand that needs a gradient (two for a hidden linear, one for a linear whose
input is data). With recomputation, the forward FLOPs of the ops backward runs again
are counted apart (`recompute`), as MFU tables need both totals.

Example: `y = linear(x, W)` with x [B, D] from the data and W [F, D] inside `repeat N`:
forward 2*B*D*F, backward 2*B*D*F (only W's gradient), N copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.ops import lookup
from memspec.passes.results import Regions, regions_of
from memspec.recompute import recomputed_ops

__all__ = ["FlopItem", "FlopsResult", "count_flops"]


@dataclass(frozen=True, slots=True)
class FlopItem:
    path: str
    op: str
    forward: sp.Expr  # one copy
    backward: sp.Expr  # one copy
    regions: Regions = ()
    recomputed: bool = False  # its forward runs again in backward (a checkpoint's)

    @property
    def multiplicity(self) -> sp.Expr:
        return reduce(sp.Mul, (count for _, count in self.regions), sp.Integer(1))


@dataclass(frozen=True)
class FlopsResult:
    items: tuple[FlopItem, ...]
    # the optimizer's step: `per_element` FLOPs on each of `parameters` elements
    per_element: int | None = None
    parameters: sp.Expr = sp.Integer(0)

    @property
    def optimizer(self) -> sp.Expr:
        return sp.expand((self.per_element or 0) * self.parameters)

    @property
    def step(self) -> sp.Expr:
        """Forward, backward and the optimizer's step."""
        return sp.expand(self.total + self.optimizer)

    def _total(self, part: str) -> sp.Expr:
        return sp.expand(sp.Add(*(getattr(i, part) * i.multiplicity for i in self.items)))

    @property
    def forward(self) -> sp.Expr:
        return self._total("forward")

    @property
    def backward(self) -> sp.Expr:
        return self._total("backward")

    @property
    def total(self) -> sp.Expr:
        return sp.expand(self.forward + self.backward)

    @property
    def recompute(self) -> sp.Expr:
        """The forward FLOPs backward runs again (checkpoints' recomputation)."""
        return sp.expand(sp.Add(*(i.forward * i.multiplicity for i in self.items if i.recomputed)))

    @property
    def with_recompute(self) -> sp.Expr:
        """Forward, backward and the recomputation: what the hardware runs (the FLOPs
        of hardware FLOPs utilization; model FLOPs utilization counts `total`)."""
        return sp.expand(self.total + self.recompute)

    def structured(self) -> sp.Expr:
        """Forward plus backward, with each repeat region's subtotal times its count."""
        groups: dict[Regions, list[sp.Expr]] = {}
        for item in self.items:  # summed at once: adding one by one is quadratic in sympy
            groups.setdefault(item.regions, []).append(sp.expand(item.forward + item.backward))
        return sp.Add(
            *(
                reduce(sp.Mul, (c for _, c in regions), sp.Integer(1)) * sp.Add(*terms)
                for regions, terms in groups.items()
            )
        )


def count_flops(graph: Graph, config: TrainConfig, parameters: sp.Expr = sp.S.Zero) -> FlopsResult:
    """One item per op that multiplies matrices, in execution order; and the optimizer's
    step on `parameters` elements, at its declared FLOPs per element."""
    again = recomputed_ops(graph, config.recompute)
    items = []
    for op in graph.ops:
        opdef = lookup(op.op)
        if opdef.flops is None:
            continue
        items.append(
            FlopItem(
                op.path,
                op.op,
                opdef.flops(op, graph),
                opdef.backward_flops_of(op, graph),
                regions_of(graph, op.region),
                op.id in again,
            )
        )
    return FlopsResult(tuple(items), config.optimizer.flops_per_element, parameters)

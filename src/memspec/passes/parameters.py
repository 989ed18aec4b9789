"""Trainable parameters, each counted once however often it is used (tied weights).

Example: `layer Lin(i, o) { param weight: [o, i] ... }` instantiated as
`layers = repeat N of Lin(D, D)` yields one item `layers.weight`, shape [D, D],
multiplicity N: N*D**2 elements.
"""

from __future__ import annotations

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.ir.types import Role
from memspec.passes.results import CategoryResult, LineItem, regions_of

__all__ = ["FROZEN", "count_parameters", "trainable", "trained_items"]

# The note of a frozen parameter's line item (`param table: [P, D] frozen`).
FROZEN = "frozen: requires_grad=False, no gradient, no optimizer state"


def trainable(graph: Graph) -> list:
    """The parameters the optimizer updates: a frozen one has no gradient."""
    return [v for v in graph.values if v.role is Role.PARAMETER and v.requires_grad]


def trained_items(items: tuple[LineItem, ...]) -> tuple[LineItem, ...]:
    """The parameters category's items less the frozen ones (what optimizer.step visits)."""
    return tuple(i for i in items if i.note != FROZEN)


def count_parameters(graph: Graph, config: TrainConfig) -> CategoryResult:
    """One item per parameter, frozen ones too (torch's `model.parameters()` holds
    them), in the parameter dtype of the precision policy."""
    items = tuple(
        LineItem(
            v.path,
            v.shape,
            v.dtype,
            regions_of(graph, v.region),
            "" if v.requires_grad else FROZEN,
            span=v.span,
        )
        for v in graph.values
        if v.role is Role.PARAMETER
    )
    return CategoryResult(
        "parameters", items, "Trainable weights, each counted once however often it is used"
    )

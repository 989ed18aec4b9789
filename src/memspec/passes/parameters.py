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

__all__ = ["count_parameters", "trainable"]


def trainable(graph: Graph) -> list:
    return [v for v in graph.values if v.role is Role.PARAMETER]


def count_parameters(graph: Graph, config: TrainConfig) -> CategoryResult:
    """One item per parameter, in the parameter dtype of the precision policy."""
    items = tuple(
        LineItem(v.path, v.shape, v.dtype, regions_of(graph, v.region), span=v.span)
        for v in trainable(graph)
    )
    return CategoryResult(
        "parameters", items, "Trainable weights, each counted once however often it is used"
    )

"""Active parameters: those one token's forward pass uses, for mixtures of experts.

Parameters inside an expert bank (a region run by `route`, with `active = k` of its `count
= E` repetitions per token) count k times instead of E times; every other parameter
counts as in `count_parameters`. Not a memory category (all E experts are stored, with
their gradients and optimizer state): a quantity a spec may `expect`, like published
"active parameter" counts.

Example: `experts = repeat E of Lin(D, D)` routed with top-k yields one item
`experts.weight`, shape [D, D], multiplicity k: k*D**2 elements.

Experts stored as one 3-D parameter [E, ...] (transformers 5.x) are read by `grouped_mm`,
whose `top_k` says how many of the E a token uses: such a parameter counts k/E of its
elements.
"""

from __future__ import annotations

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.parameters import trainable
from memspec.passes.results import CategoryResult, LineItem, Regions

__all__ = ["count_active_parameters", "has_experts"]


def _grouped_fractions(graph: Graph) -> dict[int, sp.Expr]:
    """k/E of each 3-D expert parameter that a `grouped_mm` reads as its weight."""
    fractions: dict[int, sp.Expr] = {}
    for op in graph.ops:
        if op.op == "grouped_mm":
            weight = graph.value(op.inputs[1])
            fractions[weight.storage] = op.attr("top_k") / weight.shape[0]
    return fractions


def has_experts(graph: Graph) -> bool:
    """Whether active parameters differ from the parameters: an expert bank or 3-D experts."""
    return any(r.active is not None for r in graph.regions) or bool(_grouped_fractions(graph))


def _active_regions(graph: Graph, region_id: int | None) -> Regions:
    """(path, count) of each enclosing region, with an expert bank's count set to its k."""
    return tuple(
        (r.path, r.count if r.active is None else r.active) for r in graph.region_chain(region_id)
    )


def count_active_parameters(graph: Graph, config: TrainConfig | None = None) -> CategoryResult:
    """One item per parameter, experts counted k of E times."""
    fractions = _grouped_fractions(graph)
    items = tuple(
        LineItem(
            v.path,
            v.shape,
            v.dtype,
            _active_regions(graph, v.region),
            extra=fractions.get(v.id, sp.Integer(1)),
            span=v.span,
        )
        for v in trainable(graph)
    )
    return CategoryResult(
        "active_parameters", items, "Parameters one token uses: k of each bank's E experts"
    )

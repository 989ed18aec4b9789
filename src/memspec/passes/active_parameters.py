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
from memspec.ir.types import Role, numel
from memspec.passes.parameters import model_elements
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


def count_active_parameters(
    graph: Graph, config: TrainConfig | None = None, model_only: bool = False
) -> CategoryResult:
    """One item per parameter, frozen ones too (a model's active count is over all of
    them, whatever a run trains), experts counted k of E times. `model_only`: the spec's
    own model's parameters (`parameters.model_elements`: no adapter, a packed weight as
    its out x in), which its `expect`s count."""
    fractions = _grouped_fractions(graph)
    model = model_elements(graph) if model_only else {}
    items = []
    for v in graph.values:
        if v.role is not Role.PARAMETER or model.get(v.id, 0) is None:
            continue
        extra = fractions.get(v.id, sp.Integer(1))
        if v.id in model:  # a packed weight: the weights it holds, not its bytes' elements
            extra *= model[v.id] / numel(v.shape)
        regions = _active_regions(graph, v.region)
        items.append(LineItem(v.path, v.shape, v.dtype, regions, extra=extra, span=v.span))
    items = tuple(items)
    return CategoryResult(
        "active_parameters", items, "Parameters one token uses: k of each bank's E experts"
    )

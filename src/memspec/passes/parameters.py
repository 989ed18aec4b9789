"""Trainable parameters, each counted once however often it is used (tied weights).

Example: `layer Lin(i, o) { param weight: [o, i] ... }` instantiated as
`layers = repeat N of Lin(D, D)` yields one item `layers.weight`, shape [D, D],
multiplicity N: N*D**2 elements.
"""

from __future__ import annotations

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph, Value
from memspec.ir.types import Role, Shape, numel
from memspec.lora import is_adapter
from memspec.ops.quantized import MATMUL_4BIT, MATMUL_FP8
from memspec.parallel import TP
from memspec.passes.results import CategoryResult, LineItem, regions_of
from memspec.symbolic.symbols import dim_symbol

__all__ = [
    "FROZEN",
    "WHOLE_GRADIENT",
    "count_parameters",
    "gradient_shape",
    "model_elements",
    "trainable",
    "trained_items",
    "whole_parameters",
]

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


# The note of a gradient that tensor parallelism does not shard like its parameter.
WHOLE_GRADIENT = (
    "the whole table on every rank: DTensor's embedding backward under a vocab-parallel "
    "plan makes a Replicate gradient of the full [V, d] (torch 2.13)"
)


def gradient_shape(graph: Graph, v: Value) -> Shape:
    """The shape of a parameter's `.grad` on one rank: its own, except a vocab-parallel
    embedding's, which DTensor makes whole (`WHOLE_GRADIENT`)."""
    if dict(graph.tp_plan).get(v.path.rpartition(".")[0]) != "vocab_parallel":
        return v.shape
    return v.whole_shape(dim_symbol(TP))


def model_elements(graph: Graph) -> dict[int, sp.Expr | None]:
    """Each parameter's elements as the spec's own model counts them: None for what a
    run adds (--lora's adapters, FP8 weights' scales under --weights fp8), a packed 4-bit
    weight (--weights) as the out x in weights it holds; the others are absent (their
    own elements)."""
    counts: dict[int, sp.Expr | None] = {}
    for op in graph.ops:
        if op.op == MATMUL_4BIT:
            out, into = (sp.sympify(op.attr(k)) for k in ("out_features", "in_features"))
            counts[op.inputs[1]] = out * into
        elif op.op == MATMUL_FP8:
            counts[op.inputs[2]] = None
    for v in graph.values:
        if v.role is Role.PARAMETER and is_adapter(v.path):
            counts[v.id] = None
    return counts


def whole_parameters(graph: Graph, model_only: bool = False) -> sp.Expr:
    """The model's parameter count when the graph is one tensor-parallel rank's: each
    sharded parameter TP times its local size. `model_only`: the spec's own model's
    (`model_elements`)."""
    degree = dim_symbol(TP)
    model = model_elements(graph) if model_only else {}
    total = sp.Integer(0)
    for v in graph.values:
        if v.role is not Role.PARAMETER:
            continue
        elements = model.get(v.id, numel(v.whole_shape(degree)))
        if elements is not None:
            total += elements * graph.multiplicity(v.region)
    return sp.expand(total)

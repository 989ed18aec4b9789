"""Gradients: one per trainable parameter, same shape, in the precision's grad dtype."""

from __future__ import annotations

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.parameters import WHOLE_GRADIENT, gradient_shape, trainable
from memspec.passes.results import CategoryResult, LineItem, regions_of

__all__ = ["count_gradients"]


def count_gradients(graph: Graph, config: TrainConfig) -> CategoryResult:
    """`param.grad` for every parameter, as accumulated by backward."""
    precision = config.precision
    dtype = precision.grad
    items = tuple(
        LineItem(
            f"{v.path}.grad",
            shape,
            precision.grad_for(v.dtype),
            regions_of(graph, v.region),
            "" if shape == v.shape else WHOLE_GRADIENT,
            span=v.span,
        )
        for v, shape in ((v, gradient_shape(graph, v)) for v in trainable(graph))
    )
    text = f"One gradient per parameter, in {dtype.value}"
    others = sorted({i.dtype.value for i in items} - {dtype.value})
    if others:
        text += f" (in {', '.join(others)} for the parameters stored in it)"
    return CategoryResult("gradients", items, text)

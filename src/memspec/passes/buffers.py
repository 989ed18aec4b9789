"""Buffers: tensors a model keeps (RoPE tables, BatchNorm statistics) that are not trained.

They take memory but have no gradient and no optimizer state.
"""

from __future__ import annotations

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.ir.types import Role
from memspec.passes.results import CategoryResult, LineItem, regions_of

__all__ = ["count_buffers"]


def count_buffers(graph: Graph, config: TrainConfig) -> CategoryResult:
    """One item per buffer, in its declared dtype (the precision's buffer dtype by default)."""
    items = tuple(
        LineItem(v.path, v.shape, v.dtype, regions_of(graph, v.region), span=v.span)
        for v in graph.values
        if v.role is Role.BUFFER
    )
    return CategoryResult(
        "buffers", items, "Non-trainable state: memory, but no gradient and no optimizer state"
    )

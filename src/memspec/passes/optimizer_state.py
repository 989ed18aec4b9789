"""Optimizer state: the optimizer policy's per-parameter tensors, plus master weights.

AdamW and Adam keep `exp_avg` and `exp_avg_sq`, SGD nothing, SGD with momentum a
`momentum_buffer`; a precision with a `master` dtype adds a full-precision copy of each
parameter that the optimizer updates.
"""

from __future__ import annotations

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.parameters import trainable
from memspec.passes.results import CategoryResult, LineItem, regions_of

__all__ = ["count_optimizer_state"]


def count_optimizer_state(graph: Graph, config: TrainConfig) -> CategoryResult:
    """For each parameter: each optimizer state (state dtype), then its master copy."""
    precision, optimizer = config.precision, config.optimizer
    items: list[LineItem] = []
    for v in trainable(graph):
        regions = regions_of(graph, v.region)
        for state in optimizer.states:
            items.append(
                LineItem(f"{v.path}.{state}", v.shape, precision.state, regions, span=v.span)
            )
        if precision.master is not None:
            items.append(
                LineItem(
                    f"{v.path}.master",
                    v.shape,
                    precision.master,
                    regions,
                    note="master copy",
                    span=v.span,
                )
            )
    states = ", ".join(optimizer.states) or "no state"
    text = f"{optimizer.name} keeps per parameter: {states}, in {precision.state.value}"
    if precision.master is not None:
        text += f"; plus a {precision.master.value} master copy of each parameter"
    return CategoryResult("optimizer_state", tuple(items), text)

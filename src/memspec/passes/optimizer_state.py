"""Optimizer state: the optimizer policy's per-parameter tensors, plus master weights.

AdamW and Adam keep `exp_avg` and `exp_avg_sq`, SGD nothing, SGD with momentum a
`momentum_buffer`; a precision with a `master` dtype adds a full-precision copy of each
parameter that the optimizer updates; a loss scaler (fp16 autocast's GradScaler) its
scale and growth tracker.
"""

from __future__ import annotations

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.parameters import trainable
from memspec.passes.results import CategoryResult, LineItem, regions_of
from memspec.scaler import STATE

__all__ = ["count_optimizer_state"]


def count_optimizer_state(graph: Graph, config: TrainConfig) -> CategoryResult:
    """For each parameter: each optimizer state its rules give it (in the state dtype
    unless the rule names one; a shared one once, with the first parameter that has it),
    then its master copy."""
    precision, optimizer = config.precision, config.optimizer
    items: list[LineItem] = []
    shared: set[tuple[str, str]] = set()
    for v in trainable(graph):
        regions = regions_of(graph, v.region)
        owner = optimizer.owner(v.shape, graph.bound)
        for rule in owner.state_rules:
            if rule.extent.kind == "scalar" or not rule.applies(v.shape, graph.bound):
                continue
            if rule.shared and (owner.name, rule.name) in shared:
                continue
            shared.add((owner.name, rule.name))
            items.append(
                LineItem(
                    f"{v.path}.{rule.name}",
                    rule.extent.shape(v.shape, graph.bound),
                    rule.dtype or precision.state_for(v.dtype),
                    () if rule.shared else regions,
                    note="one per optimizer" if rule.shared else "",
                    span=v.span,
                )
            )
        master = precision.master_for(v.dtype)
        if master is not None:
            items.append(
                LineItem(
                    f"{v.path}.master",
                    v.shape,
                    master,
                    regions,
                    note="master copy",
                    span=v.span,
                )
            )
    if precision.scaler is not None:
        for name, dtype in STATE:
            items.append(LineItem(f"scaler.{name}", (), dtype, note="the loss scaler's"))
    text = f"{optimizer.name} keeps per parameter: {optimizer.describe_state()}"
    text += f", in {precision.state.value}"
    own = sorted({v.dtype.value for v in trainable(graph)} - {precision.param.value})
    if own:
        text += f" ({', '.join(own)} for the parameters stored in it)"
    for other in optimizer.chain()[1:]:
        text += (
            f"; {other.name}, for the parameters {optimizer.name} does not take "
            f"(it takes {optimizer.takes.describe()}): {other.describe_state()}"
        )
    if precision.master is not None:
        text += f"; plus a {precision.master.value} master copy of each parameter"
    if precision.scaler is not None:
        text += "; and the loss scaler's " + " and ".join(
            f"{name} ({dtype.value})" for name, dtype in STATE
        )
    return CategoryResult("optimizer_state", tuple(items), text)

"""Passes over the IR, in pipeline order; each returns one memory category.

Reading `PIPELINE` tells the story of a report: parameters, buffers, gradients,
optimizer state, activations. Each pass is a pure function `(graph, config) ->
CategoryResult` in a module of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from memspec.config import TrainConfig
from memspec.ir.graph import Graph
from memspec.passes.activations import count_activations
from memspec.passes.buffers import count_buffers
from memspec.passes.gradients import count_gradients
from memspec.passes.optimizer_state import count_optimizer_state
from memspec.passes.parameters import count_parameters
from memspec.passes.results import CategoryResult

__all__ = ["PIPELINE", "run_pipeline"]

PIPELINE: tuple[tuple[str, Callable[[Graph, TrainConfig], CategoryResult]], ...] = (
    ("parameters", count_parameters),
    ("gradients", count_gradients),
    ("optimizer_state", count_optimizer_state),
    ("activations", count_activations),
    ("buffers", count_buffers),
)


def run_pipeline(graph: Graph, config: TrainConfig) -> dict[str, CategoryResult]:
    """Every category, in pipeline order."""
    return {name: run(graph, config) for name, run in PIPELINE}

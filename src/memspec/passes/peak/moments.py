"""The vocabulary of the step's moments: phases, where a moment lies relative to each
repeat region, and the memory recorded at it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from memspec.symbolic.polys import Poly

__all__ = ["REPLAYED", "Phase", "Point", "Position", "Side"]

# the categories that change during a step, so the replay follows them
REPLAYED = ("activations", "temporaries", "gradients")


class Phase(str, enum.Enum):
    """Where in the step a moment is; the value is how reports name it."""

    FORWARD = "forward"
    BACKWARD = "backward"
    UNSCALE = "unscaling gradients"  # a loss scaler's, before the optimizer steps
    OPTIMIZER_STEP = "optimizer step"
    # --mode inference: the prompt's forward, and a forward of one generated token
    PREFILL = "prefill"
    DECODE = "decode"

    def __str__(self) -> str:
        return self.value


class Side(enum.Enum):
    """A moment outside a region's repetitions: before its first or after its last."""

    BEFORE = "before"
    AFTER = "after"


Position = Side | int  # outside a region, or in its 0-based replayed repetition


@dataclass(frozen=True, slots=True)
class Point:
    """Memory of the replayed categories just after one op allocated its results.

    `where` maps each region to the moment's `Position` relative to it (in program order
    for the forward; backward runs the repetitions in reverse).
    """

    phase: Phase
    op_path: str
    where: tuple[tuple[int, Position], ...]
    memory: tuple[tuple[str, Poly], ...]

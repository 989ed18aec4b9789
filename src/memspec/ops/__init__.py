"""Primitive ops: one registry, each op one definition holding all its rules.

Importing this package registers every built-in op; `lookup(name)` finds one.
"""

from memspec.ops import (  # noqa: F401  (importing registers the ops)
    attention,
    cache,
    casts,
    collectives,
    conv,
    creation,
    elementwise,
    grouped,
    layout,
    linalg,
    loss_parallel,
    outputs,
    pointwise,
    positional,
    quantized,
    reductions,
    routing,
    scan,
    splits,
    views,
)
from memspec.ops.registry import REGISTRY, OpDef, lookup

__all__ = ["REGISTRY", "OpDef", "lookup"]

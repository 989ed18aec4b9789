"""Primitive ops: one registry, each op one definition holding all its rules.

Importing this package registers every built-in op; `lookup(name)` finds one.
"""

from memspec.ops import attention, elementwise, linalg, reductions, views  # noqa: F401  (registration)
from memspec.ops.registry import REGISTRY, OpDef, lookup

__all__ = ["REGISTRY", "OpDef", "lookup"]

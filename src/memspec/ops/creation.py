"""Ops that make a tensor from sizes alone."""

from __future__ import annotations

import sympy as sp

from memspec.ir.types import DType
from memspec.ops.registry import InferContext, OpDef, OutputSpec, register, torch_functional


def _arange_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    n = ctx.attrs["n"]
    if not isinstance(n, sp.Expr) or (n.is_number and (not n.is_Integer or n < 1)):
        raise ctx.fail(f"needs a positive integer size, got {n}")
    return (OutputSpec((n,), DType.int64),)


register(
    OpDef(
        "arange",
        "the int64 positions 0, 1, ..., n - 1",
        (),
        _arange_infer,
        attrs=(("n", None),),
        lower=lambda t, a: torch_functional()[0].arange(a["n"]),
    )
)

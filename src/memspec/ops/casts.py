"""autocast's casts, made explicit: the elaborator inserts one before an op of an autocast
list (`cast DTYPE of OP, ...` in a precision), for each float input of another dtype.

torch.autocast casts inside the op (`cached_cast` in aten/src/ATen/autocast_mode.h):
`x.to(dtype)`, a new tensor freed after its last use unless saved; for a leaf tensor that
requires grad (a parameter) cast from float32 to the autocast dtype, the copy is cached,
made once at its first use and alive until the autocast context exits (`cached = 1`).
Its backward (ToCopyBackward0) converts the gradient back to the input's dtype: a new
tensor. Saved-tensor rules as observed with torch 2.13.0 on the CPU.
"""

from __future__ import annotations

from memspec.ir.types import DType
from memspec.ops.registry import (
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
    torch_functional,
)
from memspec.ops.strides import dense_like

__all__ = ["CAST"]

CAST = "autocast_cast"


def _cast_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dtype = DType.parse(str(ctx.attrs["dtype"]))
    if dtype is None or not dtype.is_float or not x.dtype.is_float:
        raise ctx.fail(f"casts a float tensor to a float dtype, not {x.dtype.value} to {dtype}")
    # `.to()` keeps the strides of a dense input (memory_format=torch.preserve_format)
    strides = x.strides
    if strides is not None and dense_like(x.shape, strides, ctx.bound) != strides:
        strides = None
    return (OutputSpec(x.shape, dtype, strides=strides),)


def _dtype(attrs):
    return getattr(torch_functional()[0], str(attrs["dtype"]))


register(
    OpDef(
        CAST,
        "torch.autocast's cast of an op's input (inserted under an autocast precision)",
        ("x",),
        _cast_infer,
        attrs=(("dtype", "bfloat16"), ("cached", 0)),
        lower=lambda t, a: t[0].to(_dtype(a)),
        kind=OpKind.LAYOUT,
        shape_doc="x's shape in `dtype`, new storage; a parameter's copy (`cached`) lives "
        "until the autocast context exits",
        saved_doc="nothing",
    )
)

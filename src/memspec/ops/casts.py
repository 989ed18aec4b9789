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
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
    torch_functional,
)
from memspec.ops.strides import dense_like

__all__ = ["CAST", "cast_grads", "cast_output"]

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


# `x.type_as(other)`, `x.to(other.dtype)`: what PEFT's LoRA layers do to their input
# before the adapters (`_cast_input_dtype(x, lora_A.weight.dtype)`) and to their result
# after (`result.to(torch_result_dtype)`). torch returns x itself when the dtypes agree.
def cast_output(ctx: InferContext, dtype: DType | None) -> tuple[OutputSpec, ...]:
    """`x.to(dtype)`: x itself when it has that dtype (no autograd node), else a copy in
    x's layout (preserve_format keeps a dense input's strides)."""
    x = ctx.inputs[0]
    if dtype is None or not dtype.is_float or not x.dtype.is_float:
        raise ctx.fail(f"casts a float tensor to a float dtype, not {x.dtype.value} to {dtype}")
    if dtype == x.dtype:
        return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)
    strides = x.strides
    if strides is not None and dense_like(x.shape, strides, ctx.bound) != strides:
        strides = None
    return (OutputSpec(x.shape, dtype, strides=strides),)


def cast_grads(op, graph) -> tuple[Grad, ...]:
    """x's gradient: the output's itself where no cast was made; else ToCopyBackward0's,
    converted back to x's dtype, a new tensor. None to any other input."""
    x, out = graph.values[op.inputs[0]], graph.values[op.outputs[0]]
    first = Grad.THROUGH if x.dtype == out.dtype else Grad.NEW
    return (first, *(Grad.NONE,) * (len(op.inputs) - 1))


def _type_as_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    return cast_output(ctx, ctx.inputs[1].dtype)


register(
    OpDef(
        "type_as",
        "x in other's dtype (x.to(other.dtype)): x itself when the dtypes agree, else a copy",
        ("x", "other"),
        _type_as_infer,
        lower=lambda t, a: t[0].to(t[1].dtype),
        grads=cast_grads,
        constants=("other",),
        grads_doc="x's: the output's gradient itself when no cast was made, else a new "
        "tensor in x's dtype; none to other",
        kind=OpKind.LAYOUT,
        shape_doc="x's shape in other's dtype; x itself when the dtypes agree",
        saved_doc="nothing",
    )
)

"""Copies that change a tensor's layout or size: `contiguous`, `pad`, `interpolate`, `roll`.

None of them saves a tensor for backward (torch 2.13, CPU): padding's backward slices
the gradient, and the upsampling kernels' backward needs only the sizes.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.types import shape_str
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
    torch_functional,
)
from memspec.ops.views import _dim


def _contiguous_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if x.contiguous:  # torch returns x itself
        return (OutputSpec(x.shape, x.dtype, view_of=0),)
    return (OutputSpec(x.shape, x.dtype),)


def _size(ctx: InferContext, name: str) -> sp.Expr:
    value = ctx.attrs[name]
    if isinstance(value, int) and not isinstance(value, bool):
        value = sp.Integer(value)  # an attribute's default, not given at the call
    if not isinstance(value, sp.Expr) or (value.is_number and (not value.is_Integer or value < 0)):
        raise ctx.fail(f"{name} must be a size (0 or more), got {value}")
    return value


def _pad_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    left, right, top, bottom = (_size(ctx, k) for k in ("left", "right", "top", "bottom"))
    vertical = top != 0 or bottom != 0
    shape = list(ctx.expect_rank(0, 2 if vertical else 1))
    shape[-1] = shape[-1] + left + right
    if vertical:
        shape[-2] = shape[-2] + top + bottom
    return (OutputSpec(tuple(shape), x.dtype),)


def _pad_lower(tensors, attrs):
    _, F = torch_functional()
    pads = (attrs["left"], attrs["right"], attrs["top"], attrs["bottom"])
    return F.pad(tensors[0], pads, value=attrs["value"])


_MODES = ("nearest", "bilinear")


def _interpolate_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if len(x.shape) != 4:
        raise ctx.fail(f"input must be [B, C, H, W], got {shape_str(x.shape)}")
    if ctx.attrs["mode"] not in _MODES:
        raise ctx.fail(f"mode must be one of {', '.join(_MODES)}, got {ctx.attrs['mode']!r}")
    scale = ctx.attrs["scale_factor"]
    if not isinstance(scale, sp.Expr) or not scale.is_number or not scale.is_positive:
        raise ctx.fail(f"scale_factor must be a positive number, got {scale}")
    b, c, h, w = x.shape
    # torch: floor(size * scale_factor) per spatial dim
    return (OutputSpec((b, c, sp.floor(h * scale), sp.floor(w * scale)), x.dtype),)


def _roll_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    _dim(ctx, x.shape, ctx.attrs["dim"])
    shifts = ctx.attrs["shifts"]
    if not isinstance(shifts, (sp.Integer, int)) or isinstance(shifts, bool):
        raise ctx.fail(f"shifts must be a whole number of positions, got {shifts}")
    return (OutputSpec(x.shape, x.dtype),)


def _roll_lower(tensors, attrs):
    import torch

    return torch.roll(tensors[0], int(attrs["shifts"]), dims=int(attrs["dim"]))


def _interpolate_lower(tensors, attrs):
    _, F = torch_functional()
    return F.interpolate(tensors[0], scale_factor=attrs["scale_factor"], mode=attrs["mode"])


register(
    OpDef(
        "contiguous",
        "x in row-major order: x itself when it already is, else a copy",
        ("x",),
        _contiguous_infer,
        lower=lambda t, a: t[0].contiguous(),
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="the output's gradient itself",
        kind=OpKind.LAYOUT,
        shape_doc="x's shape; x's storage when x is contiguous, new storage otherwise",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "roll",
        "x's elements shifted `shifts` positions along `dim`, those past the end coming "
        "back at the start (torch.roll)",
        ("x",),
        _roll_infer,
        attrs=(("shifts", 1), ("dim", -1)),
        lower=_roll_lower,
        grads=lambda op, graph: (Grad.NEW,),
        grads_doc="a new tensor (the output's gradient rolled back)",
        kind=OpKind.LAYOUT,
        shape_doc="x's shape, new storage",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "pad",
        "constant padding of the last dim (left, right) and the one before (top, bottom)",
        ("x",),
        _pad_infer,
        attrs=(("left", 0), ("right", 0), ("top", 0), ("bottom", 0), ("value", 0)),
        lower=_pad_lower,
        kind=OpKind.LAYOUT,
        shape_doc="x's shape, the last dim + left + right, the one before + top + bottom; "
        "new storage",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "interpolate",
        "F.interpolate by scale_factor, nearest or bilinear (align_corners false)",
        ("x",),
        _interpolate_infer,
        attrs=(("scale_factor", None), ("mode", "nearest")),
        lower=_interpolate_lower,
        kind=OpKind.RESAMPLE,
        shape_doc="[B, C, H, W] -> [B, C, floor(H scale_factor), floor(W scale_factor)]",
        saved_doc="nothing",
    )
)

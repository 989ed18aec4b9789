"""Convolution, pooling and batch normalization over [batch, channels, height, width],
and 1-d convolution over [batch, channels, length] (Mamba's depthwise causal conv).

Spatial sizes follow PyTorch: floor((H + 2 padding - kernel) / stride) + 1.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel, shape_str
from memspec.ops.registry import (
    InferContext,
    OpDef,
    OutputSpec,
    Saved,
    register,
    torch_functional,
)


def _out_size(size: sp.Expr, kernel: sp.Expr, stride: sp.Expr, padding: sp.Expr) -> sp.Expr:
    # Expanded first, so sympy pulls whole terms out: floor(I/p - 1) = floor(I/p) - 1.
    return sp.floor(sp.expand((size + 2 * padding - kernel) / stride)) + 1


def _conv_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, w, *bias = ctx.inputs
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise ctx.fail(
            f"needs input [B, C, H, W] and weight [O, C/groups, kh, kw], got "
            f"{shape_str(x.shape)} and {shape_str(w.shape)}"
        )
    groups = ctx.attrs["groups"]
    ctx.expect_same(x.shape[1], w.shape[1] * groups, "input channels vs weight")
    if bias:
        ctx.expect_same(bias[0].shape[0], w.shape[0], "bias vs output channels")
    s, p = ctx.attrs["stride"], ctx.attrs["padding"]
    h = _out_size(x.shape[2], w.shape[2], s, p)
    wd = _out_size(x.shape[3], w.shape[3], s, p)
    return (OutputSpec((x.shape[0], w.shape[0], h, wd), ctx.float_dtype()),)


def _conv1d_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, w, *bias = ctx.inputs
    if len(x.shape) != 3 or len(w.shape) != 3:
        raise ctx.fail(
            f"needs input [B, C, L] and weight [O, C/groups, k], got "
            f"{shape_str(x.shape)} and {shape_str(w.shape)}"
        )
    groups = ctx.attrs["groups"]
    ctx.expect_same(x.shape[1], w.shape[1] * groups, "input channels vs weight")
    if bias:
        ctx.expect_same(bias[0].shape[0], w.shape[0], "bias vs output channels")
    length = _out_size(x.shape[2], w.shape[2], ctx.attrs["stride"], ctx.attrs["padding"])
    return (OutputSpec((x.shape[0], w.shape[0], length), ctx.float_dtype()),)


def _conv_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """ConvolutionBackward saves input and weight whichever of them needs a gradient."""
    return (Saved("input", op.inputs[0]), Saved("weight", op.inputs[1]))


def _conv_lower(tensors, attrs):
    _, F = torch_functional()
    x, w, *bias = tensors
    return F.conv2d(
        x,
        w,
        bias[0] if bias else None,
        stride=attrs["stride"],
        padding=attrs["padding"],
        groups=attrs["groups"],
    )


def _conv1d_lower(tensors, attrs):
    _, F = torch_functional()
    x, w, *bias = tensors
    return F.conv1d(
        x,
        w,
        bias[0] if bias else None,
        stride=attrs["stride"],
        padding=attrs["padding"],
        groups=attrs["groups"],
    )


def _conv_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """2 * (output elements) * (C/groups * kernel size), as torch's FLOP counter has it."""
    out, weight = graph.value(op.outputs[0]), graph.value(op.inputs[1])
    return 2 * numel(out.shape) * numel(weight.shape[1:])


def _pool_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if len(x.shape) != 4:
        raise ctx.fail(f"needs [B, C, H, W], got {shape_str(x.shape)}")
    k, s, p = ctx.attrs["kernel"], ctx.attrs["stride"], ctx.attrs["padding"]
    return (
        OutputSpec(
            (*x.shape[:2], _out_size(x.shape[2], k, s, p), _out_size(x.shape[3], k, s, p)), x.dtype
        ),
    )


def _max_pool_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """max_pool2d saves its input and the int64 argmax indices (the output's shape)."""
    out = graph.value(op.outputs[0])
    return (Saved("input", op.inputs[0]), Saved("indices", shape=out.shape, dtype=DType.int64))


def _max_pool_lower(tensors, attrs):
    _, F = torch_functional()
    return F.max_pool2d(tensors[0], attrs["kernel"], attrs["stride"], attrs["padding"])


def _global_pool_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if len(x.shape) != 4:
        raise ctx.fail(f"needs [B, C, H, W], got {shape_str(x.shape)}")
    return (OutputSpec((*x.shape[:2], sp.Integer(1), sp.Integer(1)), x.dtype),)


def _bn_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, *per_channel = ctx.inputs
    if len(x.shape) < 2:
        raise ctx.fail(f"needs [B, C, ...], got {shape_str(x.shape)}")
    for t in per_channel:
        if len(t.shape) != 1:
            raise ctx.fail(f"per-channel tensors must be [C], got {shape_str(t.shape)}")
        ctx.expect_same(t.shape[0], x.shape[1], "channels")
    return (OutputSpec(x.shape, ctx.float_dtype()),)


def _bn_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Train-mode batch_norm saves input, weight, running stats, batch mean and invstd."""
    x = graph.value(op.inputs[0])
    names = ("input", "weight", "bias", "running_mean", "running_var")
    return (
        *(Saved(n, v) for n, v in zip(names, op.inputs, strict=False) if n != "bias"),
        Saved("save_mean", shape=(x.shape[1],), dtype=DType.float32),
        Saved("save_invstd", shape=(x.shape[1],), dtype=DType.float32),
    )


def _bn_lower(tensors, attrs):
    _, F = torch_functional()
    x, weight, bias, mean, var = tensors
    return F.batch_norm(
        x, mean, var, weight, bias, training=True, momentum=attrs["momentum"], eps=attrs["eps"]
    )


register(
    OpDef(
        "conv2d",
        "2-d convolution, weight [O, C/groups, kh, kw]",
        ("input", "weight", "bias?"),
        _conv_infer,
        _conv_saved,
        attrs=(("stride", 1), ("padding", 0), ("groups", 1)),
        lower=_conv_lower,
        flops=_conv_flops,
    )
)
register(
    OpDef(
        "conv1d",
        "1-d convolution over [B, C, L], weight [O, C/groups, k]",
        ("input", "weight", "bias?"),
        _conv1d_infer,
        _conv_saved,
        attrs=(("stride", 1), ("padding", 0), ("groups", 1)),
        lower=_conv1d_lower,
        flops=_conv_flops,
    )
)
register(
    OpDef(
        "max_pool2d",
        "max pooling over H and W",
        ("x",),
        _pool_infer,
        _max_pool_saved,
        attrs=(("kernel", None), ("stride", None), ("padding", 0)),
        lower=_max_pool_lower,
    )
)
register(
    OpDef(
        "global_avg_pool2d",
        "mean over H and W, kept as 1 x 1",
        ("x",),
        _global_pool_infer,
        lower=lambda t, a: torch_functional()[1].adaptive_avg_pool2d(t[0], 1),
    )
)
register(
    OpDef(
        "batch_norm",
        "training-mode BatchNorm over channels (dim 1)",
        ("x", "weight", "bias", "running_mean", "running_var"),
        _bn_infer,
        _bn_saved,
        attrs=(("momentum", sp.Rational(1, 10)), ("eps", sp.Rational(1, 10**5))),
        lower=_bn_lower,
    )
)

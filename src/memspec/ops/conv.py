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
    OpKind,
    OutputSpec,
    Saved,
    register,
    torch_functional,
)


def _window(ctx: InferContext, stride: sp.Expr, padding: sp.Expr) -> None:
    """torch refuses a stride below 1 and a negative padding; so does the shape rule."""
    if sp.sympify(stride).is_number and not (sp.sympify(stride).is_integer and stride >= 1):
        raise ctx.fail(f"stride must be a whole number, at least 1, not {stride}")
    if sp.sympify(padding).is_number and not (sp.sympify(padding).is_integer and padding >= 0):
        raise ctx.fail(f"padding must be a whole number, at least 0, not {padding}")


def _out_size(size: sp.Expr, kernel: sp.Expr, stride: sp.Expr, padding: sp.Expr) -> sp.Expr:
    # Expanded first, so sympy pulls whole terms out: floor(I/p - 1) = floor(I/p) - 1.
    return sp.floor(sp.expand((size + 2 * padding - kernel) / stride)) + 1


_LAYOUTS = {1: ("[B, C, L]", "[O, C/groups, k]"), 2: ("[B, C, H, W]", "[O, C/groups, kh, kw]")}


def _conv_infer(spatial: int):
    """The shape rule of a `spatial`-d convolution: out = floor((in + 2p - k)/s) + 1."""

    def infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
        x, w, *bias = ctx.inputs
        if len(x.shape) != spatial + 2 or len(w.shape) != spatial + 2:
            layout, weight = _LAYOUTS[spatial]
            raise ctx.fail(
                f"needs input {layout} and weight {weight}, got "
                f"{shape_str(x.shape)} and {shape_str(w.shape)}"
            )
        groups = ctx.attrs["groups"]
        ctx.expect_same(x.shape[1], w.shape[1] * groups, "input channels vs weight")
        if bias:
            ctx.expect_same(bias[0].shape[0], w.shape[0], "bias vs output channels")
        s, p = ctx.attrs["stride"], ctx.attrs["padding"]
        _window(ctx, s, p)
        sizes = tuple(_out_size(n, k, s, p) for n, k in zip(x.shape[2:], w.shape[2:], strict=True))
        return (OutputSpec((x.shape[0], w.shape[0], *sizes), ctx.product_dtype()),)

    return infer


def _conv_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """ConvolutionBackward saves input and weight whichever of them needs a gradient."""
    return (Saved("input", op.inputs[0]), Saved("weight", op.inputs[1]))


def _conv_lower(name: str):
    """Lowering to torch.nn.functional.<name> (conv1d, conv2d)."""

    def lower(tensors, attrs):
        _, F = torch_functional()
        x, w, *bias = tensors
        return getattr(F, name)(
            x,
            w,
            bias[0] if bias else None,
            stride=attrs["stride"],
            padding=attrs["padding"],
            groups=attrs["groups"],
        )

    return lower


def _conv_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """2 * (output elements) * (C/groups * kernel size), as torch's FLOP counter has it."""
    out, weight = graph.value(op.outputs[0]), graph.value(op.inputs[1])
    return 2 * numel(out.shape) * numel(weight.shape[1:])


def _pool_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if len(x.shape) != 4:
        raise ctx.fail(f"needs [B, C, H, W], got {shape_str(x.shape)}")
    k, s, p = ctx.attrs["kernel"], ctx.attrs["stride"], ctx.attrs["padding"]
    _window(ctx, s, p)
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
        _conv_infer(2),
        _conv_saved,
        attrs=(("stride", 1), ("padding", 0), ("groups", 1)),
        lower=_conv_lower("conv2d"),
        flops=_conv_flops,
        kind=OpKind.CONV,
        shape_doc="input [B, C, H, W], weight [O, C/groups, kh, kw], bias [O] -> "
        "[B, O, H', W'], H' = floor((H + 2 padding - kh) / stride) + 1",
        saved_doc="input and weight",
    )
)
register(
    OpDef(
        "conv1d",
        "1-d convolution over [B, C, L], weight [O, C/groups, k]",
        ("input", "weight", "bias?"),
        _conv_infer(1),
        _conv_saved,
        attrs=(("stride", 1), ("padding", 0), ("groups", 1)),
        lower=_conv_lower("conv1d"),
        flops=_conv_flops,
        kind=OpKind.CONV,
        shape_doc="input [B, C, L], weight [O, C/groups, k], bias [O] -> [B, O, L'], "
        "L' = floor((L + 2 padding - k) / stride) + 1",
        saved_doc="input and weight",
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
        kind=OpKind.POOLING,
        shape_doc="[B, C, H, W] -> [B, C, H', W'], "
        "H' = floor((H + 2 padding - kernel) / stride) + 1",
        saved_doc="input, and int64 argmax indices of the output's shape",
    )
)
register(
    OpDef(
        "global_avg_pool2d",
        "mean over H and W, kept as 1 x 1",
        ("x",),
        _global_pool_infer,
        lower=lambda t, a: torch_functional()[1].adaptive_avg_pool2d(t[0], 1),
        kind=OpKind.REDUCTION,
        shape_doc="[B, C, H, W] -> [B, C, 1, 1]",
        saved_doc="nothing",
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
        kind=OpKind.NORM,
        shape_doc="x [B, C, ...] and four per-channel [C] tensors -> x's shape",
        saved_doc="input, weight, running_mean, running_var, and float32 save_mean and "
        "save_invstd [C]",
    )
)


def _gn_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, *affine = ctx.inputs
    if len(x.shape) < 2:
        raise ctx.fail(f"needs [B, C, ...], got {shape_str(x.shape)}")
    groups = ctx.attrs["num_groups"]
    if not isinstance(groups, sp.Expr) or (
        groups.is_number and (not groups.is_Integer or groups < 1)
    ):
        raise ctx.fail(f"num_groups must be a positive integer, got {groups}")
    for t in affine:
        if len(t.shape) != 1:
            raise ctx.fail(f"weight and bias must be [C], got {shape_str(t.shape)}")
        ctx.expect_same(t.shape[0], x.shape[1], "channels")
    ctx.assume_integer(x.shape[1] / groups, f"{groups} divides {x.shape[1]}")
    return (OutputSpec(x.shape, ctx.float_dtype()),)


def _gn_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """native_group_norm saves input, weight (not bias), and mean and rstd [B, groups]
    in the input's dtype, whichever input needs the gradient."""
    x = graph.value(op.inputs[0])
    stat = (x.shape[0], dict(op.attrs)["num_groups"])
    return (
        Saved("input", op.inputs[0]),
        *(Saved("weight", v) for v in op.inputs[1:2]),
        Saved("mean", shape=stat, dtype=x.dtype),
        Saved("rstd", shape=stat, dtype=x.dtype),
    )


def _gn_lower(tensors, attrs):
    _, F = torch_functional()
    x, weight, bias = (*tensors, None, None)[:3]
    return F.group_norm(x, attrs["num_groups"], weight, bias, eps=attrs["eps"])


register(
    OpDef(
        "group_norm",
        "GroupNorm: channels (dim 1) in num_groups groups",
        ("x", "weight?", "bias?"),
        _gn_infer,
        _gn_saved,
        attrs=(("num_groups", None), ("eps", sp.Rational(1, 10**5))),
        lower=_gn_lower,
        kind=OpKind.NORM,
        shape_doc="x [B, C, ...], weight and bias [C] -> x's shape; num_groups divides C",
        saved_doc="input, weight, and mean and rstd [B, num_groups] in x's dtype",
    )
)

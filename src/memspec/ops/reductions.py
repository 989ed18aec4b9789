"""Ops that reduce over the last dim: softmax, log-softmax, norms; the losses."""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel, shape_str
from memspec.ops.elementwise import _saves_output
from memspec.ops.engine import Engine
from memspec.ops.promotion import promote_types
from memspec.ops.registry import (
    BackwardMoment,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    same_dim,
    torch_functional,
)


def _same_shape(ctx: InferContext) -> tuple[OutputSpec, ...]:
    ctx.expect_rank(0, 1)
    return (OutputSpec(ctx.inputs[0].shape, ctx.float_dtype()),)


def _norm_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, *affine = ctx.inputs
    shape = ctx.expect_rank(0, 1)
    for t in affine:
        if len(t.shape) != 1:
            raise ctx.fail(f"weight and bias must be [{shape[-1]}], got {shape_str(t.shape)}")
        ctx.expect_same(t.shape[0], shape[-1], "normalized dim")
    return (OutputSpec(x.shape, ctx.float_dtype()),)


def _stat(x_shape) -> tuple:
    return (*x_shape[:-1], 1)


def _layer_norm_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """native_layer_norm saves input, weight, bias, and float32 mean and rstd [..., 1]."""
    x = graph.value(op.inputs[0])
    return (
        Saved("input", op.inputs[0]),
        *(Saved(name, v) for name, v in zip(("weight", "bias"), op.inputs[1:], strict=False)),
        Saved("mean", shape=_stat(x.shape), dtype=DType.float32),
        Saved("rstd", shape=_stat(x.shape), dtype=DType.float32),
    )


def _opmath(dtype: DType) -> DType:
    """The dtype torch computes a norm in: float32 for 16-bit floats (toOpMathType)."""
    return DType.float32 if dtype in (DType.float16, DType.bfloat16) else dtype


def _rms_norm_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """CPU rms_norm is decomposed (torch 2.13, at::rms_norm_symint): xf = x.to(opmath),
    r = rsqrt(mean(xf^2) + eps), out = ((xf * r) * weight).type_as(x), in float32 for a
    16-bit x (xf is then a copy).

    xf^2 and xf * r save xf and r when x needs a gradient; the product with the weight
    saves xf * r when the weight needs one, and the weight when x does.
    """
    x = graph.value(op.inputs[0])
    weight = graph.value(op.inputs[1]) if len(op.inputs) > 1 else None
    opmath = _opmath(x.dtype)
    saved: list[Saved] = []
    if x.requires_grad:
        xf = (
            Saved("input", x.id)
            if opmath is x.dtype
            else Saved("input", shape=x.shape, dtype=opmath)
        )
        saved += [xf, Saved("rsqrt", shape=_stat(x.shape), dtype=opmath)]
    if weight is not None and weight.requires_grad:
        saved.append(Saved("x*rsqrt", shape=x.shape, dtype=opmath))
    if weight is not None and x.requires_grad:
        saved.append(Saved("weight", weight.id))
    return tuple(saved)


def _rms_norm_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """Under no_grad (the op saves nothing) the decomposition's temporaries, beyond the
    output, at its largest moment (n elements, r rows). torch's: x.to(opmath) (a copy for
    a 16-bit x), rsqrt [r], x * rsqrt, and its cast to x's dtype beside them before the
    weight's product: 8n + 4r in float32 for 16-bit x, 4n + 4r (x itself, rsqrt, the
    product) for float32. Hugging Face's Python RMSNorm (`hf`: LlamaRMSNorm) keeps the
    variance [r] to the end and casts the product before the weight's: for 16-bit x
    x.float(), the variance, its rsqrt and the product, 8n + 8r before the output (2n);
    for float32 the product, the variance and the output. With a gradient the saved
    tensors hold what is alive (counted by `_rms_norm_saved`)."""
    x = graph.value(op.inputs[0])
    weight = graph.value(op.inputs[1]) if len(op.inputs) > 1 else None
    if x.requires_grad or (weight is not None and weight.requires_grad):
        return sp.Integer(0)
    n, r = numel(x.shape), numel(_stat(x.shape))
    opmath = _opmath(x.dtype).itemsize
    if _opmath(x.dtype) is x.dtype:
        return n * opmath + r * opmath
    if op.attr("hf", False):
        return 2 * n * opmath + 2 * r * opmath - n * x.dtype.itemsize
    return 2 * n * opmath + r * opmath


def _rms_norm_backward_moments(
    op: OpApply, graph: Graph, sums_in_place: bool
) -> tuple[BackwardMoment, ...]:
    """The decomposition's nodes, last first (checked per aten op against MemTracker by
    tests/verify/test_rms_norm_backward.py). A 16-bit out's gradient is cast to float32.
    (xf * r) * w: g * w for xf * r, g * (xf * r) summed to the weight's [D] (cast to its
    dtype), which AccumulateGrad takes as the node returns. xf * r: g1 * r, x's first
    part; g1 * xf summed to r's [..., 1]. rsqrt: r^3, times -0.5, times the gradient.
    mean: the gradient expanded and divided, [..., D]. xf^2: xf^1, times 2, times the
    gradient: three [..., D] at once beside x's first part, x's second. A 16-bit x's
    two parts are summed in xf's buffer and cast to x's dtype: one gradient; float32's
    are x's own, each added into x's gradient as its node returns."""
    x = graph.value(op.inputs[0])
    weight = graph.value(op.inputs[1]) if len(op.inputs) > 1 else None
    opmath = _opmath(x.dtype)
    full, stat = numel(x.shape) * opmath.itemsize, numel(_stat(x.shape)) * opmath.itemsize
    engine = Engine(sums_in_place)
    grad = None  # None: the output's gradient, held by the replay

    def done(name: str | None) -> None:
        if name is None:
            engine.drop_output_grad()
        else:
            engine.free(name)

    if opmath is not x.dtype:  # type_as's backward
        engine.alloc("g32", full)
        engine.drop_output_grad()
        grad = "g32"
    if weight is not None:
        if x.requires_grad:
            engine.alloc("g1", full)
        if weight.requires_grad:
            summed = promote_types(opmath, weight.dtype)
            engine.alloc("g*xr", numel(x.shape) * summed.itemsize)
            engine.alloc("dw", weight.shape[0] * summed.itemsize)
            engine.free("g*xr")
            # the cast to the weight's dtype holds less than g * (xf * r) did
            engine.live["dw"] = weight.shape[0] * weight.dtype.itemsize
        done(grad)
        engine.drop("x*rsqrt")
        engine.drop("weight")
        if weight.requires_grad:
            engine.give(1, "dw")
        grad = "g1"
    if not x.requires_grad:
        engine.close()
        return tuple(engine.moments)
    engine.alloc("ga", full)
    engine.alloc("g*xf", full)
    engine.alloc("dr", stat)
    engine.free("g*xf")
    done(grad)
    first = "ga"
    if opmath is x.dtype:
        engine.give(0, "ga")
    for name in ("r^3", "-0.5 r^3", "dm"):
        engine.alloc(name, stat)
    for name in ("r^3", "-0.5 r^3", "dr"):
        engine.free(name)
    engine.drop("rsqrt")
    engine.alloc("dp", full)
    engine.free("dm")
    for name in ("xf^1", "2 xf", "gb"):
        engine.alloc(name, full)
    for name in ("xf^1", "2 xf", "dp"):
        engine.free(name)
    engine.drop("input")
    if opmath is x.dtype:
        engine.give(0, "gb")
    else:
        engine.accumulate(first, "gb")
        # the cast to x's dtype, beside the sum, holds less than the sum's moment did
        del engine.live[first]
        engine.live["dx"] = numel(x.shape) * x.dtype.itemsize
        engine.give(0, "dx")
    engine.close()
    return tuple(engine.moments)


def _nll_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    log_probs, target = ctx.inputs
    shape = ctx.expect_rank(0, 1)
    if target.dtype.is_float:
        raise ctx.fail(f"targets must be an integer tensor, got {target.dtype.value}")
    if len(target.shape) != len(shape) - 1 or not all(
        a == b or (a - b).expand() == 0 for a, b in zip(target.shape, shape[:-1], strict=False)
    ):
        raise ctx.fail(
            f"targets {shape_str(target.shape)} do not match log-probabilities {shape_str(shape)}"
        )
    # torch's loss and total_weight take the input's dtype (bfloat16 under bf16 training)
    return (OutputSpec((), log_probs.dtype),)


def _nll_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """nll_loss (mean reduction) saves its input, the targets and a scalar total_weight
    in the input's dtype."""
    return (
        Saved("input", op.inputs[0]),
        Saved("targets", op.inputs[1]),
        Saved("total_weight", shape=(), dtype=graph.value(op.inputs[0]).dtype),
    )


def _norm_lower(name: str):
    """layer_norm / rms_norm over the last dim, with whichever affine tensors were given."""

    def lower(tensors, attrs):
        _, F = torch_functional()
        x, *affine = tensors
        if name == "rms_norm":
            return F.rms_norm(x, (x.shape[-1],), *affine[:1], eps=float(attrs["eps"]))
        weight, bias = (*affine, None, None)[:2]
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=float(attrs["eps"]))

    return lower


def _nll_lower(tensors, attrs):
    _, F = torch_functional()
    log_probs, targets = tensors
    return F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), targets.reshape(-1))


register(
    OpDef(
        "softmax",
        "softmax over the last dim",
        ("x",),
        _same_shape,
        _saves_output,
        lower=lambda t, a: t[0].softmax(-1),
        kind=OpKind.SOFTMAX,
        shape_doc="x's shape",
        saved_doc="the output",
    )
)
register(
    OpDef(
        "log_softmax",
        "log-softmax over the last dim",
        ("x",),
        _same_shape,
        _saves_output,
        lower=lambda t, a: t[0].log_softmax(-1),
        kind=OpKind.SOFTMAX,
        shape_doc="x's shape",
        saved_doc="the output",
    )
)
register(
    OpDef(
        "layer_norm",
        "LayerNorm over the last dim",
        ("x", "weight?", "bias?"),
        _norm_infer,
        _layer_norm_saved,
        attrs=(("eps", 0),),
        lower=_norm_lower("layer_norm"),
        kind=OpKind.NORM,
        shape_doc="x [..., D], weight and bias [D] -> x's shape",
        saved_doc="input, weight, bias, and float32 mean and rstd [..., 1]",
    )
)
register(
    OpDef(
        "rms_norm",
        "RMSNorm over the last dim",
        ("x", "weight?"),
        _norm_infer,
        _rms_norm_saved,
        attrs=(("eps", 0), ("hf", False)),
        lower=_norm_lower("rms_norm"),
        backward_moments=_rms_norm_backward_moments,
        workspace=_rms_norm_workspace,
        kind=OpKind.NORM,
        shape_doc="x [..., D], weight [D] -> x's shape; under no_grad the "
        "decomposition's temporaries (hf: Hugging Face's Python RMSNorm's) as a workspace",
        saved_doc="when x needs a gradient: x, rsqrt [..., 1] and the weight; when the "
        "weight does: x * rsqrt",
    )
)
register(
    OpDef(
        "nll_loss",
        "mean negative log-likelihood of integer targets",
        ("log_probs", "targets"),
        _nll_infer,
        _nll_saved,
        lower=_nll_lower,
        kind=OpKind.LOSS,
        shape_doc="log_probs [..., C], integer targets [...] -> [] in log_probs' dtype",
        saved_doc="input, targets and a scalar total_weight in the input's dtype",
    )
)


def _mse_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, target = ctx.inputs
    if len(x.shape) != len(target.shape) or not all(
        same_dim(a, b) for a, b in zip(x.shape, target.shape, strict=True)
    ):
        raise ctx.fail(
            f"input {shape_str(x.shape)} and target {shape_str(target.shape)} differ in shape"
        )
    if not (x.dtype.is_float and target.dtype.is_float):
        raise ctx.fail("input and target must be floating-point tensors")
    return (OutputSpec((), promote_types(x.dtype, target.dtype)),)


register(
    OpDef(
        "mse_loss",
        "mean squared error of two tensors of one shape",
        ("input", "target"),
        _mse_infer,
        lambda op, graph: (Saved("input", op.inputs[0]), Saved("target", op.inputs[1])),
        lower=lambda t, a: torch_functional()[1].mse_loss(t[0], t[1]),
        kind=OpKind.LOSS,
        shape_doc="input and target of one shape -> []",
        saved_doc="input and target",
    )
)

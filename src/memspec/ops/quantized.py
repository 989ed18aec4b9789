"""Quantized weights: bitsandbytes' 4-bit matmul (`--weights nf4|fp4`, specs/std/
quantized.mspec) and `to_dtype`, the casts around it.

bitsandbytes 0.50's `Linear4bit.forward` casts x to its compute dtype, calls
`bnb.matmul_4bit`, and casts the result back to x's dtype. With an input that needs a
gradient (a frozen 4-bit weight under LoRA) `MatMul4Bit` runs: its forward dequantizes
the whole weight ([out, in] in the compute dtype) for one `F.linear` and frees it, and
saves nothing but the packed weight (no weight gradient, so not x); its backward
dequantizes the weight again for x's gradient. On a GPU, at training-sized row counts
(more than 512 to 1536 rows; its fused kernel serves decode-sized ones),
`_dequant_linear_fallback` holds two float32 copies of the dequantized block maxima
(`absmax_dq`, `absmax_dq + offset`, [ceil(n/64)] each) beside the weight, and
`dequantize_4bit` in backward one. Modelled as CUDA runs it, from bitsandbytes' source
(autograd/_functions.py, backends/cuda/ops.py, functional.py); the CPU's default kernel
holds one float32 copy fewer in forward, which the checks against it name.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel
from memspec.ops.casts import cast_grads, cast_output
from memspec.ops.registry import (
    BackwardMoment,
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
    torch_functional,
)

__all__ = ["MATMUL_4BIT", "TO_DTYPE", "blocks_of"]

MATMUL_4BIT = "matmul_4bit"
TO_DTYPE = "to_dtype"
BLOCKSIZE = 64  # bitsandbytes' 4-bit blocksize for weights (quantize_4bit's default)


def blocks_of(elements: sp.Expr, blocksize: int = BLOCKSIZE) -> sp.Expr:
    return sp.ceiling(elements / blocksize)


def _to_dtype_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    return cast_output(ctx, DType.parse(str(ctx.attrs["dtype"])))


def _dtype(attrs):
    return getattr(torch_functional()[0], str(attrs["dtype"]))


register(
    OpDef(
        TO_DTYPE,
        "x.to(dtype): x itself when it has that dtype already, else a copy",
        ("x",),
        _to_dtype_infer,
        attrs=(("dtype", "float32"),),
        lower=lambda t, a: t[0].to(_dtype(a)),
        grads=cast_grads,
        grads_doc="the output's gradient itself when no cast was made, else a new tensor in "
        "x's dtype",
        kind=OpKind.LAYOUT,
        shape_doc="x's shape in `dtype`; x itself when the dtypes agree",
        saved_doc="nothing",
    )
)


def _sizes(op: OpApply) -> tuple[sp.Expr, sp.Expr]:
    out, into = (sp.sympify(op.attr(k)) for k in ("out_features", "in_features"))
    return out, into


def _matmul_4bit_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, weight = ctx.inputs[:2]
    out, into = (ctx.attrs[k] for k in ("out_features", "in_features"))
    if not isinstance(out, sp.Expr) or not isinstance(into, sp.Expr):
        raise ctx.fail("out_features and in_features are sizes")
    shape = ctx.expect_rank(0, 1)
    ctx.expect_same(shape[-1], into, "x's last dim against in_features")
    if weight.dtype is not DType.uint8:
        raise ctx.fail(f"the packed weight is uint8 (two 4-bit codes a byte), not {weight.dtype}")
    packed = sp.ceiling(out * into / 2)
    if len(weight.shape) != 2 or weight.shape[1] != 1:
        raise ctx.fail("the packed weight is [ceil(out * in / 2), 1], as Params4bit stores it")
    ctx.expect_same(weight.shape[0], packed, "the packed weight's rows against out * in / 2")
    if not x.dtype.is_float:
        raise ctx.fail(f"x is a float tensor in the compute dtype, not {x.dtype.value}")
    if len(ctx.inputs) > 2:
        bias = ctx.inputs[2]
        ctx.expect_same(bias.shape[-1], out, "bias against out_features")
        if bias.dtype != x.dtype:
            raise ctx.fail("the bias is cast to the compute dtype first, as Linear4bit does")
    return (OutputSpec((*shape[:-1], out), x.dtype),)


def _dequantized(op: OpApply, graph: Graph) -> sp.Expr:
    """The whole weight in the compute dtype (x's), as dequantize_4bit makes it."""
    out, into = _sizes(op)
    return out * into * graph.value(op.inputs[0]).dtype.itemsize


def _matmul_4bit_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """CUDA's dequantizing fallback: two float32 [blocks] copies of the block maxima and
    the dequantized weight, alive while F.linear makes the output."""
    out, into = _sizes(op)
    return 2 * 4 * blocks_of(out * into) + _dequantized(op, graph)


def _matmul_4bit_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """The bias's gradient first (the rows' sum), then dequantize_4bit again (its float32
    block maxima, then the weight in the dtype it was quantized from, taken to be the
    compute dtype), then x's gradient beside it."""
    out, into = _sizes(op)
    x = graph.value(op.inputs[0])
    weight = _dequantized(op, graph)
    grad = numel(x.shape) * x.dtype.itemsize
    first = (BackwardMoment(sp.Integer(0), given=(2,)),) if len(op.inputs) > 2 else ()
    return (
        *first,
        BackwardMoment(4 * blocks_of(out * into) + weight),
        BackwardMoment(weight + grad),
    )


def _matmul_4bit_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W^T: 2 * (output elements) * in_features, as a dense linear's."""
    _, into = _sizes(op)
    return 2 * numel(graph.value(op.outputs[0]).shape) * into


def _matmul_4bit_lower(tensors, attrs):
    """An emulation with the same tensors (bitsandbytes needs its quant_state, which a
    lowered uint8 parameter has not): a weight of the compute dtype made and freed in
    forward, and again in backward."""
    torch, F = torch_functional()
    out, into = int(attrs["out_features"]), int(attrs["in_features"])
    blocks = -(-out * into // BLOCKSIZE)

    class MatMul4Bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, packed, *bias):
            absmax = torch.empty(blocks, dtype=torch.float32, device=x.device)
            shifted = absmax + 0.0
            weight = torch.zeros(out, into, dtype=x.dtype, device=x.device)
            result = F.linear(x, weight, bias[0] if bias else None)
            del absmax, shifted, weight
            ctx.x_dtype, ctx.has_bias = x.dtype, bool(bias)
            return result

        @staticmethod
        def backward(ctx, grad):
            # first, as MatMul4Bit, where the bias needs one
            grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
            absmax = torch.empty(blocks, dtype=torch.float32, device=grad.device)
            weight = torch.zeros(out, into, dtype=ctx.x_dtype, device=grad.device)
            del absmax
            grad_x = torch.matmul(grad, weight)
            return (grad_x, None, grad_bias) if ctx.has_bias else (grad_x, None)

    return MatMul4Bit.apply(*tensors)


register(
    OpDef(
        MATMUL_4BIT,
        "x @ W^T with W a frozen 4-bit weight (bitsandbytes' matmul_4bit: NF4 or FP4, "
        "blocksize 64), dequantized to x's dtype for each product",
        ("x", "weight", "bias?"),
        _matmul_4bit_infer,
        attrs=(("out_features", None), ("in_features", None)),
        lower=_matmul_4bit_lower,
        flops=_matmul_4bit_flops,
        grads=lambda op, graph: (Grad.NEW, Grad.NONE, Grad.NEW)[: len(op.inputs)],
        grads_doc="a new tensor for x and for the bias (the rows' sum); none for the "
        "packed weight (frozen)",
        constants=("weight",),
        workspace=_matmul_4bit_workspace,
        backward_moments=_matmul_4bit_backward,
        kind=OpKind.MATMUL,
        shape_doc="x [..., in], uint8 weight [ceil(out in / 2), 1], bias [out] (x's "
        "dtype) -> "
        "[..., out] in x's dtype; a forward workspace of the dequantized weight [out, in] "
        "and two float32 [ceil(out in / 64)] block maxima",
        saved_doc="nothing (the packed weight, a parameter, is all MatMul4Bit keeps)",
    )
)

"""Quantized weights: bitsandbytes' 4-bit matmul (`--weights nf4|fp4`, specs/std/
quantized.mspec) and `to_dtype`, the casts around it.

bitsandbytes 0.50's `Linear4bit.forward` casts x to its compute dtype, calls
`bnb.matmul_4bit`, and casts the result back to x's dtype. Its forward product
(`gemm_4bit`, under no_grad and in `MatMul4Bit` alike) runs one of two kernels on CUDA:
for few rows of x a fused kernel that reads the packed weight (the output is all it
makes), else `_dequant_linear_fallback`: the whole weight dequantized ([out, in] in the
compute dtype) for one `F.linear`, beside two float32 copies of double-quantized block
maxima (`absmax_dq`, `absmax_dq + offset`, [ceil(n/64)] each). Every GPU fuses at most 4
rows (7 in float32) and dequantizes above 1,536 or where in_features is not a whole
number of blocks; between, its architecture, SM count and the weight's shape decide
(`_gemm_4bit_use_custom_cuda`), which memspec does not model: the op's `fused_rows`
(`--bnb-fused-rows`) says up to where the fused kernel runs, the rest is counted
dequantized. With an input that needs a gradient (a frozen 4-bit weight under LoRA)
`MatMul4Bit` saves nothing but the packed weight (no weight gradient, so not x); its
backward dequantizes the weight again for x's gradient (`dequantize_4bit`: one float32
copy of double-quantized maxima). Modelled from bitsandbytes' source
(autograd/_functions.py, backends/cuda/ops.py, functional.py); the CPU's default kernel
dequantizes at every row count (`fused_rows` 0) and holds one float32 copy fewer in
forward, which the checks against it name.

LLM.int8() (`--weights int8`, specs/std/bitsandbytes/linear8bit.mspec) is two ops here,
as CUDA's `MatMul8bitLt` runs it (a frozen weight: its fast path) at transformers'
threshold of 6: `int8_vectorwise_quant` quantizes x's rows (int8 [..., in] and a float32
scale a row, beside x's float16 copy, |x| and its `>= threshold` mask), and `matmul_8bit`
multiplies them with the int8 weight (an int32 [..., out] product, dequantized to
float16, then to x's dtype), with no [out, in] weight in floating point. It keeps x (an
alias) for backward, which dequantizes the weight to x's dtype for x's gradient. Which
columns of x are outliers is the data's: modelled is none. On CUDA each outlier column
adds its int64 index and x's column in x's dtype, both kept for backward (8 + rows s_x
bytes), and at the product the weight's column as int8, float32 and x's dtype beside one
more [..., out] in x's dtype (addmm's): (5 + s_x) out + rows out s_x bytes, s_x being
x's element size. On the CPU, training runs `MatMul8bitFp` instead, which dequantizes the
whole weight in forward; its backward is CUDA's.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.sizes import note_integer, note_relation
from memspec.ir.types import DType, numel
from memspec.ops.casts import cast_grads, cast_output
from memspec.ops.registry import (
    BackwardMoment,
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    saved_if,
    torch_functional,
)
from memspec.quantize import INT8_THRESHOLD

__all__ = [
    "INT8_QUANT",
    "MATMUL_4BIT",
    "MATMUL_8BIT",
    "MATMUL_FP8",
    "QUANTIZED_MATMULS",
    "TO_DTYPE",
    "blocks_of",
]

MATMUL_4BIT = "matmul_4bit"
MATMUL_8BIT = "matmul_8bit"
MATMUL_FP8 = "matmul_fp8"
INT8_QUANT = "int8_vectorwise_quant"
QUANTIZED_MATMULS = (MATMUL_4BIT, MATMUL_8BIT, MATMUL_FP8)  # one per quantized Linear
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


def _nested(op: OpApply) -> bool:
    """Whether the block maxima are double-quantized (uint8 codes, dequantized to float32
    for each product)."""
    return bool(op.attr("double_quant", True))


def _fused_kernel(op: OpApply, graph: Graph) -> bool:
    """Whether bitsandbytes' gemm_4bit runs its fused kernel for this product: x's rows
    at most `fused_rows` and in_features a whole number of blocks (else it warns and
    dequantizes). At unbound sizes the rows are taken to be more than the fused kernel
    serves (a forward's rows grow with the batch), and an unbound in_features a whole
    number of blocks; both are noted."""
    into = _sizes(op)[1]
    limit = sp.sympify(op.attr("fused_rows", 0))
    if limit == 0:
        return False
    bound = graph.bound
    inner = bound.at(into)
    if inner.is_number and inner % BLOCKSIZE != 0:
        return False
    rows = bound.at(numel(graph.value(op.inputs[0]).shape) / into)
    if not rows.is_number:
        note_relation(sp.Gt, rows, limit)
        return False
    if rows > limit:
        return False
    if not inner.is_number:  # whole blocks, as a model's widths are
        note_integer(inner / BLOCKSIZE)
    return True


def _matmul_4bit_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """The fused kernel's none; the dequantizing fallback's weight in the compute dtype,
    alive while F.linear makes the output, beside two float32 [blocks] copies of the
    double-quantized block maxima (`absmax_dq` and `absmax_dq + offset` on CUDA)."""
    if _fused_kernel(op, graph):
        return sp.Integer(0)
    out, into = _sizes(op)
    maxima = 2 * 4 * blocks_of(out * into) if _nested(op) else sp.Integer(0)
    return maxima + _dequantized(op, graph)


def _matmul_4bit_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """The bias's gradient first (the rows' sum), then dequantize_4bit again (its float32
    block maxima when double-quantized, then the weight in the dtype it was quantized
    from, taken to be the compute dtype), then x's gradient beside it."""
    out, into = _sizes(op)
    x = graph.value(op.inputs[0])
    weight = _dequantized(op, graph)
    grad = numel(x.shape) * x.dtype.itemsize
    maxima = 4 * blocks_of(out * into) if _nested(op) else sp.Integer(0)
    first = (BackwardMoment(sp.Integer(0), given=(2,)),) if len(op.inputs) > 2 else ()
    return (
        *first,
        BackwardMoment(maxima + weight),
        BackwardMoment(weight + grad),
    )


def _matmul_4bit_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W^T: 2 * (output elements) * in_features, as a dense linear's."""
    _, into = _sizes(op)
    return 2 * numel(graph.value(op.outputs[0]).shape) * into


def _matmul_4bit_lower(tensors, attrs):
    """An emulation with the same tensors (bitsandbytes needs its quant_state, which a
    lowered uint8 parameter has not): the output alone where the fused kernel runs, else
    a weight of the compute dtype (and the block maxima's float32 copies) made and freed
    in forward; the weight again in backward."""
    torch, F = torch_functional()
    out, into = int(attrs["out_features"]), int(attrs["in_features"])
    blocks = -(-out * into // BLOCKSIZE)
    nested, limit = bool(attrs.get("double_quant", True)), int(attrs.get("fused_rows", 0))
    maxima = blocks if nested else 0

    class MatMul4Bit(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, packed, *bias):
            ctx.x_dtype, ctx.has_bias = x.dtype, bool(bias)
            if x.numel() // into <= limit and into % BLOCKSIZE == 0:  # the fused kernel
                result = torch.zeros(*x.shape[:-1], out, dtype=x.dtype, device=x.device)
                if bias:  # the kernel adds it in place
                    result += bias[0]
                return result
            absmax = torch.empty(maxima, dtype=torch.float32, device=x.device)
            shifted = absmax + 0.0
            weight = torch.zeros(out, into, dtype=x.dtype, device=x.device)
            result = F.linear(x, weight, bias[0] if bias else None)
            del absmax, shifted, weight
            return result

        @staticmethod
        def backward(ctx, grad):
            # first, as MatMul4Bit, where the bias needs one
            grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
            absmax = torch.empty(maxima, dtype=torch.float32, device=grad.device)
            weight = torch.zeros(out, into, dtype=ctx.x_dtype, device=grad.device)
            del absmax
            grad_x = torch.matmul(grad, weight)
            return (grad_x, None, grad_bias) if ctx.has_bias else (grad_x, None)

    return MatMul4Bit.apply(*tensors)


register(
    OpDef(
        MATMUL_4BIT,
        "x @ W^T with W a frozen 4-bit weight (bitsandbytes' matmul_4bit: NF4 or FP4, "
        "blocksize 64): its fused kernel at most fused_rows rows of x, else the weight "
        "dequantized to x's dtype first",
        ("x", "weight", "bias?"),
        _matmul_4bit_infer,
        attrs=(
            ("out_features", None),
            ("in_features", None),
            ("double_quant", True),
            ("fused_rows", 0),
        ),
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
        "[..., out] in x's dtype; at most fused_rows rows of x (and in a multiple of 64): "
        "bitsandbytes' fused kernel, no workspace; else a forward workspace of the "
        "dequantized weight [out, in] and, double_quant, two float32 [ceil(out in / 64)] "
        "block maxima",
        saved_doc="nothing (the packed weight, a parameter, is all MatMul4Bit keeps)",
    )
)


def _int8_quant_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    """x's rows in int8, and a float32 scale (absmax) a row."""
    x = ctx.inputs[0]
    shape = ctx.expect_rank(0, 1)
    if not x.dtype.is_float:
        raise ctx.fail(f"quantizes a float tensor, not {x.dtype.value}")
    if x.strides is not None:
        raise ctx.fail("x is reshaped to [rows, in] (a copy when not contiguous): not modelled")
    return (OutputSpec(shape, DType.int8), OutputSpec(shape[:-1], DType.float32))


def _int8_quant_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """x in float16 (A.to(float16), a copy unless x is float16), and with a threshold
    |x| in float16 beside its bool mask `|x| >= threshold` (outliers.any() finds none)."""
    x = graph.value(op.inputs[0])
    elements = numel(x.shape)
    copy = 2 * elements if x.dtype is not DType.float16 else sp.Integer(0)
    mask = 3 * elements if sp.sympify(op.attr("threshold")) > 0 else sp.Integer(0)
    return copy + mask


def _int8_quant_lower(tensors, attrs):
    """The tensors bitsandbytes' CUDA kernel makes (not its values): the outputs, then
    the float16 copy, |x| and the mask, freed as it returns."""
    torch, _ = torch_functional()
    (x,) = tensors
    threshold = float(attrs["threshold"])
    with torch.no_grad():
        half = x.to(torch.float16)
        scales = torch.zeros(x.shape[:-1], dtype=torch.float32, device=x.device)
        rows = torch.zeros(x.shape, dtype=torch.int8, device=x.device)
        if threshold > 0:
            mask = half.abs() >= threshold
            del mask
        del half
    return rows, scales


register(
    OpDef(
        INT8_QUANT,
        "x's rows quantized to int8 with a float32 absmax a row (bitsandbytes' "
        "int8_vectorwise_quant, as MatMul8bitLt runs it on x); a column with an |x| >= "
        "threshold is an outlier (none modelled)",
        ("x",),
        _int8_quant_infer,
        attrs=(("threshold", INT8_THRESHOLD),),
        lower=_int8_quant_lower,
        differentiable=False,
        workspace=_int8_quant_workspace,
        kind=OpKind.ELEMENTWISE,
        shape_doc="x [..., in] (contiguous) -> int8 [..., in], float32 [...]; a workspace of "
        "x in float16 (unless it is) and, with threshold > 0, |x| in float16 and its bool "
        "mask",
        saved_doc="nothing",
    )
)


def _matmul_8bit_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, rows, scales, weight = ctx.inputs[:4]
    shape = ctx.expect_rank(0, 1)
    if not x.dtype.is_float:
        raise ctx.fail(f"x is a float tensor, not {x.dtype.value}")
    if rows.dtype is not DType.int8 or scales.dtype is not DType.float32:
        raise ctx.fail("x's int8 rows and float32 scales come from int8_vectorwise_quant(x)")
    if len(rows.shape) != len(shape) or len(scales.shape) != len(shape) - 1:
        raise ctx.fail("x's int8 rows have x's shape, its scales x's without the last dim")
    for a, b in zip((*rows.shape, *scales.shape), (*shape, *shape[:-1]), strict=True):
        ctx.expect_same(a, b, "x's quantized rows against x")
    if weight.dtype is not DType.int8 or len(weight.shape) != 2:
        raise ctx.fail(f"the weight is int8 [out, in], as Int8Params stores it, not {weight.dtype}")
    out = weight.shape[0]
    ctx.expect_same(weight.shape[1], shape[-1], "the weight's in against x's last dim")
    if len(ctx.inputs) > 4:
        bias = ctx.inputs[4]
        ctx.expect_same(bias.shape[-1], out, "bias against the weight's out")
        if bias.dtype != x.dtype:
            raise ctx.fail("the bias is cast to x's dtype first, as Linear8bitLt does")
        if bias.requires_grad and len(shape) > 2:
            # MatMul8bitLt's backward: grad_output.sum(0), over the first dim only
            raise ctx.fail(
                "a trained bias needs a 2-D x: MatMul8bitLt sums its gradient over dim 0 "
                "only, which autograd rejects for more dims"
            )
    return (OutputSpec((*shape[:-1], out), x.dtype),)


def _matmul_8bit_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """x (ctx.tensors' A, an alias) when it needs a gradient, as a ctx attribute: held
    until the graph goes, through a checkpoint too; with no outlier column, subA is empty
    and state.idx an empty int64 tensor (0 bytes)."""
    return tuple(replace(s, in_ctx=True) for s in saved_if(graph, op, 0, (0,), "input"))


def _matmul_8bit_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """int8_scaled_mm: the int32 product, and int8_mm_dequant's float16 result beside
    the output when x is not float16 (.to(x.dtype) copies)."""
    x, out = graph.value(op.inputs[0]), numel(graph.value(op.outputs[0]).shape)
    return 4 * out + (2 * out if x.dtype is not DType.float16 else sp.Integer(0))


def _matmul_8bit_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """The bias's gradient first (the rows' sum), then, when x needs a gradient,
    CB.to(x's dtype) beside its float32 row scales (SCB / 127, [out, 1]), then x's
    gradient beside the weight."""
    x, weight = graph.value(op.inputs[0]), graph.value(op.inputs[3])
    first = (BackwardMoment(sp.Integer(0), given=(4,)),) if len(op.inputs) > 4 else ()
    if not x.requires_grad:
        return first
    out, into = weight.shape
    dequantized = out * into * x.dtype.itemsize
    grad = numel(x.shape) * x.dtype.itemsize
    return (*first, BackwardMoment(dequantized + 4 * out), BackwardMoment(dequantized + grad))


def _matmul_8bit_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W^T: 2 * (output elements) * in_features, as a dense linear's."""
    into = graph.value(op.inputs[3]).shape[1]
    return 2 * numel(graph.value(op.outputs[0]).shape) * into


def _matmul_8bit_lower(tensors, attrs):
    """An emulation with MatMul8bitLt's tensors on CUDA (not its values): the int32
    product and its float16 dequantization made and freed in forward, x saved; in
    backward the weight in x's dtype beside its row scales, then x's gradient."""
    torch, _ = torch_functional()

    class MatMul8bitLt(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, rows, scales, weight, *bias):
            out, into = weight.shape
            shape = (*x.shape[:-1], out)
            product = torch.zeros(shape, dtype=torch.int32, device=x.device)
            result = torch.zeros(shape, dtype=torch.float16, device=x.device).to(x.dtype)
            del product
            # A, kept (a ctx attribute, as bitsandbytes keeps it) when x or the weight
            # needs a gradient (the weight never does)
            ctx.tensors = (None, None, x if ctx.needs_input_grad[0] else None)
            ctx.sizes, ctx.has_bias = (out, into), bool(bias)
            ctx.x_dtype, ctx.x_shape = x.dtype, x.shape
            return result

        @staticmethod
        def backward(ctx, grad):
            out, into = ctx.sizes
            grad_bias = grad_x = None
            if ctx.has_bias and ctx.needs_input_grad[4]:  # first, as MatMul8bitLt
                grad_bias = grad.sum(0)
            if ctx.needs_input_grad[0]:
                scales = torch.empty(out, 1, dtype=torch.float32, device=grad.device)
                weight = torch.zeros(out, into, dtype=ctx.x_dtype, device=grad.device)
                del scales
                grad_x = torch.matmul(grad.reshape(-1, out), weight).view(ctx.x_shape)
            rest = (None, None, None)
            return (grad_x, *rest, grad_bias) if ctx.has_bias else (grad_x, *rest)

    return MatMul8bitLt.apply(*tensors)


register(
    OpDef(
        MATMUL_8BIT,
        "x @ W^T with W a frozen int8 weight (LLM.int8(): bitsandbytes' MatMul8bitLt on "
        "CUDA), given x's int8 rows and scales; no outlier column (each adds 8 + rows s_x "
        "bytes saved and (5 + s_x) out + rows out s_x at the product)",
        ("x", "rows", "scales", "weight", "bias?"),
        _matmul_8bit_infer,
        _matmul_8bit_saved,
        lower=_matmul_8bit_lower,
        flops=_matmul_8bit_flops,
        grads=lambda op, graph: (Grad.VIEW, Grad.NONE, Grad.NONE, Grad.NONE, Grad.NEW)[
            : len(op.inputs)
        ],
        grads_doc="x's a view of a new tensor (grad_A.view(x's shape)); the bias's a new "
        "tensor (the rows' sum; trained only with a 2-D x); none for the int8 weight "
        "(frozen) nor x's int8 rows",
        constants=("rows", "scales", "weight"),
        workspace=_matmul_8bit_workspace,
        backward_moments=_matmul_8bit_backward,
        kind=OpKind.MATMUL,
        shape_doc="x [..., in], its int8 rows [..., in] and float32 scales [...], int8 "
        "weight [out, in], bias [out] (x's dtype) -> [..., out] in x's dtype; a forward "
        "workspace of the int32 product and, unless x is float16, its float16 "
        "dequantization",
        saved_doc="x, an alias, when it needs a gradient, in MatMul8bitLt's ctx.tensors: "
        "held until the graph is freed (not at its backward; a checkpoint keeps it too)",
    )
)


def _matmul_fp8_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, weight, scales = ctx.inputs[:3]
    block = ctx.attrs["block"]
    if not isinstance(block, sp.Expr) or not (block.is_Integer and block >= 1):
        raise ctx.fail("block is a whole number of weights, at least 1 (128: [128, 128])")
    shape = ctx.expect_rank(0, 1)
    if not x.dtype.is_float or x.dtype is DType.float8_e4m3fn:
        raise ctx.fail(f"x is a float16, bfloat16 or float32 tensor, not {x.dtype.value}")
    if weight.dtype is not DType.float8_e4m3fn or len(weight.shape) != 2:
        raise ctx.fail("the weight is float8_e4m3fn [out, in], as FP8Linear stores it")
    out, into = weight.shape
    ctx.expect_same(into, shape[-1], "the weight's in against x's last dim")
    if scales.dtype is not DType.float32 or len(scales.shape) != 2:
        raise ctx.fail("the scales are float32 [ceil(out / block), ceil(in / block)]")
    ctx.expect_same(scales.shape[0], sp.ceiling(out / block), "the scales' rows")
    ctx.expect_same(scales.shape[1], sp.ceiling(into / block), "the scales' columns")
    if len(ctx.inputs) > 3:
        ctx.expect_same(ctx.inputs[3].shape[-1], out, "bias against the weight's out")
    return (OutputSpec((*shape[:-1], out), x.dtype),)


def _matmul_fp8_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """The weight and its scales, when x needs a gradient (FP8LinearFunction's
    save_for_backward): parameters, so no bytes of their own."""
    return (
        *saved_if(graph, op, 1, (0,), "weight"),
        *saved_if(graph, op, 2, (0,), "scales"),
    )


def _matmul_fp8_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """When x needs a gradient, FP8LinearFunction's backward dequantizes the weight to
    the gradient's dtype (x's): the scales cast (no copy in float32), the weight cast,
    the scales' rows repeated `block` times; the weight scaled in place; then x's
    gradient, grad_output @ weight, beside it."""
    x, weight, scales = (graph.value(v) for v in op.inputs[:3])
    if not x.requires_grad:
        return ()
    size = x.dtype.itemsize
    rows, columns = scales.shape
    cast = rows * columns * size if x.dtype is not DType.float32 else sp.Integer(0)
    dequantized = numel(weight.shape) * size
    repeated = rows * sp.sympify(op.attr("block")) * columns * size
    grad = numel(x.shape) * size
    return (BackwardMoment(cast + dequantized + repeated), BackwardMoment(dequantized + grad))


def _matmul_fp8_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W^T: 2 * (output elements) * in_features, as a dense linear's."""
    into = graph.value(op.inputs[1]).shape[1]
    return 2 * numel(graph.value(op.outputs[0]).shape) * into


def _matmul_fp8_lower(tensors, attrs):
    """An emulation with the tensors transformers' FP8Linear makes (not its values):
    the fused kernel's output (the bias added in place) in forward; in backward the
    weight dequantized as `_dequantize_fp8_weight` does it, then x's gradient."""
    torch, _ = torch_functional()
    block = int(attrs["block"])

    class FP8LinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, scales, *bias):
            result = torch.zeros((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device=x.device)
            if bias:
                result.add_(bias[0])
            if ctx.needs_input_grad[0]:  # only then does FP8Linear go through the Function
                ctx.save_for_backward(weight, scales)
            ctx.has_bias = bool(bias)
            return result

        @staticmethod
        def backward(ctx, grad):
            weight, scales = ctx.saved_tensors
            scale = scales.to(grad.dtype)  # a copy unless float32
            dequantized = weight.to(grad.dtype)
            scale = scale.repeat_interleave(block, dim=-2)[..., : weight.shape[0], :]
            del scale
            grad_x = grad @ dequantized
            return (grad_x, None, None, None) if ctx.has_bias else (grad_x, None, None)

    return FP8LinearFunction.apply(*tensors)


register(
    OpDef(
        MATMUL_FP8,
        "x @ W^T with W a frozen float8_e4m3fn weight scaled per [block, block] (transformers' "
        "FP8Linear, FineGrainedFP8Config): one fused kernel quantizes x and multiplies",
        ("x", "weight", "scales", "bias?"),
        _matmul_fp8_infer,
        _matmul_fp8_saved,
        lower=_matmul_fp8_lower,
        attrs=(("block", 128),),
        flops=_matmul_fp8_flops,
        grads=lambda op, graph: (Grad.NEW, Grad.NONE, Grad.NONE, Grad.NONE)[: len(op.inputs)],
        grads_doc="a new tensor for x (through the dequantized weight); none for the weight, "
        "its scales or the bias (FP8LinearFunction gives them none)",
        constants=("weight", "scales", "bias?"),
        backward_moments=_matmul_fp8_backward,
        kind=OpKind.MATMUL,
        shape_doc="x [..., in], float8_e4m3fn weight [out, in], float32 scales "
        "[ceil(out / block), ceil(in / block)], bias [out] -> [..., out] in x's dtype, the "
        "bias added in place",
        saved_doc="the weight and its scales (parameters: no bytes of their own)",
    )
)

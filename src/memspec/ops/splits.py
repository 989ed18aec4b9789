"""`chunk` and `split`: one tensor as several views along a dim, as torch makes them.

Each piece is a narrowed view of its input (no new memory, nothing saved); backward
makes one new gradient of the input's shape from the pieces' gradients. The number of
pieces must be known: a symbolic size is split evenly (the spec assumes the divisor
divides it); a concrete one as torch does, the last piece taking the remainder.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.types import Shape
from memspec.ops.registry import InferContext, OpDef, OpKind, OutputSpec, register
from memspec.ops.strides import actual, normalize
from memspec.ops.views import _dim


def _pieces(ctx: InferContext, x_shape: Shape, dim: int, sizes: list[sp.Expr]):
    """One view per size along `dim`, keeping the input's strides."""
    (x,) = ctx.inputs
    strides = actual(x.shape, x.strides)
    out = []
    for size in sizes:
        shape = (*x_shape[:dim], size, *x_shape[dim + 1 :])
        strides_out = normalize(shape, strides, ctx.bound)
        out.append(OutputSpec(shape, x.dtype, view_of=0, strides=strides_out))
    return tuple(out)


def _positive_integer(ctx: InferContext, name: str) -> sp.Expr:
    value = ctx.attrs[name]
    if not isinstance(value, sp.Expr) or (value.is_number and (not value.is_Integer or value < 1)):
        raise ctx.fail(f"{name} must be a positive integer, got {value}")
    return value


def _chunk_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dim = _dim(ctx, x.shape, ctx.attrs["dim"])
    chunks = _positive_integer(ctx, "chunks")
    n = x.shape[dim]
    if not chunks.is_Integer:
        raise ctx.fail(f"chunks must be a known integer, got {chunks}")
    if n.is_Integer:  # torch: pieces of ceil(n / chunks), as many as fit
        size = -(-int(n) // int(chunks))
        sizes = [min(size, int(n) - i) for i in range(0, int(n), size)]
        return _pieces(ctx, x.shape, dim, [sp.Integer(s) for s in sizes])
    ctx.assume_integer(n / chunks, f"{chunks} divides {n}")
    return _pieces(ctx, x.shape, dim, [n / chunks] * int(chunks))


def _split_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dim = _dim(ctx, x.shape, ctx.attrs["dim"])
    size = _positive_integer(ctx, "split_size")
    n = x.shape[dim]
    if n.is_Integer and size.is_Integer:  # torch: pieces of split_size, then the rest
        sizes = [min(int(size), int(n) - i) for i in range(0, int(n), int(size))]
        return _pieces(ctx, x.shape, dim, [sp.Integer(s) for s in sizes])
    count = sp.simplify(n / size)
    if not count.is_Integer:
        raise ctx.fail(f"{n} / {size} pieces: the number of pieces must be a known integer")
    return _pieces(ctx, x.shape, dim, [size] * int(count))


register(
    OpDef(
        "chunk",
        "torch.chunk: x as `chunks` views along dim (a tuple; unpack it)",
        ("x",),
        _chunk_infer,
        attrs=(("chunks", None), ("dim", 0)),
        lower=lambda t, a: t[0].chunk(a["chunks"], a["dim"]),
        kind=OpKind.LAYOUT,
        shape_doc="views of x with dim's size n / chunks (torch's uneven pieces for a known n)",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "split",
        "torch.split: x as views of split_size along dim (a tuple; unpack it)",
        ("x",),
        _split_infer,
        attrs=(("split_size", None), ("dim", 0)),
        lower=lambda t, a: t[0].split(a["split_size"], a["dim"]),
        kind=OpKind.LAYOUT,
        shape_doc="views of x with dim's size split_size, the last the remainder; "
        "n / split_size pieces, which must be a known number",
        saved_doc="nothing",
    )
)

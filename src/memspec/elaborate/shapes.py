"""Matching tensor shapes against written types: signatures bind, annotations check."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.errors import ShapeError
from memspec.ir.types import DType, Shape, shape_str
from memspec.ops.registry import same_dim
from memspec.syntax import nodes as n

__all__ = ["bind_type", "divisibility_text", "same_shape", "type_dims"]

Evaluate = Callable[[n.Expr], sp.Expr]


def divisibility_text(expr: sp.Expr) -> str:
    """`H divides D` for `D/H`; otherwise `expr is an integer`."""
    num, den = sp.fraction(sp.together(expr))
    if den != 1:
        return f"{den} divides {num}"
    return f"{expr} is an integer"


def type_dims(t: n.TypeTensor, evaluate: Evaluate) -> Shape:
    """The dims of a fully written type (no `...`), evaluated."""
    if any(d is None for d in t.dims):
        raise ShapeError("'...' is not allowed here: the shape must be fully known", t.span)
    return tuple(evaluate(d) for d in t.dims)


def bind_type(
    t: n.TypeTensor,
    shape: Shape,
    dtype: DType,
    evaluate: Evaluate,
    bind: Callable[[str, sp.Expr], None] | None,
    is_known: Callable[[str], bool],
    ellipsis: Shape | None,
    what: str,
) -> Shape | None:
    """Check `shape` against `t`, binding unknown bare names with `bind` (signatures).

    Returns the dims matched by `...` (None when `t` has none). `evaluate` raises for
    an unknown name unless `bind` is given, in which case the name becomes a pattern
    variable bound to the actual size, as einops does.
    """
    if t.dtype is not None and DType.parse(t.dtype) is None:
        raise ShapeError(DType.unknown(t.dtype), t.span)
    if t.dtype is not None and DType.parse(t.dtype) is not dtype:
        raise ShapeError(f"{what}: expected dtype {t.dtype}, got {dtype.value}", t.span)
    has_ellipsis = None in t.dims
    named = [d for d in t.dims if d is not None]
    if len(shape) < len(named) or (not has_ellipsis and len(shape) != len(named)):
        raise ShapeError(f"{what}: expected {_written(t)}, got {shape_str(shape)}", t.span)
    lead = len(shape) - len(named)
    matched: Shape | None = None
    dims = iter(shape)
    for written in t.dims:
        if written is None:
            matched = tuple(next(dims) for _ in range(lead))
            if ellipsis is not None and not same_shape(matched, ellipsis):
                raise ShapeError(
                    f"{what}: '...' is {shape_str(matched)} here but "
                    f"{shape_str(ellipsis)} in the signature",
                    t.span,
                )
            continue
        actual = next(dims)
        if bind is not None and isinstance(written, n.ExprName) and not is_known(written.name):
            bind(written.name, actual)
            continue
        expected = evaluate(written)
        if not same_dim(expected, actual):
            raise ShapeError(
                f"{what}: expected {_written(t)}, got {shape_str(shape)} ({expected} != {actual})",
                written.span or t.span,
            )
    return matched


def same_shape(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(same_dim(x, y) for x, y in zip(a, b, strict=True))


def _written(t: n.TypeTensor) -> str:
    """The type as written in the spec, for messages."""
    source = t.span.source.text if t.span else None
    if source is not None and t.span.line == t.span.end_line:
        return t.span.source.line(t.span.line)[t.span.col - 1 : t.span.end_col - 1]
    return "[" + ", ".join("..." if d is None else "?" for d in t.dims) + "]"

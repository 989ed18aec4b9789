"""Symbolic strides, for telling views from copies the way PyTorch does.

A value's `strides` are None when it is contiguous (row-major); views keep the strides
torch would give them. `merge` is torch's rule for viewing several dims as one: each
dim's stride must equal the next one's stride times the next one's size (size-1 dims
aside); when it fails, `reshape` copies. Both rules decide at the bound sizes (`bound`):
torch decides on concrete sizes, where B = 1 makes a dim of any stride.
"""

from __future__ import annotations

import functools
import itertools

import sympy as sp

from memspec.ir.sizes import GENERAL, BoundSizes, note_relation
from memspec.ir.types import Shape

__all__ = ["actual", "dense_like", "iterated", "merge", "normalize", "standard"]

Strides = tuple[sp.Expr, ...]


def _eq(a: sp.Expr, b: sp.Expr) -> bool:
    return a == b or sp.expand(a - b) == 0


def standard(shape: Shape) -> Strides:
    """Row-major strides of a contiguous tensor."""
    strides: list[sp.Expr] = []
    running = sp.Integer(1)
    for size in reversed(shape):
        strides.append(running)
        running = running * size
    return tuple(reversed(strides))


def actual(shape: Shape, strides: Strides | None) -> Strides:
    return standard(shape) if strides is None else strides


def normalize(shape: Shape, strides: Strides, bound: BoundSizes = GENERAL) -> Strides | None:
    """None when `strides` are the contiguous ones (size-1 dims do not matter)."""
    ok = all(
        bound.is_one(n) or bound.equal(s, t)
        for n, s, t in zip(shape, strides, standard(shape), strict=True)
    )
    return None if ok else tuple(strides)


def merge(sizes: Shape, strides: Strides, bound: BoundSizes = GENERAL) -> sp.Expr | None:
    """The stride of `sizes` viewed as one dim, or None when that needs a copy."""
    dims = [(n, s) for n, s in zip(sizes, strides, strict=True) if not bound.is_one(n)]
    if not dims:
        return sp.Integer(1)
    for (_, outer), (size, inner) in itertools.pairwise(dims):
        if not bound.equal(outer, inner * size):
            return None
    return dims[-1][1]


def _outer_first(a: sp.Expr, b: sp.Expr, bound: BoundSizes = GENERAL) -> int:
    """-1 if stride a belongs to a dim outside (larger stride than) b's, 1 if inside.

    Strides are products of sizes, each a positive integer: a stride of 1 is innermost,
    and a/b whole (no denominator left) means a >= b. Otherwise a numeric probe decides.
    Bound sizes are compared at their values, as torch compares them.
    """
    a, b = bound.at(a), bound.at(b)
    if _eq(a, b):
        return 0
    note_relation(sp.Ne, a, b)  # equal strides tell the dims apart no more
    if b == 1 or a == 1:
        return -1 if b == 1 else 1
    for x, y, sign in ((a, b, -1), (b, a, 1)):
        if sp.fraction(sp.cancel(x / y))[1] == 1:
            return sign
    subs = {s: 1000 + 37 * k for k, s in enumerate(sorted((a * b).free_symbols, key=str))}
    outer = float(a.xreplace(subs)) > float(b.xreplace(subs))
    note_relation(sp.Gt if outer else sp.Lt, a, b)
    return -1 if outer else 1


def _dense(shape: Shape, order: list[int], bound: BoundSizes) -> Strides | None:
    """Dense strides with dims laid out outermost first in `order`."""
    strides: list[sp.Expr] = [sp.Integer(0)] * len(shape)
    running = sp.Integer(1)
    for i in reversed(order):
        strides[i] = running
        running = running * shape[i]
    return normalize(shape, tuple(strides), bound)


def iterated(
    shape: Shape, operands: list[tuple[Shape, Strides | None]], bound: BoundSizes = GENERAL
) -> Strides | None:
    """Strides of an elementwise op's output (torch's TensorIterator): dense, its dims in
    the order the operands' strides give them, the first operand that tells two dims
    apart deciding; broadcast and size-1 dims tell nothing. So `x.transpose(1, 2) * y`
    keeps x's memory order, and the result of `a + b` follows `a`."""
    if all(strides is None for _, strides in operands):
        return None
    n = len(shape)
    aligned = []
    for sizes, strides in operands:
        full = actual(sizes, strides)
        pad = [sp.Integer(0)] * (n - len(sizes))
        aligned.append(
            (
                *pad,
                *(
                    sp.Integer(0) if bound.is_one(size) else st
                    for size, st in zip(sizes, full, strict=True)
                ),
            )
        )

    def outer_first(i: int, j: int) -> int:
        for strides in aligned:
            if strides[i] != 0 and strides[j] != 0:
                order = _outer_first(strides[i], strides[j], bound)
                if order:
                    return order
        return i - j

    return _dense(shape, sorted(range(n), key=functools.cmp_to_key(outer_first)), bound)


def dense_like(shape: Shape, like: Strides, bound: BoundSizes = GENERAL) -> Strides | None:
    """Strides of a new dense tensor laid out in the same dim order as `like` (torch's
    empty_like-style allocation, used by kernels that follow their input's layout)."""
    order = sorted(
        range(len(shape)),
        key=functools.cmp_to_key(lambda i, j: _outer_first(like[i], like[j], bound) or i - j),
    )
    return _dense(shape, order, bound)

"""Exact integer values of memspec's formulas at every point of a grid, with numpy.

A formula is a sympy expression in the grid's dims: sums and products of sizes, rational
coefficients, quotients by sizes (`D/H`), and `floor`/`ceiling`/`Max`/`Min` of those. It
is evaluated as integers only, never floats: each quotient is brought over one
denominator (`sp.together`), its numerator and denominator evaluated exactly, and the
division done as integer division, with the points where it leaves a remainder reported
(a size that breaks the spec's divisibility). Each dim is an array along its own axis
(an open grid), so a term in B alone costs as many operations as B has values, not the
whole grid. int64 is used where a bound on every intermediate value shows it cannot
overflow; Python integers (numpy object arrays: slower, still exact) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sympy as sp

from memspec.errors import UsageError

__all__ = ["GridEvaluator"]

_INT64_SAFE = 2**62  # every intermediate below this: int64 arithmetic cannot overflow
_RELATIONS = {
    sp.Eq: lambda s: s == 0,
    sp.Ne: lambda s: s != 0,
    sp.Lt: lambda s: s < 0,
    sp.Le: lambda s: s <= 0,
    sp.Gt: lambda s: s > 0,
    sp.Ge: lambda s: s >= 0,
}


def _parts(expr: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(numerator, denominator) over one denominator, both with integer coefficients."""
    if not any(
        (isinstance(a, sp.Pow) and a.exp.is_negative) or (a.is_Rational and not a.is_Integer)
        for a in sp.preorder_traversal(expr)
        if not isinstance(a, (sp.floor, sp.ceiling, sp.Max, sp.Min))
    ):
        return expr, sp.Integer(1)
    return sp.fraction(sp.together(expr))


class GridEvaluator:
    """Formulas over the grid `axes` (symbol -> values, in axis order)."""

    def __init__(self, axes: Sequence[tuple[sp.Symbol, Sequence[int]]]) -> None:
        self.shape = tuple(len(values) for _, values in axes)
        rank = len(axes)
        self._open: dict[sp.Symbol, np.ndarray] = {}
        self._largest: dict[sp.Symbol, int] = {}
        for k, (symbol, values) in enumerate(axes):
            view = [1] * rank
            view[k] = len(values)
            self._open[symbol] = np.asarray(values, dtype=np.int64).reshape(view)
            self._largest[symbol] = max(values)
        self._objects: dict[sp.Symbol, np.ndarray] = {}

    # -- public ---------------------------------------------------------------------

    def integers(self, expr: sp.Expr) -> tuple[np.ndarray, np.ndarray | None]:
        """The value at every point (broadcast to the grid's shape), and where it is not
        a whole number (None: nowhere); there the value is its floor."""
        num, den = _parts(expr)
        wide = self._wide(num, den)
        n = self._int(num, wide)
        if den == 1:
            return np.broadcast_to(n, self.shape), None
        d = self._int(den, wide)
        q, r = divmod(n, d)  # numpy's divmod for arrays, Python's for object arrays alike
        inexact = np.broadcast_to(r != 0, self.shape)
        return np.broadcast_to(q, self.shape), (inexact if inexact.any() else None)

    def whole(self, expr: sp.Expr) -> np.ndarray:
        """Where `expr` is a whole number."""
        _, inexact = self.integers(expr)
        return np.ones(self.shape, bool) if inexact is None else ~inexact

    def holds(self, relation: sp.Basic) -> np.ndarray:
        """Where the relation (Eq, Ne, Lt, Le, Gt, Ge of two expressions) holds."""
        test = _RELATIONS.get(type(relation))
        if test is None:
            raise UsageError(f"a sweep cannot evaluate the condition {relation}")
        num, den = _parts(sp.expand(relation.lhs - relation.rhs))
        wide = self._wide(num, den)
        n = self._int(num, wide)
        sign = _sign(n)
        if den != 1:  # a denominator of sizes is positive, but its sign is read, not assumed
            sign = sign * _sign(self._int(den, wide))
        return np.broadcast_to(test(sign), self.shape)

    # -- evaluation -----------------------------------------------------------------

    def _wide(self, *exprs: sp.Expr) -> bool:
        """Whether some intermediate value may reach 2^62: then Python integers."""
        return any(self._bound(e) >= _INT64_SAFE for e in exprs)

    def _bound(self, expr: sp.Expr) -> int:
        """A bound on the magnitude of every value computed for `expr` (sizes >= 1)."""
        if expr.is_Integer:
            return abs(int(expr))
        if expr.is_Symbol:
            return self._largest[expr] if expr in self._largest else _unknown(expr)
        if isinstance(expr, sp.Add):
            return sum(self._bound(a) for a in expr.args)
        if isinstance(expr, sp.Mul):
            product = 1
            for a in expr.args:
                product *= self._bound(a)
            return product
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return self._bound(expr.base) ** int(expr.exp)
        if isinstance(expr, (sp.floor, sp.ceiling)):
            num, den = _parts(expr.args[0])
            return max(self._bound(num), self._bound(den)) + 1
        if isinstance(expr, (sp.Max, sp.Min)):
            return max(self._bound(a) for a in expr.args)
        return sum(self._bound(a) for a in _parts(expr))  # a nested quotient

    def _int(self, expr: sp.Expr, wide: bool):
        """An integer-valued expression: an int or an array along the axes it uses."""
        if expr.is_Integer:
            return int(expr)
        if expr.is_Symbol:
            if expr not in self._open:
                _unknown(expr)
            if not wide:
                return self._open[expr]
            if expr not in self._objects:
                self._objects[expr] = self._open[expr].astype(object)
            return self._objects[expr]
        if isinstance(expr, sp.Add):
            total = 0
            for a in expr.args:
                total = total + self._int(a, wide)
            return total
        if isinstance(expr, sp.Mul):
            product = 1
            for a in expr.args:
                product = product * self._int(a, wide)
            return product
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return self._int(expr.base, wide) ** int(expr.exp)
        if isinstance(expr, (sp.floor, sp.ceiling)):
            num, den = _parts(expr.args[0])
            n, d = self._int(num, wide), self._int(den, wide)
            return n // d if isinstance(expr, sp.floor) else -((-n) // d)
        if isinstance(expr, (sp.Max, sp.Min)):
            pick = np.maximum if isinstance(expr, sp.Max) else np.minimum
            values = [self._exact(a, wide) for a in expr.args]
            out = values[0]
            for v in values[1:]:
                out = pick(out, v)
            return out
        return self._exact(expr, wide)

    def _exact(self, expr: sp.Expr, wide: bool):
        """A sub-expression that must be whole (a Max's argument): its exact value."""
        num, den = _parts(expr)
        if den == 1 and num == expr and not _evaluable(expr):
            raise UsageError(f"a sweep cannot evaluate {expr} ({type(expr).__name__})")
        n = self._int(num, wide)
        if den == 1:
            return n
        d = self._int(den, wide)
        if np.any(n % d != 0):
            raise UsageError(f"{expr} is not a whole number at some point of the grid")
        return n // d


def _sign(values) -> np.ndarray:
    """-1, 0 or 1 at each point (int64 or Python integers alike)."""
    return np.asarray(values > 0, dtype=np.int8) - np.asarray(values < 0, dtype=np.int8)


def _evaluable(expr: sp.Expr) -> bool:
    return (
        expr.is_Integer
        or expr.is_Symbol
        or isinstance(expr, (sp.Add, sp.Mul, sp.Pow, sp.floor, sp.ceiling, sp.Max, sp.Min))
    )


def _unknown(symbol: sp.Symbol) -> int:
    raise UsageError(f"{symbol} has no value: bind it (--set, --preset) or sweep it (--grid)")

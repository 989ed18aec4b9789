"""The largest integer at which every limit holds: `solve`'s search, exact without
assuming that memory grows with the symbol.

A limit is `least <= f(x) <= most` for an expression `f` of one symbol. Where `f` is a
rational function of x, whether the limit holds changes only at a real root of
`f - most` or `f - least` (or at a pole), and sympy isolates those roots exactly; where
it is not (a floor of sizes), `f` must be shown monotone term by term, and bisection
finds the one place the limit changes. Between two such breakpoints nothing changes,
so the largest value that satisfies every limit is the right end of the highest run
of values where they all hold: only the breakpoints are evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from memspec.errors import UsageError

__all__ = ["Limit", "grows", "largest", "smallest"]


@dataclass(frozen=True)
class Limit:
    """least <= expr <= most (either may be None); `what` names it in a refusal."""

    expr: sp.Expr
    least: int | None = None
    most: int | None = None
    what: str = "the memory"

    def holds(self, x: sp.Symbol, v: int) -> bool:
        value = self.expr.xreplace({x: sp.Integer(v)})
        if not value.is_number or value.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            return False
        return (self.least is None or value >= self.least) and (
            self.most is None or value <= self.most
        )


def grows(expr: sp.Expr, x: sp.Symbol) -> bool:
    """Whether `expr` never falls as x (>= 1) grows, shown term by term: c * x^k with c
    and k of one sign, or c times a floor/ceiling of what grows (c >= 0) or falls."""
    return all(_term_grows(t, x) for t in sp.Add.make_args(sp.expand(expr)))


def _term_grows(term: sp.Expr, x: sp.Symbol) -> bool:
    coefficient, rest = term.as_coeff_Mul()
    if not rest.has(x):
        return True
    base, exponent = rest.as_base_exp()
    if base == x and exponent.is_number:
        return bool(coefficient * exponent >= 0)
    if isinstance(rest, (sp.floor, sp.ceiling)):  # monotone as what it rounds is
        inner = rest.args[0]
        return grows(inner, x) if coefficient >= 0 else grows(-inner, x)
    return False


def largest(
    x: sp.Symbol,
    limits: list[Limit],
    top: int,
    allowed: Callable[[int], bool] = lambda v: True,
    steps: int = 100_000,
) -> int | None:
    """The largest v in [1, top] where every limit holds and `allowed(v)` (the spec's
    divisibility), or None. Raises UsageError where a limit is neither a rational
    function of x nor monotone, or where `allowed` rules out more than `steps` values
    in a row."""
    runs = _runs(x, limits, 1, top)
    for start, end in reversed(runs):
        if all(limit.holds(x, end) for limit in limits):  # so does the whole run
            found = _first(allowed, range(end, start - 1, -1), steps)
            if found is not None:
                return found
    return None


def smallest(
    x: sp.Symbol,
    limits: list[Limit],
    bottom: int,
    top: int,
    allowed: Callable[[int], bool] = lambda v: True,
    steps: int = 100_000,
    strict: bool = True,
) -> int | None:
    """The smallest v in [bottom, top] where every limit holds and `allowed(v)`, or None
    (`largest`, from below); `strict=False`: None where `allowed` rules out `steps`
    values in a row, not an error."""
    for start, end in _runs(x, limits, bottom, top):
        if all(limit.holds(x, start) for limit in limits):
            found = _first(allowed, range(start, end + 1), steps, strict)
            if found is not None:
                return found
    return None


def _runs(x: sp.Symbol, limits: list[Limit], bottom: int, top: int) -> list[tuple[int, int]]:
    """[bottom, top] cut into runs of values (start, end) where no limit changes."""
    points = {bottom - 1, top}
    for limit in limits:
        points |= _breakpoints(x, limit, top)
    ends = sorted(p for p in points if bottom - 1 <= p <= top)
    return list(zip((p + 1 for p in ends), ends[1:], strict=False))


def _first(
    allowed: Callable[[int], bool], values: range, steps: int, strict: bool = True
) -> int | None:
    for v in values[:steps]:
        if allowed(v):
            return v
    if strict and len(values) > steps:
        raise UsageError(
            f"no value from {values[0]:,} to {values[steps - 1]:,} meets the spec's "
            "assumptions (its divisibility)"
        )
    return None


def _breakpoints(x: sp.Symbol, limit: Limit, top: int) -> set[int]:
    """Values v where the limit may hold at v and not at v + 1, or the other way."""
    out: set[int] = set()
    for least, bound in ((True, limit.least), (False, limit.most)):
        if bound is None:
            continue
        f = limit.expr - bound
        if f.is_rational_function(x):
            numerator, denominator = sp.fraction(sp.together(f))
            for part in (numerator, denominator):
                poly = sp.Poly(part, x)
                if poly.degree() < 1:
                    continue
                for (a, b), _ in poly.intervals(eps=sp.Rational(1, 4)):
                    out.update(range(int(sp.floor(a)) - 1, int(sp.floor(b)) + 1))
            continue
        if grows(f, x):
            rising = True
        elif grows(-f, x):
            rising = False
        else:
            raise UsageError(
                f"{limit.what} is neither a rational function of {x} nor shown to move one "
                f"way as {x} grows ({limit.expr}): solve cannot bound its largest value; "
                f"tabulate it with `memspec sweep --grid {x}=...` instead"
            )
        # f >= 0 (least) or f <= 0 (most) holds on one side of one place: find it
        if least:
            holds = lambda v, f=f: bool(f.xreplace({x: sp.Integer(v)}) >= 0)  # noqa: E731
        else:
            holds = lambda v, f=f: bool(f.xreplace({x: sp.Integer(v)}) <= 0)  # noqa: E731
        out.add(_last_change(holds, top, rising == least))
    return out


def _last_change(holds: Callable[[int], bool], top: int, increasing: bool) -> int:
    """For `holds` monotone in v (false then true where `increasing`, else true then
    false): the v in [0, top] where it changes between v and v + 1."""
    low, high = 0, top + 1  # flipped(low) is false or low = 0; flipped(high) is true
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid) == increasing:
            high = mid
        else:
            low = mid
    return low

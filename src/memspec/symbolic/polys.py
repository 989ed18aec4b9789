"""Byte counts as sums of monomials: `{monomial: coefficient}` dicts.

The lifetime replay adds and removes thousands of tensor sizes and compares hundreds of
candidate peaks; sympy `Add`s would make each step slow, and dicts make both cheap. A
size is expanded once, by `poly`; `to_expr` turns a result back into sympy.

`dominates(a, b)` is a proof, not a test at sample points: every coefficient of `a - b`
is non-negative and every monomial is a product of sizes, all positive, so `a >= b` for
every admissible value of the symbols.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import sympy as sp

__all__ = ["Poly", "add_into", "dominates", "evaluate", "poly", "scaled", "to_expr"]

Poly = dict[sp.Expr, int | Fraction]  # Python numbers: sympy's are slow to add and compare


@lru_cache(maxsize=4096)
def _terms(expr: sp.Expr) -> tuple[tuple[sp.Expr, Fraction], ...]:
    expanded = sp.expand(expr)
    if expanded == 0:
        return ()
    terms = []
    for monomial, coefficient in expanded.as_coefficients_dict().items():
        if not coefficient.is_Rational:
            raise ValueError(f"not a sum of monomials with rational coefficients: {expr}")
        terms.append((monomial, _number(coefficient)))
    return tuple(terms)


def _number(r: sp.Rational) -> int | Fraction:
    """Byte counts are integers but for rare halves: ints where possible, being fast."""
    return int(r.p) if r.q == 1 else Fraction(int(r.p), int(r.q))


def poly(expr: sp.Expr) -> Poly:
    """`expr` expanded into `{monomial: coefficient}`."""
    return dict(_terms(sp.sympify(expr)))


def add_into(total: Poly, other: Poly, sign: int = 1) -> None:
    """total += sign * other, dropping terms that cancel."""
    for monomial, coefficient in other.items():
        value = total.get(monomial, 0) + sign * coefficient
        if value == 0:
            total.pop(monomial, None)
        else:
            total[monomial] = value


def scaled(p: Poly, factor: sp.Expr) -> Poly:
    """p times a monomial or number (`factor` must not be a sum)."""
    out: Poly = {}
    for monomial, coefficient in p.items():
        coeff, rest = sp.Mul(factor, monomial).as_coeff_Mul()
        add_into(out, {rest: coefficient * _number(coeff)})
    return out


def evaluate(p: Poly, values: dict[sp.Symbol, int]) -> Fraction | None:
    """The exact value of `p` with its symbols bound; None if one is not."""
    total = Fraction(0)
    for monomial, coefficient in p.items():
        value = _monomial_value(monomial, tuple(sorted(values.items(), key=str)))
        if value is None:
            return None
        total += coefficient * value
    return total


@lru_cache(maxsize=65536)
def _monomial_value(monomial: sp.Expr, values: tuple) -> Fraction | None:
    bound = monomial.xreplace({s: sp.Integer(v) for s, v in values})
    if bound.free_symbols or not bound.is_Rational:
        return None
    return Fraction(int(bound.p), int(bound.q))


def to_expr(p: Poly) -> sp.Expr:
    return sp.Add(*(sp.Rational(c) * monomial for monomial, c in p.items()))


@lru_cache(maxsize=65536)
def _powers(monomial: sp.Expr) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    return tuple(monomial.as_powers_dict().items())


@lru_cache(maxsize=65536)
def _factor_at_least_one(small: sp.Expr, big: sp.Expr) -> bool:
    """Whether big / small is a product of dims (positive integers, so >= 1)."""
    have = dict(_powers(big))
    for base, exponent in _powers(small):
        if base == 1:
            continue
        extra = have.pop(base, 0) - exponent
        if extra != 0 and not (extra > 0 and _is_dim(base)):
            return False
    return all(_is_dim(base) and exponent > 0 for base, exponent in have.items() if base != 1)


@lru_cache(maxsize=65536)
def _key(monomial: sp.Expr) -> str:
    return sp.srepr(monomial)


def _is_dim(base: sp.Expr) -> bool:
    return isinstance(base, sp.Symbol) and not isinstance(base, sp.Dummy)


def dominates(a: Poly, b: Poly) -> bool:
    """Whether a >= b for every value of the dims (integers >= 1) and of the dummies
    (integers >= 0): each negative term of a - b is paid for by positive terms on
    monomials it divides with a quotient of dims, which are at least as large."""
    diff: Poly = dict(a)
    add_into(diff, b, -1)
    owed = [(m, -c) for m, c in diff.items() if c < 0]
    if not owed:
        return True
    spare = {m: c for m, c in diff.items() if c > 0}
    for monomial, need in owed:
        for other in sorted(spare, key=_key):
            if spare[other] <= 0 or not _factor_at_least_one(monomial, other):
                continue
            take = min(need, spare[other])
            spare[other] -= take
            need -= take
            if need == 0:
                break
        if need > 0:
            return False
    return True

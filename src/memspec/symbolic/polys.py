"""Byte counts as sums of monomials: `{monomial: coefficient}` dicts.

The lifetime replay adds and removes thousands of tensor sizes and compares hundreds of
candidate peaks; sympy `Add`s would make each step slow, and dicts make both cheap. A
size is expanded once, by `poly`; `to_expr` turns a result back into sympy.

Which of several such sums can be the largest is `symbolic/dominance.py`'s job.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import sympy as sp

__all__ = ["Poly", "add_into", "evaluate", "poly", "scaled", "substitute", "to_expr"]

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


def substitute(p: Poly, counts: dict[sp.Dummy, Poly]) -> Poly:
    """`p` with each dummy replaced by a polynomial (a region's left-out repetitions,
    `e -> N - 3`)."""
    out: Poly = {}
    for monomial, coefficient in p.items():
        term: Poly = {monomial: coefficient}
        for d, count in counts.items():
            if not monomial.has(d):
                continue
            for _ in range(int(monomial.as_powers_dict()[d])):
                term = _times(term, d, count)
        add_into(out, term)
    return out


def _times(term: Poly, dummy: sp.Dummy, count: Poly) -> Poly:
    """term / dummy * count, for a term holding the dummy."""
    out: Poly = {}
    for monomial, coefficient in term.items():
        rest = monomial / dummy
        add_into(out, {m: c * coefficient for m, c in scaled(count, rest).items()})
    return out

"""Scalar arithmetic of the spec language, built into sympy objects structurally.

Nothing here parses text: spec numbers arrive as AST nodes and become `sp.Integer` or an
exact `sp.Rational`; operators become `sp.Add`, `sp.Mul`, `sp.Pow`. Constant arithmetic is
bounded so that `10 ** 10 ** 10` is an error, not a hang.
"""

from __future__ import annotations

import math
from fractions import Fraction

import sympy as sp

from memspec.errors import SpecValueError
from memspec.source import Span
from memspec.symbolic.index import IndexSplit, index_symbols

__all__ = [
    "MAX_CONSTANT_BITS",
    "Undecided",
    "binary",
    "compare",
    "integer",
    "number",
    "scalar_function",
    "scalar_functions",
]

MAX_CONSTANT_BITS = 4096  # constants above 2**4096 are certainly a mistake in a model spec
MAX_SYMBOLIC_EXPONENT = 16


class Undecided(SpecValueError):
    """A comparison of sizes that holds for some of them and not for others."""


def integer(value: int, span: Span | None) -> sp.Integer:
    """An integer literal, refused above MAX_CONSTANT_BITS."""
    return _check_size(sp.Integer(value), span)


def number(text: str) -> sp.Rational:
    """An exact rational from a decimal literal such as `1e-5` or `2.5`."""
    return sp.Rational(Fraction(text))


def _check_size(value: sp.Expr, span: Span | None) -> sp.Expr:
    if value.is_Integer and int(value).bit_length() > MAX_CONSTANT_BITS:
        raise SpecValueError(f"constant too large (over {MAX_CONSTANT_BITS} bits)", span)
    return value


def _power(base: sp.Expr, exponent: sp.Expr, span: Span | None) -> sp.Expr:
    if exponent.is_Number and not exponent.is_Integer and base.is_number and base.is_negative:
        raise SpecValueError("fractional power of a negative number", span)
    if base.is_Number and exponent.is_Integer:
        magnitude = abs(int(exponent)) * max(1, math.log2(abs(float(base)) or 1))
        if magnitude > MAX_CONSTANT_BITS:
            raise SpecValueError(f"constant too large (over {MAX_CONSTANT_BITS} bits)", span)
    if base == 0 and exponent.is_number and exponent.is_negative:
        raise SpecValueError("division by zero", span)
    if exponent.is_Number and abs(exponent) > MAX_CONSTANT_BITS:
        raise SpecValueError(f"exponent too large (over {MAX_CONSTANT_BITS})", span)
    if not base.is_number and (not exponent.is_Number or abs(exponent) > MAX_SYMBOLIC_EXPONENT):
        # Sizes are low-degree polynomials; (B + L)**1000 would only make expansion hang.
        raise SpecValueError(
            f"a power of a size needs a constant exponent of at most {MAX_SYMBOLIC_EXPONENT}", span
        )
    return sp.Pow(base, exponent)


def _divide(a: sp.Expr, b: sp.Expr, span: Span | None) -> sp.Expr:
    if b == 0:
        raise SpecValueError("division by zero", span)
    return sp.Mul(a, sp.Pow(b, -1))


def binary(op: str, a: sp.Expr, b: sp.Expr, span: Span | None) -> sp.Expr:
    """`a op b` for scalar dims and constants."""
    if op == "+":
        result = sp.Add(a, b)
    elif op == "-":
        result = sp.Add(a, sp.Mul(-1, b))
    elif op == "*":
        result = sp.Mul(a, b)
    elif op == "/":
        result = _divide(a, b, span)
    elif op == "//":
        result = sp.floor(_divide(a, b, span))
    elif op == "%":
        if b == 0:
            raise SpecValueError("division by zero", span)
        result = sp.Mod(a, b)
    elif op == "**":
        result = _power(a, b, span)
    else:
        raise ValueError(f"unknown scalar operator {op!r}")
    return _check_size(result, span)


def compare(op: str, a: sp.Expr, b: sp.Expr, span: Span | None) -> bool:
    """A comparison that must be decidable for all positive sizes (used by `if`).

    Undecided on a repeat index, it asks for the repetitions to be split (`IndexSplit`).
    """
    diff = sp.expand(a - b)
    if op in ("==", "!="):
        if diff.is_zero is None:
            _undecided(a, op, b, diff, span)
        return bool(diff.is_zero) == (op == "==")
    decided = {
        "<": diff.is_negative,
        "<=": diff.is_nonpositive,
        ">": diff.is_positive,
        ">=": diff.is_nonnegative,
    }[op]
    if decided is None:
        _undecided(a, op, b, diff, span)
    return bool(decided)


def _undecided(a: sp.Expr, op: str, b: sp.Expr, diff: sp.Expr, span: Span | None) -> None:
    indices = index_symbols(diff)
    if indices:
        raise IndexSplit(min(indices, key=str), diff, span)
    raise Undecided(f"cannot decide {a} {op} {b} for all sizes", span)


_FUNCTIONS = {
    "ceil": (1, sp.ceiling),
    "floor": (1, sp.floor),
    "sqrt": (1, sp.sqrt),
    "min": (2, sp.Min),
    "max": (2, sp.Max),
}


def scalar_functions() -> tuple[str, ...]:
    """The names of the built-in scalar functions."""
    return tuple(_FUNCTIONS)


def scalar_function(name: str) -> tuple[int, object] | None:
    """The arity and sympy constructor of a built-in scalar function, if `name` is one."""
    return _FUNCTIONS.get(name)

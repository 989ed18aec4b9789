"""Inverse queries: the largest value of one symbol whose memory fits a budget.

The objective is the textbook sum (parameters + gradients + optimizer state +
activations + buffers, under the convention in force). Memory grows with every size,
so the answer is found exactly: by the closed form when the bytes are linear in the
symbol, by a bisection over integers otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from memspec.compile import CompileResult
from memspec.errors import UsageError
from memspec.symbolic.bind import resolve_defaults

__all__ = ["Solution", "parse_budget", "solve_max"]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_BUDGET = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_budget(text: str) -> int:
    """`80GB` (10^9), `80GiB` (2^30), `5e9`-free plain bytes: an exact integer of bytes."""
    match = _BUDGET.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"--budget {text!r}: expected a size such as 80GB, 80GiB or 1000000")
    value = sp.Rational(match.group(1)) * _UNITS[unit]
    if value <= 0:
        raise UsageError(f"--budget {text!r} must be positive")
    return int(sp.floor(value))


@dataclass(frozen=True)
class Solution:
    symbol: sp.Symbol
    maximum: int | None  # None: not even 1 fits, or other dims are unbound
    budget: int
    expression: sp.Expr  # bytes as a function of the symbol (others bound)
    formula: sp.Expr | None  # the closed form when everything else stays symbolic


def solve_max(result: CompileResult, name: str, budget: int) -> Solution:
    dim = result.symbols.lookup(name)
    if dim is None:
        raise UsageError(f"--for {name!r} is not a dim of this spec")
    x = dim.symbol
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    total = resolve_defaults(result.total_bytes, result.symbols, bindings)
    bound = sp.expand(total.xreplace({k: sp.Integer(v) for k, v in bindings.items()}))
    if not total.has(x):
        raise UsageError(f"the memory does not depend on {x}")
    formula = None
    expanded = sp.expand(total)
    if expanded.is_polynomial(x) and sp.Poly(expanded, x).degree() == 1:
        slope, intercept = sp.Poly(expanded, x).all_coeffs()
        formula = sp.floor((budget - intercept) / slope)
    if bound.free_symbols - {x}:
        if formula is None:
            missing = ", ".join(sorted(str(s) for s in bound.free_symbols - {x}))
            raise UsageError(
                f"the memory is not linear in {x}: bind every other dim to get a "
                f"number (unbound: {missing})"
            )
        return Solution(x, None, budget, expanded, formula)
    fits = lambda v: int(bound.xreplace({x: v})) <= budget  # noqa: E731
    if not fits(1):
        return Solution(x, None, budget, bound, formula)
    low, high = 1, 2
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return Solution(x, low, budget, bound, formula)

"""Inverse queries: the largest value of one symbol whose memory fits a budget.

The objective is the true peak of a training step (`passes.peak`: the largest of the
moments that can be the peak) or the textbook sum (parameters + gradients + optimizer
state + activations + buffers, under the convention in force). With the other dims
bound, the moments that another one dominates for every value of the symbol are
dropped. The answer is exact: a closed form when each remaining expression is linear in
the symbol with a slope positive at every size (the smallest of their solutions);
else, with every other dim bound, the largest value at which the memory fits, every
size of the spec is valid (`bind.check_sizes`) and its divisibility holds, found from
the roots of those limits (`symbolic.largest`) without assuming that memory grows
with the symbol. A limit that is neither a rational function of the symbol nor shown
to move one way is refused.

The expression is compiled with the symbol unbound, so PyTorch's size-dependent choices
(a view or a copy, which a size of 1 changes: a fused QKV's heads at B = 1) are those of
general sizes. `check_bound` recompiles at the answer and the value above it with the
symbol bound, where those choices are torch's at that size, and moves the answer until
it fits there and the next value does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import sympy as sp

from memspec.errors import UsageError
from memspec.ir.types import Role
from memspec.parallel import DP
from memspec.result import CompileResult
from memspec.symbolic.bind import MAX_VALUE, substitute
from memspec.symbolic.dominance import product_of_sizes, undominated
from memspec.symbolic.largest import Limit, grows, largest, smallest
from memspec.symbolic.polys import poly

__all__ = ["Solution", "SpecSizes", "parse_budget", "solve_max", "spec_sizes"]

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
    moment: str | None = None  # where the step peaks at the maximum (objective peak)
    # (value, bytes) compiled with the symbol bound to each value, by `check_bound`
    checked: tuple[tuple[int, int], ...] = ()
    general: int | None = None  # the answer at general sizes, where `check_bound` moved it
    smallest: bool = False  # `maximum` is the smallest value that fits (a parallel degree)
    grows: bool = True  # the memory never falls as the symbol grows, and 1 is a size


def _positive(expr: sp.Expr) -> bool:
    """Whether an expression of dims is positive at every size: a sum of products of
    dims with positive coefficients."""
    e = sp.expand(expr)
    terms = [t.as_coeff_Mul() for t in sp.Add.make_args(e)]
    return e != 0 and all(c > 0 and product_of_sizes(rest) for c, rest in terms)


def _objective(result: CompileResult, objective: str) -> list[tuple[sp.Expr, str]]:
    """(bytes, moment) of each expression whose largest is the memory (under data
    parallelism, of the rank that holds the most)."""
    if objective == "sum":
        if result.ranks is not None:
            return [(result.ranks.largest.bytes, "")]
        return [(result.total_bytes, "")]
    if objective != "peak":
        raise UsageError(f"unknown objective {objective!r}; expected peak or sum")
    if result.peak is None:
        raise UsageError(
            f"no true peak for this spec ({result.peak_unavailable}); use --objective sum"
        )
    return [(c.bytes, c.label()) for c in result.peak.candidates]


def _undominated(terms: list[tuple[sp.Expr, str]]) -> list[tuple[sp.Expr, str]]:
    """The terms no other one dominates, in their order."""
    return [terms[i] for i in sorted(undominated([poly(e) for e, _ in terms]))]


# the most ranks `solve --for DP` tries before it says that no degree fits
MAX_DEGREE = 1 << 24


def solve_min_degree(result: CompileResult, budget: int, objective: str = "sum") -> Solution:
    """The fewest data-parallel ranks whose rank 0 (the one that holds the most) fits
    `budget`: its bytes do not grow with the degree (shards of ceil(n / DP))."""
    dim = result.symbols.lookup(DP)
    if dim is None:
        raise UsageError("--for DP needs data parallelism: add --zero K")
    x = dim.symbol
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    exprs = [
        sp.expand(substitute(e, result.symbols, bindings)) for e, _ in _objective(result, objective)
    ]
    expression = exprs[0] if len(exprs) == 1 else sp.Max(*exprs, evaluate=False)
    free = set().union(*(e.free_symbols for e in exprs)) - {x}
    if free:
        missing = ", ".join(sorted(str(s) for s in free))
        raise UsageError(f"bind every other dim to solve for {x} (unbound: {missing})")

    def fits(v: int) -> bool:
        return max(int(e.xreplace({x: v})) for e in exprs) <= budget

    if objective == "peak":
        return _scan_degrees(result, x, exprs, expression, budget)
    if not fits(MAX_DEGREE):
        return Solution(x, None, budget, expression, None, smallest=True)
    low, high = 0, 1  # low does not fit (or is 0), high fits once found
    while not fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return Solution(x, high, budget, expression, None, smallest=True)


def _scan_degrees(result: CompileResult, x, exprs, expression, budget: int) -> Solution:
    """The true peak is not monotone in the degree: a unit's gathered parameters are
    ceil(d0 / DP) DP rows, padded more at some degrees than at larger ones, and beyond
    the most rows any parameter has more ranks only add padding. So every degree up to
    that is tried, in order (the expressions compiled to Python once)."""
    parameters = [v for v in result.graph.values if v.role is Role.PARAMETER and v.shape]
    rows = max((result.value(v.shape[0]) for v in parameters), default=1)
    peak = sp.lambdify(x, sp.Max(*exprs) if len(exprs) > 1 else exprs[0], modules="math")
    for degree in range(1, rows + 1):
        if int(peak(degree)) <= budget:
            return Solution(x, degree, budget, expression, None, smallest=True)
    return Solution(x, None, budget, expression, None, smallest=True)


# how far `solve` looks past a value for one that meets the spec's divisibility
MAX_STEPS_TO_ALLOWED = 100_000


@dataclass(frozen=True)
class SpecSizes:
    """Which values of `x` the spec can have, the other dims as bound: its shape
    assumptions that involve x (`2H divides D`, `relevant`), met by `divides`, and what
    its sizes need (`bind.check_sizes`: every repeat count at least 1, every tensor dim
    from 0 to MAX_VALUE), as `limits`."""

    x: sp.Symbol
    relevant: tuple[sp.Expr, ...]
    limits: tuple[Limit, ...]
    divides: Callable[[int], bool]

    def allowed(self, v: int) -> bool:
        """Whether v is a size the spec can have: an answer must be one."""
        return self.divides(v) and all(limit.holds(self.x, v) for limit in self.limits)

    def above(self, v: int) -> int | None:
        """The smallest allowed value above v, or None (the sizes end there, or none
        within MAX_STEPS_TO_ALLOWED values meets the divisibility)."""
        return smallest(
            self.x, list(self.limits), v + 1, MAX_VALUE, self.divides, MAX_STEPS_TO_ALLOWED, False
        )


def spec_sizes(result: CompileResult, x: sp.Symbol) -> SpecSizes:
    """The spec's sizes at x, its other dims as `result` binds them."""
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    assumed = [substitute(a.expr, result.symbols, bindings) for a in result.graph.assumptions]
    relevant = tuple(e for e in assumed if e.has(x))
    limits: dict[sp.Expr, Limit] = {}
    for region in result.graph.regions:
        count = substitute(region.count, result.symbols, bindings)
        if count.has(x):
            limits.setdefault(count, Limit(count, least=1, what=f"repeat {region.count}"))
    for value in result.graph.values:
        for dim in value.shape:
            size = substitute(dim, result.symbols, bindings)
            if size.has(x) and size not in limits:
                limits[size] = Limit(size, least=0, most=MAX_VALUE, what=f"the size {dim}")
    return SpecSizes(x, relevant, tuple(limits.values()), _divides(x, relevant))


def _divides(x: sp.Symbol, relevant: tuple[sp.Expr, ...]) -> Callable[[int], bool]:
    """Whether every one of `relevant` is whole at a value of x: a quotient of integer
    polynomials in Python integers (solve may try 10^5 values), else by sympy."""
    checks = []
    for e in relevant:
        numerator, denominator = sp.fraction(sp.together(e))
        if all(
            p.is_polynomial(x) and sp.Poly(p, x).domain == sp.ZZ for p in (numerator, denominator)
        ):
            n, d = (sp.lambdify(x, p, modules=[]) for p in (numerator, denominator))
            checks.append(lambda v, n=n, d=d: d(v) != 0 and n(v) % d(v) == 0)
        else:
            checks.append(lambda v, e=e: e.xreplace({x: sp.Integer(v)}).is_integer)
    return lambda v: all(check(v) for check in checks)


def _next_allowed(
    allowed: Callable[[int], bool], v: int, step: int, strict: bool = True
) -> int | None:
    """The nearest allowed value from `v` on (`step` -1: down, 1: up); None past 1, or
    (`strict=False`) past MAX_STEPS_TO_ALLOWED values, an error otherwise."""
    for _ in range(MAX_STEPS_TO_ALLOWED):
        if v < 1:
            return None
        if allowed(v):
            return v
        v += step
    if not strict:
        return None
    raise UsageError(
        f"no value within {MAX_STEPS_TO_ALLOWED:,} of {v - step * MAX_STEPS_TO_ALLOWED:,} "
        "meets the spec's assumptions (its divisibility)"
    )


def solve_max(result: CompileResult, name: str, budget: int, objective: str = "peak") -> Solution:
    dim = result.symbols.lookup(name)
    if dim is None:
        raise UsageError(f"--for {name!r} is not a dim of this spec")
    x = dim.symbol
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    terms = _undominated(
        [
            (sp.expand(substitute(e, result.symbols, bindings)), label)
            for e, label in _objective(result, objective)
        ]
    )
    exprs = [e for e, _ in terms]
    expression = exprs[0] if len(exprs) == 1 else sp.Max(*exprs, evaluate=False)
    if not any(e.has(x) for e in exprs):
        raise UsageError(f"the memory does not depend on {x}")
    formula = None
    if all(e.is_polynomial(x) and sp.Poly(e, x).degree() == 1 for e in exprs):
        solutions, slopes = [], []
        for e in exprs:
            slope, intercept = sp.Poly(e, x).all_coeffs()
            slopes.append(slope)
            solutions.append(sp.floor((budget - intercept) / slope))
        formula = solutions[0] if len(solutions) == 1 else sp.Min(*solutions, evaluate=False)
        # every dim bound: the answer is `maximum`, checked (never -3000); a slope of
        # other dims (D - B) may be negative at their sizes: no closed form either
        if not formula.free_symbols or not all(_positive(s) for s in slopes):
            formula = None
    free = set().union(*(e.free_symbols for e in exprs)) - {x}
    if free:
        if formula is None:
            missing = ", ".join(sorted(str(s) for s in free))
            raise UsageError(
                f"the memory is not linear in {x} with a slope positive at every size: "
                f"bind every other dim to get a number (unbound: {missing})"
            )
        return Solution(x, None, budget, expression, formula)

    def at(v: int) -> list[int]:
        return [int(e.xreplace({x: v})) for e in exprs]

    sizes = spec_sizes(result, x)
    if sizes.relevant:  # x takes part in a divisibility: no closed form says it
        formula = None
    limits = [Limit(e, most=budget) for e in exprs] + list(sizes.limits)
    if all(limit.holds(x, MAX_VALUE) for limit in limits):
        raise UsageError(
            f"every {x} up to {MAX_VALUE:.0e}, larger than any model size, fits within "
            f"{budget:,} bytes: there is no largest value to give"
        )
    # "even 1 needs more" only where 1 is a size and the memory grows from there
    monotone = all(grows(e, x) for e in exprs) and sizes.allowed(1)
    low = largest(x, limits, MAX_VALUE, sizes.divides, MAX_STEPS_TO_ALLOWED)
    if low is None:
        return Solution(x, None, budget, expression, formula, grows=monotone)
    values = at(low)
    moment = terms[values.index(max(values))][1] or None
    return Solution(x, low, budget, expression, formula, moment, grows=monotone)


def _bytes(result: CompileResult, objective: str) -> int:
    """The memory of a result whose every dim is bound."""
    return max(int(result.value(e)) for e, _ in _objective(result, objective))


def check_bound(
    solution: Solution,
    objective: str,
    compile_at: Callable[[int], CompileResult],
    allowed: Callable[[int], bool] = lambda v: True,
    above: Callable[[int], int | None] | None = None,
) -> Solution:
    """`solution` re-checked with the symbol bound: `compile_at(v)` compiles the spec at
    that value. The answer is the largest value that fits at its own bound sizes with the
    value above it not fitting at its own. Sizes of 2 and more decide as general sizes
    do, so the answer moves by at most a step or two; the moves are capped all the same.
    `allowed` says which values are sizes of the spec, `above(v)` the next one above v."""
    checked: dict[int, int] = {}

    def fits(v: int) -> bool:
        if v not in checked:
            checked[v] = _bytes(compile_at(v), objective)
        return checked[v] <= solution.budget

    def next_above(v: int) -> int | None:
        return above(v) if above else _next_allowed(allowed, v + 1, 1, strict=False)

    answer = solution.maximum or 0
    for _ in range(8):
        up = next_above(answer)
        if answer >= 1 and not fits(answer):
            answer = _next_allowed(allowed, answer - 1, -1) or 0
        elif up is not None and fits(up):
            answer = up
        else:
            break
    else:
        raise UsageError(
            f"the largest {solution.symbol} moved more than 8 times when checked at bound "
            "sizes; the memory is not monotone in it"
        )
    moment = solution.moment
    if answer != solution.maximum:
        moment = None
        if answer >= 1 and objective == "peak":
            winner = compile_at(answer).peak.winner()
            moment = winner.label() if winner else None
    return replace(
        solution,
        maximum=answer or None,
        moment=moment,
        checked=tuple(sorted(checked.items())),
        general=solution.maximum if answer != (solution.maximum or 0) else None,
    )

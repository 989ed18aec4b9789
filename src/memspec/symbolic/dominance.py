"""Which of several byte counts can be the largest: proofs of dominance on polynomials.

`dominates(a, b)` is a proof, not a test at sample points: every coefficient of `a - b`
is non-negative and every monomial is a product of sizes, all positive, so `a >= b` for
every admissible value of the symbols. `undominated` keeps the sums no other one
dominates, nor a mix of two others (`below_chords`: a moment between two in a run of
identical layers is never the only largest); values at a few sample sizes only order
them and skip proofs that must fail.
The peak pass prunes its moments with it, and `solve` the moments left once the other
dims are bound.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from functools import lru_cache

import sympy as sp

from memspec.symbolic.polys import Poly, add_into

__all__ = ["TooMany", "below_chords", "dominates", "product_of_sizes", "undominated"]


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


@lru_cache(maxsize=65536)
def product_of_sizes(monomial: sp.Expr) -> bool:
    """Whether a monomial is a product of powers of symbols (dims >= 1, dummies >= 0), so
    never negative."""
    return all(base == 1 or isinstance(base, sp.Symbol) for base, _ in _powers(monomial))


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


class TooMany(Exception):
    """More sums than `undominated(limit=...)` keeps: each is compared with every kept
    one, so the work grows as their square."""


def undominated(totals: list[Poly], limit: int | None = None) -> list[int]:
    """Indices of the sums no other one dominates, largest (at a reference size) first.

    Sums below the chord of two others, in the order given, go first (`below_chords`).
    Values at a few sizes (every dim 1; every dim near 2^10; mixed) only order them and
    skip proofs that must fail: a sum smaller somewhere cannot dominate. Dominance
    itself is proved by `polys.dominates`; of equal sums the first is kept.
    """
    if not totals:
        return []
    left = below_chords(totals, range(len(totals)))
    kept = [left[i] for i in _dominance([totals[i] for i in left], limit)]
    chords = set(below_chords(totals, sorted(kept)))  # those the proofs left in a row
    return [i for i in kept if i in chords]


def _dominance(totals: list[Poly], limit: int | None) -> list[int]:
    """Indices of the sums no other one dominates (`undominated` less the chords)."""
    samples = _sample_values(totals)
    order = sorted(range(len(totals)), key=lambda i: -samples[i][0])
    if len(totals) > _MANY:
        return _undominated_many(totals, samples, order, limit)
    kept: list[int] = []
    recent: list[int] = []  # kept ones, the latest to dominate another first
    for i in order:
        for n, j in enumerate(recent):
            if all(
                x >= y - 1e-9 * abs(y) for x, y in zip(samples[j], samples[i], strict=True)
            ) and dominates(totals[j], totals[i]):
                recent.insert(0, recent.pop(n))
                break
        else:
            kept.append(i)
            recent.append(i)
            if limit is not None and len(kept) > limit:
                raise TooMany(len(totals))
    return kept


def below_chords(totals: list[Poly], order) -> list[int]:
    """`order` (indices into `totals`) without the sums at most a mix of two others,
    coefficient by coefficient: if t <= w*a + (1-w)*b for some 0 <= w <= 1, then t <= max(a, b)
    at every size, each monomial being a product of sizes (>= 0). One pass with a stack,
    as for a convex hull: the sum under the top goes when the next one comes, and what
    it went for may go in turn (still at most a mix of what is left). A sum equal to
    one of the two stays, for `dominates` to keep the first of equals."""
    stack: list[int] = []
    for k in order:
        while len(stack) >= 2 and _under(totals[stack[-1]], totals[stack[-2]], totals[k]):
            stack.pop()
        stack.append(k)
    return stack


def _under(t: Poly, a: Poly, b: Poly) -> bool:
    """Whether t <= w*a + (1-w)*b, coefficient by coefficient, for some w in [0, 1]
    (and t is neither a nor b)."""
    if t in (a, b):
        return False
    low, high = Fraction(0), Fraction(1)
    for m in t.keys() | a.keys() | b.keys():
        x, y, z = t.get(m, 0), a.get(m, 0), b.get(m, 0)  # x <= z + w (y - z)
        if not product_of_sizes(m):  # floor(...) and the like: equal in all three, or no proof
            if not x == y == z:
                return False
        elif y == z:
            if x > z:
                return False
        elif y > z:
            low = max(low, Fraction(x - z) / (y - z))
        else:
            high = min(high, Fraction(z - x) / (z - y))
        if low > high:
            return False
    return True


# Past this many sums, the sample values that rule a proof out are compared with numpy:
# thousands of distinct layers keep thousands of sums, each checked against all of them.
_MANY = 2_000


def _undominated_many(
    totals: list[Poly], samples: list[tuple[float, ...]], order: list[int], limit: int | None
) -> list[int]:
    """`undominated` with the sample comparison against every kept sum done at once; the
    same sums are kept (a sum goes if any kept one dominates it), only faster."""
    import numpy as np

    table = np.asarray(samples, dtype=float)
    slack = table - 1e-9 * np.abs(table)  # x >= y - 1e-9 |y|, as the loop above has it
    rows = np.empty_like(table)  # the kept sums' samples, in the order kept
    kept: list[int] = []
    for i in order:
        possible = np.flatnonzero(np.all(rows[: len(kept)] >= slack[i], axis=1))
        if any(dominates(totals[kept[k]], totals[i]) for k in possible[::-1]):
            continue
        rows[len(kept)] = table[i]
        kept.append(i)
        if limit is not None and len(kept) > limit:
            raise TooMany(len(totals))
    return kept


def _sample_values(totals: list[Poly]) -> list[tuple[float, ...]]:
    """Each candidate's value at a few sizes: the first (every symbol 2^10 + its rank)
    orders them; all of them rule dominance out where it cannot hold."""
    symbols = sorted({s for t in totals for m in t for s in m.free_symbols}, key=str)
    rng = random.Random(0)  # fixed: the same spec gives the same order, byte for byte
    points = [
        {s: sp.Integer(1024 + i) for i, s in enumerate(symbols)},
        {s: sp.Integer(1) for s in symbols},
    ]
    for _ in range(30):
        points.append({s: sp.Integer(int(2 ** rng.uniform(0, 13))) for s in symbols})
    cache: dict = {}

    bases: dict = {}

    def base_values(base: sp.Expr) -> tuple[float, ...]:
        if base not in bases:
            if isinstance(base, sp.Symbol):
                bases[base] = tuple(float(pt[base]) for pt in points)
            else:  # floor(...) of sizes and the like
                bases[base] = tuple(float(base.xreplace(pt)) for pt in points)
        return bases[base]

    def monomial_values(monomial: sp.Expr) -> tuple[float, ...]:
        if monomial not in cache:
            values = [1.0] * len(points)
            for base, exponent in monomial.as_powers_dict().items():
                if base == 1:
                    continue
                power = float(exponent)
                for k, v in enumerate(base_values(base)):
                    if v:
                        values[k] *= v**power
                    elif power > 0:  # a floor(...) that is 0 at a sample size
                        values[k] = 0.0
                    elif power < 0:
                        values[k] = math.inf
            cache[monomial] = tuple(values)
        return cache[monomial]

    def value(p: Poly) -> tuple[float, ...]:
        out = [0.0] * len(points)
        for monomial, coefficient in p.items():
            c = float(coefficient)
            for k, v in enumerate(monomial_values(monomial)):
                out[k] += c * v
        return tuple(out)

    return [value(t) for t in totals]

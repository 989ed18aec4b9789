"""The spec's `expect` statements, checked against what the passes counted.

`expect params == 6_738_415_616 at llama2_7b` holds when the parameters, with the preset's
values (and the defaults of dims it leaves unbound), come to that number; a failure is an
`ExpectError` at the statement. A quantity is one category, `params` (parameters),
`total` (the five categories) or `active_params` (the parameters one token uses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sympy as sp

from memspec.errors import ExpectError, UsageError
from memspec.passes.results import CATEGORY_TITLES
from memspec.symbolic import bind
from memspec.symbolic.symbols import SymbolTable
from memspec.syntax.decls import DeclExpect, DeclPreset
from memspec.syntax.nodes import Expr, ExprBinary

__all__ = ["QUANTITIES", "ExpectResult", "check_expects"]

# The names an `expect` may use, and the counted quantity each one reads.
QUANTITIES = {
    "params": "parameters",
    **{k: k for k in CATEGORY_TITLES},
    "total": "total",
    "active_params": "active_parameters",  # not a category: passes/active_parameters.py
}


@dataclass(frozen=True)
class ExpectResult:
    text: str
    holds: bool
    # `memspec check`'s: the quantity's name, memspec's count and the stated answer (the
    # dims' defaults substituted, a preset's values with `at`), and counted - answer
    quantity: str = ""
    counted: sp.Expr = sp.Integer(0)
    answer: sp.Expr = sp.Integer(0)
    difference: sp.Expr = sp.Integer(0)
    terms: tuple[sp.Expr, ...] = ()  # the answer's terms as written (a sum's, distributed)
    preset: str | None = None  # `at PRESET`: the sides are numbers at its values


def written_terms(node: Expr) -> list[tuple[int, Expr | tuple[Expr, Expr]]]:
    """The terms of a sum as written, (sign, term): `N*(a + b)` gives N*a and N*b, so
    that a stated answer's parts can be matched with memspec's line items."""
    if isinstance(node, ExprBinary) and node.op in ("+", "-"):
        right = written_terms(node.right)
        sign = -1 if node.op == "-" else 1
        return [*written_terms(node.left), *((sign * s, t) for s, t in right)]
    if isinstance(node, ExprBinary) and node.op == "*":
        for inner, factor in ((node.right, node.left), (node.left, node.right)):
            if isinstance(inner, ExprBinary) and inner.op in ("+", "-"):
                return [(s, (factor, t)) for s, t in written_terms(inner)]
    return [(1, node)]


def _term_value(term, evaluate: Callable[[Expr], sp.Expr]) -> sp.Expr:
    if isinstance(term, tuple):
        factor, inner = term
        return evaluate(factor) * _term_value(inner, evaluate)
    return evaluate(term)


def check_expects(
    expects: Sequence[DeclExpect],
    quantities: Mapping[str, sp.Expr],
    symbols: SymbolTable,
    presets: Mapping[str, DeclPreset],
    evaluate: Callable[[Expr], sp.Expr],
    strict: bool = True,
) -> tuple[ExpectResult, ...]:
    """Each expect, checked; `quantities` holds the elements of each `QUANTITIES` value.
    `strict`: a failure is an `ExpectError` at the statement (a spec's own); else it is
    a result that does not hold, with the difference (`memspec check`)."""
    results = []
    for expect in expects:
        quantity = QUANTITIES.get(expect.quantity)
        if quantity is None:
            raise UsageError(
                f"cannot expect {expect.quantity!r}; expected one of {', '.join(QUANTITIES)}",
                expect.span,
            )
        want = evaluate(expect.value)
        bindings = bind.preset_bindings(presets, symbols, expect.preset, evaluate, expect.span)
        got_v = bind.substitute(quantities[quantity], symbols, bindings)
        want_v = bind.substitute(want, symbols, bindings)
        at = f" at {expect.preset}" if expect.preset else ""
        difference = sp.expand(got_v - want_v)
        if difference != 0 and strict:
            shown = f"{int(got_v):,}" if got_v.is_Integer else str(sp.expand(got_v))
            raise ExpectError(
                f"expect failed: {expect.quantity}{at} is {shown}, not "
                f"{want_v if not want_v.is_Integer else format(int(want_v), ',')}",
                expect.span,
            )
        value = f"{int(want_v):,}" if want_v.is_Integer else str(want)
        terms: tuple[sp.Expr, ...] = ()
        if not strict:
            terms = tuple(
                sp.expand(sign * bind.substitute(_term_value(t, evaluate), symbols, bindings))
                for sign, t in written_terms(expect.value)
            )
        results.append(
            ExpectResult(
                f"{expect.quantity} == {value}{at}",
                difference == 0,
                expect.quantity,
                sp.expand(got_v),
                sp.expand(want_v),
                difference,
                terms,
                expect.preset,
            )
        )
    return tuple(results)

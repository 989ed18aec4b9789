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
from memspec.syntax.nodes import Expr

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


def check_expects(
    expects: Sequence[DeclExpect],
    quantities: Mapping[str, sp.Expr],
    symbols: SymbolTable,
    presets: Mapping[str, DeclPreset],
    evaluate: Callable[[Expr], sp.Expr],
) -> tuple[ExpectResult, ...]:
    """Each expect, checked; `quantities` holds the elements of each `QUANTITIES` value."""
    results = []
    for expect in expects:
        quantity = QUANTITIES.get(expect.quantity)
        if quantity is None:
            raise UsageError(
                f"cannot expect {expect.quantity!r}; expected one of {', '.join(QUANTITIES)}",
                expect.span,
            )
        want = evaluate(expect.value)
        bindings = bind.preset_bindings(presets, symbols, expect.preset, evaluate)
        subs = {k: sp.Integer(v) for k, v in bindings.items()}
        got_v = bind.resolve_defaults(quantities[quantity], symbols, bindings).xreplace(subs)
        want_v = bind.resolve_defaults(want, symbols, bindings).xreplace(subs)
        at = f" at {expect.preset}" if expect.preset else ""
        if sp.expand(got_v - want_v) != 0:
            shown = f"{int(got_v):,}" if got_v.is_Integer else str(sp.expand(got_v))
            raise ExpectError(
                f"expect failed: {expect.quantity}{at} is {shown}, not "
                f"{want_v if not want_v.is_Integer else format(int(want_v), ',')}",
                expect.span,
            )
        value = f"{int(want_v):,}" if want_v.is_Integer else str(want)
        results.append(ExpectResult(f"{expect.quantity} == {value}{at}", True))
    return tuple(results)

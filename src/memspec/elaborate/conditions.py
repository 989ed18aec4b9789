"""Conditions on sizes that only the bound sizes decide (`if s >= window { ... }`).

`L >= W` holds for some sizes and not others. torch code decides it on the sizes it
runs at (transformers builds Mistral's window mask only when the sequence reaches the
window), and so does memspec: at the bound sizes the condition is decided, and the
report lists it under "Decided at the bound sizes" (the formulas hold where it does).
Where the sizes it needs are not bound, the condition is assumed to hold, as written,
and the report lists it among the assumptions: never a silent pick.
"""

from __future__ import annotations

import sympy as sp

from memspec.elaborate.builder import GraphBuilder
from memspec.ir.graph import SizeCondition, SizeDecision
from memspec.source import Span

__all__ = ["decide"]

_RELATIONS = {"==": sp.Eq, "!=": sp.Ne, "<": sp.Lt, "<=": sp.Le, ">": sp.Gt, ">=": sp.Ge}
_NEGATION = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _holds(op: str, difference: sp.Expr) -> bool:
    zero = sp.Integer(0)
    return bool(
        {
            "==": difference == zero,
            "!=": difference != zero,
            "<": difference < zero,
            "<=": difference <= zero,
            ">": difference > zero,
            ">=": difference >= zero,
        }[op]
    )


def decide(builder: GraphBuilder, op: str, a: sp.Expr, b: sp.Expr, span: Span | None) -> bool:
    """`a op b`, which general sizes leave undecided: at the bound sizes, else assumed."""
    bound = builder.bound
    difference = sp.expand(bound.at(sp.expand(a - b)))
    if not difference.is_number:
        builder.assume_condition(SizeCondition(_RELATIONS[op](a, b, evaluate=False), span=span))
        return True
    holds = _holds(op, difference)
    used = (a - b).free_symbols
    facts = tuple((k, v) for k, v in bound.values if k in used)
    written = f"{a} {op} {b}"
    builder.decide(
        SizeDecision(
            facts,
            written,
            "holds" if holds else f"does not hold ({a} {_NEGATION[op]} {b})",
            "it is not decided",
            span,
        )
    )
    return holds

"""Conditions on sizes that only the bound sizes decide (`if s >= window { ... }`).

`L >= W` holds for some sizes and not others. torch code decides it on the sizes it
runs at (transformers builds Mistral's window mask only when the sequence reaches the
window), and so does memspec: at the bound sizes the condition is decided, and the
report lists it under "Decided at the bound sizes" (the formulas hold where it does).
Where the sizes it needs are not bound, the condition is assumed to hold, as written,
and the report lists it among the assumptions: never a silent pick.

`assume I % 32 == 0` states a fact instead: shapes may rely on it (a stride-2 conv of I
is I/2, not floor((I - 1)/2) + 1) and bound values must meet it.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.shapes import divisibility_text
from memspec.errors import SpecValueError
from memspec.ir.graph import SizeCondition, SizeDecision
from memspec.ir.sizes import note_relation
from memspec.source import Span
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

__all__ = ["decide", "declare_fact"]

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
        note_relation(_RELATIONS[op], bound.at(a), bound.at(b))
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


def declare_fact(
    builder: GraphBuilder, scalar: Callable[[n.Expr], sp.Expr], decl: d.DeclAssumeSize
) -> None:
    """`assume SIZE % k == 0`: the shape assumption that SIZE/k is whole."""
    fact = decl.fact
    if not (
        isinstance(fact, n.ExprBinary)
        and fact.op == "=="
        and isinstance(fact.left, n.ExprBinary)
        and fact.left.op == "%"
        and isinstance(fact.right, n.ExprInt)
        and fact.right.value == 0
    ):
        raise SpecValueError(
            'a fact about sizes reads `assume SIZE % k == 0` (a note reads `assume "text"`)',
            fact.span,
        )
    size, k = scalar(fact.left.left), scalar(fact.left.right)
    if not (k.is_Integer and k > 0):
        raise SpecValueError(f"divisible by {k}: a positive whole number", fact.left.right.span)
    ratio = sp.Mul(size, sp.Pow(k, -1))
    if ratio.is_integer is not True and not size.free_symbols:
        raise SpecValueError(f"{size} is not divisible by {k}", fact.span)
    builder.assume_integer(ratio, divisibility_text(ratio), decl.span)

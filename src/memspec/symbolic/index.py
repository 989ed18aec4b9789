"""The index of a repetition (`repeat N as i of Layer(...)`), and the split it asks for.

Inside a repeat the index stands for a whole class of repetitions: `2*i + 1` is every
odd one. A comparison that is not decided for the whole class (`i == 0` asked of all
of them) raises `IndexSplit`; `elaborate/repeat_index.py` then splits the repetitions
finer (layer 0 apart, or odd and even ones apart) until every comparison is decided, so
that each class is one uniform region and every pass stays exact.
"""

from __future__ import annotations

import sympy as sp

from memspec.errors import SpecValueError
from memspec.source import Span

__all__ = ["IndexSplit", "IndexSymbol", "index_symbols"]


class IndexSymbol(sp.Dummy):
    """A repeat's index within one class of its repetitions: a non-negative integer."""

    def __new__(cls, name: str):
        return super().__new__(cls, name, integer=True, nonnegative=True)


def index_symbols(expr: object) -> set[IndexSymbol]:
    if not isinstance(expr, sp.Basic):
        return set()
    return {s for s in expr.free_symbols if isinstance(s, IndexSymbol)}


class IndexSplit(SpecValueError):
    """A comparison `difference op 0` on a repeat index, undecided for a class of
    repetitions. Uncaught (a forward tests what the members do not), it is the error."""

    def __init__(self, symbol: IndexSymbol, difference: sp.Expr, span: Span | None):
        super().__init__(
            f"cannot decide this condition on the repeat index {symbol.name!r} for all the "
            "repetitions it stands for: repetitions are told apart by the layer's arguments "
            f"and members, so decide it there (`let flag = ...` among the members, or an "
            "argument of the repeated layer) and test that",
            span,
        )
        self.symbol = symbol
        self.difference = difference

"""The sizes a user bound, for the decisions PyTorch makes on concrete sizes.

Whether a reshape is a view or a copy, whether a matmul operand is saved as it is, and
whether a broadcast input's gradient needs a new tensor depend on sizes: a dim of size 1
has any stride and never blocks a merge, and an expand of a size-1 dim is a stride-0
view. For unbound symbols memspec decides for every value of them (B = 1 is no special
case); once a preset or `--set` binds a size, torch decides on that value, and so must
memspec. `BoundSizes` answers `is this size 1?` and `are these equal?` from the bound
values first and symbolically otherwise. The empty one decides for general sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import sympy as sp

__all__ = ["GENERAL", "BoundSizes", "note_integer", "note_relation", "unwatched", "watching"]

# What the general sizes' decisions took for granted (`B != 1`, `N >= 3`), while a
# `watching()` block collects them: `memspec sweep` evaluates one compile's formulas
# over a grid and must know at which points a decision would go the other way.
_WATCH: ContextVar[list[tuple[str, sp.Basic]] | None] = ContextVar("size_watch", default=None)


@contextmanager
def watching() -> Iterator[list[tuple[str, sp.Basic]]]:
    """Collects ("holds", relation) and ("integer", expr) for every size decision taken
    for unbound sizes inside the block: the formulas hold where each of them does."""
    found: list[tuple[str, sp.Basic]] = []
    token = _WATCH.set(found)
    try:
        yield found
    finally:
        _WATCH.reset(token)


@contextmanager
def unwatched() -> Iterator[None]:
    """Decisions taken only to compare with (what general sizes would do, which sizes a
    decision needs) are not the graph's: they are not collected."""
    token = _WATCH.set(None)
    try:
        yield
    finally:
        _WATCH.reset(token)


def note_relation(kind: type, lhs: sp.Expr, rhs: sp.Expr) -> None:
    """A comparison of unbound sizes decided as `kind(lhs, rhs)` (sp.Ne, sp.Ge, ...) says;
    built only while watching, so that compiles pay nothing for it otherwise."""
    found = _WATCH.get()
    if found is None:
        return
    relation = kind(lhs, rhs, evaluate=False)
    if relation.free_symbols:
        found.append(("holds", relation))


def note_integer(expr: sp.Expr) -> None:
    """A quotient of unbound sizes taken to be whole (a block count without a partial
    last block)."""
    found = _WATCH.get()
    if found is not None and expr.free_symbols:
        found.append(("integer", expr))


@dataclass(frozen=True)
class BoundSizes:
    """Symbol -> value: each bound size, and each unbound defaulted one (F -> 4D, then the
    bound values) when anything is bound."""

    values: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()
    _subs: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_subs", dict(self.values))

    @classmethod
    def of(cls, bindings: Mapping[sp.Symbol, int], defaults: Mapping[sp.Symbol, sp.Expr]):
        """The bound sizes, with the defaults of unbound symbols resolved against them."""
        if not bindings:
            return GENERAL
        known = {k: sp.Integer(v) for k, v in bindings.items()}
        resolved = {k: v.xreplace(known) for k, v in defaults.items() if k not in known}
        return cls(tuple(sorted({**known, **resolved}.items(), key=lambda kv: str(kv[0]))))

    def __bool__(self) -> bool:
        return bool(self.values)

    def at(self, expr: sp.Expr) -> sp.Expr:
        """`expr` at the bound sizes (itself when nothing is bound)."""
        if not self._subs or not isinstance(expr, sp.Basic):
            return expr
        return expr.xreplace(self._subs)

    def is_one(self, size: sp.Expr) -> bool:
        if size == 1:
            return True
        at = self.at(size)
        if at == 1:
            return True
        if isinstance(at, sp.Expr):
            note_relation(sp.Ne, at, sp.Integer(1))
        return False

    def equal(self, a: sp.Expr, b: sp.Expr) -> bool:
        """Whether `a` and `b` are equal at the bound sizes (for every value of the others)."""
        if a == b:
            return True
        difference = sp.expand(a - b)
        if difference == 0:
            return True
        at = sp.expand(self.at(difference)) if self._subs else difference
        if at == 0:
            return True
        note_relation(sp.Ne, at, sp.Integer(0))
        return False

    def without(self, symbols: Iterable[sp.Symbol]) -> BoundSizes:
        """These sizes with `symbols` unbound (general again)."""
        drop = set(symbols)
        return BoundSizes(tuple((k, v) for k, v in self.values if k not in drop))

    def facts(self, sizes: Iterable[sp.Expr]) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
        """Why a decision differs: the `sizes` that are 1 at the bound values and not in
        general (`B = 1`, `H/KV = 1`); else the bound values of the symbols they use."""
        ones = {s: sp.Integer(1) for s in sizes if s != 1 and self.at(s) == 1}
        if ones:
            return tuple(sorted(ones.items(), key=lambda kv: str(kv[0])))
        used = set().union(*(s.free_symbols for s in sizes if isinstance(s, sp.Basic)))
        return tuple((k, v) for k, v in self.values if k in used)


GENERAL = BoundSizes()

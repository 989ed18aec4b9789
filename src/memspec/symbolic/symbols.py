"""The symbol table: each declared dim is one sympy Symbol, made once.

Dims are `Symbol(sym, integer=True, positive=True)`; the long name (`batch_size`) is
metadata for reports and for `--set batch_size=4`. Order is declaration order, which
every report and the JSON follow (never set order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from memspec.errors import SpecValueError
from memspec.source import Span

__all__ = ["Dim", "SymbolTable", "dim_symbol"]


def dim_symbol(name: str) -> sp.Symbol:
    """The sympy symbol of a dim: a positive integer."""
    return sp.Symbol(name, integer=True, positive=True)


@dataclass(frozen=True, slots=True)
class Dim:
    """A declared dimension: `dim long_name as symbol [= default]`."""

    long_name: str
    symbol: sp.Symbol
    default: sp.Expr | None = None
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass
class SymbolTable:
    """Dims by short symbol and by long name, in declaration order."""

    dims: dict[str, Dim] = field(default_factory=dict)
    long_names: dict[str, str] = field(default_factory=dict)

    def add(self, dim: Dim) -> None:
        self.dims[dim.symbol.name] = dim
        self.long_names[dim.long_name] = dim.symbol.name

    def lookup(self, name: str) -> Dim | None:
        """A dim by its symbol (`B`) or its long name (`batch_size`)."""
        if name in self.dims:
            return self.dims[name]
        symbol = self.long_names.get(name)
        return self.dims[symbol] if symbol else None

    def ordered(self) -> list[Dim]:
        return list(self.dims.values())

    def defaults(self) -> dict[sp.Symbol, sp.Expr]:
        """Default substitutions (`F -> 4*D`), resolved so no default mentions another."""
        subs = {d.symbol: d.default for d in self.dims.values() if d.default is not None}
        for _ in range(len(subs)):
            subs = {k: v.xreplace(subs) for k, v in subs.items()}
        for dim in self.dims.values():
            if dim.symbol in subs and subs[dim.symbol].free_symbols & subs.keys():
                raise SpecValueError(
                    f"the default of {dim.symbol} ({dim.default}) refers back to "
                    f"{dim.symbol} through other defaults: give one of them no default",
                    dim.span,
                )
        return subs

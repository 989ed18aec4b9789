"""Concrete values for symbols: `--set`, presets, and exact integers from expressions."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import sympy as sp

from memspec.errors import UsageError
from memspec.ir.graph import Assumption, Graph
from memspec.names import did_you_mean
from memspec.source import Span
from memspec.symbolic.symbols import SymbolTable

if TYPE_CHECKING:
    from memspec.syntax.decls import DeclPreset
    from memspec.syntax.nodes import Expr

__all__ = [
    "Bindings",
    "check_assumptions",
    "check_sizes",
    "evaluate",
    "format_bytes",
    "lookup_symbol",
    "parse_set",
    "preset_bindings",
    "resolve_defaults",
    "substitute",
]

Bindings = dict[sp.Symbol, int]
MAX_VALUE = 10**15  # no model dimension is larger; bigger values are a typo


def _symbol(table: SymbolTable, name: str, span: Span | None, where: str) -> sp.Symbol:
    dim = table.lookup(name)
    if dim is None:
        names = sorted([*table.dims, *table.long_names])
        hint = did_you_mean(name, names)
        raise UsageError(
            f"{where}: unknown symbol {name!r}{hint} (known: {', '.join(table.dims)})", span
        )
    return dim.symbol


def lookup_symbol(table: SymbolTable, name: str, where: str) -> sp.Symbol:
    """The symbol of dim `name` (a symbol or a long name); an unknown one is an error
    with a did-you-mean."""
    return _symbol(table, name, None, where)


def check_value(name: str, value: sp.Expr | int, span: Span | None, where: str) -> int:
    """A size must be a positive integer below MAX_VALUE."""
    value = sp.Integer(value) if isinstance(value, int) else value
    if not value.is_Integer:
        raise UsageError(f"{where}: {name} must be an integer, got {value}", span)
    if value <= 0:
        raise UsageError(f"{where}: {name} must be positive, got {value}", span)
    if value > MAX_VALUE:
        raise UsageError(
            f"{where}: {name} = {value} is larger than any model size ({MAX_VALUE:.0e})", span
        )
    return int(value)


_INTEGER = re.compile(r"-?[0-9]+")


def parse_set(table: SymbolTable, items: list[str]) -> Bindings:
    """`["B=4", "d_model=1600"]` -> {B: 4, D: 1600}; names are symbols or long names."""
    bindings: Bindings = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip().replace("_", "")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE, e.g. --set B=4")
        symbol = _symbol(table, name, None, f"--set {item}")
        if not _INTEGER.fullmatch(text):  # ASCII digits: "²".isdigit() is true
            raise UsageError(f"--set {item}: {name} must be an integer, got {text!r}")
        value = check_value(name, sp.Integer(int(text)), None, f"--set {item}")
        if bindings.get(symbol, value) != value:
            raise UsageError(
                f"--set {item}: {symbol} is already set to {bindings[symbol]} (by --set, "
                "its long name, or a flag such as --prompt-len); give it one value"
            )
        bindings[symbol] = value
    return bindings


def preset_bindings(
    presets: Mapping[str, DeclPreset],
    table: SymbolTable,
    name: str | None,
    evaluate: Callable[[Expr], sp.Expr],
    span: Span | None = None,
) -> Bindings:
    """The values preset `name` gives its dims (none for no preset); `evaluate` reads them.
    `span`: where the spec names the preset (an `expect ... at p`), for an unknown one."""
    if name is None:
        return {}
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        hint = did_you_mean(name, sorted(presets))
        raise UsageError(f"unknown preset {name!r}{hint} (this spec has: {known})", span)
    bindings: Bindings = {}
    for key, expr, span in presets[name].bindings:
        dim = table.lookup(key)
        if dim is None:
            raise UsageError(f"preset {name}: {key!r} is not a dim", span)
        bindings[dim.symbol] = check_value(key, evaluate(expr), span, f"preset {name}")
    return bindings


def resolve_defaults(expr: sp.Expr, table: SymbolTable, bindings: Bindings) -> sp.Expr:
    """Substitute defaults (F -> 4*D) for defaulted symbols that are not bound."""
    subs = {k: v for k, v in table.defaults().items() if k not in bindings}
    return expr.xreplace(subs) if subs else expr


def substitute(expr: sp.Expr, table: SymbolTable, bindings: Bindings) -> sp.Expr:
    """`expr` at the bound values: unbound defaults applied (F -> 4*D), bound dims
    replaced by their integers; the unbound dims stay symbols."""
    return resolve_defaults(expr, table, bindings).xreplace(
        {k: sp.Integer(v) for k, v in bindings.items()}
    )


def evaluate(expr: sp.Expr, table: SymbolTable, bindings: Bindings) -> int | None:
    """The exact integer value of `expr`, or None when a symbol it uses is unbound."""
    value = substitute(expr, table, bindings)
    if value.free_symbols:
        return None
    if not value.is_Integer:
        raise UsageError(f"{expr} is not a whole number ({value}) with these values")
    return int(value)


def check_assumptions(
    assumptions: tuple[Assumption, ...], table: SymbolTable, bindings: Bindings
) -> None:
    """Every shape assumption (`H divides D`) must hold for the bound values."""
    for a in assumptions:
        value = substitute(a.expr, table, bindings)
        if not value.free_symbols and not value.is_integer:
            raise UsageError(
                f"the spec assumes {a.text}, which fails with these values ({a.expr} = {value})",
                a.span,
            )


def check_sizes(graph: Graph, table: SymbolTable, bindings: Bindings) -> None:
    """Every repeat count must be a whole number, at least 1 (an empty stack, whose
    output is its input, is not modelled), and every tensor dim one from 0 (torch has
    empty tensors) to MAX_VALUE, at the bound values: a Linear of `D - B` outputs with
    B > D, `repeat N - 4` at N = 2, is refused where it is written, not compiled to
    negative memory."""
    if not bindings:
        return
    for region in graph.regions:
        count = substitute(region.count, table, bindings)
        if count.is_number and (not count.is_Integer or count < 1):
            raise UsageError(
                f"repeat {region.count} of {region.path} is {count} at these sizes: a "
                "count of repetitions is a whole number, at least 1 (an empty stack is "
                "not modelled)",
                region.span,
            )
    for value in graph.values:
        for k, dim in enumerate(value.shape):
            size = substitute(dim, table, bindings)
            if size.is_number and (not size.is_Integer or size < 0 or size > MAX_VALUE):
                shape = ", ".join(str(d) for d in value.shape)
                shown = f"{float(size):.3e}" if size > MAX_VALUE else str(size)
                raise UsageError(
                    f"{value.path} [{shape}]: dim {k} ({dim}) is {shown} at these sizes; a "
                    f"size is a whole number from 0 to {MAX_VALUE:.0e}",
                    value.span,
                )


_UNITS = ((2**30, "GiB", 10**9, "GB"), (2**20, "MiB", 10**6, "MB"), (2**10, "KiB", 10**3, "kB"))


def format_bytes(n: int) -> str:
    """`44.20 GiB (47.46 GB)`: binary and decimal units (GiB = 2^30, GB = 10^9)."""
    for binary, binary_name, decimal, decimal_name in _UNITS:
        if n >= binary:
            return f"{n / binary:,.2f} {binary_name} ({n / decimal:,.2f} {decimal_name})"
    return f"{n:,} bytes"

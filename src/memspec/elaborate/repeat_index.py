"""`repeat N as i of Layer(..., i)`: repetitions that differ by index, as uniform regions.

A repeat region is instantiated once and stands for all its repetitions, which every
pass relies on (the peak replay extrapolates memory affine in the repetition). So
repetitions that differ are split into classes that do not: the index of a class is
`K + M*t + r` (t = 0, 1, ...), and a comparison of it that the class does not decide
(`IndexSplit`) refines the split. `i == 0` or `i < 1` puts layer 0 apart (K = 1: a
layer `layers.0`, then a region `layers[1:]` of N - 1); `i % 2 == 0` alternates (M = 2:
a region `layers` of N/2 repetitions of the pattern `layers[0::2]`, `layers[1::2]`).
The names are Python's slices of the ModuleList, which the lowering numbers back
(`lower/values.py::indexed_path`) into its state_dict keys.
"""

from __future__ import annotations

import math
from typing import Protocol

import sympy as sp

from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.scope import Instance, Scope, Stack
from memspec.elaborate.shapes import divisibility_text
from memspec.errors import SpecValueError
from memspec.ir.graph import Graph
from memspec.source import Span
from memspec.symbolic.index import IndexSplit, IndexSymbol, index_symbols
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

__all__ = ["MAX_SPLIT_LAYERS", "check_no_index", "split_first", "split_repeat"]

MAX_SPLIT_LAYERS = 64  # layers instantiated apart (leading ones and a pattern's) at most


class Instantiator(Protocol):
    """What a split needs of `instantiate.py::Instantiator`."""

    builder: GraphBuilder

    def layer_arguments(
        self, decl: d.DeclLayer, args: tuple[n.Arg, ...], caller: Scope, span: Span | None
    ) -> dict[str, object]: ...

    def instantiate(
        self,
        decl: d.DeclLayer,
        args: dict[str, object],
        path: str,
        region: int | None,
        span: Span | None,
    ) -> Instance: ...


def split_repeat(
    maker: Instantiator,
    inst: Instance,
    stmt: d.LayerSub,
    decl: d.DeclLayer,
    path: str,
    count: sp.Expr,
) -> Instance | Stack:
    """The repeated layers, split until every condition on the index is decided."""
    assert stmt.index is not None
    symbol = IndexSymbol(stmt.index)
    prefix, period = 0, 1
    while True:
        mark = maker.builder.checkpoint()
        try:
            return _build(maker, inst, stmt, decl, path, count, symbol, prefix, period)
        except IndexSplit as split:
            if split.symbol is not symbol:
                raise
            maker.builder.rollback(mark)
            prefix, period = _refine(split, prefix, period)
            if count.is_Integer:  # a literal count: no layer past its last
                prefix = min(prefix, int(count))
            if prefix + period > MAX_SPLIT_LAYERS:
                raise SpecValueError(
                    f"the conditions on {stmt.index!r} set more than {MAX_SPLIT_LAYERS} "
                    "layers apart",
                    split.span,
                ) from None


def split_first(
    maker: Instantiator,
    inst: Instance,
    stmt: d.LayerSub,
    decl: d.DeclLayer,
    path: str,
    count: sp.Expr,
) -> Instance | Stack:
    """The repeated layers with the first apart (`layers.0`, then `layers[1:]`): its
    input needs no gradient where the others' do (a frozen embedding before them), so it
    saves less and makes no gradient of its input."""
    return _build(maker, inst, stmt, decl, path, count, IndexSymbol("_first"), 1, 1)


def _refine(split: IndexSplit, prefix: int, period: int) -> tuple[int, int]:
    """The split after which the comparison is decided: a longer prefix of layers apart
    (for `i == c`, `i < c`), or a period that is a multiple of each modulus (`i % m`)."""
    diff, t = split.difference, split.symbol
    moduli = [m.args[1] for m in diff.atoms(sp.Mod) if m.has(t)]
    if moduli:
        if all(m.is_Integer and m > 0 for m in moduli):
            return prefix, math.lcm(period, *(int(m) for m in moduli))
    elif diff.is_polynomial(t):
        poly = sp.Poly(diff, t)
        if poly.degree() == 1 and all(c.is_Rational for c in poly.all_coeffs()):
            alpha, beta = poly.all_coeffs()
            skip = int(sp.floor(-beta / alpha)) + 1  # classes' first `skip` indices apart
            if skip >= 1:
                return prefix + period * skip, period
    raise SpecValueError(
        f"a condition on the repeat index {t.name!r} compares it with a constant "
        f"(`{t.name} == 0`, `{t.name} < 3`) or tests its remainder "
        f"(`{t.name} % 2 == 0`); this one is neither",
        split.span,
    ) from None


def _build(
    maker: Instantiator,
    inst: Instance,
    stmt: d.LayerSub,
    decl: d.DeclLayer,
    path: str,
    count: sp.Expr,
    symbol: IndexSymbol,
    prefix: int,
    period: int,
) -> Instance | Stack:
    builder = maker.builder
    first_value = len(builder.values)
    tail = sp.expand(count - prefix)
    repetitions = sp.Mul(tail, sp.Rational(1, period))
    _check_tail(tail, builder.bound.at(tail), builder.bound.at(repetitions), stmt, prefix, period)

    def layer(index: sp.Expr, where: str, region: int | None) -> Instance:
        scope = inst.scope.child()
        if stmt.index is not None:
            scope.names[stmt.index] = index
        args = maker.layer_arguments(decl, stmt.args, scope, stmt.span)
        return maker.instantiate(decl, args, where, region, stmt.span)

    def apart(j: int) -> Instance:
        """Layer j, apart from the repeat: a checkpoint where every repetition is one,
        as one repetition of a region of its own, marked as the rest's region is (the
        stack does not carry it)."""
        where = f"{path}.{j}"
        region = inst.region
        if stmt.checkpoint or maker.config.recompute.repeats:
            region = builder.add_region(
                where, sp.Integer(1), inst.region, stmt.span, stmt.checkpoint
            )
        return layer(sp.Integer(j), where, region)

    parts: list[tuple[int | None, tuple[Instance, ...]]] = [
        (None, (apart(j),)) for j in range(prefix)
    ]
    if tail != 0:
        region_path = f"{path}[{prefix}:]" if prefix else path
        region = builder.add_region(
            region_path, repetitions, inst.region, stmt.span, stmt.checkpoint
        )
        builder.assume_integer(repetitions, divisibility_text(repetitions), stmt.span)
        slots = tuple(
            layer(
                prefix + period * symbol + r,
                region_path if period == 1 else f"{path}[{prefix + r}::{period}]",
                region,
            )
            for r in range(period)
        )
        for v in builder.values[first_value:]:
            if any(index_symbols(dim) for dim in v.shape):
                raise SpecValueError(
                    f"the size of {v.path} depends on the repeat index {stmt.index!r}; "
                    "repeated layers may differ in their members, not in a size",
                    stmt.span,
                )
        if prefix == 0 and period == 1:  # no split: the plain repeat
            slots[0].repeated = True
            return slots[0]
        parts.append((region, slots))
    return Stack(decl, path, tuple(parts), span=stmt.span)


def _check_tail(
    tail: sp.Expr,
    bound: sp.Expr,
    repetitions: sp.Expr,
    stmt: d.LayerSub,
    prefix: int,
    period: int,
) -> None:
    """The repetitions after the leading layers exist (a symbolic count keeps at least
    one, so that its region runs) and fill whole patterns."""
    where = stmt.count.span if stmt.count is not None else stmt.span
    apart = f"layers 0 to {prefix - 1}" if prefix > 1 else "layer 0"
    least = prefix if tail.is_number else prefix + 1
    if prefix and bound.is_number and bound + prefix < least:
        raise SpecValueError(
            f"the conditions on {stmt.index!r} set {apart} apart from the rest, which "
            f"needs at least {least} repetitions, not {bound + prefix}",
            where,
        )
    if repetitions.is_number and not repetitions.is_Integer:
        which = f"the {bound} repetitions after {apart}" if prefix else f"its {bound} repetitions"
        raise SpecValueError(
            f"the conditions on {stmt.index!r} repeat a pattern of {period} layers, so "
            f"{which} must be a multiple of {period}",
            where,
        )


def check_no_index(graph: Graph) -> None:
    """No op may keep a repeat index in its attributes: repetitions run the same ops."""
    for op in graph.ops:
        stack: list[object] = [v for _, v in op.attrs]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                stack.extend(item)
            elif index_symbols(item):
                raise SpecValueError(
                    f"{op.op} at {op.path} depends on a repeat index; repeated layers may "
                    "differ in their members, not in a constant of an op",
                    op.span,
                )

"""Every category and the true peak over a grid of sizes: compiled once, evaluated fast.

The spec is compiled with the grid's dims unbound, and its formulas are evaluated at
every point (`sweep/evaluate.py`). They are torch's decisions for general sizes (a view or
a copy, a mask or none, a replayed repetition), and at some sizes torch decides
otherwise: at B = 1 a reshape is a view, below three repetitions a repeat is replayed
whole, under the window a sliding cache keeps everything. So the compile runs inside
`ir.sizes.watching()`, which collects each comparison the general decisions took for
granted (`B != 1`, `N >= 3`); a point where one fails is served by a compile with the grid
sizes of the failing comparisons bound (B = 1: one compile for the whole B = 1 row, its
formulas in the other dims), recursively. The points where the spec's own assumptions
fail (`H divides D`) get no numbers but the reason. Afterwards the first and the last
point are compiled with every size bound and compared with the table, to the byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from memspec.errors import MemspecError, UsageError
from memspec.ir.sizes import watching
from memspec.passes.results import CATEGORY_TITLES
from memspec.result import CompileResult
from memspec.sweep.evaluate import GridEvaluator
from memspec.sweep.grid import Axis, points
from memspec.symbolic.bind import substitute
from memspec.symbolic.dominance import undominated
from memspec.symbolic.polys import poly

__all__ = ["MAX_COMPILES", "Formulas", "SweepResult", "condition_text", "sizes_text", "sweep"]

# The most compiles one sweep makes (the general one, the grid sizes where torch decides
# otherwise, and the two checks): each takes a fraction of a second.
MAX_COMPILES = 64

# compile_at(bound, free): the spec with the grid dims `bound` (name -> value) bound and
# the grid dims `free` left unbound, whatever a preset or a config gives them
Compile = Callable[[dict[str, int], tuple[str, ...]], CompileResult]


@dataclass(frozen=True)
class Formulas:
    """One compile's formulas in the grid's dims, and the points they give numbers for."""

    fixed: tuple[tuple[sp.Symbol, int], ...]  # grid dims bound for it (none: general sizes)
    why: tuple[str, ...]  # the general decisions that fail at those sizes
    categories: tuple[tuple[str, sp.Expr], ...]  # CATEGORY_TITLES order
    peak: tuple[tuple[sp.Expr, str], ...]  # the candidates (bytes, moment), step order
    conditions: tuple[str, ...]  # what its decisions took for granted, as text
    points: int


@dataclass(frozen=True)
class SweepResult:
    """The table: one entry a point, in C order over `axes` (the first axis slowest)."""

    result: CompileResult  # the general compile (spec, model, bindings, convention)
    axes: tuple[tuple[sp.Symbol, tuple[int, ...]], ...]
    columns: dict[str, np.ndarray]  # each category, "sum" and (with a peak) "peak"
    moment: np.ndarray | None  # the peak's candidate index in its formulas (-1: none)
    served: np.ndarray  # which formulas gave each point (-1: an error)
    formulas: tuple[Formulas, ...]
    errors: tuple[str, ...]  # the reasons points have no numbers
    error: np.ndarray  # index into errors (-1: none)
    budget: int | None
    objective: str  # "peak" or "sum"
    # the points compiled with every size bound, equal to the table (else it raises)
    checked: tuple[tuple[tuple[sp.Symbol, int], ...], ...]

    @property
    def points(self) -> int:
        return int(self.served.size)

    @property
    def fits(self) -> np.ndarray | None:
        if self.budget is None:
            return None
        return (self.error < 0) & (self.columns[self.objective] <= self.budget)

    def label(self, point: int) -> str:
        if self.moment is None or self.served[point] < 0:
            return ""
        return self.formulas[self.served[point]].peak[self.moment[point]][1]


def _resolved(result: CompileResult, expr: sp.Expr) -> sp.Expr:
    """`expr` in the grid's dims only: defaults applied, every other bound dim substituted."""
    return sp.expand(substitute(expr, result.symbols, result.bindings))


class _Table:
    """The columns being filled, compile by compile."""

    def __init__(self, shape: tuple[int, ...], names: list[str], peak: bool) -> None:
        self.columns = {name: np.zeros(shape, np.int64) for name in names}
        self.moment = np.full(shape, -1, np.int64) if peak else None
        self.served = np.full(shape, -1, np.int64)
        self.error = np.full(shape, -1, np.int64)
        self.errors: list[str] = []
        self.formulas: list[Formulas] = []

    def put(self, name: str, where: np.ndarray, values: np.ndarray) -> None:
        column = self.columns[name]
        if values.dtype == object and column.dtype != object:
            column = self.columns[name] = column.astype(object)
        column[where] = values[where]

    def fail(self, where: np.ndarray, reason: str) -> None:
        if reason not in self.errors:
            self.errors.append(reason)
        self.error[where] = self.errors.index(reason)


class _Sweep:
    def __init__(self, compile_at: Compile, axes: tuple[tuple[sp.Symbol, tuple[int, ...]], ...]):
        self.compile_at = compile_at
        self.axes = axes
        self.grid = GridEvaluator(axes)
        self.shape = self.grid.shape
        self.compiles = 0
        self.index = {symbol: k for k, (symbol, _) in enumerate(axes)}

    def compile(self, fixed: dict[sp.Symbol, int]) -> tuple[CompileResult, list]:
        self.compiles += 1
        if self.compiles > MAX_COMPILES:
            raise UsageError(
                f"the grid needs more than {MAX_COMPILES} compiles: torch decides differently "
                "at many of its sizes (sizes of 1, equal sizes, the spec's conditions); "
                "sweep fewer values or bind some of them"
            )
        bound = {str(k): v for k, v in fixed.items()}
        free = tuple(str(s) for s, _ in self.axes if s not in fixed)
        with watching() as found:
            result = self.compile_at(bound, free)
        return result, found

    def serve(
        self, table: _Table, fixed: dict[sp.Symbol, int], where: np.ndarray, why=(), made=None
    ):
        """Fill the points `where` from a compile with `fixed` grid dims bound (`made`:
        that compile and what it took for granted, already done)."""
        try:
            result, found = made or self.compile(fixed)
        except MemspecError as error:
            if not fixed:
                raise
            table.fail(where, f"at {sizes_text(fixed.items())}: {error.message}")
            return
        grid = self.grid
        where = where.copy()
        # the spec's own divisibility: no numbers where it fails
        for a in result.graph.assumptions:
            broken = where & ~grid.whole(_resolved(result, a.expr))
            if broken.any():
                table.fail(broken, f"the spec assumes {a.text}, which fails at these sizes")
                where &= ~broken
        # the general decisions: where one fails, a compile with its sizes bound
        checks, texts, seen = [], [], set()
        for kind, item in found:
            item = _resolved(result, item) if kind == "integer" else _relation(result, item)
            if item in (sp.true, True) or (kind == "integer" and item.is_Integer):
                continue
            if item in (sp.false, False) or (kind == "integer" and item.is_number):
                raise RuntimeError(f"a general decision does not hold at the bound sizes: {item}")
            if (kind, item) in seen:
                continue
            seen.add((kind, item))
            holds = grid.whole(item) if kind == "integer" else grid.holds(item)
            checks.append((item, holds))
            texts.append(condition_text(item))
        ok = np.ones(self.shape, bool)
        for _, holds in checks:
            ok &= holds
        here = where & ok
        formulas = self._fill(table, result, fixed, why, tuple(sorted(texts)), here)
        if formulas is not None:
            table.formulas.append(formulas)
        rest = where & ~ok
        if rest.any():
            self._recompile(table, fixed, rest, checks)

    def _fill(self, table, result, fixed, why, texts, here) -> Formulas | None:
        grid = self.grid
        served = len(table.formulas)
        categories = tuple(
            (key, _resolved(result, result.categories[key].bytes)) for key in CATEGORY_TITLES
        )
        parts = []
        for key, expr in categories:
            values, inexact = grid.integers(expr)
            if inexact is not None and (inexact & here).any():
                table.fail(inexact & here, f"{key} is not a whole number at these sizes")
                here = here & ~inexact
            table.put(key, here, values)
            parts.append(values)
        if any(v.dtype == object for v in parts) or sum(_largest(v) for v in parts) >= 2**62:
            parts = [v.astype(object) for v in parts]  # a sum past int64: Python integers
        table.put("sum", here, np.broadcast_to(sum(parts[1:], parts[0]), self.shape))
        peak: tuple[tuple[sp.Expr, str], ...] = ()
        if table.moment is not None:
            if result.peak is None:
                raise UsageError(
                    f"no true peak at {sizes_text(fixed.items())}: {result.peak_unavailable}"
                )
            ordered = sorted(result.peak.candidates, key=lambda c: c.moment)
            resolved = [(_resolved(result, c.bytes), c.label()) for c in ordered]
            # with the other dims bound, a moment may now be at most another everywhere
            keep = undominated([poly(e) for e, _ in resolved])
            peak = tuple(resolved[k] for k in sorted(keep))
            best = best_at = None
            for k, (expr, _) in enumerate(peak):
                values, _ = grid.integers(expr)
                if best is None:
                    best, best_at = values, np.zeros(self.shape, np.int64)
                    continue
                larger = values > best  # ties: the earlier moment, as a tracker records
                best = np.where(larger, values, best)
                best_at = np.where(larger, k, best_at)
            table.put("peak", here, best)
            table.moment[here] = best_at[here]
        if not here.any():
            return None
        table.served[here] = served
        return Formulas(
            tuple(sorted(fixed.items(), key=lambda kv: self.index[kv[0]])),
            why,
            categories,
            peak,
            texts,
            int(here.sum()),
        )

    def _recompile(self, table, fixed, rest, checks) -> None:
        """Group the points where a general decision fails by the values of the grid dims
        those decisions read, and serve each group from a compile with them bound."""
        symbols = [s for s, _ in self.axes if s not in fixed]
        involved = {s: np.zeros(self.shape, bool) for s in symbols}
        failing: list[tuple[sp.Basic, np.ndarray]] = []
        for item, holds in checks:
            broken = rest & ~holds
            if broken.any():
                failing.append((item, broken))
                for s in item.free_symbols & set(symbols):
                    involved[s] |= broken
        points = np.argwhere(rest)
        groups: dict[tuple[tuple[sp.Symbol, int], ...], list[int]] = {}
        for n, point in enumerate(points):
            key = tuple(
                (s, self.axes[self.index[s]][1][point[self.index[s]]])
                for s in symbols
                if involved[s][tuple(point)]
            )
            if not key:
                raise RuntimeError("a general decision fails with no grid size to bind")
            groups.setdefault(key, []).append(n)
        for key, members in groups.items():
            where = np.zeros(self.shape, bool)
            where[tuple(points[members].T)] = True
            why = tuple(condition_text(item) for item, broken in failing if (broken & where).any())
            self.serve(table, {**fixed, **dict(key)}, where, why)


def _largest(values: np.ndarray) -> int:
    return max(abs(int(values.max())), abs(int(values.min()))) if values.size else 0


_FLIPPED = {sp.Lt: sp.Gt, sp.Le: sp.Ge, sp.Gt: sp.Lt, sp.Ge: sp.Le, sp.Eq: sp.Eq, sp.Ne: sp.Ne}
_SIGNS = {sp.Eq: "==", sp.Ne: "!=", sp.Lt: "<", sp.Le: "<=", sp.Gt: ">", sp.Ge: ">="}


def _relation(result: CompileResult, relation: sp.Basic) -> sp.Basic:
    """The relation in the grid's dims as `terms op number`, its terms' coefficients
    without a common factor and the first positive (`64*L - 64 != 0` is `L != 1`);
    decided (true or false) where the bound dims decide it."""
    kind = type(relation)
    difference = sp.expand(_resolved(result, relation.lhs) - _resolved(result, relation.rhs))
    if difference.is_number:
        return sp.true if kind(difference, 0) else sp.false
    _, difference = difference.as_content_primitive()
    if difference.could_extract_minus_sign():
        difference, kind = -difference, _FLIPPED[kind]
    constant = difference.as_coeff_Add()[0]
    return kind(difference - constant, -constant, evaluate=False)


def condition_text(item: sp.Basic) -> str:
    """A general decision's condition in words: `L != 1`, `N >= 3`, `D/256 is whole`."""
    if isinstance(item, sp.Rel):
        return f"{item.lhs} {_SIGNS[type(item)]} {item.rhs}"
    return f"{item} is whole"


def sizes_text(items) -> str:
    """`B = 1, L = 1,024` for (symbol, value) pairs; `general sizes` for none."""
    return ", ".join(f"{k} = {v:,}" for k, v in items) or "general sizes"


def sweep(
    compile_at: Compile,
    axes: tuple[Axis, ...],
    budget: int | None = None,
    objective: str = "peak",
) -> SweepResult:
    """Every category, their sum and the true peak at every point of the grid `axes`;
    `compile_at(fixed)` compiles the spec with those grid dims bound and the others unbound.
    """
    if objective not in ("peak", "sum"):
        raise UsageError(f"unknown objective {objective!r}; expected peak or sum")
    points(axes)  # refused past MAX_POINTS before anything is made
    with watching() as found:
        general = compile_at({}, tuple(a.name for a in axes))
    symbols = [_axis_symbol(general, a) for a in axes]
    for k, s in enumerate(symbols):
        if s in symbols[:k]:
            raise UsageError(f"--grid {axes[k].name}: {s} is already swept by another --grid")
    _every_other_dim_bound(general, set(symbols))
    state = _Sweep(compile_at, tuple(zip(symbols, (a.values for a in axes), strict=True)))
    state.compiles = 1
    peak = general.peak is not None or objective == "peak"
    if objective == "peak" and general.peak is None:
        raise UsageError(
            f"no true peak for this spec ({general.peak_unavailable}); use --objective sum"
        )
    names = [*CATEGORY_TITLES, "sum", *(("peak",) if peak else ())]
    table = _Table(state.shape, names, peak)
    state.serve(table, {}, np.ones(state.shape, bool), made=(general, found))
    checked = _check(state, table, general)
    return SweepResult(
        result=general,
        axes=state.axes,
        columns={k: v.reshape(-1) for k, v in table.columns.items()},
        moment=None if table.moment is None else table.moment.reshape(-1),
        served=table.served.reshape(-1),
        formulas=tuple(table.formulas),
        errors=tuple(table.errors),
        error=table.error.reshape(-1),
        budget=budget,
        objective=objective,
        checked=checked,
    )


def _every_other_dim_bound(result: CompileResult, swept: set[sp.Symbol]) -> None:
    exprs = [c.bytes for c in result.categories.values()]
    exprs += [c.bytes for c in result.peak.candidates] if result.peak else []
    dims = {d.symbol for d in result.symbols.ordered()}
    free = set().union(*(_resolved(result, e).free_symbols for e in exprs)) & dims
    if free - swept:
        names = ", ".join(str(s) for s in sorted(free - swept, key=str))
        raise UsageError(
            f"bind every dim the grid does not sweep (--set, --preset): unbound {names}"
        )


def _axis_symbol(result: CompileResult, axis: Axis) -> sp.Symbol:
    dim = result.symbols.lookup(axis.name)
    if dim is None:  # compile_at has refused unknown names already
        raise UsageError(f"--grid {axis.name}: not a dim of this spec")
    return dim.symbol


def _check(state: _Sweep, table: _Table, general: CompileResult):
    """The first and the last point with numbers, compiled with every size bound: each
    category and the peak must equal the table's, to the byte."""
    good = np.argwhere(table.error < 0)
    if len(good) == 0:
        return ()
    checked = []
    for point in {tuple(good[0]), tuple(good[-1])}:
        fixed = {s: values[i] for (s, values), i in zip(state.axes, point, strict=True)}
        result, _ = state.compile(fixed)
        expected = {k: result.value(result.categories[k].bytes) for k in CATEGORY_TITLES}
        expected["sum"] = sum(expected.values())
        if "peak" in table.columns:
            expected["peak"] = result.peak.value
        got = {k: int(table.columns[k][point]) for k in expected}
        if got != expected:
            differ = ", ".join(
                f"{k}: {got[k]:,} != {expected[k]:,}" for k in got if got[k] != expected[k]
            )
            raise RuntimeError(
                f"the sweep's formulas differ from a compile at {sizes_text(fixed.items())}: "
                f"{differ}"
            )
        checked.append(tuple(fixed.items()))
    return tuple(sorted(checked, key=lambda point: [v for _, v in point]))

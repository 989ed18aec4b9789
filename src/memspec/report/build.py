"""CompileResult -> Report: the only code that orders, groups and formats numbers.

Order is the graph's (declaration and execution order) and the pipeline's; nothing is
sorted by hash, so the same spec always gives the same report.
"""

from __future__ import annotations

import sympy as sp

from memspec.passes.peak import CATEGORIES as PEAK_CATEGORIES
from memspec.passes.results import CategoryResult, LineItem
from memspec.report.model import (
    Comparison,
    ComparisonRow,
    FlopRow,
    Flops,
    Group,
    Peak,
    PeakMoment,
    PeakRow,
    Report,
    Row,
    Section,
    SummaryRow,
    SymbolRow,
)
from memspec.result import CATEGORY_TITLES, CompileResult
from memspec.symbolic.bind import format_bytes, resolve_defaults
from memspec.symbolic.printers import latex, latex_int, latex_shape

__all__ = ["build_report"]


def _value(result: CompileResult, expr: sp.Expr) -> int | None:
    return result.value(expr) if result.bindings else None


def _row(result: CompileResult, item: LineItem) -> Row:
    value = _value(result, item.total_elements)
    return Row(
        name=item.path,
        shape=latex_shape(item.shape),
        dtype=item.dtype.value,
        elements=latex(result.resolve(item.elements)),
        copies=latex(item.multiplicity),
        note=item.note,
        value=f"{value:,}" if value is not None else None,
    )


def _groups(result: CompileResult, category: CategoryResult) -> tuple[Group, ...]:
    """Items grouped by their innermost region path, in first-appearance order."""
    keyed: dict[tuple, list[LineItem]] = {}
    for item in category.items:
        keyed.setdefault(item.regions, []).append(item)
    groups = []
    for regions, items in keyed.items():
        subtotal = sp.Add(*(i.elements * i.extra for i in items))
        if regions:
            title = " / ".join(path for path, _ in regions)
            count = latex(sp.Mul(*(c for _, c in regions)))
        else:
            title, count = "", ""
        groups.append(
            Group(
                title, count, tuple(_row(result, i) for i in items), latex(result.resolve(subtotal))
            )
        )
    return tuple(groups)


def _section(result: CompileResult, key: str, category: CategoryResult) -> Section:
    terms = []
    for dtype in category.dtypes():
        elements = sp.Add(*(i.total_elements for i in category.items if i.dtype is dtype))
        terms.append((dtype.value, dtype.itemsize, latex(result.resolve(elements))))
    elements_v = _value(result, category.elements)
    bytes_v = _value(result, category.bytes)
    return Section(
        key=key,
        title=CATEGORY_TITLES[key],
        description=category.description,
        groups=_groups(result, category),
        structured=latex(_structure(result, category.structured())),
        expanded=latex(result.resolve(category.elements)),
        bytes_terms=tuple(terms),
        bytes=latex(result.resolve(category.bytes)),
        value_elements=latex_int(elements_v) if elements_v is not None else None,
        value_bytes=latex_int(bytes_v) if bytes_v is not None else None,
        value_human=format_bytes(bytes_v) if bytes_v is not None else None,
    )


def _structure(result: CompileResult, expr: sp.Expr) -> sp.Expr:
    """Defaults substituted without expanding, so `N (12 D^2 + 2 D)` keeps its shape."""
    return resolve_defaults(expr, result.symbols, result.bindings)


def _summary(result: CompileResult, title: str, elements: sp.Expr, nbytes: sp.Expr):
    value = _value(result, nbytes)
    return SummaryRow(
        title,
        latex(result.resolve(elements)),
        latex(result.resolve(nbytes)),
        latex_int(value) if value is not None else None,
        format_bytes(value) if value is not None else None,
    )


def _comparison(result: CompileResult) -> Comparison:
    names = tuple(result.conventions)
    rows: dict[str, list[tuple[str, str]]] = {}
    for k, name in enumerate(names):
        for item in result.conventions[name].items:
            cells = rows.setdefault(item.path, [("", "")] * len(names))
            cells[k] = (latex(result.resolve(item.total_elements)), item.note)
    in_force = result.categories["activations"].elements
    totals, differences, values = [], [], []
    for n in names:
        category = result.conventions[n]
        totals.append(latex(result.resolve(category.elements)))
        differences.append(latex(result.resolve(category.elements - in_force)))
        v = _value(result, category.bytes)
        values.append(format_bytes(v) if v is not None else None)
    return Comparison(
        conventions=tuple(
            (n, result.convention_policies[n].description, result.conventions[n].description)
            for n in names
        ),
        totals=tuple(totals),
        differences=tuple(differences),
        values=tuple(values),
        rows=tuple(ComparisonRow(path, tuple(cells)) for path, cells in rows.items()),
    )


def _flops(result: CompileResult) -> Flops:
    f = result.flops
    rows = tuple(
        FlopRow(
            i.path,
            i.op,
            latex(result.resolve(i.forward)),
            latex(result.resolve(i.backward)),
            latex(i.multiplicity),
        )
        for i in f.items
    )
    values = tuple(_value(result, getattr(f, k)) for k in ("forward", "backward", "total"))
    shown = None if None in values else tuple(f"{v:,}" for v in values)
    step_value = _value(result, f.step)
    training = None
    seconds = result.training_seconds()
    if seconds is not None:
        peak, mfu, steps = result.training
        training = (
            f"{steps:,} steps x {step_value:,} FLOPs / ({mfu:g} MFU x {peak:.4g} FLOP/s)"
            f" = {seconds:,.0f} s = {seconds / 3600:,.1f} h = {seconds / 86400:,.2f} days"
        )
    rule = None
    if f.per_element is not None:
        rule = f"{f.per_element} FLOPs per parameter element ({result.config.optimizer.name})"
    return Flops(
        rows,
        latex(_structure(result, f.structured())),
        latex(result.resolve(f.forward)),
        latex(result.resolve(f.backward)),
        latex(result.resolve(f.total)),
        shown,
        training,
        latex(result.resolve(f.optimizer)) if rule else None,
        rule,
        latex(result.resolve(f.step)),
        f"{step_value:,}" if step_value is not None else None,
    )


_WHY = {
    "parameters": "allocated through the whole step",
    "buffers": "allocated through the whole step",
}


def _peak(result: CompileResult) -> Peak:
    peak = result.peak
    if peak is None:
        return Peak("", None, (), "", "", None, None, None, "", (), 0, (), result.peak_unavailable)
    options = peak.options
    winner = peak.winner()
    summed = {k: c.bytes for k, c in result.categories.items()}
    why = dict(_WHY)
    if options.set_to_none and options.grad_accum == 1:
        why["gradients"] = (
            "zero_grad(set_to_none=True) freed them before the forward; backward makes "
            "them one op at a time, in reverse"
        )
    else:
        why["gradients"] = "allocated through the forward (kept by zero_grad or accumulation)"
    why["optimizer_state"] = (
        "none before the first step() creates it, plus the step's temporaries"
        if options.first_step
        else "allocated from the first step on, plus the step's temporaries while it runs"
    )
    why["activations"] = (
        f"the sum counts the `{result.config.convention.name}` convention; at the peak: "
        "what autograd saved and backward has not yet freed, the batch and the loss"
    )
    why["temporaries"] = (
        "gradients of activations, and of parameters not yet accumulated, at that moment"
    )
    titles = {**CATEGORY_TITLES, "temporaries": "Temporaries"}
    rows = []
    for key in PEAK_CATEGORIES:
        s = summed.get(key)
        at = winner.part(key) if winner else None
        rows.append(
            PeakRow(
                titles[key],
                latex(result.resolve(s)) if s is not None else "",
                latex(at) if at is not None else "",
                _human(result, s) if s is not None else None,
                _human(result, at) if at is not None else None,
                why[key],
                _difference(result, at, s),
                _signed(result, at, s),
            )
        )
    total_sum = result.total_bytes
    value_sum = _value(result, total_sum)
    value_peak = peak.value
    gap = None
    if value_sum is not None and value_peak is not None:
        difference = value_sum - value_peak
        word = "more" if difference >= 0 else "less"
        gap = (
            f"the textbook sum is {format_bytes(abs(difference))} {word} than the true peak "
            f"({100 * difference / value_peak:+.1f}%)"
        )
    ordered = list(zip(peak.candidates, peak.values or [None] * len(peak.candidates), strict=True))
    if peak.values:
        ordered.sort(key=lambda pair: -pair[1])  # stable: ties keep the replay's order
    shown = ordered[:PEAK_MOMENTS]
    moments = tuple(
        PeakMoment(c.label(), latex(c.bytes), None if v is None else _bytes_text(v))
        for c, v in shown
    )
    total_difference = _difference(result, winner.bytes if winner else None, total_sum)
    return Peak(
        options.describe(),
        winner.label() if winner else None,
        tuple(rows),
        latex(result.resolve(total_sum)),
        latex(winner.bytes) if winner else "",
        _human(result, total_sum),
        _human(result, winner.bytes) if winner else None,
        gap,
        total_difference,
        moments,
        len(ordered) - len(shown),
        peak.assumptions,
        None,
    )


PEAK_MOMENTS = 12  # moments a report lists; JSON lists them all


def _difference(result: CompileResult, at: sp.Expr | None, summed: sp.Expr | None) -> str:
    """The peak's term minus the sum's, as math ("" when the peak's moment is unknown)."""
    if at is None:
        return ""
    return latex(sp.expand(at - result.resolve(summed if summed is not None else sp.S.Zero)))


def _signed(result: CompileResult, at: sp.Expr | None, summed: sp.Expr | None) -> str | None:
    if at is None:
        return None
    value = _value(result, sp.expand(at - (summed if summed is not None else sp.S.Zero)))
    if value is None:
        return None
    if value == 0:
        return "0"
    text = f"{abs(value):,}" + (f" = {format_bytes(abs(value))}" if abs(value) >= 1024 else "")
    return ("-" if value < 0 else "+") + text


def _human(result: CompileResult, expr: sp.Expr) -> str | None:
    value = _value(result, expr)
    return None if value is None else _bytes_text(value)


def _bytes_text(value: int) -> str:
    return f"{value:,} bytes" + (f" = {format_bytes(value)}" if value >= 1024 else "")


def _symbols(result: CompileResult) -> tuple[SymbolRow, ...]:
    rows = []
    for dim in result.symbols.ordered():
        if dim.symbol in result.bindings:
            value = f"{result.bindings[dim.symbol]:,}"
        elif dim.default is not None:
            value = f"default ${latex(dim.default)}$"
        else:
            value = ""
        rows.append(SymbolRow(latex(dim.symbol), dim.long_name, value))
    return tuple(rows)


def build_report(result: CompileResult) -> Report:
    """The report model of a compile result."""
    config = result.config
    categories = result.categories
    summary = tuple(
        _summary(result, CATEGORY_TITLES[k], c.elements, c.bytes) for k, c in categories.items()
    )
    assumptions = tuple(
        (_assumption_math(a.expr), str(a.span) if a.span else "") for a in result.graph.assumptions
    )
    return Report(
        model=result.model,
        spec=result.spec,
        precision=config.precision.name,
        precision_rules=config.precision.describe(),
        optimizer=config.optimizer.name,
        optimizer_description=config.optimizer.description,
        convention=config.convention.name,
        convention_description=config.convention.description,
        convention_rules=config.convention.describe(),
        variants=result.variants_used,
        preset=result.preset,
        symbols=_symbols(result),
        notes=result.notes,
        assumptions=assumptions,
        expects=tuple(e.text for e in result.expects),
        summary=summary,
        total=_summary(result, "Total", result.total_elements, result.total_bytes),
        sections=tuple(_section(result, k, c) for k, c in categories.items()),
        comparison=_comparison(result),
        flops=_flops(result),
        peak=_peak(result),
        active=_active(result),
    )


def _active(result: CompileResult) -> tuple[str, str | None] | None:
    if result.active is None:
        return None
    value = _value(result, result.active.elements)
    return latex(result.resolve(result.active.elements)), None if value is None else f"{value:,}"


def _assumption_math(expr: sp.Expr) -> str:
    """`$2 H$ divides $D$` for the shape assumption that `D/(2H)` is an integer."""
    num, den = sp.fraction(sp.together(expr))
    if den != 1:
        return f"${latex(den)}$ divides ${latex(num)}$"
    return f"${latex(expr)}$ is an integer"

"""The report's memory sections: one per category, the summary, the convention table.

A section lists its category's items grouped by repeat region (in first-appearance
order), then the structured total, the expanded one and the bytes by dtype.
"""

from __future__ import annotations

import sympy as sp

from memspec.passes.results import CATEGORY_TITLES, CategoryResult, LineItem
from memspec.report.model import (
    Comparison,
    ComparisonRow,
    Group,
    Row,
    Section,
    SummaryRow,
)
from memspec.report.quantities import math, quantity, resolved, structure, value
from memspec.result import CompileResult
from memspec.symbolic.bind import format_bytes
from memspec.symbolic.printers import latex, latex_int, latex_shape, text

__all__ = ["comparison", "item_row", "section", "summary"]


def item_row(result: CompileResult, item: LineItem) -> Row:
    count = value(result, item.total_elements)
    return Row(
        name=item.path,
        shape=latex_shape(item.shape),
        dims=tuple(text(d) for d in item.shape),
        dtype=item.dtype.value,
        elements=resolved(result, item.elements),
        copies=math(item.multiplicity),
        note=item.note,
        value=f"{count:,}" if count is not None else None,
    )


def _groups(
    result: CompileResult, category: CategoryResult, rows: tuple[Row, ...]
) -> tuple[Group, ...]:
    """Items grouped by their innermost region path, in first-appearance order."""
    keyed: dict[tuple, list[tuple[LineItem, Row]]] = {}
    for item, row in zip(category.items, rows, strict=True):
        keyed.setdefault(item.regions, []).append((item, row))
    groups = []
    for regions, pairs in keyed.items():
        subtotal = sp.Add(*(i.elements * i.extra for i, _ in pairs))
        if regions:
            title = " / ".join(path for path, _ in regions)
            count = latex(sp.Mul(*(c for _, c in regions)))
        else:
            title, count = "", ""
        group_rows = tuple(row for _, row in pairs)
        groups.append(Group(title, count, group_rows, latex(result.resolve(subtotal))))
    return tuple(groups)


def section(result: CompileResult, key: str, category: CategoryResult) -> Section:
    """One category: its items, by region, and its totals."""
    terms = []
    for dtype in category.dtypes():
        elements = sp.Add(*(i.total_elements for i in category.items if i.dtype is dtype))
        terms.append((dtype.value, dtype.itemsize, latex(result.resolve(elements))))
    elements = quantity(result, category.elements)
    nbytes = quantity(result, category.bytes)
    rows = tuple(item_row(result, i) for i in category.items)
    return Section(
        key=key,
        title=CATEGORY_TITLES[key],
        description=category.description,
        rows=rows,
        groups=_groups(result, category, rows),
        structured=latex(structure(result, category.structured())),
        expanded=elements,
        bytes_terms=tuple(terms),
        bytes=nbytes,
        value_elements=latex_int(elements.value) if elements.value is not None else None,
        value_bytes=latex_int(nbytes.value) if nbytes.value is not None else None,
        value_human=format_bytes(nbytes.value) if nbytes.value is not None else None,
    )


def summary(result: CompileResult, title: str, elements: sp.Expr, nbytes: sp.Expr) -> SummaryRow:
    """One line of the summary: a category's (or the total's) elements and bytes."""
    total = quantity(result, nbytes)
    return SummaryRow(
        title,
        quantity(result, elements),
        total,
        latex_int(total.value) if total.value is not None else None,
        format_bytes(total.value) if total.value is not None else None,
    )


def comparison(result: CompileResult) -> Comparison:
    """Activations under every declared convention, side by side, against the one in force."""
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
        v = value(result, category.bytes)
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

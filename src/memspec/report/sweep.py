"""`memspec sweep`'s table as Markdown, CSV or JSON.

Every number in it is a formula's value at a point: the Markdown lists each compile's
formulas, where they hold, and which points they gave; CSV and JSON carry the same
columns for tools (JSON column by column, ready for a data frame), with the formulas as
text. Bytes are exact integers everywhere.
"""

from __future__ import annotations

import csv
import io
import itertools
import json

from memspec.passes.results import CATEGORY_TITLES
from memspec.report.render import md_code, md_escape
from memspec.sweep.sweep import SweepResult, sizes_text
from memspec.symbolic.bind import format_bytes
from memspec.symbolic.printers import latex, text

__all__ = ["MAX_MARKDOWN_ROWS", "render_csv", "render_json", "render_markdown"]

# A Markdown table past this many rows is not read; CSV and JSON take any grid.
MAX_MARKDOWN_ROWS = 10_000

_TITLES = {**CATEGORY_TITLES, "sum": "Sum", "peak": "True peak"}


def _what(sweep: SweepResult) -> str:
    if sweep.objective == "peak":
        return "the true peak of a step"
    return f"the sum of the categories ({sweep.result.config.convention.name} convention)"


def _values(values: tuple[int, ...]) -> str:
    shown = [f"{v:,}" for v in values]
    if len(shown) > 12:
        shown = [*shown[:5], "…", *shown[-3:]]
    return ", ".join(shown) + (f" ({len(values):,} values)" if len(values) > 1 else "")


def _points(sweep: SweepResult):
    """(index, the grid values) of every point, in the table's order."""
    return enumerate(itertools.product(*(values for _, values in sweep.axes)))


def _bound(sweep: SweepResult) -> str:
    swept = {s for s, _ in sweep.axes}
    result = sweep.result
    items = [
        f"{d.symbol} = {result.bindings[d.symbol]:,}"
        for d in result.symbols.ordered()
        if d.symbol in result.bindings and d.symbol not in swept
    ]
    preset = f"preset {md_code(result.preset)}; " if result.preset else ""
    return preset + (", ".join(items) if items else "nothing else bound")


def render_markdown(sweep: SweepResult) -> str:
    if sweep.points > MAX_MARKDOWN_ROWS:
        from memspec.errors import UsageError

        raise UsageError(
            f"a Markdown table of {sweep.points:,} rows is more than the "
            f"{MAX_MARKDOWN_ROWS:,} it prints; use --format csv or json"
        )
    result = sweep.result
    grid = " × ".join(f"{s} = {_values(v)}" for s, v in sweep.axes)
    lines = [
        f"# Sweep of {md_code(result.model)} over {', '.join(str(s) for s, _ in sweep.axes)}",
        "",
        f"Compiled by memspec from {md_code(result.spec)}: {_bound(sweep)}.",
        f"Grid: {grid}: {sweep.points:,} points. All memory in bytes.",
    ]
    fits = sweep.fits
    if fits is not None:
        lines.append(
            f"Budget: {sweep.budget:,} bytes = {format_bytes(sweep.budget)}, against "
            f"{_what(sweep)}: {int(fits.sum()):,} of {sweep.points:,} points fit."
        )
    if sweep.checked:
        at = " and ".join(sizes_text(point) for point in sweep.checked)
        lines.append(
            f"Checked: compiled with every size bound at {at}, memspec gives the same bytes "
            "in every column."
        )
    lines += ["", "## Formulas", ""]
    lines.append(
        "Each point's numbers are one compile's formulas at its sizes. The formulas take "
        "torch's decisions for general sizes (a view or a copy, a replayed repetition); "
        "where one of those does not hold, the sizes it reads are bound and the spec "
        "compiled again."
    )
    for formulas in sweep.formulas:
        lines += ["", f"### At {sizes_text(formulas.fixed)} ({formulas.points:,} points)", ""]
        if formulas.why:
            lines.append(
                "Compiled with these sizes bound, because there "
                + ", ".join(f"`{md_escape(w)}`" for w in formulas.why)
                + " does not hold."
            )
        if formulas.conditions:
            lines.append(
                "They hold where "
                + ", ".join(f"`{md_escape(c)}`" for c in formulas.conditions)
                + "."
            )
        lines += ["", "| quantity | bytes |", "| --- | --- |"]
        lines += [f"| {CATEGORY_TITLES[k]} | ${latex(e)}$ |" for k, e in formulas.categories]
        if formulas.peak:
            lines += ["", "The true peak is the largest of these moments, in step order:", ""]
            lines += ["| moment | bytes |", "| --- | --- |"]
            lines += [f"| {md_escape(label)} | ${latex(e)}$ |" for e, label in formulas.peak]
    if sweep.errors:
        lines += ["", "## Points without numbers", ""]
        for k, reason in enumerate(sweep.errors):
            count = int((sweep.error == k).sum())
            lines.append(f"- {count:,} points: {md_escape(reason)}")
    lines += ["", "## Values", ""]
    names = [str(s) for s, _ in sweep.axes]
    columns = list(sweep.columns)
    head = [*names, *(_TITLES[c] for c in columns)]
    if sweep.moment is not None:
        head.append("peak at")
    if fits is not None:
        head.append("fits")
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for i, values in _points(sweep):
        row = [f"{v:,}" for v in values]
        if sweep.error[i] >= 0:
            row += ["—"] * (len(head) - len(row) - 1) + [md_escape(sweep.errors[sweep.error[i]])]
            lines.append("| " + " | ".join(row) + " |")
            continue
        row += [f"{int(sweep.columns[c][i]):,}" for c in columns]
        if sweep.moment is not None:
            row.append(md_escape(sweep.label(i)))
        if fits is not None:
            row.append("yes" if fits[i] else "no")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _columns(sweep: SweepResult) -> dict[str, list]:
    """Each column as a list with one entry a point: the grid's dims, the bytes, where the
    peak is, whether it fits, which formulas gave it (their index in the JSON) and why
    there are none (None where there are)."""
    import numpy as np

    grids = np.meshgrid(*(np.asarray(v, dtype=object) for _, v in sweep.axes), indexing="ij")
    columns: dict[str, list] = {
        str(s): g.reshape(-1).tolist() for (s, _), g in zip(sweep.axes, grids, strict=True)
    }
    missing = np.flatnonzero(sweep.error >= 0).tolist()
    for name, values in sweep.columns.items():
        columns[name] = values.tolist()
    if sweep.moment is not None:
        labels = [[label for _, label in f.peak] for f in sweep.formulas]
        columns["moment"] = [
            labels[f][m] if f >= 0 else None
            for f, m in zip(sweep.served.tolist(), sweep.moment.tolist(), strict=True)
        ]
    fits = sweep.fits
    if fits is not None:
        columns["fits"] = fits.tolist()
    columns["formulas"] = sweep.served.tolist()
    columns["error"] = [None] * sweep.points
    for i in missing:
        for name in (*sweep.columns, "moment", "fits", "formulas"):
            if name in columns:
                columns[name][i] = None
        columns["error"][i] = sweep.errors[sweep.error[i]]
    return columns


def render_csv(sweep: SweepResult) -> str:
    """One row a point, the columns of the JSON's `columns` (empty where None)."""
    columns = _columns(sweep)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(
        ["" if v is None else v for v in row] for row in zip(*columns.values(), strict=True)
    )
    return out.getvalue()


def render_json(sweep: SweepResult) -> str:
    """`columns`: each a list with one entry a point (nulls where there are no numbers);
    `formulas`: each compile's formulas as text, where they hold and how many points."""
    result = sweep.result
    doc = {
        "spec": result.spec,
        "model": result.model,
        "bound": {str(k): v for k, v in result.bindings.items()},
        "grid": {str(s): list(v) for s, v in sweep.axes},
        "points": sweep.points,
        "objective": sweep.objective,
        "budget": sweep.budget,
        "formulas": [
            {
                "fixed": {str(k): v for k, v in f.fixed},
                "because": list(f.why),
                "holds_where": list(f.conditions),
                "points": f.points,
                "categories": {k: text(e) for k, e in f.categories},
                "peak": [{"moment": label, "bytes": text(e)} for e, label in f.peak],
            }
            for f in sweep.formulas
        ],
        "errors": list(sweep.errors),
        "checked": [{str(k): v for k, v in point} for point in sweep.checked],
        "columns": _columns(sweep),
    }
    # a large grid's columns on one line each would be a file of mostly indentation
    return json.dumps(doc, indent=1 if sweep.points <= 1000 else None) + "\n"

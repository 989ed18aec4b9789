"""The text `memspec verify` prints: one table per category, then the verdict."""

from __future__ import annotations

from memspec.result import CATEGORY_TITLES, CompileResult
from memspec.symbolic.bind import format_bytes
from memspec.verify.compare import Row, Table
from memspec.verify.hints import activation_hints, element_hints, peak_hints
from memspec.verify.measure import Measurement
from memspec.verify.peak import PeakComparison

__all__ = ["render_verify"]

# verify measures activations under autograd only, so its title says so.
_TITLES = {**CATEGORY_TITLES, "activations": "Activations, autograd convention"}


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _hints(result: CompileResult, measured: Measurement, table: Table, row: Row) -> list[str]:
    """The computed hints under a mismatched row, indented below it."""
    if table.category == "activations":
        found = activation_hints(result, row, measured.activation_tensors.get(row.name, []))
    else:
        found = element_hints(table, row)
    return [f"      hint: {line}" for line in found]


def _table(table: Table, width: int, hints=lambda table, row: []) -> list[str]:
    lines = [
        f"{_TITLES[table.category]} ({table.unit})",
        f"  {'item':<{width}} {'predicted':>15} {'measured':>15} {'difference':>12}",
    ]
    for row in table.rows:
        mark = "" if row.difference == 0 else "  MISMATCH"
        lines.append(
            f"  {row.name:<{width}} {_cell(row.predicted):>15} {_cell(row.measured):>15}"
            f" {row.difference:>12,}{mark}"
        )
        if row.difference:
            lines += hints(table, row)
    verdict = "ok" if table.ok else "MISMATCH"
    lines.append(
        f"  {'total':<{width}} {table.predicted:>15,} {table.measured:>15,} "
        f"{table.measured - table.predicted:>12,}  {verdict}"
    )
    return lines


def _peak_lines(result: CompileResult, peak: PeakComparison) -> list[str]:
    lines = [
        "Peak of a training step on fake tensors (torch MemTracker, FakeTensorMode:",
        f"nothing allocated); {result.peak.options.describe()}.",
        f"memspec's peak: {peak.moment}, {peak.predicted:,} bytes.",
    ]
    if peak.terms:
        lines.append("The tracker's step differs from a GPU's; memspec computes each difference:")
        for term in peak.terms:
            if term.moved_from:
                lines.append(
                    f"  {term.name}: {term.bytes:,} bytes in {term.category}, not "
                    f"{term.moved_from} ({term.why})"
                )
                continue
            where = f" in {term.category}" if term.category else ""
            lines.append(f"  {term.name}: {term.bytes:+,} bytes{where} ({term.why})")
    lines.append(
        f"  {'category':<8} {'at the peak (bytes)':>20} {'memspec (bytes)':>20} {'difference':>12}"
    )
    for category, measured, expected in peak.rows:
        mark = "" if measured == expected else "  MISMATCH"
        lines.append(
            f"  {category:<8} {measured:>20,} {expected:>20,} {expected - measured:>12,}{mark}"
        )
    lines.append(
        f"  {'total':<8} {peak.measured:>20,} {peak.expected:>20,} "
        f"{peak.expected - peak.measured:>12,}   {format_bytes(peak.measured)}"
    )
    measured_phase, phase = peak.phases
    lines.append(
        f"  phase: the tracker peaks in {measured_phase or 'no phase'}, memspec in {phase}"
    )
    if not peak.ok:
        lines += [f"  hint: {h}" for h in peak_hints(result, peak.rows, peak.phases)]
    lines += [
        "",
        "verify --peak: equal to the byte in every category and in total, at the same phase"
        if peak.ok
        else "verify --peak: MISMATCH",
    ]
    return lines


def _bindings(result: CompileResult) -> str:
    subs = result.substitutions()
    return ", ".join(f"{d.symbol}={subs[d.symbol]}" for d in result.symbols.ordered())


def render_verify(
    result: CompileResult,
    tables: list[Table] | None,
    measured: Measurement | None,
    peak: PeakComparison | None,
) -> str:
    import torch

    config = result.config
    variants = "".join(f", {k}={v}" for k, v in result.variants_used)
    description = config.precision.description
    framework = f" ({description})" if description else ""
    lines = [
        f"memspec verify {result.spec}: {result.model} at {_bindings(result)}",
        f"precision {config.precision.name}{framework}, optimizer "
        f"{config.optimizer.name}{variants}; "
        f"torch {torch.__version__} on the CPU",
    ]
    if tables is not None and measured is not None:
        lines.append("")
        lines.append(
            "One training step: zero_grad(set_to_none=True), forward and loss, "
            "backward, optimizer step."
        )
        width = max(24, *(len(r.name) for t in tables for r in t.rows))
        for table in tables:
            lines += [
                "",
                *_table(table, width, lambda t, r: _hints(result, measured, t, r)),
            ]
        if measured.optimizer_scalars:
            count = len(measured.optimizer_scalars)
            total = sum(measured.optimizer_scalars.values())
            lines += [
                "",
                f"Optimizer scalars (not a memspec category): {count} `step` tensors,"
                f" {total:,} elements",
            ]
        course = result.conventions.get("course")
        if course is not None:
            predicted = result.value(course.bytes)
            lines += [
                "",
                f"The course convention predicts {predicted:,} activation bytes "
                f"({format_bytes(predicted)}); it is a convention, not a measurement, "
                "so it is reported, not verified.",
            ]
    if peak is not None:
        lines += ["", *_peak_lines(result, peak)]
    if tables is not None:
        ok = all(t.ok for t in tables)
        lines += [
            "",
            "verify: every category matches exactly"
            if ok
            else "verify: MISMATCH between prediction and measurement",
        ]
    return "\n".join(lines) + "\n"

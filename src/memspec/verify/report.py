"""The text `memspec verify` prints: one table per category, then the verdict."""

from __future__ import annotations

from memspec.result import CATEGORY_TITLES, CompileResult
from memspec.symbolic.bind import format_bytes
from memspec.verify.compare import Table
from memspec.verify.measure import Measurement
from memspec.verify.peak import PeakComparison

__all__ = ["render_verify"]

# verify measures activations under autograd only, so its title says so.
_TITLES = {**CATEGORY_TITLES, "activations": "Activations, autograd convention"}


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(table: Table, width: int) -> list[str]:
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
    verdict = "ok" if table.ok else "MISMATCH"
    lines.append(
        f"  {'total':<{width}} {table.predicted:>15,} {table.measured:>15,} "
        f"{table.measured - table.predicted:>12,}  {verdict}"
    )
    return lines


def _relative(difference: int, total: int) -> str:
    return f"{100 * difference / total:+.3f}%" if total else "-"


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
    lines = [
        f"memspec verify {result.spec}: {result.model} at {_bindings(result)}",
        f"precision {config.precision.name}, optimizer {config.optimizer.name}{variants}; "
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
            lines += ["", *_table(table, width)]
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
        options = result.peak.options
        lines += [
            "",
            "Peak of a training step on fake tensors (torch MemTracker, FakeTensorMode:",
            f"nothing allocated); {options.describe()}.",
            f"memspec's peak: {peak.moment}.",
            f"  {'category':<8} {'at the peak (bytes)':>20} {'memspec (bytes)':>20} "
            f"{'difference':>16} {'relative':>9}",
        ]
        for category, measured_bytes, predicted in peak.rows:
            difference = predicted - measured_bytes
            lines.append(
                f"  {category:<8} {measured_bytes:>20,} {predicted:>20,} "
                f"{difference:>16,} {_relative(difference, peak.measured):>9}"
            )
        lines.append(
            f"  {'total':<8} {peak.measured:>20,} {peak.predicted:>20,} "
            f"{peak.predicted - peak.measured:>16,} "
            f"{_relative(peak.predicted - peak.measured, peak.measured):>9}   "
            f"{format_bytes(peak.measured)}"
        )
        lines += [
            "  relative: the difference over the measured total. The tracker's OPT also holds",
            "  AdamW's `step` counters (4 bytes per parameter tensor, CPU tensors when training",
            "  on a GPU), which memspec does not count.",
            "",
            "verify --peak: within 1% in every category and in total"
            if peak.ok
            else "verify --peak: MISMATCH, more than 1% off",
        ]
    if tables is not None:
        ok = all(t.ok for t in tables)
        lines += [
            "",
            "verify: every category matches exactly"
            if ok
            else "verify: MISMATCH between prediction and measurement",
        ]
    return "\n".join(lines) + "\n"

"""The answer of `memspec solve`, as a small report model rendered as text or JSON.

Both outputs render one `SolveReport`, built from the `Solution` (`memspec/solve.py`):
the bytes as a function of the symbol, the closed form when there is one, the largest
value that fits and, for the true peak, the moment where the step peaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from memspec.result import CompileResult
from memspec.solve import Solution

__all__ = ["SolveReport", "build_solve", "render_solve_json", "render_solve_text"]


@dataclass(frozen=True, slots=True)
class SolveReport:
    """What `memspec solve` says, every expression already printed."""

    symbol: str
    objective: str  # "peak" or "sum"
    what: str  # what the bytes count, in words
    budget: int  # bytes
    expression: str  # the bytes as a function of the symbol, as text
    formula: str | None  # the closed form of the largest value, as text
    maximum: int | None
    moment: str | None  # where the step peaks at the maximum
    nothing_fits: bool  # every other dim is bound and even 1 needs more than the budget
    plot: str | None  # where the plot was written
    checked: tuple[tuple[int, int], ...] = ()  # (value, bytes) compiled with it bound
    general: int | None = None  # the answer at general sizes, where the check moved it
    smallest: bool = False  # the fewest that fit (a parallel degree), not the most
    grows: bool = True  # the memory never falls as the symbol grows


def build_solve(
    result: CompileResult, solution: Solution, objective: str, plot: str | None = None
) -> SolveReport:
    """The report of `solution`, the largest value under `objective` for `result`."""
    what = "the true peak of a training step"
    if result.config.inference is not None:
        what = "the true peak of generation"
    if objective == "sum":
        what = f"the sum of the categories, {result.config.convention.name} convention"
        if result.ranks is not None:
            what += f", on rank 0 of {result.ranks.parallel.label()} (the most any rank holds)"
    others = solution.expression.free_symbols - {solution.symbol}
    return SolveReport(
        symbol=solution.symbol.name,
        objective=objective,
        what=what,
        budget=solution.budget,
        expression=str(solution.expression),
        formula=None if solution.formula is None else str(solution.formula),
        maximum=solution.maximum,
        moment=solution.moment,
        nothing_fits=solution.maximum is None and not others,
        plot=plot,
        checked=solution.checked,
        general=solution.general,
        smallest=solution.smallest,
        grows=solution.grows,
    )


def render_solve_text(report: SolveReport) -> str:
    """The expression, the closed form, the largest value: one line each."""
    s = report.symbol
    lines = [f"bytes({s}) = {report.expression}  ({report.what})"]
    if report.formula is not None:
        lines.append(f"largest {s} = {report.formula}")
    if report.smallest:
        if report.maximum is not None:
            lines.append(f"smallest {s} within {report.budget:,} bytes: {report.maximum}")
        else:
            lines.append(
                f"no {s} fits {report.budget:,} bytes: what every rank holds whole "
                "(activations, buffers, the unsharded categories) is more"
            )
    elif report.maximum is not None:
        at = f"; the peak is at {report.moment}" if report.moment else ""
        lines.append(f"largest {s} within {report.budget:,} bytes: {report.maximum}{at}")
        if not report.grows:
            lines.append(
                f"the memory falls as {s} grows in places, or small {s} are no sizes of "
                f"the spec: not every smaller {s} fits"
            )
    elif report.nothing_fits and not report.grows:
        lines.append(
            f"no {s} that the spec's sizes allow fits {report.budget:,} bytes (every value "
            f"was weighed, from the roots of bytes({s}) = budget and of its sizes' limits)"
        )
    elif report.nothing_fits:
        lines.append(f"even {s} = 1 needs more than {report.budget:,} bytes")
    if report.checked:
        each = ", ".join(
            f"{s} = {v}: {b:,} bytes ({'fits' if b <= report.budget else 'does not fit'})"
            for v, b in report.checked
        )
        lines.append(f"checked with {s} bound, as torch decides views at that size: {each}")
        if report.general is not None:
            lines.append(
                f"at general sizes the answer would be {report.general}: torch decides views "
                f"and copies differently at {s} = {report.general}"
            )
    if report.plot:
        lines.append(f"plot written to {report.plot}")
    return "\n".join(lines) + "\n"


def render_solve_json(report: SolveReport) -> str:
    """`symbol`, `max`, `objective`, `budget_bytes`, `expression`, then `formula` and
    `phase` when known."""
    doc = {
        "symbol": report.symbol,
        ("min" if report.smallest else "max"): report.maximum,
        "objective": report.objective,
        "budget_bytes": report.budget,
        "expression": report.expression,
    }
    if report.formula is not None:
        doc["formula"] = report.formula
    if report.moment is not None:
        doc["phase"] = report.moment
    if report.checked:
        doc["checked"] = [{"value": v, "bytes": b} for v, b in report.checked]
    if report.general is not None:
        doc["general"] = report.general
    if not report.grows:
        doc["grows"] = False  # the memory falls as the symbol grows somewhere
    return json.dumps(doc, indent=2) + "\n"

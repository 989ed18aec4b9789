"""The report's peak section: the true peak of a training step beside the textbook sum.

Each category's term in the sum and at the peak's moment, why they differ, and every
moment that can be the peak (a report lists the largest `PEAK_MOMENTS`; JSON all).
"""

from __future__ import annotations

import sympy as sp

from memspec.passes.peak import CATEGORIES, PeakResult, StepOptions
from memspec.passes.results import CATEGORY_TITLES
from memspec.report.model import Peak, PeakMoment, PeakRow
from memspec.report.quantities import bytes_text, human, math, value
from memspec.result import CompileResult
from memspec.symbolic.bind import format_bytes
from memspec.symbolic.printers import latex

__all__ = ["PEAK_MOMENTS", "peak"]

PEAK_MOMENTS = 12  # moments a report lists; JSON lists them all
# A summary writes the peak as a Max over at most this many moments; over more, a Max
# would bury the summary (the peak section lists them, JSON has the Max in full).
SUMMARY_MOMENTS = 4
_TITLES = {**CATEGORY_TITLES, "temporaries": "Temporaries"}


def _why(result: CompileResult, options: StepOptions) -> dict[str, str]:
    """Why each category's term at the peak differs from the sum's, for this step."""
    if options.set_to_none and options.grad_accum == 1:
        gradients = (
            "zero_grad(set_to_none=True) freed them before the forward; backward makes "
            "them one op at a time, in reverse"
        )
    else:
        gradients = "allocated through the forward (kept by zero_grad or accumulation)"
    return {
        "parameters": "allocated through the whole step",
        "buffers": "allocated through the whole step",
        "gradients": gradients,
        "optimizer_state": (
            "none before the first step() creates it, plus the step's temporaries"
            if options.first_step
            else "allocated from the first step on, plus the step's temporaries while it runs"
        ),
        "activations": (
            f"the sum counts the `{result.config.convention.name}` convention; at the peak: "
            "what autograd saved and backward has not yet freed, the batch and the loss"
            + (
                " (and the loss scaler's scalars: the scaled loss, found_inf)"
                if result.config.precision.scaler
                else ""
            )
            + (
                "; and each FSDP2 unit's gathered parameters, kept from its forward to "
                "its post-backward (reshard_after_forward=False)"
                if result.config.parallel.runtime == "fsdp2"
                and not result.config.parallel.reshard_after_forward
                else ""
            )
        ),
        "temporaries": (
            "gradients of activations, and of parameters not yet accumulated, at that moment"
            + (
                "; and FSDP2's gathered parameters, all-gather and reduce-scatter buffers"
                if result.config.parallel.runtime == "fsdp2"
                else ""
            )
        ),
    }


def _difference(result: CompileResult, at: sp.Expr | None, summed: sp.Expr | None) -> str:
    """The peak's term minus the sum's, as math ("" when the peak's moment is unknown)."""
    if at is None:
        return ""
    return latex(sp.expand(at - result.resolve(summed if summed is not None else sp.S.Zero)))


def _signed(result: CompileResult, at: sp.Expr | None, summed: sp.Expr | None) -> str | None:
    if at is None:
        return None
    count = value(result, sp.expand(at - (summed if summed is not None else sp.S.Zero)))
    if count is None:
        return None
    if count == 0:
        return "0"
    text = f"{abs(count):,}" + (f" = {format_bytes(abs(count))}" if abs(count) >= 1024 else "")
    return ("-" if count < 0 else "+") + text


def _rows(result: CompileResult, winner, why: dict[str, str]) -> tuple[PeakRow, ...]:
    """Each category's term in the sum and at the peak's moment (`winner`, when known)."""
    rows = []
    for key in CATEGORIES:
        category = result.categories.get(key)
        s = category.bytes if category is not None else None
        at = winner.part(key) if winner else None
        rows.append(
            PeakRow(
                key,
                _TITLES[key],
                latex(result.resolve(s)) if s is not None else "",
                math(at) if at is not None else None,
                human(result, s) if s is not None else None,
                human(result, at) if at is not None else None,
                why[key],
                _difference(result, at, s),
                _signed(result, at, s),
            )
        )
    return tuple(rows)


def _gap(total_sum: int | None, total_peak: int | None) -> str | None:
    """How far the textbook sum is from the true peak, in words, when both are known."""
    if total_sum is None or total_peak is None:
        return None
    difference = total_sum - total_peak
    word = "more" if difference >= 0 else "less"
    return (
        f"the textbook sum is {format_bytes(abs(difference))} {word} than the true peak "
        f"({100 * difference / total_peak:+.1f}%)"
    )


def _moments(peak: PeakResult) -> tuple[tuple[PeakMoment, ...], tuple[PeakMoment, ...]]:
    """Every candidate in the replay's order, and those a report lists, largest first."""
    values = peak.values or [None] * len(peak.candidates)
    candidates = tuple(
        PeakMoment(c.label(), math(c.bytes), None if v is None else bytes_text(v))
        for c, v in zip(peak.candidates, values, strict=True)
    )
    ordered = list(zip(candidates, values, strict=True))
    if peak.values:
        ordered.sort(key=lambda pair: -pair[1])  # stable: ties keep the replay's order
    return candidates, tuple(m for m, _ in ordered[:PEAK_MOMENTS])


def peak(result: CompileResult) -> Peak:
    """The peak's section, or only why there is none."""
    found = result.peak
    if found is None:
        return Peak(unavailable=result.peak_unavailable)
    options = found.options
    winner = found.winner()
    total_sum = result.total_bytes
    candidates, moments = _moments(found)
    return Peak(
        unavailable=None,
        options=options.describe(),
        step=(
            ("first_step", options.first_step),
            ("set_to_none", options.set_to_none),
            ("grad_accum", options.grad_accum),
            ("optimizer_impl", options.optimizer_impl),
            # named only when set, so the reports of a Trainer's step stay as they were
            *((("keep_outputs", True),) if options.keep_outputs else ()),
        ),
        moment=winner.label() if winner else None,
        rows=_rows(result, winner, _why(result, options)),
        total_summed=latex(result.resolve(total_sum)),
        total_at_peak=latex(winner.bytes) if winner else "",
        value_summed=human(result, total_sum),
        value_at_peak=human(result, winner.bytes) if winner else None,
        gap=_gap(value(result, total_sum), found.value),
        total_difference=_difference(result, winner.bytes if winner else None, total_sum),
        candidates=candidates,
        moments=moments,
        more=len(candidates) - len(moments),
        assumptions=found.assumptions,
        value=found.value,
        max_formula=(
            latex(found.bytes)
            if winner is None and len(found.candidates) <= SUMMARY_MOMENTS
            else ""
        ),
    )

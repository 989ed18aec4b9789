"""The report's FLOPs section: each matrix product, the step's totals, the training time."""

from __future__ import annotations

from memspec.report.model import FlopRow, Flops
from memspec.report.quantities import math, quantity, resolved, structure
from memspec.result import CompileResult
from memspec.symbolic.printers import latex

__all__ = ["flops"]


def _training(result: CompileResult, seconds: float, step_value: int | None) -> str:
    """How long the training takes, the arithmetic written out."""
    peak, mfu, steps = result.training
    return (
        f"{steps:,} steps x {step_value:,} FLOPs / ({mfu:g} MFU x {peak:.4g} FLOP/s)"
        f" = {seconds:,.0f} s = {seconds / 3600:,.1f} h = {seconds / 86400:,.2f} days"
    )


def flops(result: CompileResult) -> Flops:
    """The training step's FLOPs, per product and in total."""
    f = result.flops
    rows = tuple(
        FlopRow(
            i.path,
            i.op,
            resolved(result, i.forward),
            resolved(result, i.backward),
            math(i.multiplicity),
        )
        for i in f.items
    )
    forward, backward, total = (
        quantity(result, getattr(f, k)) for k in ("forward", "backward", "total")
    )
    values = (forward.value, backward.value, total.value)
    step = quantity(result, f.step)
    seconds = result.training_seconds()
    rule = None
    if f.per_element is not None:
        rule = f"{f.per_element} FLOPs per parameter element ({result.config.optimizer.name})"
    return Flops(
        rows=rows,
        structured=latex(structure(result, f.structured())),
        forward=forward,
        backward=backward,
        total=total,
        optimizer=quantity(result, f.optimizer),
        step=step,
        values=None if None in values else tuple(f"{v:,}" for v in values),
        step_value=f"{step.value:,}" if step.value is not None else None,
        optimizer_rule=rule,
        training=None if seconds is None else _training(result, seconds, step.value),
        training_seconds=seconds,
        recompute=quantity(result, f.recompute) if f.recompute != 0 else None,
        with_recompute=quantity(result, f.with_recompute) if f.recompute != 0 else None,
    )

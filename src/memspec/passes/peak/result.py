"""What the peak pass answers: the step it models, and the moments that can be its peak."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from memspec.passes.peak.moments import Phase
from memspec.policies import IMPLEMENTATIONS

__all__ = ["CATEGORIES", "PeakCandidate", "PeakResult", "StepOptions"]

CATEGORIES = (
    "parameters",
    "gradients",
    "optimizer_state",
    "activations",
    "temporaries",
    "buffers",
)


@dataclass(frozen=True, slots=True)
class StepOptions:
    """The training loop, as in PyTorch.

    - `first_step`: AdamW creates its state lazily inside the first `step()`, so the
      forward and backward of step 1 run without it (an optimizer declared `state at
      init`, Adagrad, makes it in its constructor; master copies are made with the
      model); each optimizer of a chain makes its own as it steps, and a loss scaler
      its scale and growth tracker at the first `scale()`.
    - `set_to_none`: `zero_grad(set_to_none=True)` (PyTorch's default) frees gradients
      before the forward; with False they stay allocated through it, and backward adds
      into them.
    - `grad_accum`: K micro-batches per optimizer step; micro-batches 2..K run forward
      and backward with the gradients of the earlier ones allocated.
    - `optimizer_impl`: how torch.optim runs the step (for_loop, foreach, fused), which
      sets the step's temporaries (declared per optimizer in `std/train.mspec`).
    - `keep_outputs`: the loop keeps the model's outputs object (`out = model(...);
      out.loss.backward()`), so what the spec marks `returned` (logits, a K/V cache)
      lives until the step ends; a Trainer keeps only the loss (False).
    """

    first_step: bool = False
    set_to_none: bool = True
    grad_accum: int = 1
    optimizer_impl: str = "for_loop"
    keep_outputs: bool = False

    def describe(self) -> str:
        step = (
            "the first step (no optimizer state before step())"
            if self.first_step
            else ("the steady state (optimizer state allocated)")
        )
        zero = (
            "zero_grad(set_to_none=True)" if self.set_to_none else ("zero_grad(set_to_none=False)")
        )
        accum = (
            f"{self.grad_accum} micro-batches per step"
            if self.grad_accum > 1
            else "no gradient accumulation"
        )
        impl = f"{self.optimizer_impl} optimizer ({IMPLEMENTATIONS[self.optimizer_impl]})"
        kept = "; the model's outputs kept until the step ends" if self.keep_outputs else ""
        return f"{step}; {zero}; {accum}; {impl}{kept}"


@dataclass(frozen=True, slots=True)
class PeakCandidate:
    """Memory at one moment of the step, by category; a candidate for the peak."""

    phase: Phase
    where: str  # the op (and repetition) running, or the parameter being updated
    micro_batch: str  # "" or which micro-batches of gradient accumulation
    breakdown: tuple[tuple[str, sp.Expr], ...]  # CATEGORIES order
    bytes: sp.Expr  # their sum
    moment: int = 0  # its place in the step: of equal candidates the step reaches first
    optimizer: str = ""  # in the step of an optimizer chain, whose step (Muon's, AdamW's)

    def part(self, category: str) -> sp.Expr:
        return dict(self.breakdown)[category]

    def label(self) -> str:
        text = f"{self.phase.value}: {self.where}" if self.where else self.phase.value
        return f"{text} ({self.micro_batch})" if self.micro_batch else text


@dataclass(frozen=True)
class PeakResult:
    options: StepOptions
    candidates: tuple[PeakCandidate, ...]  # none dominates another; largest-looking first
    assumptions: tuple[str, ...] = ()
    values: tuple[int, ...] | None = None  # each candidate's bytes, when every size is bound

    @property
    def bytes(self) -> sp.Expr:
        totals = [c.bytes for c in self.candidates]
        return totals[0] if len(totals) == 1 else sp.Max(*totals, evaluate=False)

    @property
    def value(self) -> int | None:
        return max(self.values) if self.values else None

    def winner(self) -> PeakCandidate | None:
        """The largest candidate, where only one remains or every size is bound."""
        if len(self.candidates) == 1:
            return self.candidates[0]
        if self.values is None:
            return None
        # the peak is reached first at the earliest moment of the largest value, as a
        # tracker of the maximum records it
        top = max(self.values)
        tied = [c for c, v in zip(self.candidates, self.values, strict=True) if v == top]
        return min(tied, key=lambda c: c.moment)

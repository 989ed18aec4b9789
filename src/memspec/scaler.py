"""Loss scaling as `torch.amp.GradScaler` runs it, as memory (torch 2.13's
torch/amp/grad_scaler.py).

fp16 autocast scales the loss so that small gradients survive float16, then unscales
the gradients before the optimizer steps. Every tensor the scaler makes is a scalar;
each is counted, so that the step's peak stays exact to the byte:

- its state, `_scale` (float32) and `_growth_tracker` (int32), made by the first
  `scale()` and kept from then on (`scaler.state_dict()` saves them beside the
  optimizer's), so counted with the optimizer state;
- `scale(loss)` is `loss * _scale`: a float32 scalar that lives until `backward()`
  returns; its backward multiplies the seed by the scale, a float32 gradient;
- `step(optimizer)` unscales first. Without a fused kernel, `unscale_` computes
  `_scale.double().reciprocal().float()` (two float64 scalars alive at once), then
  `found_inf = torch.full((), 0.0)` and one copy of each per device
  (`_MultiDeviceReplicator.get`): 16 bytes at most. A fused optimizer's
  `_check_inf_per_device` holds as much (a dummy inverse scale, found_inf and their
  copies). The found_inf copy stays in the scaler's per-optimizer state until
  `update()`; a fused step also holds `sum([found_inf])` and `_scale * 1`, which it
  reads as its `found_inf` and `grad_scale`.

One scaler steps each optimizer of a chain (Muon's, then AdamW's) in turn, so the k-th
one unscales and steps with the found_inf copies of the k - 1 before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.ir.types import DType

__all__ = ["STATE", "LossScaler"]

# the scaler's own tensors, made by the first scale(), as `_lazy_init_scale_growth_tracker`
STATE = (("_scale", DType.float32), ("_growth_tracker", DType.int32))
_SCALAR = DType.float32.itemsize


@dataclass(frozen=True, slots=True)
class LossScaler:
    """`scaler CLASS(ARGS)` of a precision: torch.amp's GradScaler (or a subclass,
    `module:Class`) with its constructor arguments, which verify runs."""

    torch_class: str
    torch_args: tuple[tuple[str, object], ...] = ()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.torch_args)
        cls = self.torch_class if ":" in self.torch_class else f"torch.amp.{self.torch_class}"
        return f"loss scaled by {cls}({args})"

    @property
    def state_bytes(self) -> int:
        return sum(dtype.itemsize for _, dtype in STATE)

    @property
    def scaled_loss(self) -> int:
        """`scale(loss)`'s result, alive until backward returns; its gradient is as big."""
        return _SCALAR

    def unscaling(self, member: int) -> int:
        """The most the scaler holds while unscaling the `member`-th optimizer's (0-based)
        gradients: the earlier ones' found_inf copies, and 16 bytes of its own."""
        return _SCALAR * member + 16

    def stepping(self, member: int, fused: bool) -> int:
        """What the scaler holds while the `member`-th optimizer steps: every found_inf
        copy so far; for a fused one also its found_inf sum and grad_scale."""
        return _SCALAR * (member + 1) + (2 * _SCALAR if fused else 0)

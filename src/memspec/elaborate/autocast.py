"""torch.autocast's casts, inserted as ops while the forward is elaborated.

Under a precision with cast rules (`cast bfloat16 of linear, ...`), an op of a list gets
its float inputs cast first, as autocast's `cached_cast` does inside the op: each input
of another float dtype (float64 aside: autocast leaves it) becomes an `autocast_cast` of
it. A parameter that requires grad, cast from float32 to the autocast dtype, is cast
once per forward and the copy reused (autocast's cache: tied weights hit it), and lives
until the forward ends; every other cast is a tensor of its own for each use.
"""

from __future__ import annotations

from collections.abc import Callable

from memspec.elaborate.frames import Frame
from memspec.elaborate.scope import Tensor
from memspec.ir.graph import Value
from memspec.ir.types import DType, Role
from memspec.ops.casts import CAST
from memspec.policies import Precision
from memspec.source import Span

__all__ = ["Autocast"]

# (op name, tensors, attrs, span, frame, path) -> the op's output
Apply = Callable[[str, tuple, dict, Span | None, Frame, str], Tensor]


def _eligible(dtype: DType) -> bool:
    return dtype.is_float and dtype is not DType.float64


class Autocast:
    """Casts the inputs of the ops `precision`'s rules list; `apply` adds an op."""

    def __init__(self, precision: Precision, values: list[Value], apply: Apply):
        self.precision = precision
        self.values = values
        self.apply = apply
        self.cache: dict[tuple[int, int | None], Tensor] = {}  # (parameter, region) -> copy

    def inputs(self, op: str, tensors: list[Tensor], span: Span | None, frame: Frame) -> list:
        rule = self.precision.cast_rule(op)
        if rule is None:
            return tensors
        values = [self.values[t.id] for t in tensors]
        floats = [v.dtype for v in values if _eligible(v.dtype)]
        if not floats:
            return tensors
        target = rule.dtype
        if target is None:  # autocast's promote list: the widest float dtype present
            target = DType.float32 if DType.float32 in floats else floats[0]
        return [
            t
            if not _eligible(v.dtype) or v.dtype is target
            else self._cast(t, v, target, span, frame)
            for t, v in zip(tensors, values, strict=True)
        ]

    def _cast(self, tensor: Tensor, v: Value, target: DType, span: Span | None, frame: Frame):
        cached = (
            v.role is Role.PARAMETER
            and v.requires_grad
            and v.dtype is DType.float32
            and target is self.precision.autocast
        )
        key = (v.id, frame.region)
        if cached and key in self.cache:
            return self.cache[key]
        attrs = {"dtype": target.value, "cached": int(cached)}
        out = self.apply(CAST, (tensor,), attrs, span, frame, f"{v.path}.{target.value}")
        if cached:
            self.cache[key] = out
        return out

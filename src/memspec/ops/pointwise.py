"""More pointwise ops: clamps (ReLU6, hardtanh), sin and cos, stochastic depth.

Saved-tensor rules as observed with torch 2.13.0 on the CPU through
`torch.autograd.graph.saved_tensors_hooks`. The in-place clamps save no memory: autograd
keeps a copy of the input they overwrite (`hardtanh_backward` needs the input, and an
in-place op's input is gone), so `relu6_` holds as much as `relu6` does.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ops.elementwise import (
    _TO_FLOAT,
    _inplace,
    _pointwise,
    _saves_input,
    _to_float,
    _unary,
)
from memspec.ops.promotion import result_type
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpKind,
    OutputSpec,
    Saved,
    torch_functional,
)


def _saves_a_copy(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """An in-place clamp: a copy of the input it overwrites, x's shape and dtype."""
    x = graph.value(op.inputs[0])
    return (Saved("input (a copy)", shape=x.shape, dtype=x.dtype),)


def _bound(value: object) -> float | None:
    """A concrete clamp bound for torch (None: unbounded)."""
    return None if value in (float("inf"), float("-inf")) else value


def _clamp_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    low, high = ctx.attrs["min"], ctx.attrs["max"]
    for name, bound in (("min", low), ("max", high)):
        if not isinstance(bound, sp.Expr) or not bound.is_number:
            raise ctx.fail(f"{name} must be a number, got {bound}")
    if low == -sp.oo and high == sp.oo:
        raise ctx.fail("give min, max or both")
    if (high - low).is_negative:
        raise ctx.fail(f"min {low} is above max {high}")
    numbers = [b for b in (low, high) if b.is_finite]
    return (OutputSpec(x.shape, result_type([(x.dtype, len(x.shape))], numbers)),)


def _clamp_lower(tensors, attrs):
    torch, _ = torch_functional()
    return torch.clamp(tensors[0], _bound(attrs["min"]), _bound(attrs["max"]))


def _hardtanh(inplace: bool):
    def lower(tensors, attrs):
        _, F = torch_functional()
        return F.hardtanh(tensors[0], attrs["min_val"], attrs["max_val"], inplace=inplace)

    return lower


def _relu6(inplace: bool):
    return lambda tensors, attrs: torch_functional()[1].relu6(tensors[0], inplace=inplace)


def _drop_path_p(ctx: InferContext) -> sp.Expr:
    p = ctx.attrs["p"]
    if not isinstance(p, sp.Expr) or not p.is_number or p < 0 or p > 1:
        raise ctx.fail(f"p must be a probability in [0, 1], got {p}")
    if ctx.attrs["mode"] not in ("row", "batch"):
        raise ctx.fail(f'mode must be "row" or "batch", got {ctx.attrs["mode"]!r}')
    return p


def _drop_path_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 1)
    if _drop_path_p(ctx) == 0:  # torchvision returns the input itself
        return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)
    return (OutputSpec(x.shape, x.dtype),)


def _noise_shape(op: OpApply, graph: Graph) -> tuple[sp.Expr, ...]:
    x = graph.value(op.inputs[0])
    ones = (sp.Integer(1),) * (len(x.shape) - 1)
    return (x.shape[0], *ones) if dict(op.attrs)["mode"] == "row" else (sp.Integer(1), *ones)


def _drop_path_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`input * noise` saves the noise, [B, 1, ...] per row (or [1, ...] per batch)."""
    if dict(op.attrs)["p"] == 0:
        return ()
    x = graph.value(op.inputs[0])
    return (Saved("noise", shape=_noise_shape(op, graph), dtype=x.dtype),)


def _drop_path_grads(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    return (Grad.THROUGH,) if dict(op.attrs)["p"] == 0 else (Grad.NEW,)


def _drop_path_lower(tensors, attrs):
    """torchvision.ops.stochastic_depth in training mode, line for line."""
    torch, _ = torch_functional()
    (x,) = tensors
    p, mode = attrs["p"], attrs["mode"]
    if p == 0.0:
        return x
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


def _op(name: str, doc: str, kind: OpKind, infer, saved, saved_doc: str, lower, **rules) -> None:
    """`elementwise._pointwise` with the shape rule given in line."""
    _pointwise(name, doc, kind, saved, saved_doc, lower, infer=infer, **rules)


_INPLACE_DOC = "x's shape, in x's storage"
_COPY_DOC = "a copy of the input (autograd's, since x is overwritten)"
_LIMITS = (("min_val", sp.Integer(-1)), ("max_val", sp.Integer(1)))
_ACT = OpKind.ACTIVATION
_op("relu6", "min(max(x, 0), 6)", _ACT, _unary, _saves_input, "the input", _relu6(False))
_op(
    "relu6_",
    "min(max(x, 0), 6) in place",
    _ACT,
    _inplace,
    _saves_a_copy,
    _COPY_DOC,
    _relu6(True),
    shape_doc=_INPLACE_DOC,
)
_op(
    "hardtanh",
    "x clamped to [min_val, max_val]",
    _ACT,
    _unary,
    _saves_input,
    "the input",
    _hardtanh(False),
    attrs=_LIMITS,
)
_op(
    "hardtanh_",
    "x clamped to [min_val, max_val] in place",
    _ACT,
    _inplace,
    _saves_a_copy,
    _COPY_DOC,
    _hardtanh(True),
    attrs=_LIMITS,
    shape_doc=_INPLACE_DOC,
)
_op(
    "clamp",
    "x clamped to [min, max] (either may be left out)",
    OpKind.ELEMENTWISE,
    _clamp_infer,
    _saves_input,
    "the input",
    _clamp_lower,
    attrs=(("min", -sp.oo), ("max", sp.oo)),
    shape_doc="x's shape; an integer x stays integer for integer bounds",
)
_op(
    "sin",
    "sin(x)",
    OpKind.ELEMENTWISE,
    _to_float,
    _saves_input,
    "the input",
    lambda t, a: torch_functional()[0].sin(t[0]),
    shape_doc=_TO_FLOAT,
)
_op(
    "cos",
    "cos(x)",
    OpKind.ELEMENTWISE,
    _to_float,
    _saves_input,
    "the input",
    lambda t, a: torch_functional()[0].cos(t[0]),
    shape_doc=_TO_FLOAT,
)
_op(
    "drop_path",
    "stochastic depth (torchvision.ops.stochastic_depth), training mode",
    OpKind.ELEMENTWISE,
    _drop_path_infer,
    _drop_path_saved,
    "the noise, x's dtype, [B, 1, ...] in row mode, [1, ...] in batch mode; nothing at p = 0",
    _drop_path_lower,
    attrs=(("p", None), ("mode", "row")),
    grads=_drop_path_grads,
    grads_doc="a new tensor; the output's gradient itself at p = 0",
    shape_doc="x's shape; x itself at p = 0",
)

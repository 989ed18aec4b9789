"""Position-dependent elementwise ops: causal masks and the rotary embedding.

Saved-tensor rules as observed with torch 2.13.0 on the CPU through
`torch.autograd.graph.saved_tensors_hooks`.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.sizes import note_relation
from memspec.ir.types import DType, shape_str
from memspec.ops.elementwise import _layout, _pointwise
from memspec.ops.promotion import result_type
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    torch_functional,
)

_ELEMENTWISE = OpKind.ELEMENTWISE


def _mask_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 2)
    return (OutputSpec(x.shape, ctx.float_dtype(), strides=_layout(ctx, x.shape)),)


def _mask_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`masked_fill(mask, -inf)` saves its boolean mask, one [Lq, Lk] per call."""
    x = graph.value(op.inputs[0])
    return (Saved("mask", shape=x.shape[-2:], dtype=DType.bool),)


def _rope_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, cos, sin = ctx.inputs
    shape = ctx.expect_rank(0, 2)
    for name, table in (("cos", cos), ("sin", sin)):
        if len(table.shape) != 2:
            raise ctx.fail(
                f"the {name} table must be [max_len, d_k/2], got {shape_str(table.shape)}"
            )
        # Tables hold one angle per pair of features: [max_len, d_k / 2].
        ctx.expect_same(2 * table.shape[1], shape[-1], f"2 x {name} table width vs head dim")
    # the forward slices the tables to the sequence: it must not be longer than they are
    spare = sp.expand(cos.shape[0] - shape[-2])
    at = ctx.bound.at(spare)
    if spare.is_negative or sp.sympify(at).is_negative:
        values = f" ({at} at these sizes)" if at != spare else ""
        raise ctx.fail(
            f"the sequence ({shape[-2]}) is longer than the rotary tables "
            f"({cos.shape[0]} positions){values}"
        )
    note_relation(sp.Ge, at, sp.Integer(0))  # taken to fit (a sweep asks)
    # x times the tables: torch promotes (bfloat16 x, float32 tables -> float32)
    return (OutputSpec(x.shape, result_type((t.dtype, len(t.shape)) for t in ctx.inputs)),)


def _rope_lower(tensors, attrs):
    """Pairwise rotation: no saved tensor but the tables' slices (buffer storage)."""
    torch, _ = torch_functional()
    x, cos, sin = tensors
    c, s = cos[: x.shape[-2]], sin[: x.shape[-2]]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


def hidden_positions(s: int, t: int, window: int, causal: bool, device=None):
    """The bool [s, t] mask of the keys a query may not see: later ones when causal, and
    with `window` > 0 those `window` or more positions back."""
    torch, _ = torch_functional()
    ones = torch.ones(s, t, dtype=torch.bool, device=device)
    hidden = ones.triu(1) if causal else torch.zeros_like(ones)
    if window:
        hidden = hidden | ones.tril(-window)
    return hidden


def _mask_lower(tensors, attrs):
    """Mask future positions, and with `window` > 0 also those `window` or more behind."""
    (x,) = tensors
    hidden = hidden_positions(x.shape[-2], x.shape[-1], attrs["window"], True, x.device)
    return x.masked_fill(hidden, float("-inf"))


def _additive_mask_lower(tensors, attrs):
    """`x + mask` with the mask 0 where attended and -inf elsewhere, as a float tensor
    that needs no gradient: the add saves nothing."""
    torch, _ = torch_functional()
    (x,) = tensors
    hidden = hidden_positions(x.shape[-2], x.shape[-1], attrs["window"], True, x.device)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return x + torch.where(hidden, float("-inf"), zero)


_pointwise(
    "causal_mask",
    "fill future positions (and, with a window, distant past ones) with -inf",
    _ELEMENTWISE,
    _mask_saved,
    "a bool mask [Lq, Lk]",
    _mask_lower,
    infer=_mask_infer,
    attrs=(("window", 0),),
    shape_doc="x [..., Lq, Lk] -> x's shape",
)
_pointwise(
    "add_causal_mask",
    "add a 0 / -inf causal mask made inside the op (SDPA's math path, Hugging Face's "
    "additive mask): autograd keeps nothing for it",
    _ELEMENTWISE,
    None,
    "nothing",
    _additive_mask_lower,
    infer=_mask_infer,
    attrs=(("window", 0),),
    grads=lambda op, graph: (Grad.THROUGH,),
    grads_doc="the output's gradient itself",
    shape_doc="x [..., Lq, Lk] -> x's shape",
)
# Lowered as a pairwise rotation by [max_len, d_k/2] tables: each product saves only a
# slice of a buffer table (excluded from activations), and stack/flatten save nothing.
register(
    OpDef(
        "rope",
        "rotary position embedding over the last dim",
        ("x", "cos", "sin"),
        _rope_infer,
        lower=_rope_lower,
        kind=_ELEMENTWISE,
        shape_doc="x [..., seq, d_k], cos and sin tables [max_len, d_k/2] -> x's shape",
        saved_doc="nothing but slices of the cos and sin buffers",
    )
)

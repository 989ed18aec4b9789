"""Fused attention: one op whose [L, L] scores are never stored."""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel, shape_str
from memspec.ops.registry import (
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    same_dim,
    torch_functional,
)
from memspec.ops.strides import dense_like


def _flash_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    q, k, v = (ctx.expect_rank(i, 2) for i in range(3))
    if len(q) != len(k) or len(k) != len(v):
        raise ctx.fail(f"q, k, v ranks differ: {shape_str(q)}, {shape_str(k)}, {shape_str(v)}")
    ctx.expect_same(q[-1], k[-1], "q and k head dims")
    ctx.expect_same(k[-2], v[-2], "k and v lengths")
    if not same_dim(ctx.bound.at(q[-1]), ctx.bound.at(v[-1])):
        raise ctx.fail(
            f"q's head size {q[-1]} and v's {v[-1]} differ: torch's CPU flash kernel needs "
            "one head size (SDPA then takes its math path: use variant sdpa, eager or math)"
        )
    for a, b, c in zip(q[:-3], k[:-3], v[:-3], strict=True):
        ctx.expect_same(a, b, "batch dims of q and k")
        ctx.expect_same(b, c, "batch dims of k and v")
    if len(q) >= 3:
        # grouped-query attention (enable_gqa): q's heads are k's and v's repeated
        ctx.expect_same(k[-3], v[-3], "k and v heads")
        if not same_dim(q[-3], k[-3]):
            ctx.assume_integer(q[-3] / k[-3], "the k and v heads divide q's heads")
    if ctx.attrs["dropout_p"] != 0:
        raise ctx.fail("the fused kernel is modelled without dropout_p; use variant math")
    # The CPU kernel allocates its output in q's dim order (a permuted q gives a permuted
    # output, whose heads then merge back without a copy).
    out = (*q[:-1], v[-1])
    strides = None
    if not ctx.inputs[0].contiguous:
        strides = dense_like(out, ctx.inputs[0].strides, ctx.bound)
    return (OutputSpec(out, ctx.product_dtype(), strides=strides),)


def _flash_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """scaled_dot_product_attention (CPU flash kernel) saves q, k, v, output, logsumexp;
    given a mask (a window), the float mask it converts it to, [..., 1, s, t]."""
    q, k = graph.value(op.inputs[0]), graph.value(op.inputs[1])
    saved = (
        Saved("q", op.inputs[0]),
        Saved("k", op.inputs[1]),
        Saved("v", op.inputs[2]),
        Saved("output", op.outputs[0]),
        Saved("logsumexp", shape=q.shape[:-1], dtype=DType.float32),
    )
    if op.attr("window", 0) != 0:
        mask = (*q.shape[:-3], sp.Integer(1), q.shape[-2], k.shape[-2])
        saved += (Saved("mask", shape=mask, dtype=q.dtype),)
    return saved


def _flash_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """Given a boolean mask over `mask_keys` keys (a StaticCache's decode step, whose keys
    are the whole cache), SDPA converts it to a float one of q's dtype, [..., 1, s, keys],
    alive while the kernel runs."""
    keys = op.attr("mask_keys", 0)
    if not keys:
        return sp.Integer(0)
    q = graph.value(op.inputs[0])
    return numel(q.shape[:-3]) * q.shape[-2] * keys * q.dtype.itemsize


def _flash_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """Q K^T and P V: 4 * batch * s * t * d (causal masking is not subtracted)."""
    q, k = graph.value(op.inputs[0]), graph.value(op.inputs[1])
    return 4 * numel(q.shape) * k.shape[-2]


def _flash_backward_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """The gradients of both products' operands, as in the unfused math: two forwards."""
    return _flash_flops(op, graph) * 2


def _flash_lower(tensors, attrs):
    """torch's CPU flash kernel wants [batch, heads, seq, dim]; other ranks are viewed so.

    (For 3-d inputs torch would take its math path, which saves different tensors.)
    """
    _, F = torch_functional()
    shape = tensors[0].shape
    if len(shape) == 4:
        four = tensors
    elif len(shape) < 4:
        four = tuple(t.reshape((1,) * (4 - len(shape)) + tuple(t.shape)) for t in tensors)
    else:
        four = tuple(t.flatten(0, -4) for t in tensors)
    scale = None if attrs["scale"] else 1.0
    gqa = four[0].shape[-3] != four[1].shape[-3]
    if attrs["window"]:
        # a sliding window is a mask, [batch, 1, s, t] expanded as transformers builds it
        # (imported here: importing positional.py first would reorder the registry)
        from memspec.ops.positional import hidden_positions

        s, t = four[0].shape[-2], four[1].shape[-2]
        hidden = hidden_positions(s, t, attrs["window"], bool(attrs["causal"]), four[0].device)
        mask = (~hidden).expand(four[0].shape[0], 1, s, t)
        out = F.scaled_dot_product_attention(*four, attn_mask=mask, scale=scale, enable_gqa=gqa)
    else:
        out = F.scaled_dot_product_attention(
            *four, is_causal=bool(attrs["causal"]), scale=scale, enable_gqa=gqa
        )
    return out.reshape(*shape[:-1], tensors[2].shape[-1])


register(
    OpDef(
        "flash_attention",
        "softmax(q k^T / sqrt(d)) v, causal or not, without stored scores",
        ("q", "k", "v"),
        _flash_infer,
        _flash_saved,
        attrs=(
            ("causal", True),
            ("window", 0),
            ("dropout_p", 0),
            ("scale", True),
            ("mask_keys", 0),
        ),
        lower=_flash_lower,
        flops=_flash_flops,
        workspace=_flash_workspace,
        backward_flops=_flash_backward_flops,
        kind=OpKind.ATTENTION,
        shape_doc="q [..., h, s, d], k [..., g, t, d], v [..., g, t, e] -> [..., h, s, e], "
        "in q's dim order; g divides h (grouped-query attention: K and V are not repeated); "
        "dropout_p must be 0; a window is passed as a mask; mask_keys: a boolean mask over "
        "that many keys is passed (a StaticCache's decode step), converted to q's dtype "
        "inside, [..., 1, s, mask_keys], a workspace",
        saved_doc="q, k, v, the output and a float32 logsumexp [..., s]; with a window, the "
        "float mask [..., 1, s, t] it converts the mask to",
    )
)

"""Ops that make a tensor from sizes alone."""

from __future__ import annotations

import math

import sympy as sp

from memspec.ir.types import DType
from memspec.ops.registry import (
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
    torch_functional,
)


def _arange_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    n = ctx.attrs["n"]
    if not isinstance(n, sp.Expr) or (n.is_number and (not n.is_Integer or n < 1)):
        raise ctx.fail(f"needs a positive integer size, got {n}")
    return (OutputSpec((n,), DType.int64),)


register(
    OpDef(
        "arange",
        "the int64 positions 0, 1, ..., n - 1",
        (),
        _arange_infer,
        attrs=(("n", None),),
        lower=lambda t, a: torch_functional()[0].arange(a["n"]),
        kind=OpKind.CREATION,
        shape_doc="int64 [n]",
        saved_doc="nothing",
    )
)


def _buckets_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    for name in ("n_q", "n_k", "num_buckets", "max_distance"):
        value = ctx.attrs[name]
        if not isinstance(value, sp.Expr) or (
            value.is_number and (not value.is_Integer or value < 1)
        ):
            raise ctx.fail(f"{name} must be a positive integer, got {value}")
    return (OutputSpec((ctx.attrs["n_q"], ctx.attrs["n_k"]), DType.int64),)


def _buckets_lower(tensors, attrs):
    """T5's relative-position buckets (Hugging Face `_relative_position_bucket`)."""
    torch, _ = torch_functional()
    num_buckets, max_distance = attrs["num_buckets"], attrs["max_distance"]
    relative = torch.arange(attrs["n_k"])[None, :] - torch.arange(attrs["n_q"])[:, None]
    buckets = torch.zeros_like(relative)
    if attrs["bidirectional"]:
        num_buckets //= 2
        buckets = buckets + (relative > 0).to(torch.long) * num_buckets
        relative = torch.abs(relative)
    else:
        relative = -torch.min(relative, torch.zeros_like(relative))
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(relative.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(relative < max_exact, relative, large)


register(
    OpDef(
        "position_buckets",
        "T5's int64 [n_q, n_k] relative-position bucket ids",
        (),
        _buckets_infer,
        attrs=(
            ("n_q", None),
            ("n_k", None),
            ("num_buckets", 32),
            ("max_distance", 128),
            ("bidirectional", True),
        ),
        lower=_buckets_lower,
        kind=OpKind.CREATION,
        shape_doc="int64 [n_q, n_k]",
        saved_doc="nothing",
    )
)


def _visible_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    for name in ("n_q", "n_k"):
        value = ctx.attrs[name]
        if not isinstance(value, sp.Expr) or (
            value.is_number and (not value.is_Integer or value < 1)
        ):
            raise ctx.fail(f"{name} must be a positive integer, got {value}")
    return (OutputSpec((ctx.attrs["n_q"], ctx.attrs["n_k"]), DType.bool),)


def _visible_lower(tensors, attrs):
    """transformers' sdpa_mask of causal_mask_function (and sliding_window_overlay)."""
    torch, _ = torch_functional()
    q = torch.arange(attrs["n_q"])[:, None]
    k = torch.arange(attrs["n_k"])[None, :]
    window = int(attrs["window"])
    return (k <= q) & (k > q - window) if window else k <= q


register(
    OpDef(
        "visible",
        "bool [n_q, n_k]: whether query i sees key j (j <= i; with a window, also "
        "j > i - window), the boolean mask transformers' sdpa_mask builds",
        (),
        _visible_infer,
        attrs=(("n_q", None), ("n_k", None), ("window", 0)),
        lower=_visible_lower,
        kind=OpKind.CREATION,
        shape_doc="bool [n_q, n_k]",
        saved_doc="nothing",
    )
)

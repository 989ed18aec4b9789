"""`kv_append(x, past)`: a layer's keys or values appended to its K/V cache, as
transformers' DynamicCache does it (`DynamicLayer.update`: `torch.cat([self.keys, k],
dim=-2)`).

The op's output is the new part only, x's positions copied (the prefill's cat of an empty
cache and k is a copy); the spec keeps it in the model's outputs (`returned`), so what
the cache gains lives to the end of generation. The `past` positions the cache held
before are counted by the inference pass, once, from the start of the forward
(`passes.peak.inference`); during the op the cat copies them into the new tensor while
the old one is alive: the op's workspace, the old tensor's size, freed as it returns.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import numel
from memspec.ops.registry import Grad, InferContext, OpDef, OpKind, OutputSpec, register

__all__ = ["KV_APPEND", "KV_STATIC", "KV_WRITE", "cached_bytes", "position_bytes"]

KV_APPEND = "kv_append"
KV_WRITE = "kv_write"
KV_STATIC = "kv_static"


def _past(value: object) -> sp.Expr:
    return value if isinstance(value, sp.Expr) else sp.Integer(int(value))


def _kv_append_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 2)
    past = _past(ctx.attrs["past"])
    if past.is_number and (not past.is_Integer or past < 0):
        raise ctx.fail(f"past is a number of cached positions, not {past}")
    return (OutputSpec(x.shape, x.dtype),)


def cached_bytes(op: OpApply, graph: Graph) -> sp.Expr:
    """The bytes the cache of this op held before it: `past` positions of x's rows."""
    x = graph.value(op.inputs[0])
    return numel(x.shape) / x.shape[-2] * _past(op.attr("past")) * x.dtype.itemsize


def position_bytes(op: OpApply, graph: Graph) -> sp.Expr:
    """The bytes one position of x's rows takes in the cache (x: [..., s, d])."""
    x = graph.value(op.inputs[0])
    return numel(x.shape) / x.shape[-2] * x.dtype.itemsize


def _kv_append_lower(tensors, attrs):
    if int(attrs["past"]) != 0:
        raise RuntimeError("a cache with past positions runs in memspec's inference replay")
    import torch

    return torch.cat([tensors[0]], dim=-2)  # cat([], x): a copy


register(
    OpDef(
        KV_APPEND,
        "x appended to a K/V cache holding `past` positions (DynamicCache's torch.cat on "
        "the sequence dim): its output is x's new copy",
        ("x",),
        _kv_append_infer,
        attrs=(("past", 0),),
        lower=_kv_append_lower,
        grads=lambda op, graph: (Grad.NEW,),
        grads_doc="a new tensor (cat's backward narrows the output's gradient)",
        workspace=cached_bytes,
        kind=OpKind.LAYOUT,
        shape_doc="x's shape, new storage; a workspace of the cache's `past` positions "
        "(the old tensor, alive while cat copies it)",
        saved_doc="nothing",
    )
)


def _kv_write_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 2)
    return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)


register(
    OpDef(
        KV_WRITE,
        "x written in place into a preallocated K/V cache (a paged one, vLLM's blocks): x "
        "itself for what reads it next; the cache's blocks are counted from the start",
        ("x",),
        _kv_write_infer,
        lower=lambda t, a: t[0],
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="the output's gradient itself",
        kind=OpKind.LAYOUT,
        shape_doc="x itself (no new memory: the cache is preallocated)",
        saved_doc="nothing",
    )
)


def _kv_static_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 2)
    length = _past(ctx.attrs["length"])
    if length.is_number and (not length.is_Integer or length < 1):
        raise ctx.fail(f"length is the cache's positions, not {length}")
    return (OutputSpec((*x.shape[:-2], length, x.shape[-1]), x.dtype),)


def _kv_static_preallocated(op: OpApply) -> bool:
    """A decode step writes into the cache the prefill allocated."""
    return bool(op.attr("allocated"))


def _kv_static_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """StaticLayer.update's cache positions: arange(s) and its offset, int64 [s] each."""
    return 16 * graph.value(op.inputs[0]).shape[-2]


def _kv_static_lower(tensors, attrs):
    if attrs["allocated"]:
        raise RuntimeError("a cache with past positions runs in memspec's inference replay")
    import torch

    x = tensors[0]
    cache = torch.zeros(*x.shape[:-2], int(attrs["length"]), x.shape[-1], dtype=x.dtype)
    cache[..., : x.shape[-2], :] = x
    return cache


register(
    OpDef(
        KV_STATIC,
        "x written into a static K/V cache of `length` positions (transformers' "
        "StaticCache: zeros made at the layer's first update, the prefill, then index_copy_ "
        "in place): the whole cache",
        ("x",),
        _kv_static_infer,
        attrs=(("length", 1), ("allocated", False)),
        lower=_kv_static_lower,
        grads=lambda op, graph: (Grad.NEW,),
        grads_doc="a new tensor (the cache's positions of x, narrowed from the output's)",
        workspace=_kv_static_workspace,
        preallocated=_kv_static_preallocated,
        kind=OpKind.LAYOUT,
        shape_doc="x's shape with `length` positions: new storage in the prefill, the "
        "cache allocated then in a decode step (`allocated`: no new memory); a workspace "
        "of the cache positions, int64 [s] twice",
        saved_doc="nothing",
    )
)

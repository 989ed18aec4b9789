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
from memspec.ir.sizes import BoundSizes
from memspec.ir.types import DType, numel
from memspec.ops.registry import Grad, InferContext, OpDef, OpKind, OutputSpec, register

__all__ = [
    "KV_APPEND",
    "KV_FP8",
    "KV_STATIC",
    "KV_WINDOW",
    "KV_WRITE",
    "cached_bytes",
    "fp8_storage",
    "position_bytes",
    "window_positions",
]

KV_APPEND = "kv_append"
KV_WRITE = "kv_write"
KV_STATIC = "kv_static"
KV_WINDOW = "kv_window"
KV_FP8 = "kv_fp8"


def _past(value: object) -> sp.Expr:
    return value if isinstance(value, sp.Expr) else sp.Integer(int(value))


def _cached_positions(ctx: InferContext) -> sp.Expr:
    """The op's `past` attribute, refused unless a whole number of positions, 0 or more."""
    past = _past(ctx.attrs["past"])
    if past.is_number and (not past.is_Integer or past < 0):
        raise ctx.fail(f"past is a number of cached positions, not {past}")
    return past


def _kv_append_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    ctx.expect_rank(0, 2)
    _cached_positions(ctx)
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
    """StaticLayer.update's cache positions: arange(s) and its offset, int64 [s] each
    (none where the update copies a slice in instead: `positions` false)."""
    if not op.attr("positions", True):
        return sp.Integer(0)
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
        attrs=(("length", 1), ("allocated", False), ("positions", True), ("sliding", False)),
        lower=_kv_static_lower,
        grads=lambda op, graph: (Grad.NEW,),
        grads_doc="a new tensor (the cache's positions of x, narrowed from the output's)",
        workspace=_kv_static_workspace,
        preallocated=_kv_static_preallocated,
        kind=OpKind.LAYOUT,
        shape_doc="x's shape with `length` positions: new storage in the prefill, the "
        "cache allocated then in a decode step (`allocated`: no new memory); a workspace "
        "of the cache positions, int64 [s] twice (`positions`; false: x copied in by a "
        "slice, no positions); `sliding`: a StaticSlidingWindowLayer's, whose prefill "
        "generate masks too",
        saved_doc="nothing",
    )
)


def window_positions(
    past: sp.Expr, window: sp.Expr, prompt: int, s: sp.Expr, bound: BoundSizes
) -> tuple[sp.Expr, sp.Expr]:
    """(storage before, storage after) in positions of a DynamicSlidingWindowLayer's
    update of `s` positions when `past` have gone through it, the branches of the min
    decided at the bound sizes.

    transformers 5.x (`DynamicSlidingWindowLayer.update`): `full = torch.cat([keys, k],
    dim=-2)`, attention reads `full`, and the layer keeps `full[:, :, -(W - 1):]`, a view
    that keeps all of `full`'s storage. The cat's operand is the previous view, its last
    min(past, W - 1) positions, so `full` has min(past, W - 1) + s. Before it the layer
    holds the previous `full`: the prompt's cat, P positions, before the first decode
    step (past = P), and min(past, W) after each later one (a step of one token)."""

    def below(a: sp.Expr, b: sp.Expr) -> bool:
        at = sp.sympify(bound.at(a - b))
        if not at.is_number:
            raise ValueError(f"kv_window decides {a} < {b} at the bound sizes; bind them")
        return bool(at < 0)

    if past == 0:
        return sp.Integer(0), s
    after = (past if below(past, window) else window - 1) + s
    if bound.at(past) == prompt or below(past, window + 1):
        return past, after
    return window, after


PAGED_WINDOW = (
    "--kv-cache paged with a sliding window: vLLM's block management for a window (blocks "
    "that leave it are freed) is not modelled (--kv-cache contiguous is transformers' "
    "window)"
)


def _window_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    if ctx.attrs["paged"]:
        raise ctx.fail(PAGED_WINDOW)
    k, v = ctx.inputs
    ctx.expect_rank(0, 2)
    ctx.expect_rank(1, 2)
    ctx.expect_same(k.shape[-2], v.shape[-2], "k's and v's positions")
    past, window = _cached_positions(ctx), _past(ctx.attrs["window"])
    if window.is_number and (not window.is_Integer or window < 2):
        raise ctx.fail(f"window is a sliding window of at least 2 positions, not {window}")
    try:
        _, after = window_positions(past, window, int(ctx.attrs["prompt"]), k.shape[-2], ctx.bound)
    except ValueError as error:
        raise ctx.fail(str(error)) from None
    return tuple(OutputSpec((*x.shape[:-2], after, x.shape[-1]), x.dtype) for x in (k, v))


def window_storage(op: OpApply, graph: Graph, before: bool) -> sp.Expr:
    """The bytes a kv_window op's layer holds, keys and values, before the update (the
    previous `full`s) or after it (its outputs' storage): `window_positions`."""
    k = graph.value(op.inputs[0])
    positions = window_positions(
        _past(op.attr("past")),
        _past(op.attr("window")),
        int(op.attr("prompt")),
        k.shape[-2],
        graph.bound,
    )[0 if before else 1]
    return sum(
        (
            numel(x.shape) / x.shape[-2] * x.dtype.itemsize * positions
            for x in map(graph.value, op.inputs)
        ),
        sp.Integer(0),
    )


def _kv_window_lower(tensors, attrs):
    if int(attrs["past"]) != 0:
        raise RuntimeError("a cache with past positions runs in memspec's inference replay")
    import torch

    return tuple(torch.cat([x], dim=-2) for x in tensors)  # cat([], x): a copy


register(
    OpDef(
        KV_WINDOW,
        "k and v appended to a sliding-window K/V cache (transformers' "
        "DynamicSlidingWindowLayer.update: torch.cat of the layer's last min(past, "
        "window - 1) positions and the new ones, for k, then for v, keeping a view of each "
        "one's last window - 1): the cats' results, which attention reads; the layer's previous "
        "tensors are freed as the op returns",
        ("k", "v"),
        _window_infer,
        attrs=(("past", 0), ("window", 2), ("prompt", 0), ("paged", False)),
        lower=_kv_window_lower,
        grads=lambda op, graph: (Grad.NEW, Grad.NEW),
        grads_doc="new tensors (cat's backward narrows the outputs' gradients)",
        kind=OpKind.LAYOUT,
        shape_doc="k's and v's shapes with min(past, window - 1) + s positions, new "
        "storage; the layer's previous tensors (the prompt's P positions before the first "
        "decode step, min(past, window) after) are counted from the forward's start and "
        "freed as it returns (a StaticCache's window is std's static_window_cache); "
        "`paged`: vLLM's window, refused",
        saved_doc="nothing",
    )
)


def _fp8_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    k, v = ctx.inputs
    ctx.expect_rank(0, 2)
    ctx.expect_rank(1, 2)
    ctx.expect_same(k.shape[-2], v.shape[-2], "k's and v's positions")
    if not (k.dtype.is_float and v.dtype == k.dtype):
        raise ctx.fail(f"k and v are one float dtype, got {k.dtype.value} and {v.dtype.value}")
    past = _cached_positions(ctx)
    fp8 = DType.float8_e4m3fn
    if past == 0:  # the prefill: k and v themselves, and their float8 copies
        return (
            OutputSpec(k.shape, k.dtype, view_of=0, strides=k.strides),
            OutputSpec(v.shape, v.dtype, view_of=1, strides=v.strides),
            OutputSpec(k.shape, fp8),
            OutputSpec(v.shape, fp8),
        )
    grown = [(*x.shape[:-2], past + x.shape[-2], x.shape[-1]) for x in (k, v)]
    return (
        OutputSpec(grown[0], k.dtype),
        OutputSpec(grown[1], v.dtype),
        OutputSpec(grown[0], fp8),
        OutputSpec(grown[1], fp8),
    )


def fp8_storage(op: OpApply, graph: Graph, before: bool) -> tuple[sp.Expr, sp.Expr]:
    """(elements, bytes) a kv_fp8 op's layer holds, keys and values, before the update or
    after it: float8 positions, one byte an element, and the two float32 scales the
    prefill fixed (none before it)."""
    past = _past(op.attr("past"))
    positions = past if before else past + graph.value(op.inputs[0]).shape[-2]
    if positions == 0:
        return sp.Integer(0), sp.Integer(0)
    rows = (graph.value(vid) for vid in op.inputs)  # [..., s, d]: a position's elements
    elements = sum((numel(x.shape) / x.shape[-2] * positions for x in rows), sp.Integer(0))
    return elements, elements + 8


def _fp8_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """The update's largest moment beyond its outputs, v's quantization in the prefill
    and its dequantization in a decode step (k's, before it, is smaller by what v's adds).

    Prefill (Fp8QuantizedLayer's first update): v / scale in float32 (beside v's float32
    copy, made first unless v is float32), then its float8: 4 n or, from another dtype,
    8 n less the float8 output. Decode: the new positions quantized (float8, locals to the
    end), both caches grown by torch.cat (the old ones are update's locals too, freed as
    it returns: `_Generation`, not counted here), then each dequantized:
    quantized.float() * scale, then .to(dtype); at v's product, v's float32 copy and
    product beside k's result: 8 N less v's output of the model's dtype."""
    k, v = (graph.value(vid) for vid in op.inputs)
    size = v.dtype.itemsize
    if _past(op.attr("past")) == 0:
        n = numel(v.shape)
        return 4 * n if size == 4 else 7 * n
    grown = graph.value(op.outputs[1])
    return (8 - size) * numel(grown.shape) + numel(k.shape) + numel(v.shape)


def _fp8_lower(tensors, attrs):
    if int(attrs["past"]) != 0:
        raise RuntimeError("a cache with past positions runs in memspec's inference replay")
    import torch

    k, v = tensors
    return k, v, k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)


register(
    OpDef(
        KV_FP8,
        'k and v through transformers\' QuantizedCache(backend="fp8") (Fp8QuantizedLayer.'
        "update): stored in float8_e4m3fn with a per-tensor float32 scale the prefill fixes; "
        "a decode step appends the new positions quantized and returns the whole cache "
        "dequantized: (what attention reads, keys and values; the layer's float8 keys and "
        "values)",
        ("k", "v"),
        _fp8_infer,
        attrs=(("past", 0),),
        lower=_fp8_lower,
        grads=lambda op, graph: (Grad.THROUGH, Grad.THROUGH),
        grads_doc="the outputs' gradients (inference only: nothing is trained)",
        workspace=_fp8_workspace,
        kind=OpKind.LAYOUT,
        shape_doc="prefill (past 0): k and v themselves, and float8 copies of them; a "
        "decode step: k's and v's shapes with past + s positions, dequantized in their "
        "dtype, and the float8 cache of as many; the layer's previous float8 tensors are "
        "counted from the forward's start and freed as the update returns; a workspace "
        "of the quantization's (prefill) or dequantization's (decode) float32 tensors",
        saved_doc="nothing",
    )
)

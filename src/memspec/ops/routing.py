"""Ops of a mixture of experts: top-k choice, routed-token slots, gather and scatter-add.

They follow Hugging Face's `MixtralSparseMoeBlock` loop, which `route(experts, ...)`
expands into (see `elaborate/route.py`): `topk` picks each token's experts, `expert_slots`
is `torch.where(expert_mask[e])` (the (choice, token) pairs routed to expert e), `index`
gathers rows (`hidden_states[top_x]`, `routing_weights[top_x, idx]`) and `index_add` adds
each expert's weighted output back in place. Saved tensors are as measured with
`saved_tensors_hooks` (torch 2.13, CPU): topk its indices, indexing its index tensors,
`index_add_` its index and its source. None of them multiplies matrices, so none has a
FLOP rule (the FLOP pass counts matrix products only; the experts' linears carry the
FLOPs, on k*T/E slots each).
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, shape_str
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    same_dim,
    torch_functional,
)


def _positive(ctx: InferContext, name: str) -> sp.Expr:
    value = ctx.attrs[name]
    if not isinstance(value, sp.Expr) or (value.is_number and (not value.is_Integer or value < 1)):
        raise ctx.fail(f"{name} must be a positive integer, got {value}")
    return value


def _integer_input(ctx: InferContext, index: int, what: str) -> None:
    dtype = ctx.inputs[index].dtype
    if dtype.is_float or dtype is DType.bool:
        raise ctx.fail(f"{what} must be an integer tensor, got {dtype.value}")


def _topk_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    shape = ctx.expect_rank(0, 1)
    k = _positive(ctx, "k")
    if (shape[-1] - k).is_negative:
        raise ctx.fail(f"k = {k} exceeds the last dim {shape[-1]}")
    out = (*shape[:-1], k)
    return (OutputSpec(out, ctx.inputs[0].dtype), OutputSpec(out, DType.int64))


def _topk_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """topk's backward scatters the gradient back through its int64 indices, its only save."""
    return (Saved("indices", op.outputs[1]),)


def _topk_lower(tensors, attrs):
    torch, _ = torch_functional()
    values, indices = torch.topk(tensors[0], attrs["k"], dim=-1)
    return values, indices


def _slots_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (selected,) = ctx.inputs
    _integer_input(ctx, 0, "selected experts")
    if len(selected.shape) != 2:
        raise ctx.fail(f"selected experts must be [tokens, k], got {shape_str(selected.shape)}")
    tokens, k = selected.shape
    experts = _positive(ctx, "num_experts")
    slots = sp.Mul(k, tokens, sp.Pow(experts, -1))
    # Balanced routing: every expert receives the same share of the k * tokens slots.
    ctx.assume_integer(slots, f"{experts} divides {sp.Mul(k, tokens)}")
    return (OutputSpec((sp.Integer(2), slots), DType.int64),)


def _slots_lower(tensors, attrs):
    """`torch.where(expert_mask[e])` as rows (choice idx, token top_x), of one storage.

    With `balanced`, the router's choice is replaced by slot s = token * k + choice going
    to expert s mod E: each expert gets k * tokens / E slots, a token's k experts differ.
    """
    torch, F = torch_functional()
    (selected,) = tensors
    experts = attrs["num_experts"]
    tokens, k = selected.shape
    if attrs["balanced"]:
        slot = torch.arange(tokens)[:, None] * k + torch.arange(k)[None, :]
        selected = slot % experts
    mask = F.one_hot(selected, num_classes=experts).permute(2, 1, 0)
    return torch.nonzero(mask[attrs["expert"]]).t()  # nonzero's storage is [2, n]


def _index_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, *indices = ctx.inputs
    ctx.expect_rank(0, len(indices))
    for i, index in enumerate(indices):
        _integer_input(ctx, i + 1, "an index")
        if len(index.shape) != 1:
            raise ctx.fail(f"an index must be one-dimensional, got {shape_str(index.shape)}")
        ctx.expect_same(index.shape[0], indices[0].shape[0], "index lengths")
    rows = indices[0].shape[0]
    return (OutputSpec((rows, *x.shape[len(indices) :]), x.dtype),)


def _index_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Advanced indexing saves its index tensors (the input's sizes only, not the input)."""
    return tuple(Saved("index", v) for v in op.inputs[1:])


def _index_lower(tensors, attrs):
    x, *indices = tensors
    return x[tuple(indices)]


def _index_add_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    acc, index, src = ctx.inputs
    ctx.expect_rank(0, 1)
    _integer_input(ctx, 1, "the index")
    if len(index.shape) != 1 or len(src.shape) != len(acc.shape):
        raise ctx.fail(
            f"cannot add {shape_str(src.shape)} at {shape_str(index.shape)} rows of "
            f"{shape_str(acc.shape)}"
        )
    ctx.expect_same(index.shape[0], src.shape[0], "index length and source rows")
    for a, b in zip(acc.shape[1:], src.shape[1:], strict=True):
        if not same_dim(a, b):
            raise ctx.fail(f"source {shape_str(src.shape)} and {shape_str(acc.shape)} differ")
    return (OutputSpec(acc.shape, acc.dtype, view_of=0, strides=acc.strides),)


def _index_add_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`acc.index_add_(0, index, src)` saves index and src when src needs a gradient."""
    if not graph.value(op.inputs[2]).requires_grad:
        return ()
    return (Saved("index", op.inputs[1]), Saved("source", op.inputs[2]))


def _gather_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, index = ctx.inputs
    _integer_input(ctx, 1, "the index")
    dim = ctx.attrs["dim"]
    rank = len(x.shape)
    if len(index.shape) != rank or not isinstance(dim, sp.Integer) or not -rank <= dim < rank:
        raise ctx.fail(
            f"cannot gather {shape_str(index.shape)} along dim {dim} of {shape_str(x.shape)}"
        )
    return (OutputSpec(index.shape, x.dtype),)


def _gather_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`x.gather(dim, index)` saves the index and x itself when x needs a gradient."""
    if not graph.value(op.inputs[0]).requires_grad:
        return ()
    return (Saved("index", op.inputs[1]), Saved("input", op.inputs[0]))


def _zeros_like_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, x.dtype),)


register(
    OpDef(
        "topk",
        "the k largest entries of the last dim and their int64 indices",
        ("x",),
        _topk_infer,
        _topk_saved,
        attrs=(("k", None),),
        lower=_topk_lower,
        kind=OpKind.INDEXING,
        shape_doc="x [..., n] -> values [..., k] and int64 indices [..., k]",
        saved_doc="the indices",
    )
)
register(
    OpDef(
        "expert_slots",
        "int64 [2, k*T/E]: the (choice, token) pairs routed to one expert (torch.where)",
        ("selected",),
        _slots_infer,
        attrs=(("expert", None), ("num_experts", None), ("balanced", True)),
        lower=_slots_lower,
        differentiable=False,
        kind=OpKind.INDEXING,
        shape_doc="integer selected [T, k] -> int64 [2, k*T/num_experts], assuming "
        "num_experts divides k*T",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "index",
        "x[rows] or x[rows, cols]: rows gathered by int64 indices (new storage)",
        ("x", "rows", "cols?"),
        _index_infer,
        _index_saved,
        lower=_index_lower,
        kind=OpKind.INDEXING,
        shape_doc="x [n, ...] and int64 rows [r] -> [r, ...]; with cols [r] too, "
        "x [n, m, ...] -> [r, ...]",
        saved_doc="the index tensors",
    )
)
register(
    OpDef(
        "gather",
        "x.gather(dim, index): x's entries picked along dim by an index of x's rank",
        ("x", "index"),
        _gather_infer,
        _gather_saved,
        attrs=(("dim", None),),
        lower=lambda t, a: t[0].gather(int(a["dim"]), t[1]),
        kind=OpKind.INDEXING,
        shape_doc="x [...] and int64 index of x's rank -> index's shape, x's dtype; new storage",
        saved_doc="the index and x when x needs a gradient",
    )
)
register(
    OpDef(
        "index_add",
        "acc.index_add_(0, index, src): src's rows added in place at the indexed rows",
        ("acc", "index", "src"),
        _index_add_infer,
        _index_add_saved,
        lower=lambda t, a: t[0].index_add_(0, t[1], t[2]),
        grads=lambda op, graph: (Grad.THROUGH, Grad.NEW, Grad.NEW),
        grads_doc="acc's is the output's gradient itself; src's is new (its rows gathered)",
        kind=OpKind.INDEXING,
        shape_doc="acc [n, ...], int64 index [r], src [r, ...] -> acc's shape, in acc's storage",
        saved_doc="index and src when src needs a gradient",
    )
)
register(
    OpDef(
        "zeros_like",
        "zeros of x's shape and dtype (new storage, never requires grad)",
        ("x",),
        _zeros_like_infer,
        lower=lambda t, a: torch_functional()[0].zeros_like(t[0]),
        differentiable=False,
        kind=OpKind.CREATION,
        shape_doc="x's shape and dtype",
        saved_doc="nothing",
    )
)

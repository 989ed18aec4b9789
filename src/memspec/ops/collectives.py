"""Collectives tensor parallelism puts into a rank's step (`elaborate/sharding.py`
inserts them; a spec does not call them).

- `all_reduce(x)`: the partial sums a rowwise linear (or a vocab-parallel embedding, or
  a loss under loss_parallel) makes on each rank, summed across the TP ranks into a new
  tensor of the same size, as DTensor's redistribution from Partial to Replicate does
  (functional collectives work out of place). Its backward hands the output's gradient
  to every rank's partial sums unchanged (Megatron's g).
- `copy_to_tp_region(x)`: the whole input of a column-parallel member (Megatron's f,
  copy_to_tensor_model_parallel_region; DTensor's from_local as Replicate): x itself
  forward, a view; backward the member's partial gradient of x all-reduced into a new
  tensor, one member at a time (q, k and v each), before autograd sums them.
- `reduce_scatter(x, dim)`: under sequence parallelism, the same sums, each rank keeping
  its 1/TP of dim `dim` (the sequence): a new tensor of that size. Backward all-gathers.
- `sequence_scatter(x)`: where a model's activations enter the sequence-parallel region
  (Megatron's scatter_to_sequence_parallel_region, after the embeddings meet the
  position embeddings): a spec calls it; without --sp it is x itself, with --sp this
  rank's slice of dim -2, a copy (DTensor's Replicate -> Shard on a dim other than 0).
  Backward all-gathers.
- `all_gather(x, dim)`: under sequence parallelism, every rank's slice of dim `dim` put
  together, a new tensor of the whole size, as the column-parallel members read it.
  Backward reduce-scatters. `saves` is what the members' matrix products keep of it:
  `gathered` (PyTorch's DTensor) or `shard` (Megatron-LM, which gathers it again in
  backward).

In the lowering the runtime has done `all_reduce` and `reduce_scatter` inside the
parallelized module's hooks, so they lower to their input; `all_gather` and
`sequence_scatter` are run by the interpreter on its mesh.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import numel
from memspec.ops.registry import (
    BackwardMoment,
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    register,
)

__all__ = ["ALL_GATHER", "ALL_REDUCE", "COPY_TO_TP_REGION", "REDUCE_SCATTER", "SEQUENCE_SCATTER"]

ALL_REDUCE = "all_reduce"
REDUCE_SCATTER = "reduce_scatter"
ALL_GATHER = "all_gather"
SEQUENCE_SCATTER = "sequence_scatter"
COPY_TO_TP_REGION = "copy_to_tp_region"


def _all_reduce_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, x.dtype),)


def _resized(ctx: InferContext, factor) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dim = int(ctx.attrs["dim"]) % len(x.shape)
    size = x.shape[dim] * factor
    ctx.assume_integer(size, f"TP divides {x.shape[dim]}")
    return (OutputSpec((*x.shape[:dim], size, *x.shape[dim + 1 :]), x.dtype),)


def _bytes(graph: Graph, vid: int) -> sp.Expr:
    v = graph.value(vid)
    return numel(v.shape) * v.dtype.itemsize


def _staged(op: OpApply, graph: Graph) -> bool:
    """Functional collectives work on dim 0: on another dim they chunk and cat."""
    x = graph.value(op.inputs[0])
    return int(op.attr("dim")) % len(x.shape) != 0


def _gather_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """all_gather_into_tensor gathers the ranks' slices one after another on dim 0 (a
    buffer of the output's size), which cat then lays out on `dim`."""
    return _bytes(graph, op.outputs[0]) if _staged(op, graph) else sp.Integer(0)


def _scatter_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    """reduce_scatter_tensor scatters dim 0: the input's chunks on `dim` are first put
    one after another by cat (a copy of the input's size)."""
    return _bytes(graph, op.inputs[0]) if _staged(op, graph) else sp.Integer(0)


def _gather_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """Backward reduce-scatters the output's gradient: its cat copy and the slice made
    from it, before the slice is handed on as x's gradient."""
    whole, part = _bytes(graph, op.outputs[0]), _bytes(graph, op.inputs[0])
    staging = whole if _staged(op, graph) else sp.Integer(0)
    return (BackwardMoment(staging + part),)


def _scatter_backward(op: OpApply, graph: Graph, sums_in_place: bool):
    """Backward all-gathers the output's gradient: the gathered buffer and the cat of
    it, before the cat is handed on as x's gradient."""
    whole = _bytes(graph, op.inputs[0])
    staging = whole if _staged(op, graph) else sp.Integer(0)
    return (BackwardMoment(staging + whole),)


def _gather_lower(tensors, attrs):
    raise RuntimeError("this collective runs on the tensor-parallel mesh of the interpreter")


def _new(op, graph) -> tuple[Grad, ...]:
    """A collective's backward is the opposite collective: a new tensor of x's size."""
    return (Grad.NEW,)


register(
    OpDef(
        ALL_REDUCE,
        "the sum of every tensor-parallel rank's partial x, as a new tensor (after a "
        "rowwise or vocab-parallel member under --tp)",
        ("x",),
        _all_reduce_infer,
        lower=lambda t, a: t[0],
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="the output's gradient itself, on every rank",
        kind=OpKind.COMMUNICATION,
        shape_doc="x's shape and dtype, new storage",
        saved_doc="nothing",
    )
)

register(
    OpDef(
        REDUCE_SCATTER,
        "the sum of every tensor-parallel rank's partial x, each rank keeping its 1/TP of "
        "dim `dim` (after a rowwise member under --sp)",
        ("x",),
        lambda ctx: _resized(ctx, 1 / ctx.attrs["degree"]),
        attrs=(("dim", None), ("degree", None)),
        lower=lambda t, a: t[0],
        grads=_new,
        workspace=_scatter_workspace,
        backward_moments=_scatter_backward,
        grads_doc="a new tensor of x's size: the output's gradient all-gathered",
        kind=OpKind.COMMUNICATION,
        shape_doc="x's shape with dim `dim` divided by TP, new storage",
        saved_doc="nothing",
    )
)

register(
    OpDef(
        ALL_GATHER,
        "every tensor-parallel rank's slice of dim `dim` put together (into the "
        "column-parallel members under --sp)",
        ("x",),
        lambda ctx: _resized(ctx, ctx.attrs["degree"]),
        attrs=(("dim", None), ("degree", None), ("saves", "gathered")),
        lower=_gather_lower,
        grads=_new,
        workspace=_gather_workspace,
        backward_moments=_gather_backward,
        grads_doc="a new tensor of x's size: the output's gradient reduce-scattered",
        kind=OpKind.COMMUNICATION,
        shape_doc="x's shape with dim `dim` TP times larger, new storage",
        saved_doc="nothing (the members' products keep it, or under Megatron's convention x)",
    )
)


register(
    OpDef(
        SEQUENCE_SCATTER,
        "x; under --sp this tensor-parallel rank's slice of the sequence (dim -2), where "
        "activations enter the sequence-parallel region",
        ("x",),
        lambda ctx: _resized(ctx, 1 / ctx.attrs["degree"]),
        attrs=(("dim", -2), ("degree", 1)),
        lower=_gather_lower,
        grads=_new,
        backward_moments=_scatter_backward,
        grads_doc="a new tensor of x's size: the output's gradient all-gathered",
        kind=OpKind.COMMUNICATION,
        shape_doc="x's shape with dim -2 divided by TP (x itself without --sp), new storage",
        saved_doc="nothing",
    )
)


def _view_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)


register(
    OpDef(
        COPY_TO_TP_REGION,
        "x, as a column-parallel member reads it; backward all-reduces the member's partial "
        "gradient of x (inserted under --tp)",
        ("x",),
        _view_infer,
        lower=lambda t, a: t[0],
        kind=OpKind.COMMUNICATION,
        shape_doc="x itself (a view)",
        saved_doc="nothing",
    )
)

"""Ops of transformers' `grouped_mm` experts: token-expert pairs sorted by expert, one
grouped matrix product per projection over all experts' 3-D weights.

transformers 5.x stores a layer's E experts as one parameter per projection
(`gate_up_proj [E, 2F, D]`, `down_proj [E, D, F]`) and, by default, runs
`grouped_mm_experts_forward` (`integrations/moe.py`): the S = k*T (token, choice) pairs
are sorted by expert (`torch.sort`), gathered, multiplied by `torch.nn.functional.grouped_mm`
with per-expert row offsets (`histc` + `cumsum`, int32 [E]), weighted, put back in token
order through the inverse permutation and summed over the k choices. `hold` keeps the
function's locals (the sorted ids, histc's input and counts) alive until it returns, as
Python does. Every tensor it
makes has S, T or E rows, whatever the router picks: the memory is the same for every
routing, only the offsets' values change. Saved tensors are as measured with
`saved_tensors_hooks` (torch 2.13, CPU).
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel, shape_str
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    saved_if,
    torch_functional,
)


def _integer_vector(ctx: InferContext, index: int, what: str) -> sp.Expr:
    value = ctx.inputs[index]
    if value.dtype.is_float or value.dtype is DType.bool or len(value.shape) != 1:
        raise ctx.fail(
            f"{what} must be a 1-d integer tensor, got {value.dtype.value}{shape_str(value.shape)}"
        )
    return value.shape[0]


def _sort_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    shape = ctx.expect_rank(0, 1)
    return (OutputSpec(shape, ctx.inputs[0].dtype), OutputSpec(shape, DType.int64))


def _sort_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """sort's backward scatters the gradient back through its int64 indices."""
    return (Saved("indices", op.outputs[1]),)


def _sort_lower(tensors, attrs):
    torch, _ = torch_functional()
    values, indices = torch.sort(tensors[0])
    return values, indices


def _floor_divide_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if x.dtype.is_float or x.dtype is DType.bool:
        raise ctx.fail(f"x must be an integer tensor, got {x.dtype.value}")
    return (OutputSpec(x.shape, x.dtype),)


def _counts_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    ids = ctx.inputs[0]
    if not ids.dtype.is_float or len(ids.shape) != 1:
        raise ctx.fail(
            f"expert ids must be a 1-d float tensor (histc's input on CPU), got "
            f"{ids.dtype.value}{shape_str(ids.shape)}"
        )
    experts = ctx.attrs["num_experts"]
    if not isinstance(experts, sp.Expr) or (experts.is_number and experts < 1):
        raise ctx.fail(f"num_experts must be a positive integer, got {experts}")
    return (OutputSpec((experts,), ids.dtype),)


def _counts_lower(tensors, attrs):
    torch, _ = torch_functional()
    experts = attrs["num_experts"]
    return torch.histc(tensors[0], bins=experts, min=0, max=experts - 1)


def _offsets_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    counts = ctx.inputs[0]
    if len(counts.shape) != 1:
        raise ctx.fail(f"counts must be 1-d, got {shape_str(counts.shape)}")
    return (OutputSpec(counts.shape, DType.int32),)


def _offsets_lower(tensors, attrs):
    torch, _ = torch_functional()
    return torch.cumsum(tensors[0], dim=0, dtype=torch.int32)


def _inverse_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    n = _integer_vector(ctx, 0, "a permutation")
    ctx.expect_same(_integer_vector(ctx, 1, "positions"), n, "positions vs the permutation")
    return (OutputSpec((n,), DType.int64),)


def _inverse_lower(tensors, attrs):
    """`inv = torch.empty_like(perm); inv[perm] = torch.arange(n)`, as transformers does
    (the arange is the `positions` input)."""
    torch, _ = torch_functional()
    perm, positions = tensors
    inverse = torch.empty_like(perm)
    inverse[perm] = positions
    return inverse


def _hold_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x = ctx.inputs[0]
    return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)


def _grouped_mm_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    x, w, _ = ctx.inputs
    if len(x.shape) != 2 or len(w.shape) != 3:
        raise ctx.fail(
            f"needs input [rows, in] and weight [experts, out, in], got {shape_str(x.shape)} "
            f"and {shape_str(w.shape)}"
        )
    ctx.expect_same(
        x.shape[1],
        w.shape[2],
        lambda: f"input {shape_str(x.shape)} vs weight {shape_str(w.shape)}: in_features",
    )
    experts = _integer_vector(ctx, 2, "offsets")
    if not isinstance(ctx.attrs["top_k"], sp.Expr):
        raise ctx.fail(f"top_k must be a size, got {ctx.attrs['top_k']}")
    ctx.expect_same(experts, w.shape[0], "offsets vs the weight's experts")
    return (OutputSpec((x.shape[0], w.shape[1]), ctx.product_dtype()),)


def _grouped_mm_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """GroupedMmBackward0: the input when the weight needs a gradient, the weight when the
    input does, and the int32 offsets in any case."""
    return (
        *saved_if(graph, op, 0, (1,), "input"),
        *saved_if(graph, op, 1, (0,), "weight"),
        Saved("offsets", op.inputs[2]),
    )


def _grouped_mm_lower(tensors, attrs):
    """transformers' `_grouped_linear` (weights not transposed): the weight's last two
    dims swapped, a view, then `grouped_mm`."""
    torch, F = torch_functional()
    x, weight, offsets = tensors
    mm = getattr(F, "grouped_mm", None) or torch._grouped_mm
    return mm(x, weight.transpose(-2, -1), offs=offsets)


def _grouped_mm_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """Each row is multiplied by its expert's [out, in] matrix: 2 * rows * out * in."""
    out, weight = graph.value(op.outputs[0]), graph.value(op.inputs[1])
    return 2 * numel(out.shape) * weight.shape[2]


register(
    OpDef(
        "sort",
        "x sorted along the last dim and the int64 indices that sort it (torch.sort)",
        ("x",),
        _sort_infer,
        _sort_saved,
        lower=_sort_lower,
        kind=OpKind.INDEXING,
        shape_doc="x [..., n] -> values of x's dtype and int64 indices, both [..., n]",
        saved_doc="the indices",
    )
)
register(
    OpDef(
        "floor_divide",
        "x // divisor of an integer tensor (new storage)",
        ("x",),
        _floor_divide_infer,
        attrs=(("divisor", None),),
        lower=lambda t, a: t[0] // a["divisor"],
        differentiable=False,
        kind=OpKind.ELEMENTWISE,
        shape_doc="integer x -> x's shape and dtype",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "expert_counts",
        "float [E]: how many ids fall on each expert (torch.histc over bins 0..E-1)",
        ("ids",),
        _counts_infer,
        attrs=(("num_experts", None),),
        lower=_counts_lower,
        differentiable=False,
        kind=OpKind.INDEXING,
        shape_doc="float ids [S] -> [num_experts] of their dtype",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "expert_offsets",
        "int32 cumulative sum of per-expert counts: the end row of each expert's group",
        ("counts",),
        _offsets_infer,
        lower=_offsets_lower,
        differentiable=False,
        kind=OpKind.INDEXING,
        shape_doc="counts [E] -> int32 [E]",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "inverse_permutation",
        "int64 inv with inv[perm] = positions (an arange): the order that undoes perm",
        ("perm", "positions"),
        _inverse_infer,
        lower=_inverse_lower,
        differentiable=False,
        kind=OpKind.INDEXING,
        shape_doc="integer perm [n], integer positions [n] -> int64 [n]",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "hold",
        "x itself (a view), with the other tensors kept alive until here: a Python "
        "function's locals, freed when it returns",
        ("*tensors",),
        _hold_infer,
        lower=lambda t, a: t[0].view_as(t[0]),
        grads=lambda op, graph: (Grad.THROUGH, *(Grad.NONE,) * (len(op.inputs) - 1)),
        grads_doc="x's is the output's gradient itself; none flows to the held tensors",
        kind=OpKind.LAYOUT,
        shape_doc="x, then any tensors -> x's shape, a view of x",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "requires_grad_",
        "x itself, made to require a gradient (Tensor.requires_grad_(True)): a tensor "
        "that needs none (a frozen embedding's output) becomes a leaf, as transformers' "
        "enable_input_require_grads does under activation checkpointing",
        ("x",),
        _hold_infer,
        lower=lambda t, a: t[0].requires_grad_(True),
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="x's is the output's gradient itself where x needs one; else the "
        "output is a leaf, which keeps its gradient (.grad) while the graph lives",
        leaf=True,
        kind=OpKind.LAYOUT,
        shape_doc="x -> x's shape, x itself",
        saved_doc="nothing (the graph holds a leaf and its gradient to the step's end)",
    )
)
register(
    OpDef(
        "grouped_mm",
        "rows grouped by expert times their expert's W^T, W stored [E, out, in] "
        "(transformers' grouped_mm experts)",
        ("input", "weight", "offsets"),
        _grouped_mm_infer,
        _grouped_mm_saved,
        attrs=(("top_k", None),),
        lower=_grouped_mm_lower,
        flops=_grouped_mm_flops,
        kind=OpKind.MATMUL,
        shape_doc="input [S, in], weight [E, out, in], int32 offsets [E] -> [S, out]; "
        "top_k, the experts a token uses, makes the weight count k/E in active parameters",
        saved_doc="input when weight needs a gradient, weight when input does, the offsets",
    )
)

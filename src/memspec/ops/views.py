"""Views and copies of one tensor: `rearrange`, `repeat`, `narrow`, `select`; and `cat`.

A rearrange that only splits, permutes, or merges axes that are adjacent in memory is a
view (it shares its input's storage, as `reshape` does in PyTorch); one that merges axes
a permutation separated must copy, and the copy is new storage. `repeat` adds axes by
`expand` (a view) and copies when a repeated axis is merged with another (GQA's K/V).
None of them saves anything for backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.sizes import BoundSizes, note_relation
from memspec.ir.types import DType, Shape, numel, shape_str
from memspec.ops.patterns import Pattern, parse_pattern
from memspec.ops.promotion import promote_types
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    TensorType,
    register,
    same_dim,
    torch_functional,
)
from memspec.ops.strides import actual, merge, normalize


def _bind_left(ctx: InferContext, groups, shape: Shape, sizes: dict[str, object]):
    """Match input dims to the pattern's left side; returns the '...' dims."""
    n_named = sum(1 for g in groups if g != ("...",))
    has_ellipsis = ("...",) in groups
    if len(shape) < n_named or (not has_ellipsis and len(shape) != n_named):
        raise ctx.fail(f"input {shape_str(shape)} does not match the pattern's left side")
    lead = len(shape) - n_named
    ellipsis: Shape = ()
    dims = iter(shape)
    for group in groups:
        if group == ("...",):
            ellipsis = tuple(next(dims) for _ in range(lead))
            continue
        dim = next(dims)
        unknown = [a for a in group if a not in sizes]
        known = reduce(sp.Mul, (sizes[a] for a in group if a in sizes), sp.Integer(1))
        if len(unknown) > 1:
            raise ctx.fail(
                f"cannot infer both {' and '.join(unknown)} from {dim}; "
                f"pass one as a keyword, e.g. {unknown[-1]}=..."
            )
        if unknown:
            size = sp.Mul(dim, sp.Pow(known, -1))
            ctx.assume_integer(size, f"{known} divides {dim}")
            sizes[unknown[0]] = size
        else:
            ctx.expect_same(known, dim, f"({' '.join(a if a[0] != '1' else '1' for a in group)})")
    return ellipsis


def _view_strides(pattern: Pattern, x: TensorType, sizes: dict, ellipsis: Shape, bound: BoundSizes):
    """(is a view, output strides or None if contiguous), by torch's view rule at the
    bound sizes.

    Splitting a dim is always a view; permuting is a view; a new axis is an expand
    (stride 0); merging a group is a view only when its strides chain (`merge`), which
    a size-1 member never prevents (at KV = 1 repeat_kv's merge is a stride-0 view).
    """
    in_strides = actual(x.shape, x.strides)
    atoms: dict[str, list[tuple[sp.Expr, sp.Expr]]] = {}  # axis -> [(size, stride)]
    dims = iter(zip(x.shape, in_strides, strict=True))
    for group in pattern.input_groups[0]:
        if group == ("...",):
            atoms["..."] = [next(dims) for _ in ellipsis]
            continue
        _, stride = next(dims)
        for k, axis in enumerate(group):
            below = reduce(sp.Mul, (sizes[a] for a in group[k + 1 :]), sp.Integer(1))
            atoms[axis] = [(sizes[axis], stride * below)]
    shape: list[sp.Expr] = []
    strides: list[sp.Expr] = []
    for group in pattern.output_groups:
        if group == ("...",):
            shape.extend(n for n, _ in atoms["..."])
            strides.extend(s for _, s in atoms["..."])
            continue
        members = [atoms.get(a, [(sizes[a], sp.Integer(0))])[0] for a in group]
        merged = merge(tuple(n for n, _ in members), tuple(s for _, s in members), bound)
        if merged is None:
            return False, None
        shape.append(reduce(sp.Mul, (n for n, _ in members), sp.Integer(1)))
        strides.append(merged)
    return True, normalize(tuple(shape), tuple(strides), bound)


def _shape_op(ctx: InferContext, repeat: bool) -> tuple[OutputSpec, ...]:
    pattern = parse_pattern(str(ctx.attrs["pattern"]), ctx.fail)
    if len(pattern.inputs) != 1:
        raise ctx.fail(f"{ctx.op} takes one tensor")
    left = set(pattern.inputs[0]) - pattern.ones
    right = set(pattern.output) - pattern.ones
    sizes = {**dict(ctx.attrs.get("axes") or ()), **dict.fromkeys(pattern.ones, sp.Integer(1))}
    new = right - left
    if left - right or (new and not repeat):
        missing = sorted((left ^ right) if not repeat else (left - right))
        raise ctx.fail(f"axes {', '.join(missing)} appear on only one side of the pattern")
    for axis in sorted(new):
        if axis not in sizes:
            raise ctx.fail(f"give the size of the new axis {axis}, e.g. {axis}=...")
    (x,) = ctx.inputs
    ellipsis = _bind_left(ctx, pattern.input_groups[0], x.shape, sizes)
    out: list[sp.Expr] = []
    for group in pattern.output_groups:
        if group == ("...",):
            out.extend(ellipsis)
        else:
            out.append(reduce(sp.Mul, (sizes[a] for a in group), sp.Integer(1)))
    view, strides = _view_strides(pattern, x, sizes, ellipsis, ctx.bound)
    return (OutputSpec(tuple(out), x.dtype, view_of=0 if view else None, strides=strides),)


def _shape_op_lower(tensors, attrs):
    """reshape to the left side's atoms, permute, add and expand new axes, reshape.

    torch's `reshape` returns a view where strides allow and copies otherwise, which is
    the rule `_is_view` models; `expand` is always a view.
    """
    (x,) = tensors
    pattern = parse_pattern(str(attrs["pattern"]), ValueError)
    shape = tuple(sp.Integer(d) for d in x.shape)
    ctx = InferContext("rearrange", (TensorType(shape, DType.float32),), {}, DType.float32)
    sizes = {
        **{k: sp.Integer(v) for k, v in attrs["axes"]},
        **dict.fromkeys(pattern.ones, sp.Integer(1)),
    }
    ellipsis = [int(d) for d in _bind_left(ctx, pattern.input_groups[0], shape, sizes)]

    def dims(axis: str) -> list[int]:
        return ellipsis if axis == "..." else [int(sizes[axis])]

    kept = [a for g in pattern.input_groups[0] for a in g if a not in pattern.ones]
    t = x.reshape([d for a in kept for d in dims(a)])
    out_atoms = [a for g in pattern.output_groups for a in g]
    position: dict[str, list[int]] = {}
    start = 0
    for a in kept:
        position[a] = list(range(start, start + len(dims(a))))
        start += len(dims(a))
    t = t.permute([i for a in out_atoms if a in position for i in position[a]])
    t = t.reshape([d if a in position else 1 for a in out_atoms for d in dims(a)])
    t = t.expand([d for a in out_atoms for d in dims(a)])
    out = [
        d
        for g in pattern.output_groups
        for d in ([*ellipsis] if g == ("...",) else [math.prod(int(sizes[a]) for a in g)])
    ]
    return t.reshape(out)


def _narrow_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dim = _dim(ctx, x.shape, ctx.attrs["dim"])
    start, length = ctx.attrs["start"], ctx.attrs["length"]
    spare = sp.expand(x.shape[dim] - start - length)
    # at the bound sizes as torch checks them (K = 9 of D = 4), else for every size
    if spare.is_negative or sp.sympify(ctx.bound.at(spare)).is_negative:
        at = ctx.bound.at(spare)
        values = f" ({at} at these sizes)" if at != spare else ""
        raise ctx.fail(f"narrow [{start}, {start} + {length}) exceeds size {x.shape[dim]}{values}")
    note_relation(sp.Ge, ctx.bound.at(spare), sp.Integer(0))  # taken to fit (a sweep asks)
    shape = list(x.shape)
    shape[dim] = length
    strides = normalize(tuple(shape), actual(x.shape, x.strides), ctx.bound)  # keeps strides
    return (OutputSpec(tuple(shape), x.dtype, view_of=0, strides=strides),)


def _select_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    dim = _dim(ctx, x.shape, ctx.attrs["dim"])
    shape = x.shape[:dim] + x.shape[dim + 1 :]
    strides = actual(x.shape, x.strides)
    return (
        OutputSpec(
            shape,
            x.dtype,
            view_of=0,
            strides=normalize(shape, strides[:dim] + strides[dim + 1 :], ctx.bound),
        ),
    )


def _dim(ctx: InferContext, shape: Shape, dim: object) -> int:
    if not isinstance(dim, (sp.Integer, int)) or isinstance(dim, bool):
        raise ctx.fail(f"dim must be an integer, got {dim}")
    d = int(dim)
    if not -len(shape) <= d < len(shape):
        raise ctx.fail(f"dim {d} is out of range for {shape_str(shape)}")
    return d % len(shape)


def _cat_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    first = ctx.inputs[0].shape
    dim = _dim(ctx, first, ctx.attrs["dim"])
    total = sp.Integer(0)
    for t in ctx.inputs:
        if len(t.shape) != len(first) or not all(
            same_dim(a, b) for i, (a, b) in enumerate(zip(t.shape, first, strict=True)) if i != dim
        ):
            raise ctx.fail(
                f"cannot concatenate {shape_str(t.shape)} with {shape_str(first)} along dim {dim}"
            )
        total += t.shape[dim]
    # torch.cat promotes its inputs' dtypes: integers stay integer (positions), a float
    # input makes the result float
    dtype = ctx.inputs[0].dtype
    for t in ctx.inputs[1:]:
        dtype = promote_types(dtype, t.dtype)
    return (OutputSpec((*first[:dim], total, *first[dim + 1 :]), dtype),)


def _cat_grads(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    """Each input's gradient is grad.narrow(dim, ...): its strides are the output's, which
    equal the input's own on every dim but those before dim (at the bound sizes: at
    B = 1 a [1, 1, D] class token's view obeys torch's gradient layout contract)."""
    shape = graph.value(op.inputs[0]).shape
    dim = int(dict(op.attrs)["dim"]) % len(shape)
    dense = all(graph.bound.is_one(d) for d in shape[:dim])
    return ((Grad.PART if dense else Grad.PART_STRIDED),) * len(op.inputs)


def _repeat_grads(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    """expand's backward sums the gradient over the new axes, and the sum is viewed back to
    the input's shape; where every new axis has size 1 (at the bound sizes: `b 1 d` at
    B = 1) it sums nothing and hands the gradient on, viewed back."""
    x, out = graph.value(op.inputs[0]), graph.value(op.outputs[0])
    same = graph.bound.equal(numel(x.shape), numel(out.shape))
    return (Grad.THROUGH_VIEW if same else Grad.VIEW,)


def _cat_lower(tensors, attrs):
    torch, _ = torch_functional()
    return torch.cat(tensors, dim=attrs["dim"])


def _bind_axes(args: tuple, kwargs: dict, lookup: Callable[[str], object]) -> dict:
    """Pattern axes named like a size in scope are bound to it (einops keywords too)."""
    if len(args) < 2 or not isinstance(args[1], str):
        raise ValueError(
            "rearrange needs a tensor and a pattern string, e.g. "
            'rearrange(x, "B L (H K) -> B H L K")'
        )
    axes: dict[str, sp.Expr] = {}
    for token in args[1].replace("(", " ").replace(")", " ").replace("->", " ").split():
        known = lookup(token)
        if isinstance(known, sp.Basic) and not isinstance(known, bool):
            axes[token] = known
    for key, value in kwargs.items():
        if not isinstance(value, sp.Basic) or isinstance(value, bool):
            raise ValueError(f"axis size {key}= must be a size")
        axes[key] = value
    return {"axes": tuple(sorted(axes.items()))}


def _rearrange_grads(op: OpApply, graph: Graph) -> tuple[str, ...]:
    """Backward reshapes the output's (contiguous) gradient back to the input's shape: a
    view, unless the forward was a permuted view, whose inverse must copy; either way
    the gradient handed on is a view (of the copy), never summed into in place."""
    out = graph.value(op.outputs[0])
    permuted_view = out.storage != out.id and not out.contiguous
    return (Grad.VIEW,) if permuted_view else (Grad.THROUGH_VIEW,)


register(
    OpDef(
        "rearrange",
        "reshape/permute with an einops pattern (a view where possible)",
        ("x",),
        lambda ctx: _shape_op(ctx, repeat=False),
        attrs=(("pattern", None), ("axes", ())),
        bind_scope=_bind_axes,
        lower=_shape_op_lower,
        grads=_rearrange_grads,
        grads_doc="the output's gradient viewed back; a view of a new copy when the forward "
        "was a permuted view",
        kind=OpKind.LAYOUT,
        shape_doc="the pattern's right side; a view unless it merges axes a permutation separated",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "repeat",
        "einops repeat: new axes by expand (a view), copied when merged",
        ("x",),
        lambda ctx: _shape_op(ctx, repeat=True),
        attrs=(("pattern", None), ("axes", ())),
        bind_scope=_bind_axes,
        lower=_shape_op_lower,
        grads=_repeat_grads,
        grads_doc="a view of a new tensor (summed over the new axes); the output's gradient "
        "viewed back where every new axis has size 1",
        kind=OpKind.LAYOUT,
        shape_doc="the pattern's right side, new axes sized by keyword; a view unless a "
        "new axis is merged",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "narrow",
        "x[..., start:start+length, ...] along dim (a view)",
        ("x",),
        _narrow_infer,
        attrs=(("dim", None), ("start", None), ("length", None)),
        lower=lambda t, a: t[0].narrow(a["dim"], a["start"], a["length"]),
        kind=OpKind.LAYOUT,
        shape_doc="x's shape with dim's size = length; a view",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "select",
        "x[..., index, ...]: dim removed (a view)",
        ("x",),
        _select_infer,
        attrs=(("dim", None), ("index", None)),
        lower=lambda t, a: t[0].select(a["dim"], a["index"]),
        kind=OpKind.LAYOUT,
        shape_doc="x's shape without dim; a view",
        saved_doc="nothing",
    )
)
register(
    OpDef(
        "cat",
        "concatenation along dim (new storage)",
        ("*tensors",),
        _cat_infer,
        attrs=(("dim", -1),),
        lower=_cat_lower,
        grads=_cat_grads,
        grads_doc="narrowed views of the output's gradient (keeping all of it alive); a "
        "parameter keeps its view as `.grad` when every dim before dim has size 1, else "
        "AccumulateGrad copies it",
        kind=OpKind.LAYOUT,
        shape_doc="the inputs' common shape with dim's sizes summed; new storage; torch's "
        "promoted dtype (integers stay integer)",
        saved_doc="nothing",
    )
)

"""Views: `rearrange` with einops patterns.

A rearrange that only splits, permutes, or merges axes that are adjacent in memory is a
view (it shares its input's storage, as `reshape` does in PyTorch); one that merges axes a
permutation separated must copy, and the copy is new storage.
"""

from __future__ import annotations

import math
from functools import reduce

import sympy as sp

from memspec.ir.types import DType, Shape, shape_str
from memspec.ops.patterns import parse_pattern
from memspec.ops.registry import InferContext, OpDef, OutputSpec, TensorType, register


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
            ctx.expect_same(known, dim, f"({' '.join(group)})")
    return ellipsis


def _is_view(pattern, contiguous: bool) -> tuple[bool, bool]:
    """(whether the result is a view, whether it is contiguous)."""
    memory = [a for g in pattern.input_groups[0] for a in g]
    out_order = [a for g in pattern.output_groups for a in g]
    merges = [g for g in pattern.output_groups if len(g) > 1]
    if not contiguous:
        view = all(g in pattern.input_groups[0] for g in merges)
        return view, False
    position = {a: i for i, a in enumerate(memory)}
    view = all(
        [position[a] for a in g] == list(range(position[g[0]], position[g[0]] + len(g)))
        for g in merges
    )
    return view, (out_order == memory if view else True)


def _rearrange_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    pattern = parse_pattern(str(ctx.attrs["pattern"]), ctx.fail)
    if len(pattern.inputs) != 1:
        raise ctx.fail("rearrange takes one tensor")
    left, right = set(pattern.inputs[0]), set(pattern.output)
    if left != right:
        missing = sorted(left ^ right)
        raise ctx.fail(f"axes {', '.join(missing)} appear on only one side of the pattern")
    sizes = dict(ctx.attrs.get("axes") or ())
    (x,) = ctx.inputs
    ellipsis = _bind_left(ctx, pattern.input_groups[0], x.shape, sizes)
    out: list[sp.Expr] = []
    for group in pattern.output_groups:
        if group == ("...",):
            out.extend(ellipsis)
        else:
            out.append(reduce(sp.Mul, (sizes[a] for a in group), sp.Integer(1)))
    view, contiguous = _is_view(pattern, x.contiguous)
    return (OutputSpec(tuple(out), x.dtype, view_of=0 if view else None, contiguous=contiguous),)


def _rearrange_lower(tensors, attrs):
    """reshape to the left side's atoms, permute, reshape to the right side's groups.

    torch's `reshape` returns a view where strides allow and copies otherwise, which is
    the rule `_is_view` models.
    """
    (x,) = tensors
    pattern = parse_pattern(str(attrs["pattern"]), ValueError)
    shape = tuple(sp.Integer(d) for d in x.shape)
    ctx = InferContext("rearrange", (TensorType(shape, DType.float32),), {}, DType.float32)
    sizes = {k: sp.Integer(v) for k, v in attrs["axes"]}
    ellipsis = [int(d) for d in _bind_left(ctx, pattern.input_groups[0], shape, sizes)]
    atoms: list[int] = []
    position: dict[str, list[int]] = {}
    for group in pattern.input_groups[0]:
        for axis in group:
            dims = ellipsis if axis == "..." else [int(sizes[axis])]
            position[axis] = list(range(len(atoms), len(atoms) + len(dims)))
            atoms.extend(dims)
    order = [i for group in pattern.output_groups for axis in group for i in position[axis]]
    out: list[int] = []
    for group in pattern.output_groups:
        if group == ("...",):
            out.extend(ellipsis)
        else:
            out.append(math.prod(int(sizes[axis]) for axis in group))
    return x.reshape(atoms).permute(order).reshape(out)


register(
    OpDef(
        "rearrange",
        "reshape/permute with an einops pattern (a view where possible)",
        ("x",),
        _rearrange_infer,
        attrs=(("pattern", None), ("axes", ())),
        lower=_rearrange_lower,
    )
)

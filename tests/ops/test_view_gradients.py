"""Which gradients are views, each op's `grads` rule against torch itself.

Autograd adds a second gradient of a tensor into the first in place (`aten::add_`) only
when it holds the last reference to it and to its storage; a view shares its base's
storage, so a later gradient is added out of place (`aten::add`: old, new and the sum
alive at once). torch.profiler is no dispatch mode (under one every sum is out of
place), so the op it records for the sum says whether the first gradient was a view.
Each case runs memspec's own lowering of the op on tiny real tensors, as its first use
in backward order, and compares with the kind the op's rule gives at those shapes.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from memspec import compile_spec
from memspec.ops import lookup
from memspec.ops.registry import Grad

VIEWS = (Grad.VIEW, Grad.THROUGH_VIEW, Grad.PART, Grad.PART_STRIDED)

SPEC = """use std
dim batch as B
dim rows as L
dim width as D
dim out as E
model Ops {
    param w: [W_SHAPE]
    forward(x: [X_SHAPE], target: [T_SHAPE]) {
        return mse_loss(CALL, target)
    }
}
"""
SIZES = {"B": 2, "L": 3, "D": 4, "E": 5}


def summed_in_place(fn, shapes: list[tuple[int, ...]], which: int) -> bool:
    """Whether autograd adds operand `which`'s second gradient into the one `fn` gives."""
    leaves = [torch.randn(*s, requires_grad=True) for s in shapes]
    inputs = [t * 1.0 for t in leaves]  # non-leaves: summed in an input buffer
    other = inputs[which] * 3.0  # used first: its gradient comes second
    out = fn(*inputs)
    loss = (other * torch.randn_like(other)).sum() + (out * torch.randn_like(out)).sum()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    shape = [list(shapes[which])] * 2
    sums = [
        e.name
        for e in prof.events()
        if e.name in ("aten::add", "aten::add_") and [list(s) for s in e.input_shapes[:2]] == shape
    ]
    assert len(sums) == 1, sums
    return sums == ["aten::add_"]

CASES = [
    # (op, its call, x's shape, w's shape, the output's shape)
    ("linear", "linear(x, w)", "B, L, D", "E, D", "B, L, E"),
    ("linear", "linear(x, w)", "L, D", "E, D", "L, E"),
    ("matmul", "matmul(x, w)", "B, L, D", "D, E", "B, L, E"),
    ("matmul", "matmul(x, w)", "L, D", "D, E", "L, E"),
    ("matmul", "matmul(x, w)", "B, L, D", "B, D, E", "B, L, E"),
    ("einsum", 'einsum(x, w, "b l d, e d -> b l e")', "B, L, D", "E, D", "B, L, E"),
    ("einsum", 'einsum(x, w, "l d, e d -> l e")', "L, D", "E, D", "L, E"),
    ("addmm", "addmm(bias, x, w)", "B, L, D", "D, E", "B, L, E"),
    ("rearrange", 'rearrange(x, "b l d -> b (l d)")', "B, L, D", "E", "B, L * D"),
    ("rearrange", 'rearrange(x, "b l d -> b d l")', "B, L, D", "E", "B, D, L"),
    ("repeat", 'repeat(x, "b l d -> b l r d", r = E)', "B, L, D", "E", "B, L, E, D"),
    ("cat", "cat(x, x, dim = 1)", "B, L, D", "E", "B, 2 * L, D"),
    ("narrow", "narrow(x, dim = 1, start = 0, length = 2)", "B, L, D", "E", "B, 2, D"),
]


@pytest.mark.parametrize(("name", "call", "x", "w", "out"), CASES)
def test_a_gradient_is_a_view_exactly_where_torch_adds_into_it_out_of_place(
    tmp_path, name, call, x, w, out
):
    text = SPEC.replace("W_SHAPE", w).replace("X_SHAPE", x).replace("T_SHAPE", out)
    if name == "addmm":
        text = text.replace("param w:", "param bias: [E]\n    param w:")
    spec = tmp_path / "ops.mspec"
    spec.write_text(text.replace("CALL", call))
    result = compile_spec(spec, set=SIZES)
    (op,) = [o for o in result.graph.ops if o.op == name]
    kinds = lookup(name).gradient_kinds(op, result.graph)
    shapes = [
        tuple(int(result.value(d)) for d in result.graph.value(v).shape) for v in op.inputs
    ]
    subs = result.substitutions()

    def bound(v):  # an attribute with every size a number, as the lowering receives it
        if isinstance(v, tuple):
            return tuple(bound(x) for x in v)
        if not hasattr(v, "xreplace"):
            return v
        v = v.xreplace(subs)
        return int(v) if v.is_Integer else v

    attrs = {k: bound(v) for k, v in op.attrs}

    def lowered(*tensors):
        return lookup(name).lower(tensors, attrs)

    for which, kind in enumerate(kinds):
        in_place = summed_in_place(lowered, shapes, which)
        assert in_place == (kind not in VIEWS), (which, kind)

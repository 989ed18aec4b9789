"""Contractions and lookups: linear, matmul, einsum, embedding."""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import Role, numel, shape_str
from memspec.ops.patterns import parse_pattern
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
from memspec.ops.strides import actual, merge


def _linear_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    _, w, *bias = ctx.inputs
    shape = ctx.expect_rank(0, 1)
    if len(w.shape) != 2:
        raise ctx.fail(f"weight must be [out, in], got {shape_str(w.shape)}")
    ctx.expect_same(
        shape[-1],
        w.shape[1],
        lambda: f"input {shape_str(shape)} vs weight {shape_str(w.shape)}: in_features",
    )
    if bias and (len(bias[0].shape) != 1 or not _eq(bias[0].shape[0], w.shape[0])):
        raise ctx.fail(f"bias must be [{w.shape[0]}], got {shape_str(bias[0].shape)}")
    return (OutputSpec((*shape[:-1], w.shape[0]), ctx.product_dtype()),)


def _eq(a: sp.Expr, b: sp.Expr) -> bool:
    return sp.expand(a - b) == 0


def _linear_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of x @ W^T: x when W needs a gradient, W when x does.

    An x of 3 or more dims is folded to [rows, in] for one `mm` (torch folds whenever W
    needs a gradient); when its leading dims cannot be viewed as one (a transposed
    [b, e, l] read as [b, l, e]), the fold copies, and the copy is what is saved.
    """
    inputs = saved_if(graph, op, 0, (1,), "input")
    x = graph.value(op.inputs[0])
    # only tensor parallelism gathers inputs: a single device's graph is not searched
    made = graph.producer(x.id) if graph.tp_plan and x.role is Role.ACTIVATION else None
    if inputs and made is not None and made.attr("saves") == "shard":
        # Megatron-LM's sequence parallelism keeps the shard the input was gathered
        # from, and gathers it again in backward
        return (Saved("input shard", made.inputs[0]), *saved_if(graph, op, 1, (0,), "weight"))
    if inputs and len(x.shape) >= 3 and not x.contiguous:
        strides = actual(x.shape, x.strides)
        if merge(x.shape[:-1], strides[:-1], graph.bound) is None:
            inputs = (Saved("input copy", shape=x.shape, dtype=x.dtype),)
    return (*inputs, *saved_if(graph, op, 1, (0,), "weight"))


def _two_operand_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of a @ b: each operand, when the other needs a gradient.

    Batched products run as bmm over operands reshaped to [batch, m, k]; an operand that
    is a permuted, non-contiguous view (heads split off a [.., L, H*d] tensor) cannot be
    reshaped in place, so torch saves a contiguous copy of it: new storage.
    """
    saved = (
        *saved_if(graph, op, 0, (1,), "left operand"),
        *saved_if(graph, op, 1, (0,), "right operand"),
    )
    return tuple(_copy_if_strided(graph, s) for s in saved)


def _copy_if_strided(graph: Graph, saved: Saved) -> Saved:
    value = graph.value(saved.value)
    if value.contiguous or len(value.shape) < 3:
        return saved
    strides, bound = actual(value.shape, value.strides), graph.bound
    if merge(value.shape[:-2], strides[:-2], bound) is not None and any(
        bound.is_one(s) for s in strides[-2:]
    ):
        return saved  # batch dims fold into one and the matrix is row- or column-major
    return Saved(f"{saved.label} copy", shape=value.shape, dtype=value.dtype)


def _matmul_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    a = ctx.expect_rank(0, 2)
    b = ctx.expect_rank(1, 2)
    ctx.expect_same(a[-1], b[-2], lambda: f"{shape_str(a)} @ {shape_str(b)}: inner dims")
    batch_a, batch_b = a[:-2], b[:-2]
    if batch_b and (len(batch_a) != len(batch_b) or not all(map(_eq, batch_a, batch_b))):
        raise ctx.fail(f"{shape_str(a)} @ {shape_str(b)}: batch dims differ")
    return (OutputSpec((*batch_a, a[-2], b[-1]), ctx.product_dtype()),)


def _einsum_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    pattern = parse_pattern(str(ctx.attrs["pattern"]), ctx.fail)
    if len(pattern.inputs) != len(ctx.inputs):
        raise ctx.fail(f"pattern has {len(pattern.inputs)} operands, got {len(ctx.inputs)}")
    sizes: dict[str, sp.Expr] = {}
    ellipsis: tuple[sp.Expr, ...] | None = None
    for k, (axes, tensor) in enumerate(zip(pattern.inputs, ctx.inputs, strict=True)):
        named = [a for a in axes if a != "..."]
        if len(tensor.shape) < len(named) or (
            "..." not in axes and len(tensor.shape) != len(named)
        ):
            raise ctx.fail(
                f"operand {k + 1} {shape_str(tensor.shape)} does not match '{' '.join(axes)}'"
            )
        lead = len(tensor.shape) - len(named)
        if "..." in axes:
            here = tensor.shape[:lead]
            if ellipsis is not None and (
                len(here) != len(ellipsis) or not all(map(_eq, here, ellipsis))
            ):
                raise ctx.fail("operands disagree on the '...' dims")
            ellipsis = here
        for axis, size in zip(named, tensor.shape[lead:], strict=True):
            if axis in sizes and not _eq(sizes[axis], size):
                raise ctx.fail(f"axis {axis} is {sizes[axis]} in one operand and {size} in another")
            sizes.setdefault(axis, size)
    out = []
    for axis in pattern.output:
        if axis == "...":
            out.extend(ellipsis or ())
        elif axis not in sizes:
            raise ctx.fail(f"output axis {axis} appears in no operand")
        else:
            out.append(sizes[axis])
    return (OutputSpec(tuple(out), ctx.product_dtype()),)


def _einsum_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """A two-operand contraction saves each operand for the other's gradient."""
    if len(op.inputs) == 1:
        return ()
    if len(op.inputs) == 2:
        return _two_operand_saved(op, graph)
    return tuple(Saved(f"operand {k + 1}", v) for k, v in enumerate(op.inputs))


def _embedding_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    idx, w = ctx.inputs
    if idx.dtype.is_float:
        raise ctx.fail(f"indices must be an integer tensor, got {idx.dtype.value}")
    if len(w.shape) != 2:
        raise ctx.fail(f"weight must be [num_embeddings, dim], got {shape_str(w.shape)}")
    return (OutputSpec((*idx.shape, w.shape[1]), w.dtype if w.dtype.is_float else ctx.act_dtype),)


def _embedding_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of embedding: only the indices."""
    return saved_if(graph, op, 0, (1,), "indices")


def _einsum_lower(tensors, attrs):
    """torch.einsum with each axis name mapped to one letter."""
    torch, _ = torch_functional()
    pattern = parse_pattern(str(attrs["pattern"]), ValueError)
    letters: dict[str, str] = {}
    for axis in (a for side in (*pattern.inputs, pattern.output) for a in side):
        if axis != "...":
            letters.setdefault(axis, "abcdefghijklmnopqrstuvwxyz"[len(letters)])

    def side(axes: tuple[str, ...]) -> str:
        return "".join("..." if a == "..." else letters[a] for a in axes)

    equation = ",".join(side(axes) for axes in pattern.inputs) + "->" + side(pattern.output)
    return torch.einsum(equation, *tensors)


def _linear_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W^T: 2 * (output elements) * in_features; the bias add is not a product."""
    out, weight = graph.value(op.outputs[0]), graph.value(op.inputs[1])
    return 2 * numel(out.shape) * weight.shape[1]


def _addmm_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    b, _, w = ctx.inputs
    shape = ctx.expect_rank(1, 1)
    if len(w.shape) != 2:
        raise ctx.fail(f"weight must be [in, out], got {shape_str(w.shape)}")
    ctx.expect_same(
        shape[-1],
        w.shape[0],
        lambda: f"input {shape_str(shape)} vs weight {shape_str(w.shape)}: in",
    )
    if len(b.shape) != 1 or not _eq(b.shape[0], w.shape[1]):
        raise ctx.fail(f"bias must be [{w.shape[1]}], got {shape_str(b.shape)}")
    x = ctx.inputs[1]
    if not x.contiguous and merge(shape[:-1], actual(shape, x.strides)[:-1], ctx.bound) is None:
        raise ctx.fail("the input's leading dims cannot be viewed as one (torch's view fails)")
    return (OutputSpec((*shape[:-1], w.shape[1]), ctx.product_dtype()),)


def _addmm_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of addmm(b, x, W): x (a view of its storage) when W needs a
    gradient, W when x does; nothing for b, whose gradient is a sum."""
    return (*saved_if(graph, op, 1, (2,), "input"), *saved_if(graph, op, 2, (1,), "weight"))


def _linear_grads(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    """Measured with torch.profiler (a later gradient added by `aten::add`, not `add_`):
    every gradient of F.linear is a view but a 2-D input's."""
    flat = len(graph.value(op.inputs[0]).shape) <= 2
    return ((Grad.NEW if flat else Grad.VIEW), Grad.VIEW, Grad.VIEW)[: len(op.inputs)]


def _matmul_grads(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    """a @ b of two matrices is mm (new gradients); a batched b makes both gradients views
    (expanded and reshaped to bmm), and a's is a view where a is folded to 2-D for mm."""
    a, b = (len(graph.value(v).shape) for v in op.inputs)
    if b > 2:
        return (Grad.VIEW, Grad.VIEW)
    return (Grad.NEW if a <= 2 else Grad.VIEW, Grad.NEW)


def _addmm_lower(tensors, attrs):
    torch, _ = torch_functional()
    bias, x, weight = tensors
    out = torch.addmm(bias, x.view(-1, x.shape[-1]), weight)
    return out.view(*x.shape[:-1], weight.shape[-1])


def _addmm_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """x @ W: 2 * (output elements) * in; the bias add is not a product."""
    out, weight = graph.value(op.outputs[0]), graph.value(op.inputs[2])
    return 2 * numel(out.shape) * weight.shape[0]


def _addmm_backward_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """One product per operand of the product (x, W) that needs a gradient."""
    needed = sum(1 for vid in op.inputs[1:] if graph.value(vid).requires_grad)
    return _addmm_flops(op, graph) * needed


def _matmul_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """a @ b: 2 m n k per batch element."""
    out, a = graph.value(op.outputs[0]), graph.value(op.inputs[0])
    return 2 * numel(out.shape) * a.shape[-1]


def _einsum_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """A two-operand contraction: 2 * (output elements) * (contracted sizes)."""
    if len(op.inputs) != 2:
        return sp.Integer(0)
    pattern = parse_pattern(str(op.attr("pattern")), ValueError)
    sizes: dict[str, sp.Expr] = {}
    for axes, vid in zip(pattern.inputs, op.inputs, strict=True):
        shape = graph.value(vid).shape
        named = [a for a in axes if a != "..."]
        sizes.update(zip(named, shape[len(shape) - len(named) :], strict=True))
    contracted = [sizes[a] for a in sizes if a not in pattern.output]
    return 2 * numel(graph.value(op.outputs[0]).shape) * numel(tuple(contracted))


register(
    OpDef(
        "linear",
        "x @ W^T (+ b), W stored [out, in] as in torch.nn.Linear",
        ("input", "weight", "bias?"),
        _linear_infer,
        _linear_saved,
        lower=lambda t, a: torch_functional()[1].linear(*t),
        grads=_linear_grads,
        grads_doc="views of new tensors (no later gradient is added into them in place): "
        "the weight's a transpose (TBackward), the bias's a sum viewed, the input's mm's "
        "result viewed back to its leading dims; a plain new tensor for a 2-D input",
        summed=("bias?",),
        flops=_linear_flops,
        aten=("mm", "addmm"),
        kind=OpKind.MATMUL,
        shape_doc="input [..., in], weight [out, in], bias [out] -> [..., out]",
        saved_doc="input when weight needs a gradient (a copy when its leading dims cannot "
        "be viewed as one), weight when input does",
    )
)
register(
    OpDef(
        "addmm",
        "b + x @ W with W stored [in, out], one torch.addmm over x viewed as [rows, in] "
        "(Hugging Face's Conv1D)",
        ("bias", "input", "weight"),
        _addmm_infer,
        _addmm_saved,
        lower=_addmm_lower,
        grads=lambda op, graph: (Grad.VIEW, Grad.VIEW, Grad.NEW),
        grads_doc="the weight's a new tensor; the bias's (a sum) and the input's (x.view's "
        "backward) views of new tensors, into which no later gradient is added in place",
        summed=("bias",),
        flops=_addmm_flops,
        backward_flops=_addmm_backward_flops,
        aten=("addmm",),
        kind=OpKind.MATMUL,
        shape_doc="bias [out], input [..., in], weight [in, out] -> [..., out]",
        saved_doc="input (viewed, the same storage) when weight needs a gradient, weight "
        "when input does; the bias's gradient is made in the same backward node",
    )
)
register(
    OpDef(
        "matmul",
        "a @ b over the last two dims",
        ("a", "b"),
        _matmul_infer,
        _two_operand_saved,
        lower=lambda t, a: t[0] @ t[1],
        grads=_matmul_grads,
        grads_doc="new tensors for 2-D operands; where torch.matmul folds or batches an "
        "operand (3 or more dims, or a 2-D a beside a batched b), a view of a new tensor",
        flops=_matmul_flops,
        aten=("mm", "bmm"),
        kind=OpKind.MATMUL,
        shape_doc="a [..., m, k], b [..., k, n] or [k, n] -> [..., m, n]",
        saved_doc="each operand when the other needs a gradient (a copy of a permuted batched one)",
    )
)
register(
    OpDef(
        "einsum",
        "a contraction written as an einops pattern",
        ("*operands",),
        _einsum_infer,
        _einsum_saved,
        attrs=(("pattern", None),),
        lower=_einsum_lower,
        grads=lambda op, graph: (Grad.VIEW,) * len(op.inputs),
        grads_doc="views of new tensors (torch.einsum permutes and reshapes around bmm), into "
        "which no later gradient is added in place",
        flops=_einsum_flops,
        aten=("bmm", "mm"),
        kind=OpKind.MATMUL,
        shape_doc="operands matching the pattern's left side -> its right side's axes",
        saved_doc="of two operands, each when the other needs a gradient (a copy of a "
        "permuted batched one); of three or more, all",
    )
)
register(
    OpDef(
        "embedding",
        "rows of weight picked by integer indices",
        ("indices", "weight"),
        _embedding_infer,
        _embedding_saved,
        lower=lambda t, a: torch_functional()[1].embedding(*t),
        kind=OpKind.INDEXING,
        shape_doc="integer indices [...], weight [num, dim] -> [..., dim]",
        saved_doc="the indices when weight needs a gradient",
    )
)

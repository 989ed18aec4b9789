"""Mamba's selective scan: the recurrence of Hugging Face's slow path, and the fused kernel.

`ssm_recurrence` is the Python loop of HF `MambaMixer.slow_forward` (transformers,
models/mamba/modeling_mamba.py) over already discretized inputs: for each position i,
`state = dA[:, :, i] * state + dBu[:, :, i]` and `y[..., i] = state @ C[:, i]`. Every
step makes a new state tensor, and autograd keeps each one: L + 1 states of [B, E, S].

`selective_scan_fused` is mamba_ssm's `selective_scan_fn` (the CUDA kernel behind
`SelectiveScanFn` in mamba_ssm/ops/selective_scan_interface.py), which recomputes the
states in backward and keeps only its inputs, chunk checkpoints and its un-gated output.
It has no CPU implementation, so it has no lowering and `memspec verify` refuses it.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, numel, shape_str
from memspec.ops.registry import (
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    torch_functional,
)
from memspec.ops.strides import actual, normalize

# selective_scan_fwd (csrc/selective_scan/selective_scan.cpp) checkpoints the state
# every 2048 positions: x = empty({batch, dim, n_chunks, dstate * 2}, weight_type) with
# n_chunks = (seqlen + 2048 - 1) / 2048.
CHUNK = 2048


def _recurrence_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    da, dbu, c = (t.shape for t in ctx.inputs)
    if len(da) != 4 or len(dbu) != 4 or len(c) != 3:
        raise ctx.fail(
            f"needs dA and dBu [B, E, L, S] and C [B, L, S], got {shape_str(da)}, "
            f"{shape_str(dbu)} and {shape_str(c)}"
        )
    for a, b in zip(da, dbu, strict=True):
        ctx.expect_same(a, b, f"dA {shape_str(da)} vs dBu {shape_str(dbu)}")
    for a, b, what in ((da[0], c[0], "batch"), (da[2], c[1], "length"), (da[3], c[2], "state")):
        ctx.expect_same(a, b, f"{what} of dA {shape_str(da)} vs C {shape_str(c)}")
    return (OutputSpec((da[0], da[1], da[2]), ctx.float_dtype()),)


def _recurrence_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """What the loop's products save: `dA_i * state` saves the state when dA needs a
    gradient and dA when the state does; `state @ C_i` saves the state when C needs one
    and C when the state does. The zero initial state is saved by the first product only.
    """
    da, dbu, c = (graph.value(v) for v in op.inputs)
    b, e, length, s = da.shape
    state_grad = da.requires_grad or dbu.requires_grad
    count = (length - 1) * int(da.requires_grad or c.requires_grad) + int(c.requires_grad)
    saved: list[Saved] = []
    if state_grad and length != 1:
        saved.append(Saved("dA", op.inputs[0]))
    if state_grad:
        saved.append(Saved("C", op.inputs[2]))
    if da.requires_grad:
        saved.append(Saved("initial state", shape=(b, e, s), dtype=da.dtype))
    if count != 0:
        saved.append(Saved("states", shape=(b, e, s), dtype=da.dtype, count=sp.sympify(count)))
    return tuple(saved)


def _recurrence_lower(tensors, attrs):
    """HF MambaMixer.slow_forward's loop, verbatim but for names."""
    torch, _ = torch_functional()
    da, dbu, c = tensors
    state = torch.zeros(da.shape[0], da.shape[1], da.shape[3], dtype=da.dtype)
    ys = []
    for i in range(da.shape[2]):
        state = da[:, :, i, :] * state + dbu[:, :, i, :]
        ys.append(torch.matmul(state, c[:, i, :].unsqueeze(-1))[:, :, 0])
    return torch.stack(ys, dim=-1)


def _recurrence_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """The read-out y_i = state_i . C_i: 2 * B * E * L * S (the state update is elementwise)."""
    out, da = graph.value(op.outputs[0]), graph.value(op.inputs[0])
    return 2 * numel(out.shape) * da.shape[-1]


def _fused_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    u, delta, a, b, c, d, z, bias = (t.shape for t in ctx.inputs)
    if len(u) != 3 or len(a) != 2:
        raise ctx.fail(f"needs u [B, E, L] and A [E, S], got {shape_str(u)} and {shape_str(a)}")
    for name, shape in (("delta", delta), ("z", z)):
        if len(shape) != 3 or not all(map(_same, shape, u)):
            raise ctx.fail(f"{name} must be u's shape {shape_str(u)}, got {shape_str(shape)}")
    for name, shape in (("B", b), ("C", c)):
        want = (u[0], a[1], u[2])
        if len(shape) != 3 or not all(map(_same, shape, want)):
            raise ctx.fail(f"{name} must be [B, S, L] = {shape_str(want)}, got {shape_str(shape)}")
    for name, shape in (("D", d), ("delta_bias", bias)):
        if len(shape) != 1 or not _same(shape[0], u[1]):
            raise ctx.fail(f"{name} must be [{u[1]}], got {shape_str(shape)}")
    ctx.expect_same(a[0], u[1], "channels of A vs u")
    return (OutputSpec(u, ctx.float_dtype()),)


def _fused_flops(op: OpApply, graph: Graph) -> sp.Expr:
    """The same read-out as the slow path's: 2 * B * E * L * S."""
    out, a = graph.value(op.outputs[0]), graph.value(op.inputs[2])
    return 2 * numel(out.shape) * a.shape[1]


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    return sp.expand(a - b) == 0


def _as_contiguous(graph: Graph, vid: int, label: str) -> Saved:
    """SelectiveScanFn calls `.contiguous()` on u, delta, B, C and z when their last
    stride is not 1: a copy, unless the tensor is contiguous already (size-1 dims aside)."""
    v = graph.value(vid)
    strides = actual(v.shape, v.strides)
    if graph.bound.is_one(strides[-1]) or normalize(v.shape, strides, graph.bound) is None:
        return Saved(label, vid)
    return Saved(f"{label} copy", shape=v.shape, dtype=v.dtype)


def _fused_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """SelectiveScanFn.forward with z: save_for_backward(u, delta, A, B, C, D, z,
    delta_bias, x, out), x the fp32 chunk checkpoints and out the un-gated output."""
    u, delta, a, b, c, d, z, bias = op.inputs
    shape, state = graph.value(u).shape, graph.value(a).shape[1]
    chunks = sp.ceiling(shape[2] / CHUNK)
    return (
        *(_as_contiguous(graph, v, name) for v, name in ((u, "u"), (delta, "delta"))),
        Saved("A", a),
        *(_as_contiguous(graph, v, name) for v, name in ((b, "B"), (c, "C"))),
        Saved("D", d),
        _as_contiguous(graph, z, "z"),
        Saved("delta_bias", bias),
        Saved("x", shape=(shape[0], shape[1], chunks, 2 * state), dtype=DType.float32),
        Saved("out", shape=shape, dtype=graph.value(delta).dtype),
    )


def _recurrence_backward_temporaries(op: OpApply, graph: Graph) -> sp.Expr:
    """The loop's backward is L small autograd nodes: each step's select backward makes a
    zero-filled tensor of dA's (and C's) full size and adds it into the gradient being
    summed. PyTorch's memory tracker on fake tensors (torch 2.13, CPU) sees two such
    tensors of dA and two of C beside the summed gradients at the op's peak: within 2%
    of its total, a little over (the peak falls mid-loop, with a few states freed), at
    B, L, S, E*D = (2, 64, 16, 128), (1, 32, 8, 64) and (3, 16, 4, 64)."""
    da, c = graph.value(op.inputs[0]), graph.value(op.inputs[2])
    if not (da.requires_grad or graph.value(op.inputs[1]).requires_grad):
        return sp.Integer(0)
    return 2 * (numel(da.shape) * da.dtype.itemsize + numel(c.shape) * c.dtype.itemsize)


register(
    OpDef(
        "ssm_recurrence",
        "state = dA_i * state + dBu_i; y_i = state . C_i over L (HF's slow-path loop)",
        ("dA", "dBu", "C"),
        _recurrence_infer,
        _recurrence_saved,
        lower=_recurrence_lower,
        flops=_recurrence_flops,
        backward_temporaries=_recurrence_backward_temporaries,
        kind=OpKind.SCAN,
        shape_doc="dA and dBu [B, E, L, S], C [B, L, S] -> [B, E, L]",
        saved_doc="when dA or dBu needs a gradient, dA (if L > 1) and C; when dA does, the "
        "zero initial state; the states [B, E, S] that the L steps' products keep for "
        "dA's and C's gradients",
    )
)
register(
    OpDef(
        "selective_scan_fused",
        "mamba_ssm's CUDA selective_scan_fn with gate z and softplus(delta + delta_bias); "
        "no CPU kernel",
        ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"),
        _fused_infer,
        _fused_saved,
        lower=None,
        flops=_fused_flops,
        kind=OpKind.SCAN,
        shape_doc="u, delta, z [B, E, L], A [E, S], B and C [B, S, L], D and delta_bias "
        "[E] -> u's shape",
        saved_doc="its eight inputs (copies of u, delta, B, C and z when their last stride "
        "is not 1), float32 checkpoints [B, E, ceil(L/2048), 2S] and the un-gated output",
    )
)

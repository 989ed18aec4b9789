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
from memspec.ops.engine import Engine
from memspec.ops.registry import (
    BackwardMoment,
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
        ctx.expect_same(a, b, lambda: f"dA {shape_str(da)} vs dBu {shape_str(dbu)}")
    for a, b, what in ((da[0], c[0], "batch"), (da[2], c[1], "length"), (da[3], c[2], "state")):
        ctx.expect_same(a, b, lambda what=what: f"{what} of dA {shape_str(da)} vs C {shape_str(c)}")
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


def _recurrence_backward_moments(
    op: OpApply, graph: Graph, sums_in_place: bool
) -> tuple[BackwardMoment, ...]:
    """Autograd runs the loop's nodes backward step by step, later steps first (the
    engine picks the ready node created last). Step i: y_i's select_backward makes a
    zero-filled [B, E, 1]; the bmm makes C_i's and the state's gradients and frees
    state i; the state's gradient is summed with the one from step i + 1; C_i's, dBu_i's
    and dA_i's select_backward each make a zero-filled tensor of the whole input's size,
    summed into that input's gradient; the mul makes the previous state's and dA_i's
    gradients and frees what it saved. Each step after the second ends as the second
    does with one state fewer, so the first two steps processed hold every moment that
    can be the peak (checked against PyTorch by tests/zoo/test_peak_exact.py)."""
    da, dbu, c = (graph.value(v) for v in op.inputs)
    b, e, length, s = da.shape
    ga, gb, gc = da.requires_grad, dbu.requires_grad, c.requires_grad
    gs = ga or gb  # the states require grad
    state, item = b * e * s * da.dtype.itemsize, da.dtype.itemsize
    engine = Engine(sums_in_place)
    steps = [1] if graph.bound.is_one(length) else [2, 1]  # i = L - step
    for back in reversed(steps):
        i0 = graph.bound.equal(length, back)  # whether this step is the first, i = 0
        i1 = graph.bound.equal(length, back + 1)  # the second: its mul is dA's last holder
        engine.alloc("dy_i", b * e * item)
        if i0:
            engine.drop_output_grad()  # unbind's last view of the output's gradient
        if gc:
            engine.alloc("dC_i", b * s * c.dtype.itemsize)
        if gs:
            engine.alloc("ds_new", state)
        engine.free("dy_i")
        if gc:
            engine.release("states", state)  # state i, saved by the bmm (and mul i + 1)
        if gs and i0:
            engine.drop("C")  # the first bmm is the last that saved a view of C
        if gs:
            engine.accumulate("ds", "ds_new")
        if gc:
            engine.alloc("dC_sel", numel(c.shape) * c.dtype.itemsize)
            engine.free("dC_i")
            engine.accumulate("dC", "dC_sel")
        if gb:
            engine.alloc("dBu_sel", numel(dbu.shape) * dbu.dtype.itemsize)
            engine.accumulate("dBu", "dBu_sel")
        if gs and not i0:
            engine.alloc("ds_prev", state)
        if ga:
            engine.alloc("dA_i", state)
        if gs:
            engine.free("ds")
        if i0 and ga:
            engine.drop("initial state")
        elif not gc and ga:
            engine.release("states", state)  # state i - 1, saved by mul i only
        if gs and i1:
            engine.drop("dA")  # mul 1 is the last that saved a view of dA
        if ga:
            engine.alloc("dA_sel", numel(da.shape) * da.dtype.itemsize)
            engine.free("dA_i")
            engine.accumulate("dA", "dA_sel")
        if gs and not i0:
            engine.live["ds"] = engine.live.pop("ds_prev")
    engine.close()
    return tuple(engine.moments)


register(
    OpDef(
        "ssm_recurrence",
        "state = dA_i * state + dBu_i; y_i = state . C_i over L (HF's slow-path loop)",
        ("dA", "dBu", "C"),
        _recurrence_infer,
        _recurrence_saved,
        lower=_recurrence_lower,
        flops=_recurrence_flops,
        aten_inside=("bmm",),  # state @ C_i, each step
        backward_moments=_recurrence_backward_moments,
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

"""Sharding propagation under tensor parallelism: which dim of each value is 1/TP.

The graph is elaborated as one rank runs it: torch's `ColwiseParallel` hands on its
output as a plain local tensor (`use_local_output=True`), and every op after it runs on
local tensors until a `RowwiseParallel` member takes them back. So each value has its
local shape, and `Value.shard` says which of its dims is 1/TP of the whole tensor; the
spec's own names (a signature's `[b, s, d_model]`, `rearrange(..., h = num_heads)`)
stay the whole tensor's, and are read against the value's global shape.

Where the shard goes through an op is found by running the op's own shape rule once
more with the sharded dim of each input multiplied by a marker symbol: the output dim
the marker lands in is the output's shard. That follows broadcasting, permutations and
einsum's axis names without a rule per op. What it cannot see is an op that mixes the
elements along the sharded dim (a softmax over it, a norm of it, a slice of it), which
runs on a rank's slice as something else than on the whole tensor: `MIXED` lists which
dims each op mixes, and an op without an entry refuses a sharded input. An op whose
output loses the marker summed over the sharded dim: partial sums, which only a
rowwise or vocab-parallel member makes (then all-reduced); a loss under loss_parallel
runs as ops of its own (`ops/loss_parallel.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.ir.sizes import unwatched
from memspec.ir.types import Shape
from memspec.ops import OpDef
from memspec.ops.patterns import parse_pattern
from memspec.ops.registry import InferContext, OpShapeError, TensorType

__all__ = ["MIXED", "PARTIAL", "ShardingError", "localize_axes", "output_shards"]

PARTIAL = -1  # an output of partial sums: each rank's share of a sum over the shard
_MARK = sp.Symbol("tp_marker", integer=True, positive=True)


class ShardingError(Exception):
    """A sharded value meets an op that cannot run on one rank's slice of it."""


_FREE = (
    "add sub mul div neg exp cos sin tanh sigmoid silu gelu relu relu_ relu6 relu6_ "
    "softplus hardtanh hardtanh_ scale clamp pow dropout native_dropout contiguous "
    "returned hold autocast_cast type_as zeros_like einsum matmul linear embedding all_reduce "
    "copy_to_tp_region requires_grad_"
)
_LAST = "softmax log_softmax rms_norm layer_norm topk sort nll_loss"
_LAST_TWO = "causal_mask add_causal_mask rope flash_attention"
_DIM_ATTR = "cat chunk split narrow select gather"


def _mixed_table() -> dict[str, Callable[[dict, int], frozenset[int]]]:
    table: dict[str, Callable[[dict, int], frozenset[int]]] = {}
    for name in _FREE.split():
        table[name] = lambda attrs, rank: frozenset()
    for name in _LAST.split():
        table[name] = lambda attrs, rank: frozenset({rank - 1})
    for name in _LAST_TWO.split():
        table[name] = lambda attrs, rank: frozenset({rank - 2, rank - 1})
    for name in _DIM_ATTR.split():
        table[name] = lambda attrs, rank: frozenset({int(attrs["dim"]) % rank})
    return table


# op -> (attributes, rank of the sharded input) -> the dims whose elements it mixes
MIXED = _mixed_table()


def output_shards(
    op: OpDef,
    ctx: InferContext,
    shards: tuple[int | None, ...],
) -> tuple[int | None, ...]:
    """Each output's shard (None: whole on every rank, PARTIAL: partial sums), from the
    inputs' `shards` and the op's shape rule on the local shapes in `ctx`."""
    if op.name == "hold":  # x itself; the other tensors are only kept alive
        return (shards[0],)
    for k, (shard, tensor) in enumerate(zip(shards, ctx.inputs, strict=True)):
        if shard is None:
            continue
        if op.name not in MIXED:
            raise ShardingError(
                f"{op.name} has no tensor-parallel rule, so it cannot take argument {k + 1}, "
                f"sharded across TP ranks on dim {shard}"
            )
        mixed = MIXED[op.name](ctx.attrs, len(tensor.shape))
        if shard in mixed:
            raise ShardingError(
                f"{op.name} mixes the elements along dim {shard} of argument {k + 1}, which "
                "is sharded across TP ranks: a rank holds only its slice (shard another dim "
                "in the tp_plan, or make the member that shards it rowwise)"
            )
    marked = tuple(
        TensorType(
            tuple(d * _MARK if i == shard else d for i, d in enumerate(t.shape)),
            t.dtype,
            t.requires_grad,
        )
        for t, shard in zip(ctx.inputs, shards, strict=True)
    )
    probe = InferContext(ctx.op, marked, dict(ctx.attrs), ctx.act_dtype)
    try:
        with unwatched():  # a probe of where the shard goes, not a decision of the graph's
            outputs = op.infer(probe)
    except OpShapeError as err:
        raise ShardingError(
            f"{err}, with the dims TP shards at their whole size: the arguments are not "
            "sharded alike (one sharded where another is whole)"
        ) from None
    result: list[int | None] = []
    for out in outputs:
        dims = [i for i, d in enumerate(out.shape) if isinstance(d, sp.Basic) and d.has(_MARK)]
        if len(dims) > 1 or any(sp.cancel(out.shape[i] / _MARK).has(_MARK) for i in dims):
            raise ShardingError(f"{op.name} spreads a dim sharded across TP ranks over others")
        result.append(dims[0] if dims else PARTIAL)
    return tuple(result)


def localize_axes(
    pattern: str, axes: tuple[tuple[str, sp.Expr], ...], shape: Shape, shard: int, degree: sp.Expr
) -> tuple[tuple[tuple[str, sp.Expr], ...], int]:
    """An einops pattern's named sizes made local, and the output's shard, for an input
    sharded on dim `shard`: the shard is the outermost axis of that dim's group (the
    heads of `(h d)`: torch.chunk gives each rank whole heads), whose size is 1/TP."""

    def fail(message: str) -> ShardingError:
        return ShardingError(f"rearrange: {message}")

    parsed = parse_pattern(pattern, fail)
    (groups,) = parsed.input_groups
    lead = len(shape) - (len(groups) - (1 if ("...",) in groups else 0))
    index = 0
    axis: str | None = None
    for group in groups:
        width = lead if group == ("...",) else 1
        if index <= shard < index + width:
            axis = f"...{shard - index}" if group == ("...",) else group[0]
            break
        index += width
    if axis is None:
        raise fail(f"dim {shard} is not in {pattern!r}")
    local = tuple((name, size / degree if name == axis else size) for name, size in axes)
    index = 0
    for group in parsed.output_groups:
        width = lead if group == ("...",) else 1
        if axis.startswith("...") and group == ("...",):
            return local, index + int(axis[3:])
        if not axis.startswith("...") and axis in group:
            if group[0] != axis:
                raise fail(
                    f"axis {axis}, sharded across TP ranks, must lead its group in "
                    f"{pattern!r}, so that each rank's slice is whole rows of it"
                )
            return local, index
        index += width
    raise fail(f"axis {axis}, sharded across TP ranks, is reduced away in {pattern!r}")

"""Builds a torch.nn.Module from the IR at concrete sizes, and runs it.

Parameters and buffers are registered under the spec's hierarchical names with each
repeat region's index inserted, as PyTorch numbers a ModuleList: the spec's
`layers.attn.q_proj.weight` in `repeat 4` becomes `layers.0.attn.q_proj.weight` ...
`layers.3.attn.q_proj.weight`. `forward` interprets the graph: each op through its
registry lowering, each repeat region as a loop whose input is the previous output.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import sympy as sp
import torch
from torch import nn

from memspec.errors import UsageError
from memspec.ir.graph import Graph, OpApply, Region, RepetitionIndex
from memspec.ir.types import DType, Role
from memspec.lower.schedule import Loop, last_uses, schedule
from memspec.ops import lookup

__all__ = ["LoweredModel", "concrete", "torch_dtype"]

_DTYPES = {
    DType.float64: torch.float64,
    DType.float32: torch.float32,
    DType.float16: torch.float16,
    DType.bfloat16: torch.bfloat16,
    DType.int64: torch.int64,
    DType.int32: torch.int32,
    DType.int8: torch.int8,
    DType.uint8: torch.uint8,
    DType.bool: torch.bool,
}


def torch_dtype(dtype: DType) -> torch.dtype:
    return _DTYPES[dtype]


def concrete(value: object, subs: dict) -> object:
    """A sympy size or constant as a Python int or float under `subs`; others unchanged."""
    if isinstance(value, tuple):
        return tuple(concrete(v, subs) for v in value)
    if not isinstance(value, sp.Basic):
        return value
    bound = value.xreplace(subs)
    if bound.free_symbols:
        unbound = ", ".join(sorted(str(s) for s in bound.free_symbols))
        raise ValueError(f"cannot lower {value}: no value for {unbound}")
    return int(bound) if bound.is_Integer else float(bound)


def _indexed_path(path: str, chain: tuple[Region, ...], index: tuple[int, ...]) -> str:
    """`layers.attn.w` in region `layers` at index (3,) -> `layers.3.attn.w`."""
    parts = path.split(".")
    # Innermost first, so inserting an index does not shift an outer region's position.
    for region, i in reversed(list(zip(chain, index, strict=True))):
        depth = len(region.path.split("."))
        parts.insert(depth, str(i))
    return ".".join(parts)


def _check_lowerable(graph: Graph) -> None:
    """Refuse, before any work, a graph with an op that has no PyTorch lowering (a
    kernel with no CPU implementation, such as mamba_ssm's fused selective scan)."""
    for name in sorted({op.op for op in graph.ops}):
        op = lookup(name)
        if op.lower is None:
            raise UsageError(
                f"op {name!r} ({op.doc}) has no PyTorch lowering, so this model cannot be "
                "run on the CPU and measured; pick a variant that has one with --use"
            )


class LoweredModel(nn.Module):
    """The spec's model as a torch module; `hooks` observe each op as it runs."""

    def __init__(self, graph: Graph, subs: dict, init_std: float = 0.02):
        super().__init__()
        _check_lowerable(graph)
        self.graph = graph
        self.subs = subs
        self.plan = schedule(graph)
        # Drop each activation after its last use, as eager PyTorch code would, so that
        # memory measured on this module is that of an ordinary implementation.
        self.drop_after_op, self.drop_after_loop = last_uses(graph, self.plan)
        self.state: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        self.on_op_start: Callable[[OpApply], None] | None = None
        self.on_op_end: Callable[[OpApply, list, list, dict], None] | None = None
        self.iteration: dict[int, int] = {}  # region id -> current repetition
        for v in graph.values:
            if v.role in (Role.PARAMETER, Role.BUFFER):
                self._create(v, init_std)

    def _create(self, v, init_std: float) -> None:
        chain = self.graph.region_chain(v.region)
        counts = [range(concrete(r.count, self.subs)) for r in chain]
        shape = [concrete(d, self.subs) for d in v.shape]
        dtype = torch_dtype(v.dtype)
        for index in itertools.product(*counts):
            *owner_path, name = _indexed_path(v.path, chain, index).split(".")
            owner = self
            for part in owner_path:
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner._modules[part]
            if dtype.is_floating_point:
                data = torch.randn(shape, dtype=dtype) * init_std
            else:
                data = torch.zeros(shape, dtype=dtype)
            if v.role is Role.PARAMETER:
                tensor = nn.Parameter(data)
                owner.register_parameter(name, tensor)
            else:
                owner.register_buffer(name, data)
                tensor = owner._buffers[name]
            self.state[(v.id, index)] = tensor

    def make_inputs(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Inputs of the declared shapes: integers in [0, 2) (valid indices), floats ~ N(0, 1)."""
        tensors = []
        for vid in self.graph.inputs:
            v = self.graph.value(vid)
            shape = [concrete(d, self.subs) for d in v.shape]
            dtype = torch_dtype(v.dtype)
            if dtype.is_floating_point:
                tensors.append(torch.randn(shape, dtype=dtype, generator=generator))
            else:
                tensors.append(torch.randint(0, 2, shape, dtype=dtype, generator=generator))
        return tensors

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        env: dict[int, torch.Tensor] = dict(zip(self.graph.inputs, inputs, strict=True))
        self._run(self.plan, env, ())
        outputs = [env[v] for v in self.graph.outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run(self, plan: list, env: dict, index: tuple[int, ...]) -> None:
        for item in plan:
            if isinstance(item, Loop):
                self._loop(item, env, index)
            else:
                self._op(self.graph.ops[item], env, index)

    def _loop(self, loop: Loop, env: dict, index: tuple[int, ...]) -> None:
        carried = [(i, o) for r, i, o in self.graph.carried if r == loop.region]
        if len(carried) > 1:
            raise NotImplementedError("a repeated layer called more than once cannot be lowered")
        count = concrete(self.graph.regions[loop.region].count, self.subs)
        saved_input = env.get(carried[0][0]) if carried else None
        for i in range(count):
            self.iteration[loop.region] = i
            if carried and i > 0:
                env[carried[0][0]] = env[carried[0][1]]  # the next repetition's input
            self._run(loop.body, env, (*index, i))
        del self.iteration[loop.region]
        if carried:
            env[carried[0][0]] = saved_input
        for vid in self.drop_after_loop.get(id(loop), ()):
            env.pop(vid, None)

    def _op(self, op: OpApply, env: dict, index: tuple[int, ...]) -> None:
        tensors = [self._value(vid, env, index) for vid in op.inputs]
        attrs = {k: self._attr(v) for k, v in op.attrs}
        if self.on_op_start:
            self.on_op_start(op)
        out = lookup(op.op).lower(tuple(tensors), attrs)
        outputs = list(out) if isinstance(out, tuple) else [out]
        for vid, tensor in zip(op.outputs, outputs, strict=True):
            env[vid] = tensor
        if self.on_op_end:
            self.on_op_end(op, tensors, outputs, env)
        for vid in self.drop_after_op.get(op.id, ()):
            env.pop(vid, None)

    def _attr(self, value: object) -> object:
        """An attribute at the concrete sizes; a repetition index is the loop's current one."""
        if isinstance(value, RepetitionIndex):
            return self.iteration[value.region]
        return concrete(value, self.subs)

    def _value(self, vid: int, env: dict, index: tuple[int, ...]) -> torch.Tensor:
        v = self.graph.value(vid)
        if v.role in (Role.PARAMETER, Role.BUFFER):
            depth = len(self.graph.region_chain(v.region))
            return self.state[(vid, index[:depth])]
        return env[vid]

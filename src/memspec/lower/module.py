"""Builds a torch.nn.Module from the IR at concrete sizes, and runs it.

Parameters and buffers are registered under the spec's hierarchical names with each
repeat region's index inserted, as PyTorch numbers a ModuleList: the spec's
`layers.attn.q_proj.weight` in `repeat 4` becomes `layers.0.attn.q_proj.weight` ...
`layers.3.attn.q_proj.weight`. `forward` runs the graph with `TorchInterpreter` (the
step interpreter of `ir/interpreter.py`, each op through its registry lowering).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from memspec.errors import UsageError
from memspec.ir.graph import Graph, OpApply
from memspec.ir.schedule import schedule
from memspec.ir.types import DType, Role
from memspec.lower.interpreter import OpHook, TorchInterpreter
from memspec.lower.values import concrete, indexed_path, torch_dtype
from memspec.ops import lookup
from memspec.parallel import TP
from memspec.symbolic.symbols import dim_symbol

__all__ = ["LoweredModel", "concrete", "indexed_path", "torch_dtype"]


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


class _Checkpoint(nn.Module):
    """A checkpointed repetition's body, run as a module's forward."""

    def forward(self, body: Callable, *tensors: torch.Tensor):
        return body(*tensors)


class _Unit(_Checkpoint):
    """The container of one repetition's parameters (`layers.3`), whose forward runs that
    repetition (`units=True`): a real module call, as FSDP2's `fully_shard` needs."""


class _Live(Mapping):
    """Each parameter and buffer read from its owning module at use time: FSDP2 swaps a
    module's attribute between its sharded and its unsharded parameter."""

    def __init__(self, owners: dict[tuple[int, tuple[int, ...]], tuple[nn.Module, str]]):
        self.owners = owners

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> torch.Tensor:
        owner, name = self.owners[key]
        return getattr(owner, name)

    def __iter__(self) -> Iterator:
        return iter(self.owners)

    def __len__(self) -> int:
        return len(self.owners)


def _shell(style: str) -> nn.Module:
    """An empty torch.nn.Embedding (vocab_parallel) or Linear, whose parameters the
    lowering registers: the module types torch's parallel styles shard."""
    shell = nn.Embedding(1, 1) if style == "vocab_parallel" else nn.Linear(1, 1, bias=False)
    del shell.weight
    if isinstance(shell, nn.Linear):
        del shell.bias
        shell.bias = None  # a plain attribute until a bias parameter is registered
    return shell


class LoweredModel(nn.Module):
    """The spec's model as a torch module; `hooks` observe each op as it runs."""

    def __init__(
        self,
        graph: Graph,
        subs: dict,
        init_std: float = 0.02,
        checkpointed: frozenset[int] = frozenset(),
        autocast: DType | None = None,
        segments: frozenset[int] = frozenset(),
        sac_aten: tuple[str, ...] = (),
        units: bool = False,
    ):
        super().__init__()
        _check_lowerable(graph)
        self.graph = graph
        self.subs = subs
        # Activations are dropped after their last use, as eager PyTorch code would, so
        # that memory measured on this module is that of an ordinary implementation.
        self.plan = schedule(graph, segments)
        self.state: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        self.owners: dict[tuple[int, tuple[int, ...]], tuple[nn.Module, str]] = {}
        # units=True: each repetition of a top-level repeat region runs as a call of its
        # module (`layers.3`), its parameters read through that module at use time, so
        # that FSDP2's fully_shard can be applied per repetition (opt-in: a module call
        # adds hooks and a frame that trackers see)
        self.units: dict[int, list[nn.Module]] = {}
        self._unit_paths: set[str] = set()
        if units:
            self._unit_paths = {
                self._unit_path(r, i)
                for r in graph.top_regions()
                for i in range(concrete(r.count, subs))
            }
        # tensor parallelism: each planned member (`tp_plan`) is a torch.nn.Linear or
        # Embedding holding its parameters at their whole size, for parallelize_module to
        # shard and wrap; its linear or embedding op runs as a call of it
        self.tp_styles = dict(graph.tp_plan)
        # indexed path -> (its module, its style, whether its output stays whole under
        # sequence parallelism: the plan's `replicated`)
        self.tp_members: dict[str, tuple[nn.Module, str, bool]] = {}
        self._member_of: dict[tuple[int, tuple[int, ...]], nn.Module] = {}  # by its weight
        # the tensor-parallel mesh: sequence parallelism's collectives, loss_parallel()
        self.mesh = None
        self.on_op_start: Callable[[OpApply], None] | None = None
        self.on_op_end: OpHook | None = None
        # (region or None for a segment, value ids, tensors) a checkpoint keeps, as it
        # starts in the forward
        self.on_checkpoint: Callable[[int, list, list], None] | None = None
        # the tensors selective checkpointing kept, after each checkpoint's forward
        self.on_kept: Callable[[list], None] | None = None
        self._running: TorchInterpreter | None = None
        # the loop keeps the outputs object: what the spec marks `returned` is held here
        # from the forward until the caller clears it (`memspec verify --keep-outputs`)
        self.keep_outputs = False
        self.returned: list[torch.Tensor] = []
        # regions each repetition of which runs under torch.utils.checkpoint, as a call
        # of a module of no parameters of its own
        self.checkpointed = {}
        for rid in sorted(checkpointed):
            self.checkpointed[rid] = _Checkpoint()
            self.add_module(f"checkpoint_{rid}", self.checkpointed[rid])
        # the runs of ops in `segments` (selective recomputation), each a checkpoint
        self.segment_module = _Checkpoint() if segments else None
        self.sac_aten = sac_aten
        if segments:
            self.add_module("checkpoint_segments", self.segment_module)
        # the forward runs under torch.autocast(device_type="cpu", dtype=autocast); the
        # graph's cast ops are autocast's (explicit_casts=False leaves them to autocast)
        self.autocast = autocast
        self.explicit_casts = True
        for v in graph.values:
            if v.role in (Role.PARAMETER, Role.BUFFER):
                self._create(v, init_std)
        for r in graph.top_regions() if units else ():
            count = concrete(r.count, subs)
            self.units[r.id] = [self._module(self._unit_path(r, i)) for i in range(count)]

    @staticmethod
    def _unit_path(region, i: int) -> str:
        return indexed_path(f"{region.path}.x", (region,), (i,)).rsplit(".", 1)[0]

    def _module(self, path: str, style: str | None = None, whole: bool = False) -> nn.Module:
        """The container at `path`, made (as a `_Unit` at a unit's path, as a shell
        Linear or Embedding for a member a tp_plan styles) where missing."""
        owner: nn.Module = self
        prefix = []
        parts = path.split(".") if path else []
        for k, part in enumerate(parts):
            prefix.append(part)
            if part not in owner._modules:
                unit = ".".join(prefix) in self._unit_paths
                made = _Unit() if unit else nn.Module()
                if style is not None and k == len(parts) - 1:
                    made = _shell(style)
                    self.tp_members[path] = (made, style, whole)
                owner.add_module(part, made)
            owner = owner._modules[part]
        return owner

    def _create(self, v, init_std: float) -> None:
        chain = self.graph.region_chain(v.region)
        counts = [range(concrete(r.count, self.subs)) for r in chain]
        # a planned member's whole parameter: parallelize_module shards it
        shape = [concrete(d, self.subs) for d in v.whole_shape(dim_symbol(TP))]
        member = v.path.rpartition(".")[0]
        style, whole = self.tp_styles.get(member), member in self.graph.tp_replicated
        dtype = torch_dtype(v.dtype)
        for index in itertools.product(*counts):
            owner_path, _, name = indexed_path(v.path, chain, index).rpartition(".")
            owner = self._module(owner_path, style, whole)
            if style is not None and name == "weight":
                self._member_of[(v.id, index)] = owner
            if dtype.itemsize == 1 and dtype.is_floating_point:  # float8: no randn of its own
                data = (torch.randn(shape) * init_std).to(dtype)
            elif dtype.is_floating_point:
                data = torch.randn(shape, dtype=dtype) * init_std
            else:
                data = torch.zeros(shape, dtype=dtype)
            if v.role is Role.PARAMETER:
                # frozen; an integer one (a packed 4-bit weight) is created frozen
                tensor = nn.Parameter(data, requires_grad=v.requires_grad)
                owner.register_parameter(name, tensor)
            else:
                owner.register_buffer(name, data)
                tensor = owner._buffers[name]
            self.state[(v.id, index)] = tensor
            self.owners[(v.id, index)] = (owner, name)

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

    @property
    def iteration(self) -> dict[int, int]:
        """Region id -> the repetition the running forward is in (empty between runs)."""
        return self._running.iteration if self._running is not None else {}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        run = TorchInterpreter(
            self.graph,
            self.plan,
            self.subs,
            _Live(self.owners) if self.units or self.tp_styles else self.state,
            self.on_op_start,
            self.on_op_end,
            self.checkpointed,
            self.segment_module,
            self.sac_aten,
            self.units,
        )
        run.members = self._member_of
        run.mesh = self.mesh
        run.on_checkpoint = self.on_checkpoint
        run.on_kept = self.on_kept
        run.keep_returned = self.keep_outputs
        run.explicit_casts = self.explicit_casts
        self._running = run
        try:
            if self.autocast is None:
                outputs = run.run(inputs)
            else:
                with torch.autocast("cpu", dtype=torch_dtype(self.autocast)):
                    outputs = run.run(inputs)
        finally:
            self._running = None
        if self.keep_outputs:
            self.returned = run.returned
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

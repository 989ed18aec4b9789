"""Runs one real training step of a spec's lowering and measures what PyTorch holds.

The step is `zero_grad(set_to_none=True)`, forward and loss, backward, optimizer step.
Activations are what `torch.autograd.graph.saved_tensors_hooks` sees during forward and
loss, each storage once, parameters and buffers excluded, attributed to the IR value
whose storage it is (an op's input or output) or to the op that created it (internal).
"""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp
import torch

from memspec.errors import UsageError
from memspec.ir.graph import Graph, OpApply
from memspec.ir.sizes import GENERAL
from memspec.lower.module import LoweredModel
from memspec.policies import Optimizer, read_optimizer
from memspec.recompute import checkpointed_ops, checkpointed_regions
from memspec.result import CompileResult
from memspec.scaler import STATE, LossScaler
from memspec.source import SourceFile
from memspec.syntax.imports import load_program

__all__ = [
    "Measurement",
    "SavedTensor",
    "activation_key",
    "lowered_model",
    "measure_step",
    "scaler_class",
]


@dataclass(frozen=True, slots=True)
class SavedTensor:
    """A storage torch's autograd saved in the measured step, first seen in `op`."""

    op: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int

    def describe(self) -> str:
        shape = "[" + ", ".join(map(str, self.shape)) + "]"
        return f"{shape} {self.dtype}, {self.bytes:,} B (saved in {self.op})"


@dataclass
class Measurement:
    """Elements per item of each category (activations in bytes), as measured."""

    parameters: dict[str, int] = field(default_factory=dict)
    buffers: dict[str, int] = field(default_factory=dict)
    gradients: dict[str, int] = field(default_factory=dict)
    optimizer_state: dict[str, int] = field(default_factory=dict)
    optimizer_scalars: dict[str, int] = field(default_factory=dict)
    activation_bytes: dict[str, int] = field(default_factory=dict)
    # each saved storage under its key, for the hints on a mismatch
    activation_tensors: dict[str, list[SavedTensor]] = field(default_factory=dict)
    loss: float = 0.0


def activation_key(graph: Graph, value_id: int, carried: bool = False) -> str:
    """The name an activation storage is compared under: its root value's path."""
    root = graph.value(graph.value(value_id).storage)
    return f"{root.path} (carried)" if carried else root.path


def internal_key(op: OpApply) -> str:
    return f"{op.path} [internal]"


# The constructor flag that picks each implementation in torch.optim's classes.
_FLAGS = {"for_loop": ("foreach", False), "foreach": ("foreach", True), "fused": ("fused", True)}


class OptimizerChain:
    """Optimizers stepped one after the other, each over its own parameters (Muon's
    matrices, then AdamW's rest), used as one."""

    def __init__(self, optimizers: list) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    @property
    def state(self) -> dict:
        return {p: s for optimizer in self.optimizers for p, s in optimizer.state.items()}

    @property
    def param_groups(self) -> list:
        return [g for optimizer in self.optimizers for g in optimizer.param_groups]


def _optimizer(policy: Optimizer | str, params, implementation: str = "for_loop"):
    """The optimizer a policy declares (`torch CLASS(ARGS)`), run the way
    `implementation` names; a name is looked up among the standard policies. A policy
    with `else OTHER` is a chain: each parameter goes to the optimizer that takes it."""
    if isinstance(policy, str):
        policy = standard_optimizer(policy)
    params = list(params)
    chain = policy.chain()
    if len(chain) == 1:
        return _one(policy, params, implementation)
    groups: dict[str, list] = {o.name: [] for o in chain}
    for p in params:
        shape = tuple(sp.Integer(n) for n in p.shape)
        groups[policy.owner(shape, GENERAL).name].append(p)
    return OptimizerChain(
        [_one(o, groups[o.name], implementation) for o in chain if groups[o.name]]
    )


def _one(policy: Optimizer, params: list, implementation: str):
    path, args = policy.torch_for(implementation)
    if path is None:
        raise UsageError(
            f"optimizer {policy.name} names no torch class: add `torch CLASS(ARGS)` to its "
            "declaration to verify it"
        )
    cls = _torch_class(policy.name, path)
    flag, value = _FLAGS[implementation]
    flags = {}
    if flag in inspect.signature(cls.__init__).parameters:
        flags[flag] = value
    elif implementation != "for_loop" and path == policy.torch_class:
        raise UsageError(
            f"optimizer {policy.name}: {cls.__name__} takes no {flag!r} argument, so it has "
            f"no {implementation} implementation (a class of its own is declared "
            f"`torch {implementation} CLASS(...)`)"
        )
    try:
        return cls(params, **dict(args), **flags)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UsageError(f"optimizer {policy.name}: {cls.__module__}.{cls.__name__}: {e}") from None


def _torch_class(name: str, path: str) -> type:
    """`torch.optim.PATH`, or `module:Class` from any importable module."""
    if ":" in path:
        module_name, class_name = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(f"optimizer {name}: cannot import {module_name} ({e})") from None
        cls, where = getattr(module, class_name, None), module_name
    else:
        cls, where = getattr(torch.optim, path, None), "torch.optim"
        class_name = path
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UsageError(f"optimizer {name}: {where} has no optimizer class {class_name!r}")
    return cls


def scaler_class(policy: LossScaler) -> type:
    """`torch.amp.GradScaler`, or a subclass of it from any importable module
    (`module:Class`): memspec's memory model is GradScaler's."""
    from torch.amp import GradScaler

    module_name, _, class_name = policy.torch_class.rpartition(":")
    try:
        module = importlib.import_module(module_name or "torch.amp")
    except ImportError as e:
        raise UsageError(f"loss scaler: cannot import {module_name} ({e})") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, GradScaler)):
        raise UsageError(
            f"loss scaler: {module.__name__} has no GradScaler class {class_name!r} "
            "(memspec models torch.amp.GradScaler and its subclasses)"
        )
    return cls


def standard_optimizer(name: str) -> Optimizer:
    """A policy of the standard library (`std/train.mspec`) by name."""
    program = load_program(SourceFile("<standard optimizers>", ""), None)
    if name not in program.optimizers:
        raise UsageError(f"no standard optimizer {name!r}")
    return read_optimizer(program.optimizers[name], program.optimizers)


class _SavedTracker:
    """Collects saved storages per op run and attributes them once the op has run."""

    def __init__(self, model: LoweredModel, excluded: set[int]):
        self.model = model
        self.graph = model.graph
        self.excluded = excluded
        self.pending: list[torch.Tensor] = []
        self.outputs: dict[int, str] = {}  # each output's storage -> its key, as made
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)
        self.tensors: dict[str, list[SavedTensor]] = defaultdict(list)
        # region input's storage -> (region, region output's storage)
        self.carried_inputs = {
            self.graph.value(i).storage: (r, self.graph.value(o).storage)
            for r, i, o in self.graph.carried
        }

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.pending.append(local(tensor))
        return tensor

    def op_start(self, op: OpApply) -> None:
        self.pending = []

    def checkpoint(self, region: int | None, vids: list[int], tensors: list) -> None:
        """A checkpoint (of a region's repetition, or None: of a segment) has saved the
        values its body reads from outside (torch keeps them in its frame instead of
        what the body's ops save)."""
        by_storage: dict[int, str] = {}
        for vid, tensor in zip(vids, tensors, strict=True):
            key = activation_key(self.graph, vid)
            carried = self.carried_inputs.get(self.graph.value(vid).storage)
            if carried is not None and self.model.iteration.get(carried[0], 0) > 0:
                key = activation_key(self.graph, carried[1], carried=True)
            by_storage.setdefault(local(tensor).untyped_storage().data_ptr(), key)
        where = "a segment" if region is None else self.graph.regions[region].path
        self._attribute(by_storage, f"checkpoint of {where}")

    def kept(self, tensors: list) -> None:
        """Selective checkpointing kept these outputs for the recomputation: memory held
        for backward as a saved tensor is, under the key of the value each one is."""
        self.pending = [local(t) for t in tensors]
        self._attribute(dict(self.outputs), "selective checkpointing")

    def op_end(self, op: OpApply, inputs: list, outputs: list, env: dict) -> None:
        by_storage: dict[int, str] = {}
        for vid, tensor in zip(op.outputs, outputs, strict=True):
            by_storage[local(tensor).untyped_storage().data_ptr()] = activation_key(self.graph, vid)
        self.outputs.update(by_storage)
        for vid, tensor in zip(op.inputs, inputs, strict=True):
            key = activation_key(self.graph, vid)
            carried = self.carried_inputs.get(self.graph.value(vid).storage)
            if carried is not None and self.model.iteration.get(carried[0], 0) > 0:
                # Repetition i > 0 reads repetition i - 1's output, not the region's input.
                key = activation_key(self.graph, carried[1], carried=True)
            by_storage.setdefault(local(tensor).untyped_storage().data_ptr(), key)
        self._attribute(by_storage, op.path, internal_key(op))

    def _attribute(self, by_storage: dict[int, str], where: str, internal: str = "") -> None:
        """Count each storage saved since the last attribution once, under its key."""
        for tensor in self.pending:
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in self.excluded or ptr in self.seen:
                continue
            self.seen.add(ptr)
            key = by_storage.get(ptr, internal or where)
            self.bytes[key] += storage.nbytes()
            dtype = str(tensor.dtype).removeprefix("torch.")
            self.tensors[key].append(
                SavedTensor(where, tuple(tensor.shape), dtype, storage.nbytes())
            )
        self.pending = []


def loss_of(out):
    """The loss the loop backpropagates: the model's scalar, or its output summed in
    float32."""
    return out if out.dim() == 0 else out.float().sum()


def training_step(
    model: LoweredModel,
    optimizer,
    *,
    run=None,
    set_to_none: bool = True,
    micro_batches: int = 1,
    scaler=None,
    between=None,
) -> None:
    """One step of the loop memspec models: zero_grad, then per micro-batch its batch
    (held by the loop until the next), the forward (through `run`: the model or a
    wrapper of it), the loss and backward (scaled by a loss `scaler`; `between` runs
    before each micro-batch after the first), then each optimizer of a chain stepped
    (by the scaler where there is one); the loop's outputs object goes with the step."""
    optimizer.zero_grad(set_to_none=set_to_none)
    for i in range(micro_batches):
        if i and between is not None:
            between()
        batch = model.make_inputs()  # held by the loop until the next batch
        out = (run or model)(*batch)
        loss = loss_of(out)
        (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        for member in getattr(optimizer, "optimizers", (optimizer,)):
            scaler.step(member)  # one scaler steps each optimizer in turn
        scaler.update()
    else:
        optimizer.step()
    model.returned = []


def lowered_model(
    result: CompileResult, explicit_casts: bool = True, units: bool = False
) -> LoweredModel:
    """The lowering of a result's step at its bindings, as its configuration runs it:
    the checkpoints its recomputation makes, under its autocast precision
    (`explicit_casts=False`: the casts left to torch.autocast inside the ops; `units`:
    each repetition of a top-level repeat a module call, for FSDP2)."""
    recompute = result.config.recompute
    model = LoweredModel(
        result.graph,
        result.substitutions(),
        checkpointed=checkpointed_regions(result.graph, recompute),
        segments=checkpointed_ops(result.graph, recompute),
        sac_aten=recompute.save,
        autocast=result.config.precision.autocast,
        units=units,
    )
    model.explicit_casts = explicit_casts
    return model


def local(tensor):
    """A DTensor's local tensor (one rank's shard), a collective's output once waited
    for (an AsyncCollectiveTensor: the tensor it wraps); any other tensor itself."""
    if hasattr(tensor, "trigger_wait"):
        return tensor.trigger_wait()
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def measure_step(
    result: CompileResult,
    seed: int = 0,
    explicit_casts: bool = True,
    prepare: Callable[[LoweredModel], None] | None = None,
) -> Measurement:
    """Build the lowering at the result's bindings and run one training step (under
    torch.autocast for an autocast precision; `explicit_casts=False` leaves its casts to
    torch.autocast inside the ops instead of running the graph's cast ops). `prepare`
    parallelizes the model before the optimizer is made (tensor parallelism): counts are
    then one rank's."""
    torch.manual_seed(seed)
    model = lowered_model(result, explicit_casts)
    if prepare is not None:
        prepare(model)
    optimizer = _optimizer(result.config.optimizer, model.parameters())
    inputs = model.make_inputs()
    measured = Measurement()
    for name, p in model.named_parameters():
        measured.parameters[name] = local(p).numel()
    for name, b in model.named_buffers():
        measured.buffers[name] = b.numel()
    excluded = {
        local(t).untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())
    }
    tracker = _SavedTracker(model, excluded)
    model.on_op_start, model.on_op_end = tracker.op_start, tracker.op_end
    model.on_checkpoint = tracker.checkpoint
    model.on_kept = tracker.kept
    optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t):
        out = model(*inputs)
        loss = loss_of(out)
    model.on_op_start = model.on_op_end = None
    policy = result.config.precision.scaler
    if policy is None:
        loss.backward()
        optimizer.step()
    else:
        scaler = _scaled_step(policy, model, optimizer, loss)
        for name, _dtype in STATE:  # the scaler's own state, beside the optimizer's
            measured.optimizer_state[f"scaler.{name}"] = getattr(scaler, name).numel()
    measured.loss = float(loss.detach())
    measured.activation_bytes = dict(tracker.bytes)
    measured.activation_tensors = dict(tracker.tensors)
    names = {id(p): n for n, p in model.named_parameters()}
    states = optimizer.state
    shared: set[int] = set()  # a state tensor held for every parameter counts once
    for p in model.parameters():
        if p.grad is not None:
            measured.gradients[f"{names[id(p)]}.grad"] = local(p.grad).numel()
        for key, state in states.get(p, {}).items():
            if not isinstance(state, torch.Tensor):  # bitsandbytes' step is an int
                continue
            state = local(state)
            if state.untyped_storage().data_ptr() in shared:
                continue
            shared.add(state.untyped_storage().data_ptr())
            scalar = key in result.config.optimizer.scalars
            target = measured.optimizer_scalars if scalar else measured.optimizer_state
            target[f"{names[id(p)]}.{key}"] = state.numel()
    return measured


# steps a loss scaler may skip (halving its scale each time) before one is taken
_SCALER_TRIES = 64


def _scaled_step(policy: LossScaler, model: LoweredModel, optimizer, loss):
    """The step with the loss scaled, stepping each optimizer of a chain in turn; until
    one is taken (the scaler skips a step whose gradients overflowed, which makes no
    optimizer state): the state measured is that of a step taken."""
    scaler = scaler_class(policy)("cpu", **dict(policy.torch_args))
    members = getattr(optimizer, "optimizers", (optimizer,))
    for _ in range(_SCALER_TRIES):
        scaler.scale(loss).backward()
        for member in members:
            scaler.step(member)
        skipped = any(
            found.item()
            for member in members
            for found in scaler._per_optimizer_states[id(member)]["found_inf_per_device"].values()
        )
        scaler.update()
        if not skipped:
            return scaler
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(*model.make_inputs()))
    raise UsageError(f"the loss scaler skipped {_SCALER_TRIES} steps in a row: no step was taken")

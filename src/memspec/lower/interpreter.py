"""The step interpreter read as PyTorch: each op runs through its registry lowering."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from memspec.ir.graph import Graph, OpApply, Region, RepetitionIndex, Value
from memspec.ir.interpreter import Index, Interpreter, Loop, Segment
from memspec.ir.schedule import Schedule
from memspec.lower.values import concrete
from memspec.ops import lookup
from memspec.ops.casts import CAST
from memspec.ops.outputs import RETURNED

__all__ = ["OpHook", "TorchInterpreter"]

# (op, input tensors, output tensors, the values bound now): what `memspec verify` watches
OpHook = Callable[[OpApply, list, list, dict], None]


class TorchInterpreter(Interpreter[torch.Tensor]):
    """Runs the forward on torch tensors at concrete sizes `subs`; `state` holds each
    parameter and buffer instance by (value id, index). `on_op_start(op)` and
    `on_op_end(op, inputs, outputs, env)` observe each op as it runs (in the forward,
    not when backward recomputes it). Each repetition of a region in `checkpointed`
    runs under `torch.utils.checkpoint(use_reentrant=False)`, as a call of the module
    `checkpointed[region]` (a layer, as users checkpoint them: trackers see the
    recomputation as that module's forward run again in backward)."""

    def run(self, inputs):
        # a checkpoint's recomputation keeps this interpreter alive until backward
        # reaches it; its bindings must not keep the forward's last values with it
        outputs = super().run(inputs)
        self.env = {}
        self.cached = []  # autocast's cache is cleared as the forward's context exits
        return outputs

    def __init__(
        self,
        graph: Graph,
        plan: Schedule,
        subs: dict,
        state: Mapping[tuple[int, Index], torch.Tensor],
        on_op_start: Callable[[OpApply], None] | None = None,
        on_op_end: OpHook | None = None,
        checkpointed: Mapping[int, torch.nn.Module] | None = None,
        segment_module: torch.nn.Module | None = None,
        sac_aten: tuple[str, ...] = (),
        units: Mapping[int, list[torch.nn.Module]] | None = None,
    ):
        super().__init__(graph, plan)
        # region -> the module each repetition runs as a call of (FSDP2's units)
        self.units = units or {}
        self.checkpointed = checkpointed or {}
        # the module each segment of the schedule runs in, under checkpoint; None: plain
        self.segment_module = segment_module
        # aten ops whose outputs each checkpoint keeps (selective activation checkpointing)
        self.sac_aten = sac_aten
        self.on_kept: Callable[[list], None] | None = None  # the tensors one kept
        self._inside = False  # running a checkpoint's body
        self._recomputing = False
        # (region, value ids, tensors) a checkpoint keeps, once it has saved them
        self.on_checkpoint: Callable[[int, list, list], None] | None = None
        self.subs = subs
        self.state = state
        self.on_op_start = on_op_start
        self.on_op_end = on_op_end
        self.iteration: dict[int, int] = {}  # region id -> the repetition running now
        # what the model returns beside the loss, held only when the loop keeps it: held
        # otherwise, it would outlive its last use inside the forward
        self.keep_returned = False
        self.returned: list[torch.Tensor] = []
        # autocast's casts: run as the graph's cast ops (explicit), or left to
        # torch.autocast inside the next op (False: each cast op passes its input on)
        self.explicit_casts = True
        self.cached: list[torch.Tensor] = []  # parameters' copies, held as autocast's cache
        # tensor parallelism: a planned member's module by (its weight's value, index),
        # whose linear or embedding runs as a call of it (parallelize_module's hooks),
        # and the tensor-parallel mesh the graph's collectives and a loss under
        # loss_parallel() run on
        self.members: Mapping[tuple[int, Index], torch.nn.Module] = {}
        self.mesh = None

    def repetitions(self, region: Region) -> int:
        return concrete(region.count, self.subs)

    def enter_region(self, region: Region, repetition: int) -> None:
        self.iteration[region.id] = repetition

    def exit_region(self, region: Region) -> None:
        del self.iteration[region.id]

    def repetition(self, region: Region, loop: Loop, index: Index) -> None:
        unit = self.units.get(region.id)
        if unit is None or self._inside:
            self._repetition(region, loop, index)
            return
        reads = self.schedule.loop_inputs[loop.number]
        bound = [v for v in reads if v in self.env]

        def body(*tensors: torch.Tensor) -> dict:
            # the repetition reads what the call passed (the hooks of the module may wrap
            # or cast its inputs) and returns what it made, for the hooks to see
            outer = self.env
            self.env = dict(zip(bound, tensors, strict=True))
            try:
                self._repetition(region, loop, index)
            finally:
                made, self.env = self.env, outer
            return {v: t for v, t in made.items() if v not in bound}

        self.env.update(unit[index[-1]](body, *(self.env[v] for v in bound)))

    def _repetition(self, region: Region, loop: Loop, index: Index) -> None:
        if region.id not in self.checkpointed or self._inside:
            self.run_body(loop, index)
            return
        reads = self.schedule.loop_inputs[loop.number]
        self._checkpoint(self.checkpointed[region.id], loop.body, reads, index, region.id)

    def segment(self, segment: Segment, index: Index) -> None:
        if self.segment_module is None or self._inside:
            self.run_items(segment.body, index)
            return
        reads = self.schedule.segment_inputs[segment.number]
        self._checkpoint(self.segment_module, segment.body, reads, index, None)

    def _checkpoint(self, layer, body_items: tuple, reads, index: Index, region) -> None:
        from torch.utils.checkpoint import checkpoint

        bound = [v for v in reads if v in self.env]
        iteration = dict(self.iteration)
        calls = []

        def body(*tensors: torch.Tensor) -> dict:
            # backward calls it again to recompute: on a scope of its own, as then
            saved = (self.env, self.iteration, self._recomputing, self.cached)
            self.env, self.iteration = dict(zip(bound, tensors, strict=True)), dict(iteration)
            self._inside, self._recomputing = True, bool(calls)
            if self._recomputing:
                # torch re-enters autocast for the recomputation: a cache of its own,
                # cleared as it stops (early) or ends
                self.cached = []
            if not calls and self.on_checkpoint:
                self.on_checkpoint(region, bound, list(tensors))
            calls.append(1)
            try:
                self.run_items(body_items, index)
            finally:
                made = self.env
                self.env, self.iteration, self._recomputing, self.cached = saved
                self._inside = False
            return {v: t for v, t in made.items() if v not in bound}

        modes: list = []  # the caching mode of selective checkpointing, once made
        options = {"context_fn": _sac_contexts(self.sac_aten, modes)} if self.sac_aten else {}
        made = checkpoint(
            layer, body, *(self.env[v] for v in bound), use_reentrant=False, **options
        )
        if modes and self.on_kept:
            # what the forward kept for the recomputation (each a detached alias)
            leaves = torch.utils._pytree.tree_leaves(dict(modes[0].storage))
            kept = [getattr(w, "val", None) for w in leaves]
            self.on_kept([t for t in kept if isinstance(t, torch.Tensor)])
        self.env.update(made)

    def parameter(self, value: Value, index: Index) -> torch.Tensor:
        return self.state[(value.id, index)]

    def run_op(self, op: OpApply, inputs: list, index: Index) -> list:
        attrs = {k: self._attr(v) for k, v in op.attrs}
        if self.on_op_start and not self._recomputing:
            self.on_op_start(op)
        if op.op == CAST and not self.explicit_casts:
            return list(inputs)
        member = None
        if self.members and op.op in ("linear", "embedding"):
            weight = self.graph.value(op.inputs[1])
            depth = len(self.graph.region_chain(weight.region))
            member = self.members.get((weight.id, index[:depth]))
        if member is not None:
            return [member(inputs[0])]
        if op.op == "parallel_log_softmax":
            inputs = self._loss_parallel(op, inputs)
        if op.op == "all_gather":
            return [self._all_gather(op, inputs[0])]
        if op.op == "sequence_scatter":
            return [self._scatter(op, inputs[0])]
        out = lookup(op.op).lower(tuple(inputs), attrs)
        return list(out) if isinstance(out, tuple) else [out]

    def _loss_parallel(self, op: OpApply, inputs: list) -> list:
        """The logits a loss_parallel LM head made, each rank's slice of the vocabulary,
        as the DTensor torch's loss_parallel() computes the log-softmax and loss of (a
        view: no memory)."""
        from torch.distributed.tensor import DTensor, Shard

        shard = self.graph.value(op.inputs[0]).shard
        if shard is None:
            return inputs
        logits = DTensor.from_local(inputs[0], self.mesh, [Shard(shard)], run_check=False)
        return [logits, *inputs[1:]]

    def _all_gather(self, op: OpApply, x):
        """Sequence parallelism's gather into the column-parallel members, as torch's
        PrepareModuleInput(input_layouts=Shard(s), desired_input_layouts=Replicate())
        makes it: the whole tensor on every rank, a DTensor the members take as it is
        (its backward reduce-scatters their partial gradients)."""
        from torch.distributed.tensor import DTensor, Replicate, Shard

        if not isinstance(x, DTensor):
            x = DTensor.from_local(x, self.mesh, [Shard(op.attr("dim"))], run_check=False)
        return x.redistribute(self.mesh, [Replicate()])

    def _scatter(self, op: OpApply, x):
        """Megatron's scatter into the sequence-parallel region: this rank's slice of
        the sequence, as DTensor's Replicate -> Shard makes it (a contiguous copy)."""
        from torch.distributed.tensor import DTensor, Replicate, Shard

        whole = DTensor.from_local(x, self.mesh, [Replicate()], run_check=False)
        return whole.redistribute(self.mesh, [Shard(op.attr("dim"))]).to_local()

    def op_done(self, op: OpApply, inputs: list, outputs: list) -> None:
        if op.op == CAST and self.explicit_casts and dict(op.attrs)["cached"]:
            self.cached.extend(outputs)
        if self._recomputing:
            return
        if op.op == RETURNED and self.keep_returned:
            self.returned.extend(outputs)
        if self.on_op_end:
            self.on_op_end(op, inputs, outputs, self.env)

    def _attr(self, value: object) -> object:
        """An attribute at the concrete sizes; a repetition index is the loop's current one."""
        if isinstance(value, RepetitionIndex):
            return self.iteration[value.region]
        return concrete(value, self.subs)


def _sac_contexts(names: tuple[str, ...], modes: list):
    """`context_fn` of PyTorch's selective activation checkpointing: the outputs of the
    aten ops `names` are saved (MUST_SAVE), everything else is recomputed. The forward's
    caching mode is appended to `modes`, so that its storage can be read."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    saved = {getattr(torch.ops.aten, name) for name in names}

    def policy(ctx, op, *args, **kwargs):
        if op.overloadpacket in saved:
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    def contexts():
        made = create_selective_checkpoint_contexts(policy)
        modes.append(made[0])
        return made

    return contexts

"""The step interpreter read as memory: the forward of one training step, block by block.

Each op's outputs get new blocks (a view shares its input's), each activation is freed
after its last reader unless an op saved it for backward, and a saved tensor is held by
the op's record until backward has passed it (`passes.peak.backward`). The batch is
made by the caller before the step and lives through all of it; so does what the model
returns beside the loss (`returned`) when the loop keeps the outputs object.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from memspec.ir.graph import Graph, OpApply, Region, Value
from memspec.ir.interpreter import Index, Interpreter, Loop, Segment
from memspec.ir.schedule import Schedule
from memspec.ir.types import DType, Role, numel
from memspec.ops import lookup
from memspec.ops.casts import CAST
from memspec.ops.outputs import RETURNED
from memspec.passes.peak.fsdp import FsdpRun
from memspec.passes.peak.ledger import Block, Ledger
from memspec.passes.peak.moments import Phase, Position, Side
from memspec.recompute import packs
from memspec.symbolic.polys import Poly

__all__ = ["SUM_MOMENT", "Entry", "ForwardReplay", "Frame", "Record", "differentiable", "packs"]

SUM_MOMENT = "out.float().sum()"  # a non-scalar output summed into the loss


@dataclass(frozen=True, slots=True)
class Entry:
    """A value's instance while the forward runs: the block it lives in (None for a
    parameter or buffer, which the replay does not follow) and a key naming the
    instance (a parameter's is `("param", value id, index)`)."""

    block: int | None
    key: object


@dataclass(slots=True)
class Record:
    """One op run in the forward: what backward needs to replay it. `frame`: the
    checkpoint it ran in (its number), whose recomputation fills `held` in backward."""

    op_id: int
    inputs: tuple[object, ...]  # instance keys
    outputs: tuple[object, ...]
    where: tuple[tuple[int, Position], ...]
    held: list[int] = field(default_factory=list)  # blocks its saved tensors keep alive
    saved: dict[str, int] = field(default_factory=dict)  # Saved label -> a block in held
    frame: int | None = None
    number: int = 0  # its place among the forward's records


@dataclass(slots=True)
class Frame:
    """One checkpoint (torch's `_CheckpointFrame`): a repetition of a checkpointed
    region, or a segment of selective recomputation. It holds the entries of the values
    its `body` reads from outside (`inputs`) until the last of its nodes that saved a
    tensor (`waiting`, record numbers) has run in backward."""

    number: int
    body: tuple
    index: Index
    running: tuple[tuple[int, int], ...]
    inputs: tuple[tuple[int, Entry], ...]
    records: list[int] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)
    # outputs selective activation checkpointing keeps for the recomputation, in order
    kept: list[int] = field(default_factory=list)
    recomputed: bool = False
    released: bool = False


def differentiable(graph: Graph, op: OpApply) -> bool:
    """Whether autograd records a node for `op`: an op it differentiates, with an input
    that requires grad."""
    return lookup(op.op).differentiable and any(graph.value(v).requires_grad for v in op.inputs)


def makes_leaf(graph: Graph, op: OpApply) -> bool:
    """Whether `op` makes a leaf that needs a gradient (`requires_grad_` on a tensor that
    needs none): the graph holds it, and backward leaves its gradient on it."""
    return lookup(op.op).leaf and not differentiable(graph, op)


class ForwardReplay(Interpreter[Entry]):
    """Runs the forward on `ledger`, `repetitions[region]` times per region loop;
    `measure` turns a byte count into a `Poly`. Each repetition of a region in
    `checkpointed` is a checkpoint (`Frame`): its ops save nothing; what they would
    save exists only while the op runs, and backward recomputes it
    (`passes.peak.recompute`)."""

    category = "activations"  # of what the ops make

    def __init__(
        self,
        graph: Graph,
        ledger: Ledger,
        repetitions: Mapping[int, int],
        measure: Callable[[sp.Expr], Poly],
        refuse: Callable[[str], Exception],
        keep_outputs: bool = False,
        checkpointed: frozenset[int] = frozenset(),
        plan: Schedule | None = None,
        sac: frozenset[int] = frozenset(),
    ):
        super().__init__(graph, plan)
        self.ledger = ledger
        self.measure = measure
        self.repetitions_of = repetitions
        self.refusal = refuse
        self.where: dict[int, Position] = {r.id: Side.BEFORE for r in graph.regions}
        self.records: list[Record] = []
        self.uses: dict[object, int] = {}  # parameter instance -> backward nodes using it
        self._keys = itertools.count()
        self.keep_outputs = keep_outputs
        self.kept: list[int] = []  # blocks the loop's outputs object holds to the step's end
        self.checkpointed = checkpointed
        self.frames: list[Frame] = []
        self._frame: Frame | None = None  # the checkpoint running now
        # what a checkpointed op saves, and an op's workspace, while it runs
        self._transient: list[int] = []
        self.sac = sac  # ops whose outputs a checkpoint keeps (selective checkpointing)
        self.cached: list[tuple[int, OpApply]] = []  # autocast's cached parameter copies
        self.released: list[Block] = []  # of those, the ones no op saved
        self.fsdp: FsdpRun | None = None  # FSDP2's gathers, where a rank's step is FSDP2's

    def size_of(self, vid: int, dtype: DType | None = None) -> Poly:
        v = self.graph.value(vid)
        return self.measure(numel(v.shape) * (dtype or v.dtype).itemsize)

    def step(self) -> Entry:
        """The forward of one step: the loss's instance, held by the caller's `loss`."""
        graph, ledger = self.graph, self.ledger
        batch = []
        for vid in graph.inputs:
            bid = ledger.alloc(self.size_of(vid), "activations", ())
            ledger.ref(bid)  # the caller's batch, alive through the step
            batch.append(Entry(bid, next(self._keys)))
        if self.fsdp is not None:  # the root's pre-forward gathers its parameters
            self.fsdp.root_forward(tuple(self.where.items()))
        loss = self.run(batch)[0]
        if self.fsdp is not None:
            self.fsdp.root_forward_done()
        ledger.ref(loss.block)  # the caller's `loss` outlives forward's locals
        self._exit_autocast()
        for entry in self.env.values():
            ledger.unref(entry.block)
        self.env = {}
        self._sum_output()
        return loss

    def _exit_autocast(self) -> None:
        """autocast's cache lets go of its parameter copies as the forward returns; those
        no op saved are freed then (`released`: what a repetition adds only while the
        forward runs)."""
        for bid, _op in self.cached:
            if not self.ledger.shared(bid):
                self.released.append(self.ledger.blocks[bid])
            self.ledger.unref(bid)
        self.cached = []

    def _sum_output(self) -> None:
        """A non-scalar output is summed into the loss as `out.float().sum()` (what
        `memspec verify` runs): a float32 copy unless it is float32 already, freed once
        the scalar is made (sum saves no input), and the scalar, held like the output."""
        vid = self.graph.outputs[0]
        out = self.graph.value(vid)
        if not out.shape:
            return
        ledger = self.ledger
        copy = None
        if out.dtype is not DType.float32:
            copy = ledger.alloc(self.size_of(vid, DType.float32), "activations", ())
        ledger.alloc(self.measure(sp.Integer(DType.float32.itemsize)), "activations", ())
        ledger.mark(Phase.FORWARD, SUM_MOMENT, tuple(self.where.items()))
        ledger.unref(copy)

    # -- the interpreter's events ----------------------------------------------------
    def repetitions(self, region: Region) -> int:
        return self.repetitions_of[region.id]

    def enter_region(self, region: Region, repetition: int) -> None:
        self.where[region.id] = repetition
        for r in self.graph.regions:  # a new repetition has not reached its nested regions
            if region.id in (c.id for c in self.graph.region_chain(r.id)[:-1]):
                self.where[r.id] = Side.BEFORE
        if self.fsdp is not None and region.id == self.fsdp.plan.region:
            label = f"[{region.path} {repetition + 1}]"
            self.fsdp.unit_forward(tuple(self.where.items()), label)

    def exit_region(self, region: Region) -> None:
        self.where[region.id] = Side.AFTER
        if self.fsdp is not None and region.id == self.fsdp.plan.region:
            self.fsdp.units_done()

    def repetition(self, region: Region, loop: Loop, index: Index) -> None:
        if region.id not in self.checkpointed or self._frame is not None:
            self.run_body(loop, index)
            return
        self._checkpoint(loop.body, self.schedule.loop_inputs[loop.number], index)

    def segment(self, segment: Segment, index: Index) -> None:
        if self._frame is not None:  # inside a checkpoint already: one frame holds all
            self.run_items(segment.body, index)
            return
        self._checkpoint(segment.body, self.schedule.segment_inputs[segment.number], index)

    def _checkpoint(self, body: tuple, reads: tuple[int, ...], index: Index) -> None:
        # the frame holds what the body reads from outside: torch's saved args and the
        # recompute function's keyword arguments
        inputs = tuple((vid, self.env[vid]) for vid in reads if vid in self.env)
        for _, entry in inputs:
            if entry.block is not None:
                self.ledger.ref(entry.block)
        self._frame = Frame(len(self.frames), body, index, self.running, inputs)
        self.frames.append(self._frame)
        try:
            self.run_items(body, index)
        finally:
            self._frame = None

    def parameter(self, value: Value, index: Index) -> Entry:
        return Entry(None, ("param", value.id, index))

    def write(self, vid: int, item: Entry) -> None:
        if item.block is not None:
            self.ledger.ref(item.block)
        old = self.env.get(vid)
        self.env[vid] = item
        if old is not None:
            self.ledger.unref(old.block)

    def discard(self, vid: int) -> None:
        old = self.env.pop(vid, None)
        if old is not None:
            self.ledger.unref(old.block)

    def retain(self, item: Entry) -> None:
        if item.block is not None:
            self.ledger.ref(item.block)

    def release(self, item: Entry) -> None:
        self.ledger.unref(item.block)

    def refuse(self, message: str) -> None:
        raise self.refusal(message)

    def run_op(self, op: OpApply, inputs: list[Entry], index: Index) -> list[Entry]:
        graph, ledger = self.graph, self.ledger
        outputs = []
        preallocated = lookup(op.op).preallocated
        for vid in op.outputs:
            v = graph.value(vid)
            if preallocated is not None and preallocated(op):  # counted from the start
                outputs.append(Entry(None, next(self._keys)))
            elif v.storage != vid:  # a view: the block of the input it views
                base = next(
                    (
                        e.block
                        for u, e in zip(op.inputs, inputs, strict=True)
                        if graph.value(u).storage == v.storage
                    ),
                    None,
                )
                if base is not None:
                    ledger.ref(base)
                outputs.append(Entry(base, next(self._keys)))
            else:
                bid = ledger.alloc(self.size_of(vid), self.category, self.running)
                outputs.append(Entry(bid, next(self._keys)))
        record = Record(
            op.id,
            tuple(e.key for e in inputs),
            tuple(e.key for e in outputs),
            tuple(self.where.items()),
            number=len(self.records),
        )
        if self._frame is not None:
            record.frame = self._frame.number
            self._frame.records.append(record.number)
            if packs(graph, op):
                self._frame.waiting.add(record.number)
            if op.id in self.sac:  # SAC's caching mode keeps a detached alias
                self._frame.kept += [ledger.ref(e.block) for e in outputs if e.block is not None]
        workspace = lookup(op.op).workspace
        if workspace is not None:  # alive at the op's moment, freed as it returns
            size = self.measure(workspace(op, graph))
            self._transient.append(ledger.alloc(size, self.category, self.running))
        if differentiable(graph, op):
            self._save(op, inputs, outputs, record)
        if makes_leaf(graph, op):
            # a leaf made here: its AccumulateGrad node holds it while the graph lives
            self.kept.append(ledger.ref(outputs[0].block))
        if op.op == RETURNED and self.keep_outputs and outputs[0].block is not None:
            self.kept.append(ledger.ref(outputs[0].block))
        if op.op == CAST and dict(op.attrs)["cached"]:
            # autocast's cache holds a parameter's copy until the forward returns
            self.cached.append((ledger.ref(outputs[0].block), op))
        self.records.append(record)
        return outputs

    def _save(self, op: OpApply, inputs: list[Entry], outputs: list[Entry], record: Record):
        """Count the op's uses of parameters, and hold what it saves for backward (in a
        checkpoint, only while the op runs: what it made to save is freed after it)."""
        graph = self.graph
        constant = lookup(op.op).constant_positions(len(op.inputs))  # no gradient: no use
        for position, (vid, entry) in enumerate(zip(op.inputs, inputs, strict=True)):
            if position in constant:
                continue
            if graph.value(vid).role is Role.PARAMETER:
                self.uses[entry.key] = self.uses.get(entry.key, 0) + 1
        entries = dict(zip((*op.inputs, *op.outputs), (*inputs, *outputs), strict=False))
        for saved in lookup(op.op).saved(op, graph):
            block = entries[saved.value].block if saved.in_ctx and saved.value in entries else None
            if block is not None:  # a ctx attribute: held to the step's end
                self.kept.append(self.ledger.ref(block))
        if record.frame is None:
            self.hold(op, inputs, outputs, record)
            return
        for saved in lookup(op.op).saved(op, graph):
            if saved.value is None:
                size = numel(saved.shape) * saved.dtype.itemsize * saved.count
                self._transient.append(
                    self.ledger.alloc(self.measure(size), self.category, self.running)
                )

    def hold(self, op: OpApply, inputs: list[Entry], outputs: list[Entry], record: Record):
        """Hold what `op` saves for backward in `record` (the saved tensors of `outputs`
        only where they are given)."""
        graph, ledger = self.graph, self.ledger
        entries = dict(zip(op.inputs, inputs, strict=True))
        if outputs:
            entries.update(zip(op.outputs, outputs, strict=True))
        for saved in lookup(op.op).saved(op, graph):
            if saved.value is None:
                size = numel(saved.shape) * saved.dtype.itemsize * saved.count
                bid = ledger.alloc(self.measure(size), self.category, self.running)
                record.held.append(bid)
                record.saved[saved.label] = bid
                continue
            if saved.value not in entries:
                continue  # an output the op has not made (a recomputation stopped first)
            bid = entries[saved.value].block
            if bid is not None and bid not in record.held:
                record.held.append(ledger.ref(bid))  # one reference per saving node
                record.saved[saved.label] = bid

    def op_done(self, op: OpApply, inputs: list[Entry], outputs: list[Entry]) -> None:
        for entry in outputs:
            self.ledger.unref(entry.block)  # the env holds them now; drop run_op's own
        self.ledger.mark(Phase.FORWARD, op.path, tuple(self.where.items()))
        for bid in self._transient:
            self.ledger.unref(bid)
        self._transient.clear()

"""Lifetimes: one training step replayed tensor by tensor, for the true peak.

The step is PyTorch's: forward, loss, backward, `optimizer.step()`. The forward replays
the lowering's own schedule (`lower/schedule.py`, what `memspec verify` runs): each
activation is freed after its last reader unless an op saved it for backward, and a
saved tensor lives until backward has passed every op that saved it. Backward walks the
ops in reverse, as autograd does for a chain: each input that requires grad gets a
gradient (a new tensor, or the output's gradient handed through, by the op's `grads`
rule), a second gradient for the same tensor is added into the first, parameter
gradients stay, and the outputs' gradients and the op's saved tensors are freed.
Memory is recorded at every op, after its allocations and before its frees: the only
moments it can peak.

Only what changes during the step is replayed: activations (every tensor made in the
forward, inputs included), temporaries (gradients of activations, made in backward)
and, when `zero_grad(set_to_none=True)` has freed them, parameter gradients.
Parameters, buffers and optimizer state are added by `passes.peak`.

A repeat region is replayed `min(count, 3)` times: its first, a middle and its last
repetition (a nested region so within each replayed repetition of the outer one). The
repetitions left out are added back at each point by `passes.peak` (see
`RegionShare`), which is exact because memory at a point of repetition k is affine in
k: a repetition before the point holds what it saved, one after it holds its parameter
gradients.

Op-internal workspace (buffers a kernel allocates and frees within one op) is not
modelled: its size is not part of any op's rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.types import DType, Role, numel
from memspec.lower.schedule import Loop, last_uses, schedule
from memspec.ops import lookup
from memspec.symbolic.polys import Poly, add_into, poly

__all__ = ["REPLAYED", "PeakUnavailable", "Point", "RegionShare", "Replay", "replay"]

REPLAYED = ("activations", "temporaries", "gradients")


class PeakUnavailable(Exception):
    """The spec has a structure the lifetime replay does not model."""


@dataclass(frozen=True, slots=True)
class Point:
    """Memory of the replayed categories just after one op allocated its results.

    `where` maps each replayed region to where the point lies relative to it: "before"
    or "after" its ops (in program order), or the repetition (0, 1, 2) it is in.
    """

    phase: str  # "forward", "backward" or "optimizer step"
    op_path: str
    where: tuple[tuple[int, object], ...]
    memory: tuple[tuple[str, Poly], ...]


@dataclass(frozen=True, slots=True)
class RegionShare:
    """What one middle repetition of a region adds at a point it is far from.

    `saved`: bytes it keeps from its forward until its backward (what it saved);
    `gradients`: parameter-gradient bytes it leaves once its backward is done. Both as
    replayed: a nested region's left-out repetitions are not in them.
    """

    region: int
    saved: Poly
    gradients: Poly


@dataclass(frozen=True)
class Replay:
    points: tuple[Point, ...]
    shares: tuple[RegionShare, ...]


@dataclass
class _Block:
    size: Poly
    category: str
    refs: int = 0
    born: tuple = ()  # ((region, repetition), ...) of the replayed regions it was made in


@dataclass
class _Record:
    """One op run in the forward: what backward needs to replay it."""

    op_id: int
    inputs: tuple[object, ...]  # instance keys
    outputs: tuple[object, ...]
    held: list[int] = field(default_factory=list)  # blocks its saved tensors keep alive
    where: tuple[tuple[int, object], ...] = ()
    index: tuple[int, ...] = ()


class _Replayer:
    def __init__(
        self,
        graph: Graph,
        repetitions: dict[int, int],
        grad_dtype: DType,
        grads_exist: bool,
        measure: Callable[[sp.Expr], Poly],
    ):
        self.graph = graph
        self.measure = measure
        self.repetitions = repetitions
        self.grad_dtype = grad_dtype
        self.grads_exist = grads_exist
        self.blocks: dict[int, _Block] = {}
        self.totals: dict[str, Poly] = {c: {} for c in REPLAYED}
        self.points: list[Point] = []
        self.freed = False  # whether a block was freed since the last moment recorded
        self.records: list[_Record] = []
        self.where: dict[int, object] = {r.id: "before" for r in graph.regions}
        self.born: tuple = ()
        self.param_grads: dict[object, int] = {}  # parameter instance -> its .grad
        self.param_uses: dict[object, int] = {}  # backward nodes still to give a gradient
        self.in_flight: dict[object, int] = {}
        self.finished: list[tuple[int, bool]] = []
        self._ids = itertools.count()
        self._keys = itertools.count()

    # -- blocks ------------------------------------------------------------------
    def alloc(self, size: Poly, category: str) -> int:
        bid = next(self._ids)
        self.blocks[bid] = _Block(size, category, 0, self.born)
        add_into(self.totals[category], size)
        return self.ref(bid)

    def ref(self, bid: int) -> int:
        self.blocks[bid].refs += 1
        return bid

    def unref(self, bid: int | None) -> None:
        if bid is None:
            return
        block = self.blocks[bid]
        block.refs -= 1
        if block.refs == 0:
            add_into(self.totals[block.category], block.size, -1)
            del self.blocks[bid]
            self.freed = True

    def _ancestors(self, region_id: int) -> list[int]:
        return [r.id for r in self.graph.region_chain(region_id)[:-1]]

    def recategorize(self, bid: int, category: str) -> None:
        block = self.blocks[bid]
        add_into(self.totals[block.category], block.size, -1)
        block.category = category
        add_into(self.totals[category], block.size)

    def size_of(self, vid: int, dtype: DType | None = None) -> Poly:
        v = self.graph.value(vid)
        return self.measure(numel(v.shape) * (dtype or v.dtype).itemsize)

    def mark(self, phase: str, op_path: str) -> None:
        where = tuple(self.where.items())
        point = Point(phase, op_path, where, tuple((c, dict(t)) for c, t in self.totals.items()))
        previous = self.points[-1] if self.points else None
        if previous is not None and not self.freed and previous.where == where:
            # nothing freed since the previous moment in the same repetitions: this one
            # holds all of it and more, so that one cannot be the peak
            self.points[-1] = point
        else:
            self.points.append(point)
        self.freed = False

    # -- forward -----------------------------------------------------------------
    def forward(self) -> object:
        graph = self.graph
        plan = schedule(graph)
        self.drop_after_op, self.drop_after_loop = last_uses(graph, plan)
        # env: value id -> (block or None, instance key), as LoweredModel's env
        self.env: dict[int, tuple[int | None, object]] = {}
        for vid in graph.inputs:
            # the batch: made by the caller before the step, alive through all of it
            bid = self.alloc(self.size_of(vid), "activations")
            self.ref(bid)
            self.env[vid] = (bid, next(self._keys))
        self._run(plan, ())
        (out,) = graph.outputs if len(graph.outputs) == 1 else (graph.outputs[0],)
        loss = self.env[out]
        self.ref(loss[0])  # the caller's `loss` outlives forward's locals
        for bid, _ in self.env.values():
            self.unref(bid)
        self.env = {}
        return loss

    def _run(self, plan: list, index: tuple[int, ...]) -> None:
        for item in plan:
            if isinstance(item, Loop):
                self._loop(item, index)
            else:
                self._op(item, index)

    def _set(self, vid: int, entry: tuple[int | None, object]) -> None:
        if entry[0] is not None:
            self.ref(entry[0])
        old = self.env.get(vid)
        self.env[vid] = entry
        if old is not None:
            self.unref(old[0])

    def _drop(self, vid: int) -> None:
        old = self.env.pop(vid, None)
        if old is not None:
            self.unref(old[0])

    def _loop(self, loop: Loop, index: tuple[int, ...]) -> None:
        region = loop.region
        carried = [(i, o) for r, i, o in self.graph.carried if r == region]
        if len(carried) > 1:
            raise PeakUnavailable(
                f"the repeated layer {self.graph.regions[region].path} is called more than "
                "once, which the replay does not model"
            )
        saved_input = self.env.get(carried[0][0]) if carried else None
        if saved_input is not None and saved_input[0] is not None:
            self.ref(saved_input[0])  # the loop's own reference to its first input
        outer_born = self.born
        inner = [r.id for r in self.graph.regions if region in self._ancestors(r.id)]
        for i in range(self.repetitions[region]):
            self.where[region] = i
            for r in inner:  # a new repetition has not reached its nested regions yet
                self.where[r] = "before"
            self.born = (*outer_born, (region, i))
            if carried and i > 0:
                self._set(carried[0][0], self.env[carried[0][1]])
            self._run(loop.body, (*index, i))
        self.where[region] = "after"
        self.born = outer_born
        if carried and saved_input is not None:
            self._set(carried[0][0], saved_input)
            self.unref(saved_input[0])
        for vid in self.drop_after_loop.get(id(loop), ()):
            self._drop(vid)

    def _instance(self, vid: int, index: tuple[int, ...]) -> tuple[int | None, object]:
        v = self.graph.value(vid)
        if v.role in (Role.PARAMETER, Role.BUFFER):
            depth = len(self.graph.region_chain(v.region))
            return None, ("param", vid, index[:depth])
        return self.env[vid]

    def _op(self, op_id: int, index: tuple[int, ...]) -> None:
        graph = self.graph
        op = graph.ops[op_id]
        ins = [self._instance(vid, index) for vid in op.inputs]
        differentiable = lookup(op.op).differentiable and any(
            graph.value(v).requires_grad for v in op.inputs
        )
        outs = []
        for vid in op.outputs:
            v = graph.value(vid)
            if v.storage != vid:  # a view: the block of the input it views
                base = next(
                    (
                        e[0]
                        for u, e in zip(op.inputs, ins, strict=True)
                        if graph.value(u).storage == v.storage
                    ),
                    None,
                )
                entry = (base, next(self._keys))
                if base is not None:
                    self.ref(base)
            else:
                entry = (self.alloc(self.size_of(vid), "activations"), next(self._keys))
            outs.append((vid, entry))
        record = _Record(
            op_id,
            tuple(e[1] for e in ins),
            tuple(e[1] for _, e in outs),
            where=tuple(self.where.items()),
            index=index,
        )
        for vid, (_, key) in zip(op.inputs, ins, strict=True):
            if differentiable and graph.value(vid).role is Role.PARAMETER:
                self.param_uses[key] = self.param_uses.get(key, 0) + 1
        entries = dict(zip(op.inputs, ins, strict=True))
        entries.update(outs)
        if differentiable:
            for saved in lookup(op.op).saved(op, graph):
                if saved.value is None:
                    size = numel(saved.shape) * saved.dtype.itemsize * saved.count
                    record.held.append(self.alloc(self.measure(size), "activations"))
                    continue
                bid = entries[saved.value][0]
                if bid is not None and bid not in record.held:
                    record.held.append(self.ref(bid))  # one reference per saving node
        self.records.append(record)
        for vid, entry in outs:
            self._set(vid, entry)
            self.unref(entry[0])  # _set took the env's reference; drop alloc's
        self.mark("forward", op.path)
        for vid in self.drop_after_op.get(op_id, ()):
            self._drop(vid)

    # -- backward ----------------------------------------------------------------
    def backward(self, loss: tuple[int | None, object]) -> None:
        graph = self.graph
        adjoint: dict[object, int] = {}
        loss_value = graph.value(graph.outputs[0])
        # backward()'s grad_tensors (ones like the loss) are made before the engine runs,
        # so they are no gradient of backward's, and live until it returns
        seed = self.alloc(self.measure(loss_value.dtype.itemsize), "activations")
        adjoint[loss[1]] = self.ref(seed)
        for record in reversed(self.records):
            op = graph.ops[record.op_id]
            self.where.update(record.where)
            grads_out = [adjoint.get(k) for k in record.outputs]
            differentiable = lookup(op.op).differentiable and any(
                graph.value(v).requires_grad for v in op.inputs
            )
            if not differentiable or all(g is None for g in grads_out):
                continue
            kinds = lookup(op.op).gradient_kinds(op, graph)
            transient: list[int] = []
            for vid, key, kind in zip(op.inputs, record.inputs, kinds, strict=True):
                v = graph.value(vid)
                if not v.requires_grad:
                    continue
                if v.role is Role.PARAMETER:
                    self._param_grad(vid, key, record, transient)
                    continue
                if kind == "through":
                    if grads_out[0] is None:
                        continue
                    grad = self.ref(grads_out[0])
                else:
                    grad = self.alloc(self.size_of(vid), "temporaries")
                old = adjoint.get(key)
                if old is None:
                    adjoint[key] = grad
                elif self.blocks[old].refs == 1:
                    transient.append(grad)  # added in place into the existing gradient
                else:
                    # shared with another tensor's gradient: old + new, out of place
                    adjoint[key] = self.alloc(self.size_of(vid), "temporaries")
                    transient += [grad, old]
            rule = lookup(op.op).backward_temporaries
            if rule is not None:
                transient.append(self.alloc(self.measure(rule(op, graph)), "temporaries"))
            self.mark("backward", op.path)
            for bid, kept in self.finished:
                if kept:
                    self.recategorize(bid, "gradients")
                else:
                    self.unref(bid)
            self.finished.clear()
            for bid in transient:
                self.unref(bid)
            for key in record.outputs:
                self.unref(adjoint.pop(key, None))
            for bid in record.held:
                self.unref(bid)
            record.held.clear()
        # autograd frees the rest of the graph (nodes backward never reached)
        for record in self.records:
            for bid in record.held:
                self.unref(bid)
        for bid in adjoint.values():
            self.unref(bid)
        self.unref(seed)
        self.where = {r.id: "before" for r in graph.regions}

    def _param_grad(self, vid: int, key: object, record: _Record, transient: list) -> None:
        """A parameter's gradient from one op. Autograd sums the gradients of a parameter
        used by several ops (tied weights) in its AccumulateGrad node's input buffer, and
        that node runs once, after the last of them: until then the sum is a gradient
        in flight (what PyTorch's memory tracker reports as well), then it becomes the
        parameter's .grad, or is added into the .grad that already exists."""
        size = self.size_of(vid, self.grad_dtype)
        v = self.graph.value(vid)
        chain = self.graph.region_chain(v.region)
        born = tuple((r.id, i) for r, i in zip(chain, key[2], strict=True))
        outer, self.born = self.born, born
        grad = self.alloc(size, "temporaries")
        self.born = outer
        pending = self.in_flight.get(key)
        if pending is None:
            self.in_flight[key] = grad
        else:
            transient.append(grad)  # added in place into the input buffer
        self.param_uses[key] -= 1
        if self.param_uses[key] == 0:
            grad = self.in_flight.pop(key)
            if self.grads_exist:
                self.finished.append((grad, False))  # added into .grad, then freed
            else:
                self.param_grads[key] = grad  # set_to_none: it becomes .grad
                self.finished.append((grad, True))


def replay(
    graph: Graph,
    repetitions: dict[int, int],
    grad_dtype: DType,
    grads_exist: bool,
    measure: Callable[[sp.Expr], Poly] = poly,
) -> Replay:
    """Replay forward and backward; `repetitions[region]` is how many times to run each,
    `measure` turns a byte count into a `Poly` (substituting dims' defaults).

    `grads_exist`: parameter gradients exist before backward (zero_grad without
    set_to_none, or a later micro-batch of gradient accumulation); backward then adds
    into them, and they are counted by the caller, not here.
    """
    r = _Replayer(graph, repetitions, grad_dtype, grads_exist, measure)
    loss = r.forward()
    alive = [b for b in r.blocks.values() if b.category == "activations"]
    r.backward(loss)
    r.where = {region.id: "after" for region in graph.regions}
    r.mark("optimizer step", "")
    shares = []
    for region in graph.regions:
        if repetitions[region.id] < 3:
            continue
        # one middle repetition, inside the middle repetition of each enclosing region
        path = tuple((c.id, 1) for c in graph.region_chain(region.id))
        saved: Poly = {}
        for block in alive:
            if block.born[: len(path)] == path:
                add_into(saved, block.size)
        grads: Poly = {}
        for bid in r.param_grads.values():
            block = r.blocks[bid]
            if block.born[: len(path)] == path:
                add_into(grads, block.size)
        shares.append(RegionShare(region.id, saved, grads))
    return Replay(tuple(r.points), tuple(shares))

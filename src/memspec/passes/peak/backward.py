"""Backward, replayed from the forward's records in reverse, as autograd runs a chain.

Each input that requires grad gets a gradient: a new tensor, or the output's gradient
handed through, by the op's `grads` rule; either may be a view (`Grad`). A second
gradient for the same tensor is added into the first: in place when nothing else holds
it and it is no view, else out of place. A parameter's gradient is in flight until the
last op using it has given its part (tied weights), then it becomes `.grad` (the very
tensor handed on, a view of a larger gradient included, where AccumulateGrad keeps it)
or is added into the `.grad` that exists. After each op its outputs' gradients, its own
temporaries and what it saved are freed.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.types import DType, Role, numel
from memspec.ops import lookup
from memspec.ops.registry import BackwardMoment, Grad
from memspec.passes.parameters import gradient_shape
from memspec.passes.peak.forward import (
    Entry,
    ForwardReplay,
    Frame,
    Record,
    differentiable,
    makes_leaf,
)
from memspec.passes.peak.ledger import Born
from memspec.passes.peak.moments import Phase, Side
from memspec.passes.peak.recompute import recompute
from memspec.symbolic.polys import Poly, add_into

__all__ = ["BackwardReplay"]

# kinds that hand on (a view of) the output's gradient: no new memory
_HANDED = (Grad.THROUGH, Grad.THROUGH_VIEW, Grad.PART, Grad.PART_STRIDED)
_PARTS = {Grad.PART: True, Grad.PART_STRIDED: False}


class BackwardReplay:
    """`grads_exist`: parameter gradients exist before backward (zero_grad without
    set_to_none, or a later micro-batch of gradient accumulation); backward adds into
    them, and they are counted by the caller, not here. `param_grads` ends holding the
    block of each `.grad` that backward made."""

    def __init__(
        self,
        forward: ForwardReplay,
        grad_dtype: Callable[[DType], DType],  # a parameter's dtype -> its gradient's
        grads_exist: bool,
        sums_in_place: bool = True,
    ):
        self.forward = forward
        self.graph: Graph = forward.graph
        self.ledger = forward.ledger
        self.grad_dtype = grad_dtype
        self.grads_exist = grads_exist
        self.sums_in_place = sums_in_place
        self.adjoint: dict[object, int] = {}  # instance key -> the block of its gradient
        self.in_flight: dict[object, int] = {}  # parameter instance -> its summed gradient
        self.param_grads: dict[object, int] = {}
        self.uses = dict(forward.uses)  # backward nodes still to give a parameter gradient
        self.views: set[int] = set()  # gradient blocks handed on as views (Grad.VIEW)
        # gradients that are views of another's -> None, or for a narrowed view whether
        # its strides are its tensor's own
        self.parts: dict[object, bool | None] = {}
        # parameter -> bytes beyond its size of the storage its view of a gradient keeps
        self.stolen: dict[object, Poly] = {}
        # (where born, bytes beyond the parameter's) of each `.grad` that is a view of a
        # larger gradient: it keeps that storage until zero_grad(set_to_none=True)
        self.beyond: list[tuple[Born, Poly]] = []

    def run(self, loss: Entry, scaled: bool = False) -> None:
        """Backward from the loss; `scaled`: from a loss scaler's product of it."""
        graph, ledger = self.graph, self.ledger
        after = tuple((r.id, Side.AFTER) for r in graph.regions)
        # backward()'s grad_tensors (ones like the loss) are made before the engine runs,
        # so they are no gradient of backward's, and live until it returns
        out = graph.value(graph.outputs[0])
        itemsize = DType.float32.itemsize if out.shape else out.dtype.itemsize
        seed = ledger.alloc(self.forward.measure(sp.Integer(itemsize)), "activations", ())
        grad = ledger.ref(seed)
        if scaled:
            # the product's backward multiplies the seed by the scale: the loss's gradient
            ledger.unref(grad)
            grad = ledger.alloc(self.forward.measure(sp.Integer(itemsize)), "temporaries", ())
            ledger.mark(Phase.BACKWARD, "scaler.scale(loss)", after)
        if not out.shape or out.dtype is DType.float32:
            # a scalar's gradient is the loss's; sum's backward expands it, a view
            self.adjoint[loss.key] = grad
        else:
            # `.float()`'s backward casts the expanded gradient back to out's dtype: new
            # storage; the expanded one goes as it returns
            size = self.forward.size_of(out.id)
            self.adjoint[loss.key] = ledger.alloc(size, "temporaries", ())
            ledger.mark(Phase.BACKWARD, "out.float()", after)
            ledger.unref(grad)
        fsdp = self.forward.fsdp
        if fsdp is not None:  # the root's pre-backward prefetches the last unit
            fsdp.prefetch(after)
        position, where = Side.AFTER, after
        for record in reversed(self.forward.records):
            if fsdp is not None:
                position, where = fsdp.moves(
                    self.graph, self.param_grads, position, where, record.where
                )
            self._op(record)
        if fsdp is not None:
            before = tuple((r.id, Side.BEFORE) for r in graph.regions)
            fsdp.moves(graph, self.param_grads, position, where, before)
            fsdp.root_backward(self.param_grads, before)
        # autograd frees the rest of the graph (nodes backward never reached)
        for record in self.forward.records:
            for bid in record.held:
                ledger.unref(bid)
        for frame in self.forward.frames:
            self._release(frame)
        for bid in self.adjoint.values():
            ledger.unref(bid)
        ledger.unref(seed)

    def _op(self, record: Record) -> None:
        graph, ledger = self.graph, self.ledger
        op = graph.ops[record.op_id]
        grads_out = [self.adjoint.get(k) for k in record.outputs]
        if makes_leaf(graph, op):
            # AccumulateGrad keeps the leaf's gradient (`.grad`) as it comes (the engine's
            # sum, which nothing else holds): until the graph is freed, with the leaf
            self.forward.kept += [self.adjoint.pop(k) for k in record.outputs if k in self.adjoint]
            return
        if not differentiable(graph, op) or all(g is None for g in grads_out):
            return
        if record.frame is not None:
            frame = self.forward.frames[record.frame]
            if not frame.recomputed and record.number in frame.waiting:
                recompute(self.forward, frame)  # the first unpack of a saved tensor
        kinds = lookup(op.op).gradient_kinds(op, graph)
        if grads_out[0] is not None:
            # the engine's validate_outputs casts a gradient handed on to an input of
            # another dtype (bfloat16 + float32 -> float32: add's bfloat16 input) into
            # that input's dtype: a new tensor
            dtype = graph.value(op.outputs[0]).dtype
            kinds = tuple(
                Grad.NEW if k in _HANDED and graph.value(v).dtype != dtype else k
                for v, k in zip(op.inputs, kinds, strict=True)
            )
        moments = lookup(op.op).backward_moments
        # the same tensor handed to two inputs (add's): AccumulateGrad must copy it
        shared = sum(
            k is Grad.THROUGH and graph.value(v).requires_grad
            for v, k in zip(op.inputs, kinds, strict=True)
        )
        # (buffer, key, gradient, the tensor's bytes) added after it
        sums: list[tuple[dict, object, int, Poly]] = []
        finished: list[object] = []  # parameters whose last gradient this op gives
        # in a checkpoint the node's saved tensors are the recomputation's, which its
        # apply holds alone: they go when it returns, before the engine sums a gradient
        # to its input's shape (addmm's bias: validate_outputs' sum_to)
        summed = lookup(op.op).summed_inputs(op) if record.frame is not None else ()
        later = []

        def give(vid: int, key: object, kind: Grad) -> None:
            v = graph.value(vid)
            if not v.requires_grad or kind is Grad.NONE:
                return
            handed = kind in _HANDED and grads_out[0] is not None
            view, part = self._view(kind, record.outputs[0])
            if v.role is Role.PARAMETER:
                chain = graph.region_chain(v.region)
                born = tuple((r.id, i) for r, i in zip(chain, key[2], strict=True))
                size = self.grad_size(v)
                # AccumulateGrad keeps a tensor that nothing else holds, in its layout:
                # a view handed to it alone; the output's gradient itself only where no
                # other input or earlier gradient holds it
                alone = kind is not Grad.THROUGH or shared < 2
                first = key not in self.in_flight
                if handed and not first:  # added into the first (tied weights)
                    grad = ledger.ref(grads_out[0])
                elif (
                    handed
                    and alone
                    and part is not False
                    and (view or not ledger.shared(grads_out[0]))
                ):
                    grad = self._kept(key, ledger.ref(grads_out[0]), size, born, part)
                    if view:
                        self.parts[key] = part
                else:
                    grad = ledger.alloc(size, "temporaries", born)
                if kind is Grad.VIEW:
                    self.views.add(grad)
                self.uses[key] -= 1
                if self.uses[key] == 0:
                    finished.append(key)
                buffer = self.in_flight
            elif handed:
                grad, buffer = ledger.ref(grads_out[0]), self.adjoint
                if view and key not in buffer:
                    self.parts[key] = part
            elif kind in _HANDED:
                return
            else:
                grad = ledger.alloc(self.forward.size_of(vid), "temporaries", ())
                if kind is Grad.VIEW:
                    self.views.add(grad)
                buffer = self.adjoint
            if key in buffer:
                size = self.grad_size(v) if v.role is Role.PARAMETER else self.forward.size_of(vid)
                sums.append((buffer, key, grad, size))
            else:
                buffer[key] = grad

        given: set[int] = set()  # inputs whose gradients the op's moments gave

        def give_now(position: int) -> None:
            given.add(position)
            give(op.inputs[position], record.inputs[position], kinds[position])
            self._settle(sums, finished, op.path, record.where)

        if moments is not None:
            self._moments(moments(op, graph, self.sums_in_place), record, give_now)
        for position, (vid, key, kind) in enumerate(
            zip(op.inputs, record.inputs, kinds, strict=True)
        ):
            if position in given:
                continue
            if position in summed:
                later.append((vid, key, kind))
            else:
                give(vid, key, kind)
        if moments is None:  # one kernel: its inputs' gradients beside what it saved
            ledger.mark(Phase.BACKWARD, op.path, record.where)
        if later:
            self._unhold(record)
            for vid, key, kind in later:
                give(vid, key, kind)
            ledger.mark(Phase.BACKWARD, op.path, record.where)
        # the node returns: its outputs' gradients and what it saved go
        for key in record.outputs:
            ledger.unref(self.adjoint.pop(key, None))
        self._unhold(record)
        self._settle(sums, finished, op.path, record.where)

    def _settle(self, sums: list, finished: list, path: str, where) -> None:
        """The engine adds each gradient given into the one its tensor already has, and
        AccumulateGrad takes each parameter's whose last part it was."""
        for buffer, key, grad, size in sums:
            self._add(buffer, key, grad, size, path, where)
        for key in finished:
            self._accumulate_grad(key)
        sums.clear()
        finished.clear()

    def _unhold(self, record: Record) -> None:
        """The node's saved tensors go; in a checkpoint, the frame with its last one."""
        for bid in record.held:
            self.ledger.unref(bid)
        record.held.clear()
        if record.frame is not None:
            frame = self.forward.frames[record.frame]
            frame.waiting.discard(record.number)
            if not frame.waiting:
                self._release(frame)

    def _release(self, frame: Frame) -> None:
        """A checkpoint's last node holding a saved-tensor placeholder is gone, and with
        it the frame and the inputs it kept."""
        if not frame.released:
            for _, entry in frame.inputs:
                self.ledger.unref(entry.block)
            for bid in frame.kept:  # kept outputs the recomputation never reached
                self.ledger.unref(bid)
            frame.kept.clear()
            frame.released = True

    def _moments(
        self, moments: tuple[BackwardMoment, ...], record: Record, give: Callable[[int], None]
    ) -> None:
        """A composite op's backward, moment by moment, before its inputs' gradients are
        complete (those no moment gives are made after, without a moment of their own):
        its temporaries then, less what it saved and its output's gradient as far as
        freed by then; at a moment that gives inputs' gradients, `give` hands each on."""
        ledger, op = self.ledger, self.graph.ops[record.op_id]
        freed: dict[str, sp.Expr] = {}
        for moment in moments:
            for label, size in moment.freed:
                step = sp.expand(size - freed.get(label, 0))
                if step != 0:
                    self._shrink(record, label, self.forward.measure(step))
                    freed[label] = size
            for label in moment.dropped:
                if label in record.saved:
                    bid = record.saved.pop(label)
                    record.held.remove(bid)
                    ledger.unref(bid)
            if moment.output_grad_dropped:
                for key in record.outputs:
                    ledger.unref(self.adjoint.pop(key, None))
            block = ledger.alloc(self.forward.measure(moment.temporaries), "temporaries", ())
            for position in moment.given:
                give(position)
            if not moment.given:
                ledger.mark(Phase.BACKWARD, op.path, record.where)
            ledger.unref(block)

    def _shrink(self, record: Record, label: str, size: Poly) -> None:
        """Part of a saved block that holds several tensors is freed: a new, smaller block
        replaces it (the forward's blocks keep their sizes, which the repeats read)."""
        ledger, old = self.ledger, record.saved[label]
        block = ledger.blocks[old]
        remaining = dict(block.size)
        add_into(remaining, size, -1)
        new = ledger.alloc(remaining, block.category, block.born)
        record.held[record.held.index(old)] = new
        record.saved[label] = new
        ledger.unref(old)

    def _add(self, buffer: dict, key: object, grad: int, size: Poly, path: str, where) -> None:
        """Autograd's InputBuffer: a second gradient for the same tensor is added into the
        first in place when the engine holds the only reference to it, else old + new
        is a new tensor, and both are freed after it. Under a TorchDispatchMode (PyTorch's
        memory tracker is one) every tensor counts as a subclass and every sum is out of
        place: `sums_in_place=False` replays that. A first gradient that is a view (its
        base alive with it) is never summed into in place, nor is the second one used
        instead (torch 2.13). The sum is a tensor of the gradient's own `size`, also
        where the first was a narrowed part of a larger gradient (cat's)."""
        ledger, old = self.ledger, buffer[key]
        view = old in self.views or key in self.parts
        if self.sums_in_place and not ledger.shared(old) and not view:
            ledger.unref(grad)
            return
        buffer[key] = ledger.alloc(size, "temporaries", ledger.blocks[old].born)
        self.parts.pop(key, None)  # the sum is a tensor of its own
        self.stolen.pop(key, None)
        ledger.mark(Phase.BACKWARD, path, where)
        ledger.unref(old)
        ledger.unref(grad)

    def grad_size(self, v) -> Poly:
        """A parameter's gradient's bytes (a vocab-parallel table's is whole)."""
        shape = gradient_shape(self.forward.graph, v)
        return self.forward.measure(numel(shape) * self.grad_dtype(v.dtype).itemsize)

    def _view(self, kind: Grad, output: object) -> tuple[bool, bool | None]:
        """(whether an input's gradient handed on by `kind` is a view of the output's
        gradient, and if it is a narrowed one, whether its strides are the input's own):
        handed on as it is, the output's gradient stays what it was."""
        if kind in _PARTS:
            return True, _PARTS[kind]
        if kind in (Grad.THROUGH, Grad.THROUGH_VIEW):
            return kind is Grad.THROUGH_VIEW or output in self.parts, self.parts.get(output)
        return False, None

    def _kept(self, key: object, grad: int, size: Poly, born: Born, part: bool | None) -> int:
        """AccumulateGrad keeps the gradient it is handed as `.grad`, without a copy, when
        nothing else holds that tensor and its strides are the parameter's on every dim
        of size > 1 (torch's gradient layout contract): a narrowed view keeps the whole
        storage of the gradient it is part of."""
        block = self.ledger.blocks[grad]
        block.born = born  # it is the parameter's gradient now, where the parameter is
        if part:
            beyond = dict(block.size)
            add_into(beyond, size, -1)
            self.stolen[key] = beyond
        return grad

    def _accumulate_grad(self, key: object) -> None:
        """A parameter's summed gradient, once its last user has given its part (tied
        weights are used by several ops, summed in the AccumulateGrad node's input
        buffer): it becomes the parameter's .grad, or is added into the .grad that
        exists and freed."""
        grad = self.in_flight.pop(key)
        if key in self.stolen:
            self.beyond.append((self.ledger.blocks[grad].born, self.stolen.pop(key)))
        if self.grads_exist:
            self.ledger.unref(grad)
        else:
            self.param_grads[key] = grad  # set_to_none: it becomes .grad
            self.ledger.recategorize(grad, "gradients")

"""Backward, replayed from the forward's records in reverse, as autograd runs a chain.

Each input that requires grad gets a gradient: a new tensor, or the output's gradient
handed through, by the op's `grads` rule. A second gradient for the same tensor is added
into the first (in place when nothing else holds it). A parameter's gradient is in
flight until the last op using it has given its part (tied weights), then it becomes
`.grad` or is added into the `.grad` that exists. After each op its outputs' gradients,
its own temporaries and what it saved are freed.
"""

from __future__ import annotations

from memspec.ir.graph import Graph
from memspec.ir.types import DType, Role
from memspec.ops import lookup
from memspec.ops.registry import Grad
from memspec.passes.peak.forward import Entry, ForwardReplay, Record, differentiable
from memspec.passes.peak.moments import Phase

__all__ = ["BackwardReplay"]


class BackwardReplay:
    """`grads_exist`: parameter gradients exist before backward (zero_grad without
    set_to_none, or a later micro-batch of gradient accumulation); backward adds into
    them, and they are counted by the caller, not here. `param_grads` ends holding the
    block of each `.grad` that backward made."""

    def __init__(
        self,
        forward: ForwardReplay,
        grad_dtype: DType,
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

    def run(self, loss: Entry) -> None:
        graph, ledger = self.graph, self.ledger
        # backward()'s grad_tensors (ones like the loss) are made before the engine runs,
        # so they are no gradient of backward's, and live until it returns
        itemsize = graph.value(graph.outputs[0]).dtype.itemsize
        seed = ledger.alloc(self.forward.measure(itemsize), "activations", ())
        self.adjoint[loss.key] = ledger.ref(seed)
        for record in reversed(self.forward.records):
            self._op(record)
        # autograd frees the rest of the graph (nodes backward never reached)
        for record in self.forward.records:
            for bid in record.held:
                ledger.unref(bid)
        for bid in self.adjoint.values():
            ledger.unref(bid)
        ledger.unref(seed)

    def _op(self, record: Record) -> None:
        graph, ledger = self.graph, self.ledger
        op = graph.ops[record.op_id]
        grads_out = [self.adjoint.get(k) for k in record.outputs]
        if not differentiable(graph, op) or all(g is None for g in grads_out):
            return
        kinds = lookup(op.op).gradient_kinds(op, graph)
        transient: list[int] = []  # freed once the op's backward is done
        sums: list[tuple[dict, object, int]] = []  # (buffer, key, gradient) added after it
        finished: list[object] = []  # parameters whose last gradient this op gives
        for vid, key, kind in zip(op.inputs, record.inputs, kinds, strict=True):
            v = graph.value(vid)
            if not v.requires_grad or kind is Grad.NONE:
                continue
            if v.role is Role.PARAMETER:
                chain = graph.region_chain(v.region)
                born = tuple((r.id, i) for r, i in zip(chain, key[2], strict=True))
                size = self.forward.size_of(vid, self.grad_dtype)
                grad = ledger.alloc(size, "temporaries", born)
                self.uses[key] -= 1
                if self.uses[key] == 0:
                    finished.append(key)
                buffer = self.in_flight
            elif kind is Grad.THROUGH:
                if grads_out[0] is None:
                    continue
                grad, buffer = ledger.ref(grads_out[0]), self.adjoint
            else:
                grad = ledger.alloc(self.forward.size_of(vid), "temporaries", ())
                buffer = self.adjoint
            if key in buffer:
                sums.append((buffer, key, grad))
            else:
                buffer[key] = grad
        rule = lookup(op.op).backward_temporaries
        if rule is not None:
            size = self.forward.measure(rule(op, graph))
            transient.append(ledger.alloc(size, "temporaries", ()))
        ledger.mark(Phase.BACKWARD, op.path, record.where)
        # the node returns: its temporaries, its inputs' gradients and what it saved go
        for bid in transient:
            ledger.unref(bid)
        for key in record.outputs:
            ledger.unref(self.adjoint.pop(key, None))
        for bid in record.held:
            ledger.unref(bid)
        record.held.clear()
        # then the engine adds each gradient into the one its tensor already has
        for buffer, key, grad in sums:
            self._add(buffer, key, grad, op.path, record.where)
        for key in finished:
            self._accumulate_grad(key)

    def _add(self, buffer: dict, key: object, grad: int, path: str, where) -> None:
        """Autograd's InputBuffer: a second gradient for the same tensor is added into the
        first in place when the engine holds the only reference to it, else old + new
        is a new tensor, and both are freed after it. Under a TorchDispatchMode (PyTorch's
        memory tracker is one) every tensor counts as a subclass and every sum is out of
        place: `sums_in_place=False` replays that."""
        ledger, old = self.ledger, buffer[key]
        if self.sums_in_place and not ledger.shared(old):
            ledger.unref(grad)
            return
        block = ledger.blocks[old]
        buffer[key] = ledger.alloc(block.size, "temporaries", block.born)
        ledger.mark(Phase.BACKWARD, path, where)
        ledger.unref(old)
        ledger.unref(grad)

    def _accumulate_grad(self, key: object) -> None:
        """A parameter's summed gradient, once its last user has given its part (tied
        weights are used by several ops, summed in the AccumulateGrad node's input
        buffer): it becomes the parameter's .grad, or is added into the .grad that
        exists and freed."""
        grad = self.in_flight.pop(key)
        if self.grads_exist:
            self.ledger.unref(grad)
        else:
            self.param_grads[key] = grad  # set_to_none: it becomes .grad
            self.ledger.recategorize(grad, "gradients")

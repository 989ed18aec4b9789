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

    def __init__(self, forward: ForwardReplay, grad_dtype: DType, grads_exist: bool):
        self.forward = forward
        self.graph: Graph = forward.graph
        self.ledger = forward.ledger
        self.grad_dtype = grad_dtype
        self.grads_exist = grads_exist
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
        finished: list[tuple[int, bool]] = []  # parameter gradients accumulated now
        for vid, key, kind in zip(op.inputs, record.inputs, kinds, strict=True):
            v = graph.value(vid)
            if not v.requires_grad:
                continue
            if v.role is Role.PARAMETER:
                self._param_grad(vid, key, transient, finished)
                continue
            if kind is Grad.THROUGH:
                if grads_out[0] is None:
                    continue
                grad = ledger.ref(grads_out[0])
            else:
                grad = ledger.alloc(self.forward.size_of(vid), "temporaries", ())
            old = self.adjoint.get(key)
            if old is None:
                self.adjoint[key] = grad
            elif not ledger.shared(old):
                transient.append(grad)  # added in place into the existing gradient
            else:
                # shared with another tensor's gradient: old + new, out of place
                self.adjoint[key] = ledger.alloc(self.forward.size_of(vid), "temporaries", ())
                transient += [grad, old]
        rule = lookup(op.op).backward_temporaries
        if rule is not None:
            size = self.forward.measure(rule(op, graph))
            transient.append(ledger.alloc(size, "temporaries", ()))
        ledger.mark(Phase.BACKWARD, op.path, record.where)
        for bid, kept in finished:
            if kept:
                ledger.recategorize(bid, "gradients")
            else:
                ledger.unref(bid)
        for bid in transient:
            ledger.unref(bid)
        for key in record.outputs:
            ledger.unref(self.adjoint.pop(key, None))
        for bid in record.held:
            ledger.unref(bid)
        record.held.clear()

    def _param_grad(self, vid: int, key: object, transient: list, finished: list) -> None:
        """A parameter's gradient from one op. Autograd sums the gradients of a parameter
        used by several ops (tied weights) in its AccumulateGrad node's input buffer, and
        that node runs once, after the last of them: until then the sum is a gradient
        in flight (what PyTorch's memory tracker reports as well), then it becomes the
        parameter's .grad, or is added into the .grad that already exists."""
        chain = self.graph.region_chain(self.graph.value(vid).region)
        born = tuple((r.id, i) for r, i in zip(chain, key[2], strict=True))
        grad = self.ledger.alloc(self.forward.size_of(vid, self.grad_dtype), "temporaries", born)
        if key not in self.in_flight:
            self.in_flight[key] = grad
        else:
            transient.append(grad)  # added in place into the input buffer
        self.uses[key] -= 1
        if self.uses[key] == 0:
            grad = self.in_flight.pop(key)
            if self.grads_exist:
                finished.append((grad, False))  # added into .grad, then freed
            else:
                self.param_grads[key] = grad  # set_to_none: it becomes .grad
                finished.append((grad, True))

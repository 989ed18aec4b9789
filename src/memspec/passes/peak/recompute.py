"""A checkpoint's forward run again in backward: the step interpreter read as memory
once more, on the same ledger, as `torch.utils.checkpoint` (use_reentrant=False) runs it.

When backward reaches the first node of a checkpoint that saved a tensor, torch runs the
checkpoint's function again on the inputs its frame kept, under a saved-tensors hook
that keeps each tensor saved, in order, for the node it stands for; once the last one is
saved it stops (`_StopRecomputationError`: early stop), so the ops after it do not run
again, and an op saving only its inputs stops before making its outputs. Each kept
tensor is freed when its node has run, as a saved tensor is without checkpointing.
"""

from __future__ import annotations

import contextlib

from memspec.ir.graph import OpApply
from memspec.ir.interpreter import Index
from memspec.passes.peak.forward import Entry, ForwardReplay, Frame, differentiable
from memspec.passes.peak.moments import Phase
from memspec.recompute import packs, saves_output

__all__ = ["recompute"]


class _Stop(Exception):
    """The last saved tensor is recomputed (torch's `_StopRecomputationError`)."""


class _Recomputation(ForwardReplay):
    def __init__(self, forward: ForwardReplay, frame: Frame):
        super().__init__(
            forward.graph,
            forward.ledger,
            forward.repetitions_of,
            forward.measure,
            forward.refusal,
            plan=forward.schedule,
        )
        self.targets = [forward.records[n] for n in frame.records]
        self.frame = frame
        self.sac_ops = forward.sac
        graph = forward.graph
        self.last = max(k for k, r in enumerate(self.targets) if packs(graph, graph.ops[r.op_id]))
        self.next = 0

    def run_op(self, op: OpApply, inputs: list[Entry], index: Index) -> list[Entry]:
        k = self.next
        self.next += 1
        target = self.targets[k]
        if k == self.last and not saves_output(self.graph, op):
            # the last node saves only inputs (and what it makes to save): torch saves
            # them before computing the op, and stops there
            self.hold(op, inputs, [], target)
            self._mark(op)
            raise _Stop
        if op.id in self.sac_ops:
            # selective activation checkpointing hands over what the forward kept: the
            # op is not computed again, its output is the kept tensor
            outputs = [Entry(self.frame.kept.pop(0), next(self._keys)) for _ in op.outputs]
            if differentiable(self.graph, op):
                self.hold(op, inputs, outputs, target)
            return outputs
        return super().run_op(op, inputs, index)

    def segment(self, segment, index: Index) -> None:
        self.run_items(segment.body, index)  # part of the frame run again

    def _save(self, op, inputs, outputs, record) -> None:
        self.hold(op, inputs, outputs, self.targets[self.next - 1])

    def op_done(self, op: OpApply, inputs: list[Entry], outputs: list[Entry]) -> None:
        for entry in outputs:
            self.ledger.unref(entry.block)
        self._mark(op)
        for bid in self._transient:  # the op's workspace
            self.ledger.unref(bid)
        self._transient.clear()
        if self.next - 1 == self.last:
            raise _Stop

    def exit_autocast(self) -> None:
        """torch runs the recomputation under autocast entered afresh (the forward's
        settings, its cache empty), so each parameter's cast is made again and cached
        until that context exits, as the recomputation stops: then only the nodes that
        saved a copy hold it."""
        self._exit_autocast()

    def _mark(self, op: OpApply) -> None:
        self.ledger.mark(Phase.BACKWARD, f"recompute {op.path}", tuple(self.where.items()))


def recompute(forward: ForwardReplay, frame: Frame) -> None:
    """Run `frame`'s forward again on `forward`'s ledger: each of its records holds what
    its op saves again, and everything else the recomputation made is freed."""
    run = _Recomputation(forward, frame)
    run.running = frame.running
    run.where = dict(forward.records[frame.records[0]].where)
    for vid, entry in frame.inputs:
        run.write(vid, entry)
    with contextlib.suppress(_Stop):
        run.run_items(frame.body, frame.index)
    run.exit_autocast()
    for entry in run.env.values():
        run.ledger.unref(entry.block)
    run.env = {}
    frame.recomputed = True

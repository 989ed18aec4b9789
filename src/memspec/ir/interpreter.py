"""One walk of a step's forward over the IR, with a method per event to override.

In the spirit of `torch.fx.Interpreter`: the walk (ops in schedule order, each repeat
region as a loop, the value carried from one repetition into the next, parameter
instances per repetition, activations dropped after their last use) is written once,
here. What running an op *means* is a subclass's: `lower.interpreter.TorchInterpreter`
computes torch tensors; `passes.peak.replay.ForwardReplay` allocates and frees memory
blocks. A new reading of the step (recomputation, sharding, inference) is a new
subclass, or a subclass of one of those.

An expert bank (`route(experts, ...)`) is a region like any other: its loop runs each
expert in turn, its parameters are instances per repetition, and the ops inside read the
expert they serve from a `RepetitionIndex` attribute (the torch reading binds it from
`enter_region`).

Extension points, in the order the walk calls them:

- `repetitions(region)`: how many times to run a region's loop.
- `enter_region(region, repetition)` before each repetition; `exit_region(region)` after
  the last one.
- `repetition(region, loop, index)`: run one repetition's body (a checkpointing reading
  wraps it: `torch.utils.checkpoint` in the torch reading, a frame in the memory one).
- `segment(segment, index)`: run a `Segment` of the schedule, ops grouped as one unit
  (wrapped as a repetition is, for selective recomputation).
- `parameter(value, index)`: the item standing for one instance of a parameter or
  buffer (`index`: the repetition of each region it is in, outermost first).
- `run_op(op, inputs, index)`: the op's outputs, one item per output value.
- `op_done(op, inputs, outputs)`: after the outputs are bound, before anything is dropped.
- `write(vid, item)` / `discard(vid)`: binding and dropping a value (the default keeps a
  dict; the memory replay counts references).
- `carry(region, input_vid, item)`: the next repetition's input is the previous output
  (and, after the loop, the region's input again).
- `retain(item)` / `release(item)`: the loop keeps its first input alive while it runs.
- `refuse(message)`: a graph the walk cannot run (a repeated layer called twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from memspec.ir.graph import Graph, OpApply, Region, Value
from memspec.ir.schedule import Loop, Schedule, Segment, schedule
from memspec.ir.types import Role

__all__ = ["Index", "Interpreter", "Loop", "Segment"]

T = TypeVar("T")
Index = tuple[int, ...]  # the current repetition of each enclosing region, outermost first


class Interpreter(Generic[T]):
    """Runs a graph's forward; `T` is what one value is bound to while it runs."""

    def __init__(self, graph: Graph, plan: Schedule | None = None):
        self.graph = graph
        self.schedule = plan if plan is not None else schedule(graph)
        self.env: dict[int, T] = {}
        # (region, repetition) of each loop running now, outermost first
        self.running: tuple[tuple[int, int], ...] = ()

    # -- the walk ------------------------------------------------------------------
    def run(self, inputs: Sequence[T]) -> list[T]:
        """Bind the graph's inputs, run every op, and return the outputs' items."""
        self.env = dict(zip(self.graph.inputs, inputs, strict=True))
        self._walk(self.schedule.items, ())
        return [self.env[v] for v in self.graph.outputs]

    def _walk(self, items: tuple[int | Loop | Segment, ...], index: Index) -> None:
        for item in items:
            if isinstance(item, Loop):
                self._loop(item, index)
            elif isinstance(item, Segment):
                self.segment(item, index)
            else:
                self._op(self.graph.ops[item], index)

    def _loop(self, loop: Loop, index: Index) -> None:
        region = self.graph.regions[loop.region]
        carried = [(i, o) for r, i, o in self.graph.carried if r == region.id]
        if len(carried) > 1:
            self.refuse(
                f"the repeated layer {region.path} is called more than once, which "
                f"{type(self).__name__} does not model"
            )
        first = self.env.get(carried[0][0]) if carried else None
        # The loop holds its first input to its end when something reads it after the
        # loop; else only through the first repetition, as `for block in layers: x =
        # block(x)` does: rebinding x before the second frees it (a hold in the spec
        # keeps it longer, as a caller's other reference does).
        later = first is not None and carried[0][0] not in self.schedule.drop_after_loop.get(
            loop.number, ()
        )
        if first is not None:
            self.retain(first)
        outer = self.running
        for i in range(self.repetitions(region)):
            self.running = (*outer, (region.id, i))
            self.enter_region(region, i)
            if carried and i > 0:
                self.carry(region, carried[0][0], self.env[carried[0][1]])
            self.repetition(region, loop, (*index, i))
            if first is not None and not later and i == 0:
                self.release(first)
        self.running = outer
        self.exit_region(region)
        if first is not None and later:
            self.carry(region, carried[0][0], first)
            self.release(first)
        for vid in self.schedule.drop_after_loop.get(loop.number, ()):
            self.discard(vid)

    def run_body(self, loop: Loop, index: Index) -> None:
        """Run one repetition of `loop` on the values bound now (`index` ends with it)."""
        self._walk(loop.body, index)

    def run_items(self, items: tuple[int | Loop | Segment, ...], index: Index) -> None:
        """Run schedule items (a loop's body, a segment's ops) on the values bound now."""
        self._walk(items, index)

    def _op(self, op: OpApply, index: Index) -> None:
        inputs = [self._read(vid, index) for vid in op.inputs]
        outputs = self.run_op(op, inputs, index)
        for vid, item in zip(op.outputs, outputs, strict=True):
            self.write(vid, item)
        self.op_done(op, inputs, outputs)
        for vid in self.schedule.drop_after_op.get(op.id, ()):
            self.discard(vid)

    def _read(self, vid: int, index: Index) -> T:
        v = self.graph.value(vid)
        if v.role in (Role.PARAMETER, Role.BUFFER):
            return self.parameter(v, index[: len(self.graph.region_chain(v.region))])
        return self.env[vid]

    # -- extension points ----------------------------------------------------------
    def repetitions(self, region: Region) -> int:
        raise NotImplementedError

    def parameter(self, value: Value, index: Index) -> T:
        raise NotImplementedError

    def run_op(self, op: OpApply, inputs: list[T], index: Index) -> list[T]:
        raise NotImplementedError

    def op_done(self, op: OpApply, inputs: list[T], outputs: list[T]) -> None:
        """Called with the outputs bound, before the values last read by `op` are dropped."""

    def enter_region(self, region: Region, repetition: int) -> None:
        """Called before each repetition of a region's loop."""

    def repetition(self, region: Region, loop: Loop, index: Index) -> None:
        """One repetition of a region's loop, its input bound (`index` ends with it)."""
        self.run_body(loop, index)

    def segment(self, segment: Segment, index: Index) -> None:
        """A run of ops grouped by the schedule (a checkpoint of selective recomputation)."""
        self.run_items(segment.body, index)

    def exit_region(self, region: Region) -> None:
        """Called after the last repetition of a region's loop."""

    def write(self, vid: int, item: T) -> None:
        self.env[vid] = item

    def discard(self, vid: int) -> None:
        self.env.pop(vid, None)

    def carry(self, region: Region, input_vid: int, item: T) -> None:
        self.write(input_vid, item)

    def retain(self, item: T) -> None:
        """The loop holds its first input while it runs (it is bound again afterwards)."""

    def release(self, item: T) -> None:
        """The loop's hold on its first input ends."""

    def refuse(self, message: str) -> None:
        raise NotImplementedError(message)

"""The order a step's forward runs in, with repeat regions as loops, and when each
activation can be dropped.

The graph's ops are a flat list in elaboration order, and the ops of one call of a
repeated layer are contiguous in it, so the loops nest as the regions do. A repeated
layer called twice gives two loops over the same region (the walk refuses those).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from memspec.ir.graph import Graph
from memspec.ir.types import Role

__all__ = ["Loop", "Schedule", "Segment", "ops_of", "schedule", "segments_of"]


@dataclass(frozen=True, slots=True)
class Loop:
    """Run `body` (op ids and nested loops) once per repetition of region `region`.
    `number` tells loops apart: the loops of one graph are numbered in walk order."""

    region: int
    number: int
    body: tuple[int | Loop, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive ops run as one unit (a checkpoint of selective recomputation), once
    per pass of the body they are in; `number` tells segments apart."""

    number: int
    body: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The forward as loops over op ids, and the activations dropped after each op and
    after each loop (by `Loop.number`), as eager PyTorch code drops its locals."""

    items: tuple[int | Loop | Segment, ...]
    drop_after_op: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    drop_after_loop: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    # the activations each loop's body reads that are made outside it (its inputs, the
    # value carried between repetitions among them): what a checkpoint of one
    # repetition keeps to run it again
    loop_inputs: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    # the same for each segment (by `Segment.number`)
    segment_inputs: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


def schedule(graph: Graph, segments: frozenset[int] = frozenset()) -> Schedule:
    """The graph's schedule: op ids and `Loop`s, nested as the regions are; each run of
    consecutive ops in `segments` (op ids) within one body is a `Segment`."""
    items = _nest(graph)
    after_op, after_loop = _last_uses(graph, items)
    if segments:
        items = _segment(items, segments, iter(range(len(graph.ops) + 1)))
    inputs = {seg.number: _reads(graph, list(seg.body)) for seg in _walk_items(items, Segment)}
    return Schedule(items, after_op, after_loop, _loop_inputs(graph, items), inputs)


def _segment(items: tuple, picked: frozenset[int], numbers) -> tuple:
    out: list = []
    run: list[int] = []
    for item in (*items, None):
        if isinstance(item, int) and item in picked:
            run.append(item)
            continue
        if run:
            out.append(Segment(next(numbers), tuple(run)))
            run = []
        if isinstance(item, Loop):
            out.append(Loop(item.region, item.number, _segment(item.body, picked, numbers)))
        elif item is not None:
            out.append(item)
    return tuple(out)


def segments_of(items: tuple) -> list[Segment]:
    """Every segment of the schedule, in walk order."""
    return _walk_items(items, Segment)


def _walk_items(items: tuple, kind: type) -> list:
    """Every item of `kind` in the schedule, nested ones included, in walk order."""
    found = []
    for item in items:
        if isinstance(item, kind):
            found.append(item)
        if isinstance(item, Loop):
            found += _walk_items(item.body, kind)
    return found


def ops_of(items: tuple) -> list[int]:
    """The op ids of `items`, through loops and segments, in walk order."""
    ops: list[int] = []
    for item in items:
        if isinstance(item, (Loop, Segment)):
            ops += ops_of(item.body)
        else:
            ops.append(item)
    return ops


def _reads(graph: Graph, ops: list[int]) -> tuple[int, ...]:
    """The activations `ops` read that none of them makes."""
    made = {v for o in ops for v in graph.ops[o].outputs}
    return tuple(
        dict.fromkeys(
            v
            for o in ops
            for v in graph.ops[o].inputs
            if v not in made and graph.value(v).role not in (Role.PARAMETER, Role.BUFFER)
        )
    )


def _loop_inputs(graph: Graph, items: tuple) -> dict[int, tuple[int, ...]]:
    return {loop.number: _reads(graph, ops_of(loop.body)) for loop in _walk_items(items, Loop)}


def _nest(graph: Graph) -> tuple[int | Loop, ...]:
    # (region id, body being built) for the loops open at the current op, outermost first
    stack: list[tuple[int | None, list]] = [(None, [])]
    numbers = itertools.count()  # an op may open several loops (nested repeats)
    opened: list[int] = []  # each open loop's number, in `stack` order after the root

    def close() -> None:
        region, body = stack.pop()
        stack[-1][1].append(Loop(region, opened.pop(), tuple(body)))

    for op in graph.ops:
        chain = [r.id for r in graph.region_chain(op.region)]
        while [rid for rid, _ in stack[1:]] != chain[: len(stack) - 1]:
            close()
        for rid in chain[len(stack) - 1 :]:
            opened.append(next(numbers))
            stack.append((rid, []))
        stack[-1][1].append(op.id)
    while len(stack) > 1:
        close()
    return tuple(stack[0][1])


def _last_uses(
    graph: Graph, items: tuple[int | Loop, ...]
) -> tuple[dict[int, tuple[int, ...]], dict[int, tuple[int, ...]]]:
    """A value is dropped after its last reader, or, if that reader sits in a loop the
    value was made outside of, after that loop (the loop reads it again each repetition).
    Graph outputs are never dropped; a value carried between repetitions (a repeat's
    input, its output) is dropped after its last reader outside the loop, or after the
    loop: the module's loop variable lets go of it there (LlamaModel's `inputs_embeds`
    lives on as a local until a `hold` at the end of its forward reads it)."""
    position: dict[int, int] = {}
    loops: list[tuple[int, int, int]] = []  # (first op position, last op position, number)

    def walk(body: tuple[int | Loop, ...]) -> None:
        for item in body:
            if isinstance(item, Loop):
                start = len(position)
                walk(item.body)
                loops.append((start, len(position) - 1, item.number))
            else:
                position[item] = len(position)

    walk(items)
    keep = set(graph.outputs)
    producer = {vid: position[op.id] for op in graph.ops for vid in op.outputs}
    last: dict[int, int] = {}
    for op in graph.ops:
        for vid in op.inputs:
            last[vid] = max(last.get(vid, -1), position[op.id])
    after_op: dict[int, list[int]] = {}
    after_loop: dict[int, list[int]] = {}
    op_at = {p: op_id for op_id, p in position.items()}
    for vid, reader in last.items():
        if vid in keep or graph.value(vid).role in (Role.PARAMETER, Role.BUFFER):
            continue
        made = producer.get(vid, -1)
        enclosing = [lp for lp in loops if lp[0] <= reader <= lp[1] and not lp[0] <= made <= lp[1]]
        if enclosing:
            outermost = min(enclosing, key=lambda lp: lp[0])
            after_loop.setdefault(outermost[2], []).append(vid)
        else:
            after_op.setdefault(op_at[reader], []).append(vid)
    return (
        {k: tuple(v) for k, v in after_op.items()},
        {k: tuple(v) for k, v in after_loop.items()},
    )

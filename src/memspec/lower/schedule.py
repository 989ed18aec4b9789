"""The order ops run in, with repeat regions as loops: the graph's ops are a flat list in
elaboration order, and the ops of one call of a repeated layer are contiguous in it."""

from __future__ import annotations

from dataclasses import dataclass, field

from memspec.ir.graph import Graph

__all__ = ["Loop", "last_uses", "schedule"]


@dataclass
class Loop:
    """Run `body` (op ids and nested loops) once per repetition of region `region`."""

    region: int
    body: list = field(default_factory=list)


def schedule(graph: Graph) -> list:
    """Op ids and `Loop`s, nested as the regions are."""
    root: list = []
    stack: list[tuple[int | None, list]] = [(None, root)]
    for op in graph.ops:
        chain = [r.id for r in graph.region_chain(op.region)]
        while [rid for rid, _ in stack[1:]] != chain[: len(stack) - 1]:
            stack.pop()
        for rid in chain[len(stack) - 1 :]:
            loop = Loop(rid)
            stack[-1][1].append(loop)
            stack.append((rid, loop.body))
        stack[-1][1].append(op.id)
    return root


def last_uses(graph: Graph, plan: list) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """When each activation can be dropped: (after op id -> values, after loop -> values).

    A value is dropped after its last reader, or, if that reader sits in a loop the value
    was made outside of, after that loop (the loop reads it again each repetition).
    Graph outputs and values carried between repetitions are never dropped early.
    """
    position: dict[int, int] = {}
    loops: list[tuple[int, int, int]] = []  # (first op position, last op position, id)

    def walk(items: list) -> None:
        for item in items:
            if isinstance(item, Loop):
                start = len(position)
                walk(item.body)
                loops.append((start, len(position) - 1, id(item)))
            else:
                position[item] = len(position)

    walk(plan)
    keep = set(graph.outputs) | {v for _, i, o in graph.carried for v in (i, o)}
    producer = {vid: position[op.id] for op in graph.ops for vid in op.outputs}
    last: dict[int, int] = {}
    for op in graph.ops:
        for vid in op.inputs:
            last[vid] = max(last.get(vid, -1), position[op.id])
    after_op: dict[int, list[int]] = {}
    after_loop: dict[int, list[int]] = {}
    op_at = {p: op_id for op_id, p in position.items()}
    for vid, reader in last.items():
        if vid in keep or graph.value(vid).role.value in ("parameter", "buffer"):
            continue
        made = producer.get(vid, -1)
        enclosing = [lp for lp in loops if lp[0] <= reader <= lp[1] and not lp[0] <= made <= lp[1]]
        if enclosing:
            outermost = min(enclosing, key=lambda lp: lp[0])
            after_loop.setdefault(outermost[2], []).append(vid)
        else:
            after_op.setdefault(op_at[reader], []).append(vid)
    return after_op, after_loop

"""Activations: the tensors a training step keeps for backward, under a convention.

Two kinds of convention rule (see `policies.CountRule`), each picking ops by name, by
kind (`kind norm, matmul`: what the op's `OpDef` says it does) or all of them (`*`):

- `count output of ...`: the value each picked layer, fn or op call returns, counted
  once per value (a Linear's output and the `linear` op inside it are one value). This
  is the CS336 question's convention.
- `count saved of ...`: what each op's saved-tensor rule says PyTorch's autograd
  keeps, counted once per storage (views share their base's storage); parameters and
  buffers are not activations, and ops none of whose inputs need a gradient save
  nothing, as in PyTorch.

Repeat regions are elaborated once, so a tensor's multiplicity comes from its regions,
with two corrections for the value carried from one repetition into the next: the
region's input saved inside it stands for the input itself plus `count - 1` earlier
outputs, and a tensor of a region saved by an op outside it exists there only once.

Example (autograd): `y = linear(x, W)` inside `repeat N` with `x` the region's input of
shape [B, D] saves `x` once plus `N - 1` block outputs: items `x` (B*D) and
`layers (carried)` ((N - 1)*B*D).
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.graph import Graph, OpApply
from memspec.ir.schedule import schedule, segments_of
from memspec.ir.types import Role
from memspec.ops import lookup
from memspec.passes.results import CategoryResult, LineItem, regions_of
from memspec.policies import Convention, CountRule
from memspec.recompute import (
    NONE,
    Recompute,
    cached_ops,
    checkpointed_ops,
    checkpointed_regions,
)

__all__ = ["count_activations", "count_activations_under"]


def count_activations(graph: Graph, config: TrainConfig) -> CategoryResult:
    """Activations under the configured convention and recomputation."""
    return count_activations_under(graph, config.convention, config.recompute)


def count_activations_under(
    graph: Graph, convention: Convention, recompute: Recompute = NONE
) -> CategoryResult:
    """What the convention counts, but what runs in a checkpoint (a repetition of a
    checkpointed region, a run of selectively recomputed ops): that is recomputed in
    backward; what each one keeps instead, its inputs, is counted."""
    items: dict[tuple, LineItem] = {}
    outputs = tuple(rule for rule in convention.rules if rule.what == "output")
    checkpointed = checkpointed_regions(graph, recompute)
    segments = checkpointed_ops(graph, recompute)

    def kept(op: OpApply) -> bool:
        chain = graph.region_chain(op.region)
        return op.id not in segments and not any(r.id in checkpointed for r in chain)

    for rule in convention.rules:
        if rule.what == "saved":
            _count_saved(graph, rule, items, kept)
        elif rule is outputs[0]:
            # All output rules at once: each value is one item, named by its outermost pick.
            _count_outputs(graph, outputs, items, kept)
    for region in sorted(checkpointed):
        checkpoint_inputs(graph, region, items)
    if segments:
        _segment_inputs(graph, segments, items)
    for op_id in sorted(cached_ops(graph, recompute)):
        _kept_output(graph, graph.ops[op_id], recompute, items)
    # Insertion order follows the graph (ops in execution order): deterministic.
    description = convention.describe()
    if checkpointed or segments:
        description += "; what runs in a checkpoint is recomputed, and its inputs are kept"
    return CategoryResult("activations", tuple(items.values()), description)


def checkpoint_inputs(graph: Graph, region_id: int, items: dict) -> None:
    """What each checkpointed repetition of a region keeps to run again: the values its
    body reads from outside, each storage once (a value read by every repetition is one
    tensor), and the value carried into it (the region's input for the first
    repetition, the previous one's output for the others)."""
    region = graph.regions[region_id]
    carried = {i: o for r, i, o in graph.carried if r == region_id}
    inside = {o.id for o in graph.ops if region_id in (r.id for r in graph.region_chain(o.region))}
    made = {v for o in graph.ops if o.id in inside for v in o.outputs}
    reads = dict.fromkeys(
        v
        for o in graph.ops
        if o.id in inside
        for v in o.inputs
        if v not in made and graph.value(v).role not in (Role.PARAMETER, Role.BUFFER)
    )
    note = f"input of each checkpoint of {region.path} (it runs again in backward)"
    outer = regions_of(graph, region.parent)
    for vid in reads:
        root = graph.value(graph.value(vid).storage)
        if root.role in (Role.PARAMETER, Role.BUFFER):
            continue  # a frame keeps every tensor it is called with, gradient or not
        key = ("storage", root.id, 0)
        if key not in items:
            items[key] = LineItem(root.path, root.shape, root.dtype, outer, note, span=root.span)
        if vid in carried:
            output = graph.value(graph.value(carried[vid]).storage)
            items[("storage", output.id, 1)] = LineItem(
                f"{output.path} (carried)",
                output.shape,
                output.dtype,
                outer,
                f"output of repetitions 1..{region.count}-1 of {region.path}, the next "
                "checkpoint's input",
                extra=sp.Add(region.count, -1),
                span=output.span,
            )


def _kept_output(graph: Graph, op: OpApply, recompute: Recompute, items: dict) -> None:
    """An output selective activation checkpointing keeps from the forward for the
    recomputation (each storage once)."""
    saved = ", ".join(f"aten.{n}" for n in lookup(op.op).aten if n in recompute.save)
    for vid in op.outputs:
        root = graph.value(graph.value(vid).storage)
        key = ("storage", root.id, 0)
        if key not in items:
            note = f"output of {op.op}, kept by selective checkpointing ({saved})"
            regions = regions_of(graph, root.region)
            items[key] = LineItem(root.path, root.shape, root.dtype, regions, note, span=root.span)


def _segment_inputs(graph: Graph, segments: frozenset[int], items: dict) -> None:
    """What each selectively recomputed run of ops keeps: the values it reads from
    outside, each storage once per copy of the regions it runs in."""
    plan = schedule(graph, segments)
    for segment in segments_of(plan.items):
        where = graph.ops[segment.body[0]]
        note = f"input of each checkpoint at {where.path} (it runs again in backward)"
        for vid in plan.segment_inputs[segment.number]:
            root = graph.value(graph.value(vid).storage)
            key = ("storage", root.id, 0)
            if root.role in (Role.PARAMETER, Role.BUFFER) or key in items:
                continue
            regions = _common_regions(graph, root.region, where.region)
            items[key] = LineItem(root.path, root.shape, root.dtype, regions, note, span=root.span)


def _count_outputs(graph: Graph, rules: tuple[CountRule, ...], items: dict, kept) -> None:
    # The note names the outermost call a rule names that returned the value: a Linear's
    # output reads "output of Linear", not of the `linear` op inside it (it is one value).
    notes: dict[int, str] = {}
    for op in graph.ops:
        if any(rule.picks(op.op) for rule in rules):
            for vid in op.outputs:
                notes[vid] = op.op
    for call in graph.call_outputs:  # inner calls return first, so outer ones overwrite
        if any(rule.picks_call(call.callee) for rule in rules):
            notes[call.value] = call.callee
    producers = {vid: op for op in graph.ops for vid in op.outputs}
    for vid, producer in sorted(notes.items()):
        v = graph.value(vid)
        if not v.requires_grad or (vid in producers and not kept(producers[vid])):
            continue  # made without gradient (position tables): no activation of backward's
        note = f"output of {producer}"
        items[("value", vid, 0)] = LineItem(
            v.path, v.shape, v.dtype, regions_of(graph, v.region), note, span=v.span
        )


def _common_regions(graph: Graph, a: int | None, b: int | None):
    chain_a, chain_b = graph.region_chain(a), graph.region_chain(b)
    common = []
    for x, y in zip(chain_a, chain_b, strict=False):
        if x.id != y.id:
            break
        common.append((x.path, x.count))
    return tuple(common)


def _count_saved(graph: Graph, rule: CountRule, items: dict, kept) -> None:
    # keyed by the storage the input is (a view of): a layer may return a view (a hold)
    carried_inputs = {graph.value(inp).storage: (region, out) for region, inp, out in graph.carried}
    savers: dict[tuple, list[str]] = {}
    for op in graph.ops:
        if not rule.picks(op.op, *op.calls) or not kept(op):
            continue
        if not any(graph.value(v).requires_grad for v in op.inputs):
            continue  # PyTorch records no backward node, so nothing is saved
        for saved in lookup(op.op).saved(op, graph):
            if saved.value is None:
                key = ("internal", op.id, 0, saved.label)
                label = saved.label.replace(" ", "_")
                items[key] = LineItem(
                    f"{op.path}.{label}",
                    saved.shape,
                    saved.dtype,
                    regions_of(graph, op.region),
                    f"saved by {op.op} ({saved.label})",
                    extra=saved.count,
                    key=f"{op.path} [internal]",
                    span=op.span,
                )
                continue
            key = _save_storage(graph, op, saved.value, saved.label, items, carried_inputs)
            if key is not None:
                savers.setdefault(key, []).append(f"{op.op} ({saved.label})")
    _drop_redundant_carries(graph, items)
    for key, who in savers.items():
        if key in items:
            counts = {w: who.count(w) for w in who}
            text = ", ".join(w if n == 1 else f"{w} x{n}" for w, n in counts.items())
            items[key] = replace(items[key], note=f"saved by {text}")


def _save_storage(
    graph: Graph, op: OpApply, vid: int, label: str, items: dict, carried_inputs: dict
) -> tuple | None:
    """Count the storage behind `vid`; returns its key (None for parameters and buffers)."""
    root = graph.value(graph.value(vid).storage)
    if root.role in (Role.PARAMETER, Role.BUFFER):
        return None
    note = f"saved by {op.op} ({label})"
    key = ("storage", root.id, 0)
    regions = _common_regions(graph, root.region, op.region)
    old = items.get(key)
    if old is None or len(regions) > len(old.regions):
        items[key] = LineItem(
            root.path, root.shape, root.dtype, regions, old.note if old else note, span=root.span
        )
    carried = carried_inputs.get(root.id)
    if carried is not None:
        region_id, out = carried
        if any(r.id == region_id for r in graph.region_chain(op.region)):
            region = graph.regions[region_id]
            output = graph.value(graph.value(out).storage)
            items[("storage", output.id, 1)] = LineItem(
                f"{output.path} (carried)",
                output.shape,
                output.dtype,
                regions_of(graph, region.parent),
                f"output of repetitions 1..{region.count}-1 of {region.path}, the next one's input",
                extra=sp.Add(region.count, -1),
                span=output.span,
            )
    return key


def _drop_redundant_carries(graph: Graph, items: dict) -> None:
    """A carried output that is also saved inside its region is already counted N times."""
    for key in [k for k in items if k[0] == "storage" and k[2] == 1]:
        inside = items.get(("storage", key[1], 0))
        if inside is not None and len(inside.regions) > len(items[key].regions):
            del items[key]

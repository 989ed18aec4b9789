"""Activation recomputation policies: which parts of the forward are checkpoints.

A policy is named data declared in the standard library (`specs/std/train.mspec`) and
extensible by users, as `torch.utils.checkpoint` (use_reentrant=False) runs it: a
checkpoint keeps only its inputs; in backward, the first node that needs a tensor it
saved runs its forward again, up to the last tensor saved (torch's early stop), and the
recomputed tensors are freed as backward uses them. Two kinds of checkpoint:

- `checkpoint each repeat`: each repetition of each repeated layer (full recomputation);
- `checkpoint each call of NAMES`: each run of consecutive ops inside a call of the fns
  or layers named, or of the ops named (selective recomputation: Megatron-LM's of the
  attention core).

`save aten NAMES` adds PyTorch's selective activation checkpointing
(`create_selective_checkpoint_contexts`): inside a checkpoint the outputs of those aten
ops are cached in the forward (MUST_SAVE) and handed to the recomputation instead of
being computed again; ops declare the aten op that makes their output (`OpDef.aten`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from memspec.errors import SpecValueError
from memspec.ir.graph import Graph, OpApply
from memspec.ir.schedule import ops_of, schedule, segments_of
from memspec.names import did_you_mean
from memspec.ops import lookup
from memspec.ops.registry import REGISTRY
from memspec.syntax import decls as d

__all__ = [
    "NONE",
    "Recompute",
    "cached_ops",
    "checkpointed_ops",
    "checkpointed_regions",
    "describe_checkpoints",
    "packs",
    "read_recompute",
    "recomputed_ops",
    "saves_output",
    "unmodelled_cache",
]


@dataclass(frozen=True, slots=True)
class Recompute:
    """`repeats`: every repetition of every repeated layer is one checkpoint; `calls`:
    each run of ops inside calls of these fns, layers or ops is one."""

    name: str
    description: str
    repeats: bool = False
    calls: tuple[str, ...] = ()
    save: tuple[str, ...] = ()  # aten ops whose outputs a checkpoint keeps (SAC)

    @property
    def active(self) -> bool:
        return self.repeats or bool(self.calls)

    def describe(self) -> str:
        if not self.active:
            return "no recomputation: every tensor saved for backward is kept"
        parts = []
        if self.repeats:
            parts.append("each repetition of each repeated layer is a checkpoint")
        if self.calls:
            parts.append(
                f"each run of ops inside a call of {', '.join(self.calls)} is a checkpoint"
            )
        text = (
            f"{'; '.join(parts)} (torch.utils.checkpoint, use_reentrant=False): it keeps "
            "its inputs; backward runs its forward again up to the last tensor it saves"
        )
        if self.save:
            names = ", ".join(f"aten.{n}" for n in self.save)
            text += (
                f"; the outputs of {names} are kept instead of computed again (selective "
                "activation checkpointing, MUST_SAVE)"
            )
        return text


NONE = Recompute("none", "no recomputation")


def read_recompute(decl: d.DeclRecompute, known: Collection[str]) -> Recompute:
    """A policy from its declaration; `known`: the names of the fns, layers and ops (a
    policy naming none of them would silently recompute nothing)."""
    repeats, calls, save = False, [], []
    aten = sorted({name for op in REGISTRY.values() for name in op.aten})
    for what, names, span in decl.rules:
        if what == "repeat":
            repeats = True
            continue
        if what == "save":
            for name in names:
                if name not in aten:
                    hint = did_you_mean(name, aten)
                    raise SpecValueError(
                        f"recompute policy {decl.name}: no op makes its output with "
                        f"aten.{name}{hint} (ops declare: {', '.join(aten)})",
                        span,
                    )
                save.append(name)
            continue
        for name in names:
            if name not in known:
                hint = did_you_mean(name, sorted(known))
                raise SpecValueError(
                    f"recompute policy {decl.name}: no fn, layer or op is named {name!r}{hint}",
                    span,
                )
            calls.append(name)
    return Recompute(
        decl.name,
        decl.description,
        repeats,
        tuple(dict.fromkeys(calls)),
        tuple(dict.fromkeys(save)),
    )


def checkpointed_regions(graph: Graph, policy: Recompute) -> frozenset[int]:
    """The regions each repetition of which is a checkpoint: those the spec marks
    (`repeat N of checkpoint ...`), and under a policy that checkpoints repeats the
    outermost repeated layers (an expert bank runs inside a layer's checkpoint, not as
    one of its own). A marked region inside another checkpointed one is part of it."""
    marked = {r.id for r in graph.regions if r.checkpoint}
    if policy.repeats:
        marked |= {r.id for r in graph.regions if r.parent is None and r.active is None}
    return frozenset(
        rid for rid in marked if not any(r.id in marked for r in graph.region_chain(rid)[:-1])
    )


def describe_checkpoints(graph: Graph, policy: Recompute) -> str:
    """What runs as a checkpoint, in words ("" when nothing does)."""
    if policy.active:
        return policy.describe()
    marked = [graph.regions[r].path for r in sorted(checkpointed_regions(graph, policy))]
    if not marked:
        return ""
    return (
        f"the spec makes each repetition of {', '.join(marked)} a checkpoint "
        "(`repeat N of checkpoint ...`; torch.utils.checkpoint, use_reentrant=False): it "
        "keeps its inputs; backward runs its forward again up to the last tensor it saves"
    )


def checkpointed_ops(graph: Graph, policy: Recompute) -> frozenset[int]:
    """The ops of selective recomputation: inside a call of a name the policy lists (or
    that op itself); consecutive ones form one checkpoint (`schedule`'s segments)."""
    if not policy.calls or policy.repeats:
        return frozenset()  # inside a layer's checkpoint, one frame holds everything
    names = set(policy.calls)
    return frozenset(op.id for op in graph.ops if names & {op.op, *op.calls})


def cached_ops(graph: Graph, policy: Recompute) -> frozenset[int]:
    """The ops inside checkpoints whose outputs selective activation checkpointing keeps
    (an aten op the policy saves makes their output)."""
    if not policy.save:
        return frozenset()
    names = set(policy.save)
    return frozenset(
        op.id for op in _in_checkpoints(graph, policy) if names & set(lookup(op.op).aten)
    )


def unmodelled_cache(graph: Graph, policy: Recompute) -> OpApply | None:
    """An op inside a checkpoint that dispatches, for an intermediate of its own, an
    aten op the policy saves (torch would keep those; memspec does not model them)."""
    if not policy.save:
        return None
    for op in _in_checkpoints(graph, policy):
        if set(policy.save) & set(lookup(op.op).aten_inside):
            return op
    return None


def _in_checkpoints(graph: Graph, policy: Recompute) -> list[OpApply]:
    """The ops that run inside a checkpoint: of a checkpointed region, or a segment."""
    regions = checkpointed_regions(graph, policy)
    segments = checkpointed_ops(graph, policy)
    return [
        op
        for op in graph.ops
        if op.id in segments or any(r.id in regions for r in graph.region_chain(op.region))
    ]


def recomputed_ops(graph: Graph, policy: Recompute) -> frozenset[int]:
    """The ops backward runs again: in each checkpoint, those up to the last one that
    saves a tensor (torch's early stop), that one only if it saves one of its outputs
    (saving only inputs, it stops before computing). A stop inside a nested region (an
    expert bank) is taken as after all of its repetitions. Ops whose outputs selective
    activation checkpointing kept are not computed again."""
    out: set[int] = set()
    bodies = []
    for region in checkpointed_regions(graph, policy):
        bodies.append(
            [op for op in graph.ops if region in {r.id for r in graph.region_chain(op.region)}]
        )
    segments = checkpointed_ops(graph, policy)
    if segments:
        for item in segments_of(schedule(graph, segments).items):
            bodies.append([graph.ops[o] for o in ops_of(item.body)])
    for body in bodies:
        saving = [k for k, op in enumerate(body) if packs(graph, op)]
        if not saving:
            continue
        made = saves_output(graph, body[saving[-1]])
        out.update(op.id for op in body[: saving[-1] + (1 if made else 0)])
    return frozenset(out - cached_ops(graph, policy))


def packs(graph: Graph, op: OpApply) -> bool:
    """Whether autograd's node for `op` saves a tensor (a parameter included): under a
    checkpoint, each one is a placeholder that backward unpacks."""
    differentiable = lookup(op.op).differentiable and any(
        graph.value(v).requires_grad for v in op.inputs
    )
    return differentiable and bool(lookup(op.op).saved(op, graph))


def saves_output(graph: Graph, op: OpApply) -> bool:
    """Whether `op` saves one of its outputs: the last saving op of a recomputation is
    then computed before torch stops (saving only inputs, it stops before computing)."""
    return any(s.value in op.outputs for s in lookup(op.op).saved(op, graph))

"""Activation recomputation policies: which parts of the forward are checkpoints.

A policy is named data declared in the standard library (`specs/std/train.mspec`) and
extensible by users, as `torch.utils.checkpoint` (use_reentrant=False) runs it: a
checkpoint keeps only its inputs; in backward, the first node that needs a tensor it
saved runs its forward again, up to the last tensor saved (torch's early stop), and the
recomputed tensors are freed as backward uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import SpecValueError
from memspec.ir.graph import Graph
from memspec.ops import lookup
from memspec.syntax import decls as d

__all__ = ["NONE", "Recompute", "checkpointed_regions", "read_recompute", "recomputed_ops"]

_RULES = ("repeat",)


@dataclass(frozen=True, slots=True)
class Recompute:
    """`repeats`: every repetition of every repeated layer is one checkpoint."""

    name: str
    description: str
    repeats: bool = False

    @property
    def active(self) -> bool:
        return self.repeats

    def describe(self) -> str:
        if not self.active:
            return "no recomputation: every tensor saved for backward is kept"
        return (
            "each repetition of each repeated layer is a checkpoint "
            "(torch.utils.checkpoint, use_reentrant=False): it keeps its inputs; backward "
            "runs its forward again up to the last tensor it saves"
        )


NONE = Recompute("none", "no recomputation")


def read_recompute(decl: d.DeclRecompute) -> Recompute:
    repeats = False
    for what, span in decl.rules:
        if what not in _RULES:
            raise SpecValueError(f"unknown recompute rule {what!r}", span)
        repeats = True
    return Recompute(decl.name, decl.description, repeats)


def checkpointed_regions(graph: Graph, policy: Recompute) -> frozenset[int]:
    """The regions each repetition of which is a checkpoint: the outermost repeated
    layers (an expert bank runs inside a layer's checkpoint, not as one of its own)."""
    if not policy.repeats:
        return frozenset()
    return frozenset(r.id for r in graph.regions if r.parent is None and r.active is None)


def recomputed_ops(graph: Graph, checkpointed: frozenset[int]) -> frozenset[int]:
    """The ops backward runs again: in each checkpointed region, those up to the last
    one that saves a tensor (torch's early stop), that one only if it saves one of its
    outputs (saving only inputs, it stops before computing). A stop inside a nested
    region (an expert bank) is taken as after all of its repetitions."""
    out: set[int] = set()
    for region in checkpointed:
        body = [op for op in graph.ops if region in (r.id for r in graph.region_chain(op.region))]
        saving = [k for k, op in enumerate(body) if _packs(graph, op)]
        if not saving:
            continue
        last = body[saving[-1]]
        made = any(s.value in last.outputs for s in lookup(last.op).saved(last, graph))
        out.update(op.id for op in body[: saving[-1] + (1 if made else 0)])
    return frozenset(out)


def _packs(graph: Graph, op) -> bool:
    differentiable = lookup(op.op).differentiable and any(
        graph.value(v).requires_grad for v in op.inputs
    )
    return differentiable and bool(lookup(op.op).saved(op, graph))

"""Tensor parallelism as data: the styles a `tp_plan` gives a layer's members.

A plan is written per layer, like the plans of torch's `parallelize_module` (and Hugging
Face's `base_model_tp_plan`), and applies wherever the layer is instantiated:

    tp_plan LlamaMLP { gate_proj colwise; up_proj colwise; down_proj rowwise }

Each style is one of torch's `ParallelStyle`s with its defaults, on a member that is a
Linear (`weight: [out, in]`, optional `bias: [out]`) or an Embedding (`weight: [n, d]`).
Under `--tp N` the graph is elaborated as one rank runs it (`elaborate/sharding.py`):
the planned parameters at their local size, every activation at its local size, and
the partial sums a rowwise member makes all-reduced (an `all_reduce` op of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import NameResolutionError, UsageError
from memspec.names import did_you_mean
from memspec.source import Span
from memspec.syntax.imports import Program

__all__ = ["OUTPUTS", "STYLES", "Planned", "Style", "TpPlans", "read_plans"]


@dataclass(frozen=True, slots=True)
class Style:
    """A parallel style: the dim of each parameter it shards (None: replicated), what it
    is in torch's words, and whether the member's output is partial sums (all-reduced)."""

    name: str
    torch: str
    shards: tuple[tuple[str, int | None], ...]
    partial: bool
    doc: str

    def shard_of(self, param: str) -> int | bool | None:
        """The dim of `param` this style shards, None if it keeps it whole, False if the
        style knows no such parameter."""
        return dict(self.shards).get(param, False)


STYLES = {
    s.name: s
    for s in (
        Style(
            "colwise",
            "ColwiseParallel()",
            (("weight", 0), ("bias", 0)),
            False,
            "weight [out, in] and bias sharded on the output features: the input whole, "
            "the output sharded on its last dim",
        ),
        Style(
            "rowwise",
            "RowwiseParallel()",
            (("weight", 1), ("bias", None)),
            True,
            "weight [out, in] sharded on the input features, bias whole: the input sharded "
            "on its last dim, the output's partial sums all-reduced",
        ),
        Style(
            "vocab_parallel",
            "RowwiseParallel() on an embedding",
            (("weight", 0),),
            True,
            "the table sharded on its rows (the vocabulary): each rank looks up the ids "
            "in its rows, and the partial rows are all-reduced",
        ),
        Style(
            "loss_parallel",
            "ColwiseParallel(output_layouts=Shard(-1), use_local_output=False), the loss "
            "under loss_parallel()",
            (("weight", 0), ("bias", 0)),
            False,
            "the LM head sharded on the vocabulary, its logits kept sharded into the "
            "loss, whose log-softmax and nll_loss all-reduce across ranks",
        ),
    )
}


# A row-parallel member's output under sequence parallelism: reduce-scattered on the
# sequence (torchtitan's `output_layouts=Shard(1)`, the default) or, written
# `replicated`, all-reduced whole (`output_layouts=Replicate()`: Megatron's embedding,
# whose output meets the position embeddings before `sequence_scatter` shards it).
OUTPUTS = ("replicated",)


@dataclass(frozen=True, slots=True)
class Planned:
    """A member's style, where the plan gives it, and its output under --sp."""

    style: Style
    span: Span | None
    replicated: bool = False


@dataclass(frozen=True, slots=True)
class TpPlans:
    """Every layer's plan: layer -> member -> what the plan says of it."""

    layers: dict[str, dict[str, Planned]]

    def style(self, layer: str, member: str) -> Planned | None:
        return self.layers.get(layer, {}).get(member)

    @property
    def loss_parallel(self) -> bool:
        """Whether the loss may see logits sharded on the vocabulary: an LM head's, or
        a head tied to a vocab-parallel embedding (Megatron's)."""
        return any(
            planned.style.name in ("loss_parallel", "vocab_parallel")
            for members in self.layers.values()
            for planned in members.values()
        )


def read_plans(program: Program) -> TpPlans:
    """The program's plans, each style and layer checked where it is written."""
    layers: dict[str, dict[str, Planned]] = {}
    for name, decl in program.tp_plans.items():
        if name not in program.layers and name not in {m.name for m in program.models}:
            known = sorted({*program.layers, *(m.name for m in program.models)})
            raise NameResolutionError(
                f"tp_plan for unknown layer {name!r}{did_you_mean(name, known)}", decl.span
            )
        members: dict[str, Planned] = {}
        for member, style, output, span in decl.styles:
            if style not in STYLES:
                raise UsageError(
                    f"unknown tensor-parallel style {style!r}{did_you_mean(style, sorted(STYLES))}"
                    f" (known: {', '.join(STYLES)})",
                    span,
                )
            if output is not None and not STYLES[style].partial:
                raise UsageError(
                    f"{member} {style} {output}: only a row-parallel member's output (rowwise, "
                    "vocab_parallel) is reduced, and may stay whole under sequence parallelism",
                    span,
                )
            if member in members:
                raise NameResolutionError(f"tp_plan {name}: {member!r} has two styles", span)
            members[member] = Planned(STYLES[style], span, output == "replicated")
        layers[name] = members
    return TpPlans(layers)

"""Where a decision at the bound sizes differs from the one for general sizes.

The ops decide views, saved copies and gradients at the sizes the user bound
(`ir/sizes.py`), as torch does on concrete sizes. The graph's formulas stay symbolic, so
each such decision is also taken for general sizes; where the two differ, a
`SizeDecision` records it and the report states it: the formulas then hold at those
sizes (at B = 1 the attention products save q and k as views; for general B, copies).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import sympy as sp

from memspec.ir.graph import Graph, OpApply, SizeDecision
from memspec.ir.sizes import GENERAL, BoundSizes, unwatched
from memspec.ir.types import Shape
from memspec.ops import REGISTRY
from memspec.ops.registry import Grad, InferContext, OpDef, OpShapeError, OutputSpec, Saved
from memspec.ops.strides import actual
from memspec.source import Span

__all__ = ["layout_decisions", "rule_decisions"]

Facts = tuple[tuple[sp.Expr, sp.Expr], ...]


def _sizes(shapes: Iterable[Shape], attrs: Iterable[object]) -> list[sp.Expr]:
    """The sizes a decision can turn on: dims of the tensors, and sizes among the attrs
    (a repeat's new axis `r = H/KV`)."""
    found = [d for shape in shapes for d in shape]
    stack = list(attrs)
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, sp.Expr) and item.free_symbols:
            found.append(item)
    return found


def _why(bound: BoundSizes, sizes: list[sp.Expr], holds: Callable[[BoundSizes], bool]) -> Facts:
    """The facts behind a decision: those without which it no longer `holds` (`H/KV = 1`
    and not `B = 1` for repeat_kv at B = 1, KV = H), or all when none alone is needed."""
    facts = bound.facts(sizes)
    with unwatched():
        needed = tuple(f for f in facts if not holds(bound.without(f[0].free_symbols)))
    return needed or facts


def _same_layout(shape: Shape, a: OutputSpec, b: OutputSpec, bound: BoundSizes) -> bool:
    if a.view_of != b.view_of:
        return False
    if a.strides == b.strides:
        return True
    pairs = zip(shape, actual(shape, a.strides), actual(shape, b.strides), strict=True)
    return all(bound.is_one(n) or bound.equal(s, t) for n, s, t in pairs)


def _storage(out: OutputSpec) -> str:
    return "a copy" if out.view_of is None else "a view of its input"


def layout_decisions(
    op: OpDef,
    ctx: InferContext,
    outputs: tuple[OutputSpec, ...],
    paths: list[str],
    span: Span | None,
) -> list[SizeDecision]:
    """The outputs of one application whose view or layout at `ctx.bound` is not the one
    for general sizes."""
    if not ctx.bound:
        return []

    def infer(bound: BoundSizes) -> tuple[OutputSpec, ...]:
        return op.infer(dataclasses.replace(ctx, assumptions=[], bound=bound))

    try:
        with unwatched():
            general_outputs = infer(GENERAL)
    except OpShapeError:
        # legal only at sizes like the bound ones (flash's one head size for q and v,
        # at Q = E bound): no general layout to compare with
        return []
    sizes = _sizes([t.shape for t in ctx.inputs], ctx.attrs.values())
    found = []
    for k, (out, other) in enumerate(zip(outputs, general_outputs, strict=True)):
        with unwatched():
            same = _same_layout(out.shape, out, other, ctx.bound)
        if same:
            continue
        outcome = f"is {_storage(out)}"
        general = _storage(other)
        if out.view_of == other.view_of:
            outcome, general = "is laid out with other strides", "not"

        def holds(bound: BoundSizes, k: int = k, out: OutputSpec = out) -> bool:
            return _same_layout(out.shape, out, infer(bound)[k], ctx.bound)

        found.append(SizeDecision(_why(ctx.bound, sizes, holds), paths[k], outcome, general, span))
    return found


def _saved_text(saved: tuple[Saved, ...]) -> str:
    return f"({', '.join(s.label for s in saved)})" if saved else "nothing"


_GRAD_WORDS = {
    Grad.NEW: "a new tensor",
    Grad.THROUGH: "its output's gradient itself",
    Grad.VIEW: "a view of a new tensor",
    Grad.NONE: "no gradient",
    Grad.THROUGH_VIEW: "its output's gradient viewed",
    Grad.PART: "a narrowed view of its output's gradient in its own layout",
    Grad.PART_STRIDED: "a narrowed view of its output's gradient with other strides",
}


def _grads_text(graph: Graph, op: OpApply, kinds: tuple[Grad, ...], keep: list[int]) -> str:
    """`its output's gradient itself for wpe`: the gradient of each input in `keep`."""
    return ", ".join(f"{_GRAD_WORDS[kinds[i]]} for {graph.value(op.inputs[i]).path}" for i in keep)


def _op_decisions(graph: Graph, op: OpApply) -> list[SizeDecision]:
    """One op's saved tensors and gradient kinds, at the bound sizes and in general."""
    definition = REGISTRY[op.op]
    tensors = [graph.value(v) for v in (*op.inputs, *op.outputs)]
    sizes = _sizes([t.shape for t in tensors], (v for _, v in op.attrs))

    def saved(bound: BoundSizes) -> tuple[Saved, ...]:
        return definition.saved(op, dataclasses.replace(graph, bound=bound))

    def kinds(bound: BoundSizes) -> tuple[Grad, ...]:
        return definition.gradient_kinds(op, dataclasses.replace(graph, bound=bound))

    found = []
    here = saved(graph.bound)
    with unwatched():
        other = saved(GENERAL)
    if here != other:
        why = _why(graph.bound, sizes, lambda b: saved(b) == here)
        found.append(
            SizeDecision(why, op.path, f"saves {_saved_text(here)}", _saved_text(other), op.span)
        )
    if definition.differentiable and any(graph.value(v).requires_grad for v in op.inputs):
        grads = kinds(graph.bound)
        with unwatched():
            general = kinds(GENERAL)
        differ = [i for i, (a, b) in enumerate(zip(grads, general, strict=True)) if a != b]
        if differ:
            why = _why(graph.bound, sizes, lambda b: kinds(b) == grads)
            found.append(
                SizeDecision(
                    why,
                    op.path,
                    f"gives in backward {_grads_text(graph, op, grads, differ)}",
                    _grads_text(graph, op, general, differ),
                    op.span,
                )
            )
    return found


def rule_decisions(graph: Graph) -> tuple[SizeDecision, ...]:
    """The ops whose saved tensors or gradients at `graph.bound` are not the ones for
    general sizes."""
    if not graph.bound:
        return ()
    return tuple(d for op in graph.ops for d in _op_decisions(graph, op))

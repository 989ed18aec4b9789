"""`route(experts, hidden, routing_weights, selected_experts)`: a mixture-of-experts layer.

`experts = repeat E of Expert(...)` declares an expert bank: one region of multiplicity E,
as any repeat, so parameters exist E times and nothing is unrolled. `route` runs the bank
side by side rather than in sequence, expanding into Hugging Face's
`MixtralSparseMoeBlock` loop, elaborated once inside the bank's region:

    final_hidden_states = zeros_like(hidden)                        # outside the bank
    slots = expert_slots(selected_experts, expert = e)              # torch.where(mask[e])
    idx, top_x = slots[0], slots[1]                                 # views
    current_state = index(hidden, top_x)                            # [k*T/E, D]
    current_hidden_states = Expert(current_state) * routing_weights[top_x, idx, None]
    final_hidden_states.index_add_(0, top_x, current_hidden_states)

Each expert's ops run on k*T/E token slots (balanced routing, recorded as the
assumption "E divides k*T"), so the bank's activations total k*T slots. The bank's region
records `active = k`, from which the active-parameter count follows.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import sympy as sp

from memspec.elaborate.apply import OpApplier
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.frames import Frame, expanding
from memspec.elaborate.scope import Instance, Tensor
from memspec.errors import ShapeError, SpecValueError
from memspec.ir.graph import RepetitionIndex
from memspec.ir.types import shape_str
from memspec.ops.registry import same_dim
from memspec.source import Span

__all__ = ["ROUTE", "Forwards", "RouteForm"]

ROUTE = "route"
_SIGNATURE = "route(experts, hidden, routing_weights, selected_experts)"


class Forwards(Protocol):
    """How the route form runs an expert: the elaborator runs a layer's `forward`."""

    def run_forward(
        self, inst: Instance, args: tuple, span: Span | None, calls: tuple[str, ...]
    ) -> object:
        """Run `inst`'s forward on `args` in its own region, with the call stack `calls`."""
        ...


class RouteForm:
    """Expands `route(...)` into ops, running the bank's layer through `forwards`."""

    def __init__(self, builder: GraphBuilder, ops: OpApplier, forwards: Forwards):
        self.builder = builder
        self.ops = ops
        self.forwards = forwards

    def route(self, args: tuple, kwargs: dict, span: Span | None, frame: Frame) -> Tensor:
        if kwargs or len(args) != 4:
            raise SpecValueError(f"route takes four arguments: {_SIGNATURE}", span)
        bank, hidden, weights, selected = args
        if not (isinstance(bank, Instance) and bank.repeated):
            what = f"layer {bank.decl.name}" if isinstance(bank, Instance) else "not a layer"
            raise SpecValueError(
                f"route needs an expert bank as its first argument, declared as "
                f"`experts = repeat E of Layer(...)`; this is {what}",
                span,
            )
        self._check_routing(hidden, weights, selected, span)
        k = self.builder.values[selected.id].shape[1]
        self._mark_bank(bank, k, span)
        count = self.builder.regions[bank.region].count
        inner = dataclasses.replace(
            frame, path=bank.path, region=bank.region, calls=(*frame.calls, ROUTE)
        )
        apply = self.ops.apply
        acc = apply("zeros_like", (hidden,), {}, span, frame, "final_hidden_states")
        expert = {"expert": RepetitionIndex(bank.region), "num_experts": count}
        slots = apply("expert_slots", (selected,), expert, span, inner, "slots")
        idx, top_x = (
            apply("select", (slots,), {"dim": 0, "index": i}, span, inner, name)
            for i, name in ((sp.Integer(0), "idx"), (sp.Integer(1), "top_x"))
        )
        current = apply("index", (hidden, top_x), {}, span, inner, "current_state")
        out = self._run_expert(bank, current, span, frame)
        weight = apply("index", (weights, top_x, idx), {}, span, inner, "routing_weight")
        column = apply(
            "rearrange", (weight, "t -> t 1"), {"axes": ()}, span, inner, "routing_weight"
        )
        scaled = apply("mul", (out, column), {}, span, inner, "current_hidden_states")
        return apply("index_add", (acc, top_x, scaled), {}, span, inner, "final_hidden_states")

    def _check_routing(
        self, hidden: object, weights: object, selected: object, span: Span | None
    ) -> None:
        names = ("hidden", "routing_weights", "selected_experts")
        for name, value in zip(names, (hidden, weights, selected), strict=True):
            if not isinstance(value, Tensor):
                raise SpecValueError(f"route: {name} must be a tensor ({_SIGNATURE})", span)
        h, w, s = (self.builder.values[t.id] for t in (hidden, weights, selected))
        if len(h.shape) != 2 or len(s.shape) != 2 or s.dtype.is_float:
            raise ShapeError(
                f"route: hidden must be [tokens, d] and selected_experts int64 [tokens, k], "
                f"got {shape_str(h.shape)} and {s.dtype.value}{shape_str(s.shape)}",
                span,
            )
        if not (
            len(w.shape) == 2
            and all(map(same_dim, w.shape, s.shape))
            and same_dim(h.shape[0], s.shape[0])
        ):
            raise ShapeError(
                f"route: routing_weights {shape_str(w.shape)} and selected_experts "
                f"{shape_str(s.shape)} must both be [tokens, k] for hidden {shape_str(h.shape)}",
                span,
            )

    def _mark_bank(self, bank: Instance, k: sp.Expr, span: Span | None) -> None:
        region = self.builder.regions[bank.region]
        if any(r == bank.region for r, _, _ in self.builder.carried):
            raise SpecValueError(f"{bank.path} is already applied in sequence; route it only", span)
        if region.active is not None and not same_dim(region.active, k):
            raise SpecValueError(f"{bank.path} is routed with two different k", span)
        self.builder.regions[bank.region] = dataclasses.replace(region, active=k)

    def _run_expert(
        self, bank: Instance, current: Tensor, span: Span | None, frame: Frame
    ) -> Tensor:
        """One call of the bank's layer, in its region, not carried into a next repetition."""
        if bank.forward is None:
            raise SpecValueError(f"layer {bank.decl.name} has no forward", span)
        calls = (*frame.calls, ROUTE, bank.decl.name)
        return expanding(
            lambda: self.forwards.run_forward(bank, (current,), span, calls),
            bank.decl.name,
            bank.path,
            span,
        )

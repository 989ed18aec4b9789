"""Accumulates the IR while the elaborator walks the spec, then freezes it into a Graph."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.ir.graph import (
    Assumption,
    CallOutput,
    Graph,
    OpApply,
    Region,
    SizeCondition,
    SizeDecision,
    Value,
)
from memspec.ir.sizes import GENERAL, BoundSizes
from memspec.ir.types import DType, Role, Shape
from memspec.source import Span

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """Mutable staging area for the frozen IR types; ids are list positions."""

    def __init__(self, bound: BoundSizes = GENERAL, tp: sp.Expr | None = None) -> None:
        self.bound = bound  # the sizes views and copies are decided at
        self.tp = tp  # the tensor-parallel degree (its symbol), None without
        # weights of row-parallel members whose output stays whole under --sp
        self.whole_outputs: set[int] = set()
        self.decisions: list[SizeDecision] = []
        self.conditions: dict[sp.Basic, SizeCondition] = {}
        self.values: list[Value] = []
        self.ops: list[OpApply] = []
        self.regions: list[Region] = []
        self.call_outputs: list[CallOutput] = []
        self.assumptions: dict[sp.Expr, Assumption] = {}
        self.inputs: list[int] = []
        self.carried: list[tuple[int, int, int]] = []
        self.paths: dict[str, int] = {}

    def unique_path(self, path: str) -> str:
        """`path`, or `path_1`, `path_2`, ... when a value of that name exists already."""
        count = self.paths.get(path, 0)
        self.paths[path] = count + 1
        return path if count == 0 else f"{path}_{count}"

    def add_value(
        self,
        path: str,
        shape: Shape,
        dtype: DType,
        role: Role,
        region: int | None,
        requires_grad: bool,
        storage: int | None = None,
        strides: tuple | None = None,
        span: Span | None = None,
        shard: int | None = None,
    ) -> int:
        vid = len(self.values)
        self.values.append(
            Value(
                vid,
                self.unique_path(path),
                tuple(shape),
                dtype,
                role,
                vid if storage is None else storage,
                region,
                requires_grad,
                strides,
                span=span,
                shard=shard,
            )
        )
        if role is Role.INPUT:
            self.inputs.append(vid)
        return vid

    def global_shape(self, vid: int) -> Shape:
        """A value's shape as the whole tensor (the spec's names are of it): its shard
        dim TP times its local size."""
        return self.values[vid].whole_shape(self.tp)

    def add_op(self, op: OpApply) -> None:
        self.ops.append(op)

    def add_region(
        self,
        path: str,
        count: sp.Expr,
        parent: int | None,
        span: Span | None,
        checkpoint: bool = False,
    ) -> int:
        rid = len(self.regions)
        self.regions.append(Region(rid, path, count, parent, span=span, checkpoint=checkpoint))
        return rid

    def checkpoint(self) -> tuple:
        """What `rollback` restores: the graph as it is now."""
        lists = (self.values, self.ops, self.regions, self.call_outputs, self.inputs)
        return (
            tuple(len(x) for x in (*lists, self.carried, self.decisions)),
            dict(self.assumptions),
            dict(self.paths),
            dict(self.conditions),
        )

    def rollback(self, mark: tuple) -> None:
        """Forget everything added since `checkpoint` (a repeat split that is redone)."""
        lengths, assumptions, paths, conditions = mark
        lists = (self.values, self.ops, self.regions, self.call_outputs, self.inputs)
        for items, n in zip((*lists, self.carried, self.decisions), lengths, strict=True):
            del items[n:]
        self.assumptions, self.paths, self.conditions = assumptions, paths, conditions

    def decide(self, decision: SizeDecision) -> None:
        """Record a decision at the bound sizes, once however often it is taken."""
        if decision not in self.decisions:
            self.decisions.append(decision)

    def assume_condition(self, condition: SizeCondition) -> None:
        self.conditions.setdefault(condition.relation, condition)

    def assume_integer(
        self, expr: sp.Expr, text: str | Callable[[], str], span: Span | None
    ) -> None:
        """`expr` must be whole; `text` says so, or a function makes it, called only for
        an assumption not made before (every tensor dim is checked: most are)."""
        if expr.is_integer is not True and expr not in self.assumptions:
            text = text() if callable(text) else text
            self.assumptions[expr] = Assumption(text, expr, span=span)

    def drop_floors(self, expr: sp.Expr) -> sp.Expr:
        """floor(x) -> x where the spec already assumes x (up to an integer) is whole.

        A strided conv gives floor((I - p)/p) + 1 patches; with `p divides I` assumed
        elsewhere in the spec that is I/p, and shapes that say I/p then agree.
        """
        if not isinstance(expr, sp.Basic) or not expr.has(sp.floor):
            return expr
        known = [a.expr for a in self.assumptions.values()]
        replacements = {}
        for f in expr.atoms(sp.floor):
            arg = sp.expand(f.args[0])
            # floor(q + c) = q + floor(c) for a whole q: a stride-2 conv's floor(I/2 - 1/2)
            offset, whole = arg.as_coeff_Add() if arg.is_Add else (sp.Integer(0), arg)
            if not offset.is_Rational:
                offset, whole = sp.Integer(0), arg
            if any(_implies_integer(k, whole) for k in known):
                replacements[f] = whole + sp.floor(offset)
        return sp.expand(expr.xreplace(replacements)) if replacements else expr

    def freeze(self, model: str, outputs: tuple[int, ...]) -> Graph:
        return Graph(
            model=model,
            values=tuple(self.values),
            ops=tuple(self.ops),
            regions=tuple(self.regions),
            call_outputs=tuple(self.call_outputs),
            inputs=tuple(self.inputs),
            outputs=outputs,
            assumptions=tuple(self.assumptions.values()),
            carried=tuple(self.carried),
            bound=self.bound,
            decisions=tuple(self.decisions),
            conditions=tuple(self.conditions.values()),
        )


def _implies_integer(known: sp.Expr, arg: sp.Expr) -> bool:
    """Whether `known` being whole makes the rational `arg` whole.

    True when known = q(arg) for a monic polynomial q with integer coefficients: a
    rational root of a monic integer polynomial is an integer (the rational root
    theorem). So `(I/p)**2 + 1` whole, with I and p integers, means `p divides I`.
    """
    if sp.expand(arg - known).is_Integer:
        return True
    if sp.cancel(arg / known).is_Integer:  # 16 (I/32) is whole when I/32 is
        return True
    num, den = sp.fraction(sp.together(arg))
    if not isinstance(num, sp.Symbol) or den.has(num):
        return False
    z = sp.Dummy("z")
    in_z = sp.expand(known.xreplace({num: z * den}))
    if in_z.free_symbols != {z}:
        return False
    poly = sp.Poly(in_z, z)
    return poly.degree() >= 1 and poly.LC() == 1 and all(c.is_Integer for c in poly.all_coeffs())

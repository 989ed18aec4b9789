"""Evaluating expressions: scalars become sympy, tensors become ops, calls go to callees.

An expression's meaning depends on what its names stand for: arithmetic on dims builds
sympy objects (`symbolic/build.py`), arithmetic on tensors applies primitive ops (`+` is
`add`, tensor times constant is `scale`), and calls go to primitive ops, scalar
functions, or (through `Callees`) to the forward of a sublayer, a fn or `route`.
"""

from __future__ import annotations

import sympy as sp

from memspec.elaborate.apply import OpApplier
from memspec.elaborate.callees import Callees, Route, ScalarFunction, resolve_callee
from memspec.elaborate.conditions import decide
from memspec.elaborate.frames import Frame, Hint, expanding
from memspec.elaborate.scope import (
    FnRef,
    Instance,
    LayerRef,
    ListValue,
    Scope,
    Stack,
    Tensor,
    describe,
)
from memspec.errors import NameResolutionError, SpecValueError
from memspec.ops import REGISTRY, OpDef
from memspec.symbolic import build
from memspec.syntax import nodes as n

__all__ = ["MAX_EXPR_DEPTH", "ExprEvaluator"]

MAX_EXPR_DEPTH = 200  # nesting deeper than this is refused rather than recursed into

_TENSOR_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class ExprEvaluator:
    """Evaluates expressions; ops go to `ops`, calls that run a body to `callees`.

    `frame` is the body being elaborated, None outside any `forward` (layer members,
    globals), where tensor arithmetic and calls other than scalar functions are refused.
    """

    def __init__(self, ops: OpApplier, callees: Callees):
        self.ops = ops
        self.callees = callees
        self.depth = 0

    # Scalars -----------------------------------------------------------------------------

    def scalar(self, expr: n.Expr, scope: Scope) -> sp.Expr:
        value = self.evaluate(expr, scope)
        if isinstance(value, bool) or not isinstance(value, sp.Basic):
            raise SpecValueError(
                f"expected a size or number here, got {describe(value)}", expr.span
            )
        return value

    def condition(self, expr: n.Expr, scope: Scope) -> bool:
        value = self.evaluate(expr, scope)
        if not isinstance(value, bool):
            raise SpecValueError(
                f"a condition must be true or false, got {describe(value)}", expr.span
            )
        return value

    # Expressions -------------------------------------------------------------------------

    def evaluate(
        self, expr: n.Expr, scope: Scope, frame: Frame | None = None, hint: Hint = None
    ) -> object:
        self.depth += 1
        try:
            if self.depth > MAX_EXPR_DEPTH:
                raise SpecValueError(
                    f"expression nested more than {MAX_EXPR_DEPTH} deep", expr.span
                )
            return self._evaluate(expr, scope, frame, hint)
        finally:
            self.depth -= 1

    def _evaluate(self, expr: n.Expr, scope: Scope, frame: Frame | None, hint: Hint) -> object:
        if isinstance(expr, n.ExprInt):
            return build.integer(expr.value, expr.span)
        if isinstance(expr, n.ExprFloat):
            return build.number(expr.text)
        if isinstance(expr, n.ExprString):
            return expr.value
        if isinstance(expr, n.ExprBool):
            return expr.value
        if isinstance(expr, n.ExprName):
            found = scope.find(expr.name)
            if found is None:
                if expr.name in REGISTRY or build.scalar_function(expr.name):
                    raise NameResolutionError(f"{expr.name!r} is a function; call it", expr.span)
                scope.lookup(expr.name, expr.span)
            return found
        if isinstance(expr, n.ExprAttr):
            return self.attribute(expr, scope, frame)
        if isinstance(expr, n.ExprUnary):
            return self.unary(expr, scope, frame, hint)
        if isinstance(expr, n.ExprBinary):
            return self.binary(expr, scope, frame, hint)
        if isinstance(expr, n.ExprCall):
            return self.call(expr, scope, frame, hint)
        if isinstance(expr, n.ExprList):
            return ListValue(tuple(self.evaluate(i, scope, frame) for i in expr.items))
        if isinstance(expr, n.ExprIndex):
            return self.index(expr, scope, frame)
        raise TypeError(f"unknown expression node {type(expr).__name__}")

    def attribute(self, expr: n.ExprAttr, scope: Scope, frame: Frame | None) -> object:
        base = self.evaluate(expr.base, scope, frame)
        if not isinstance(base, Instance):
            raise NameResolutionError(
                f"only layers have attributes; this is {describe(base)}", expr.span
            )
        found = base.scope.names.get(expr.name)
        if found is None:
            raise NameResolutionError(
                f"{base.decl.name} has no member {expr.name!r}"
                f"{base.scope.child().suggest(expr.name)}",
                expr.span,
            )
        return found

    def index(self, expr: n.ExprIndex, scope: Scope, frame: Frame | None) -> object:
        """`xs[i]`: i must be an integer (a literal or a name bound to one), in range;
        negative counts from the end, as in Python."""
        base = self.evaluate(expr.base, scope, frame)
        if not isinstance(base, ListValue):
            raise SpecValueError(f"only lists can be indexed; this is {describe(base)}", expr.span)
        i = self.evaluate(expr.index, scope, frame)
        if isinstance(i, bool) or not (isinstance(i, sp.Basic) and i.is_Integer):
            raise SpecValueError(
                f"a list index must be an integer, got {describe(i)}"
                + (f" ({i})" if isinstance(i, sp.Basic) and not isinstance(i, bool) else ""),
                expr.index.span,
            )
        count = len(base.items)
        if not -count <= int(i) < count:
            raise SpecValueError(f"index {i} is out of range for a list of {count}", expr.span)
        return base.items[int(i)]

    def unary(self, expr: n.ExprUnary, scope: Scope, frame: Frame | None, hint: Hint) -> object:
        value = self.evaluate(expr.operand, scope, frame)
        if expr.op == "not":
            if not isinstance(value, bool):
                raise SpecValueError("'not' needs true or false", expr.span)
            return not value
        if isinstance(value, Tensor):
            if frame is None:
                raise SpecValueError("tensor arithmetic is only allowed inside forward", expr.span)
            return self.ops.apply("neg", (value,), {}, expr.span, frame, hint)
        if isinstance(value, sp.Basic) and not isinstance(value, bool):
            return sp.Mul(-1, value)
        raise SpecValueError(f"cannot negate {describe(value)}", expr.span)

    def binary(self, expr: n.ExprBinary, scope: Scope, frame: Frame | None, hint: Hint) -> object:
        left = self.evaluate(expr.left, scope, frame)
        right = self.evaluate(expr.right, scope, frame)
        op = expr.op
        if op in ("and", "or"):
            if not (isinstance(left, bool) and isinstance(right, bool)):
                raise SpecValueError(f"'{op}' needs true or false on both sides", expr.span)
            return (left and right) if op == "and" else (left or right)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            if frame is None:
                raise SpecValueError("tensor arithmetic is only allowed inside forward", expr.span)
            return self.tensor_binary(op, left, right, expr, frame, hint)
        if isinstance(left, bool) or isinstance(right, bool):
            if op in ("==", "!="):
                return (left == right) == (op == "==")
            raise SpecValueError(f"'{op}' is not defined for true/false", expr.span)
        if not (isinstance(left, sp.Basic) and isinstance(right, sp.Basic)):
            raise SpecValueError(
                f"'{op}' needs numbers or tensors, got {describe(left)} and {describe(right)}",
                expr.span,
            )
        if op in ("==", "!=", "<", "<=", ">", ">="):
            try:
                return build.compare(op, left, right, expr.span)
            except build.Undecided:
                return decide(self.ops.builder, op, left, right, expr.span)
        return build.binary(op, left, right, expr.span)

    def tensor_binary(
        self, op: str, left: object, right: object, expr: n.ExprBinary, frame: Frame, hint: Hint
    ) -> Tensor:
        span, apply = expr.span, self.ops.apply
        if isinstance(left, Tensor) and isinstance(right, Tensor) and op in _TENSOR_BINARY:
            return apply(_TENSOR_BINARY[op], (left, right), {}, span, frame, hint)
        tensor, other = (left, right) if isinstance(left, Tensor) else (right, left)
        if not isinstance(other, sp.Basic) or isinstance(other, bool):
            raise SpecValueError(
                f"cannot combine a tensor with {describe(other)} by '{op}'", expr.span
            )
        literal = expr.right if tensor is left else expr.left
        if isinstance(literal, n.ExprFloat) and other.is_Integer and not self.ops.is_float(tensor):
            # `2.0` is a float to torch: x * 2.0 of an integer x is float32.
            other = sp.Float(other)
        if op == "*":
            return apply("scale", (tensor,), {"factor": other}, span, frame, hint)
        if op == "/" and tensor is left:
            if other == 0:
                raise SpecValueError("division by zero", expr.span)
            if sp.Pow(other, -1).is_integer and not self.ops.is_float(tensor):
                # x * (1/c) would keep x's integer dtype where torch's x / c is float.
                raise SpecValueError(
                    f"an integer tensor divided by {other} is a float32 copy in torch, "
                    "which a constant factor cannot express; leave the division out",
                    expr.span,
                )
            return apply("scale", (tensor,), {"factor": sp.Pow(other, -1)}, span, frame, hint)
        if op in ("+", "-"):
            if op == "-" and tensor is right:  # c - x = (-x) + c
                tensor = apply("neg", (tensor,), {}, span, frame, None)
            offset = sp.Mul(-1, other) if op == "-" and tensor is left else other
            return apply("shift", (tensor,), {"offset": offset}, span, frame, hint)
        raise SpecValueError(f"'{op}' between a tensor and a number is not supported", expr.span)

    # Calls -------------------------------------------------------------------------------

    def call(self, expr: n.ExprCall, scope: Scope, frame: Frame | None, hint: Hint) -> object:
        if isinstance(expr.callee, n.ExprName):
            callee = resolve_callee(expr.callee.name, scope, expr.callee.span)
        else:
            callee = self.evaluate(expr.callee, scope, frame)
        args = tuple(self.evaluate(a.value, scope, frame) for a in expr.args if a.name is None)
        kwargs: dict[str, object] = {}
        for a in expr.args:
            if a.name is not None:
                if a.name in kwargs:
                    raise SpecValueError(f"argument {a.name!r} given twice", a.span)
                kwargs[a.name] = self.evaluate(a.value, scope, frame)
        if isinstance(callee, ScalarFunction):
            return callee(args, kwargs, expr.span)
        if frame is None:
            raise SpecValueError(
                "calls to layers, fns and ops are only allowed inside forward", expr.span
            )
        return self.call_in_forward(callee, args, kwargs, scope, expr, frame, hint)

    def call_in_forward(
        self,
        callee: object,
        args: tuple,
        kwargs: dict[str, object],
        scope: Scope,
        expr: n.ExprCall,
        frame: Frame,
        hint: Hint,
    ) -> object:
        """A call that adds ops to the graph: of a route, an op, a layer or a fn."""
        span, callees = expr.span, self.callees
        if isinstance(callee, Route):
            return callees.route(args, kwargs, span, frame)
        if isinstance(callee, OpDef):
            return self.ops.call(callee, args, kwargs, scope.find, span, frame, hint)
        # A call assigned to a name (`q = rope(...)`) names the value it returns after it.
        result_name = frame.member(hint) if isinstance(hint, str) and hint else None
        if isinstance(callee, (Instance, Stack)):
            name, path = callee.decl.name, callee.path
            return expanding(
                lambda: callees.call_layer(callee, args, kwargs, span, frame.calls, result_name),
                name,
                path,
                span,
            )
        if isinstance(callee, FnRef):
            name, path = callee.decl.name, frame.member(callee.decl.name)
            return expanding(
                lambda: callees.call_fn(callee, args, kwargs, span, frame, result_name),
                name,
                path,
                span,
            )
        if isinstance(callee, LayerRef):
            raise NameResolutionError(
                f"{callee.decl.name} is a layer: instantiate it as a member "
                f"(`name = {callee.decl.name}(...)`) and call the member",
                span,
            )
        raise SpecValueError(f"{describe(callee)} is not callable", span)

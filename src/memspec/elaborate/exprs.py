"""Evaluating expressions and forward statements: scalars become sympy, tensors become ops.

An expression's meaning depends on what its names stand for: arithmetic on dims builds
sympy objects (`symbolic/build.py`), arithmetic on tensors applies primitive ops (`+` is
`add`, tensor times constant is `scale`), and calls go to primitive ops, fns, or the
forward of a sublayer.
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from memspec.config import TrainConfig
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.route import ROUTE
from memspec.elaborate.scope import FnRef, Instance, LayerRef, Scope, Tensor
from memspec.elaborate.shapes import bind_type
from memspec.errors import MemspecError, NameResolutionError, ShapeError, SpecValueError
from memspec.ir.graph import OpApply
from memspec.ir.types import Role
from memspec.ops import REGISTRY, OpDef
from memspec.ops.registry import InferContext, OpShapeError, TensorType
from memspec.source import Span
from memspec.symbolic import build
from memspec.syntax import nodes as n

__all__ = ["MAX_EXPR_DEPTH", "ExprEvaluator"]

MAX_EXPR_DEPTH = 200  # nesting deeper than this is refused rather than recursed into

_TENSOR_BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class ExprEvaluator:
    """Expression and statement evaluation; `Elaborator` supplies calls and instantiation."""

    def __init__(self, builder: GraphBuilder, config: TrainConfig):
        self.builder = builder
        self.config = config
        self.depth = 0

    # Scalars -----------------------------------------------------------------------------

    def scalar(self, expr: n.Expr, scope: Scope) -> sp.Expr:
        value = self.evaluate(expr, scope)
        if isinstance(value, bool) or not isinstance(value, sp.Basic):
            raise SpecValueError(f"expected a size or number here, got {_kind(value)}", expr.span)
        return value

    def condition(self, expr: n.Expr, scope: Scope) -> bool:
        value = self.evaluate(expr, scope)
        if not isinstance(value, bool):
            raise SpecValueError(
                f"a condition must be true or false, got {_kind(value)}", expr.span
            )
        return value

    # Expressions -------------------------------------------------------------------------

    def evaluate(self, expr: n.Expr, scope: Scope, frame=None, hint: str | None = None) -> object:
        self.depth += 1
        try:
            if self.depth > MAX_EXPR_DEPTH:
                raise SpecValueError(
                    f"expression nested more than {MAX_EXPR_DEPTH} deep", expr.span
                )
            return self._evaluate(expr, scope, frame, hint)
        finally:
            self.depth -= 1

    def _evaluate(self, expr: n.Expr, scope: Scope, frame, hint: str | None) -> object:
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
        raise TypeError(f"unknown expression node {type(expr).__name__}")

    def attribute(self, expr: n.ExprAttr, scope: Scope, frame) -> object:
        base = self.evaluate(expr.base, scope, frame)
        if not isinstance(base, Instance):
            raise NameResolutionError(
                f"only layers have attributes; this is {_kind(base)}", expr.span
            )
        found = base.scope.names.get(expr.name)
        if found is None:
            raise NameResolutionError(
                f"{base.decl.name} has no member {expr.name!r}"
                f"{base.scope.child().suggest(expr.name)}",
                expr.span,
            )
        return found

    def unary(self, expr: n.ExprUnary, scope: Scope, frame, hint: str) -> object:
        value = self.evaluate(expr.operand, scope, frame)
        if expr.op == "not":
            if not isinstance(value, bool):
                raise SpecValueError("'not' needs true or false", expr.span)
            return not value
        if isinstance(value, Tensor):
            return self.apply("neg", (value,), {}, expr.span, frame, hint)
        if isinstance(value, sp.Basic) and not isinstance(value, bool):
            return sp.Mul(-1, value)
        raise SpecValueError(f"cannot negate {_kind(value)}", expr.span)

    def binary(self, expr: n.ExprBinary, scope: Scope, frame, hint: str) -> object:
        left = self.evaluate(expr.left, scope, frame)
        right = self.evaluate(expr.right, scope, frame)
        op = expr.op
        if op in ("and", "or"):
            if not (isinstance(left, bool) and isinstance(right, bool)):
                raise SpecValueError(f"'{op}' needs true or false on both sides", expr.span)
            return (left and right) if op == "and" else (left or right)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            return self.tensor_binary(op, left, right, expr, frame, hint)
        if isinstance(left, bool) or isinstance(right, bool):
            if op in ("==", "!="):
                return (left == right) == (op == "==")
            raise SpecValueError(f"'{op}' is not defined for true/false", expr.span)
        if not (isinstance(left, sp.Basic) and isinstance(right, sp.Basic)):
            raise SpecValueError(
                f"'{op}' needs numbers or tensors, got {_kind(left)} and {_kind(right)}", expr.span
            )
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return build.compare(op, left, right, expr.span)
        return build.binary(op, left, right, expr.span)

    def tensor_binary(self, op, left, right, expr: n.ExprBinary, frame, hint: str) -> Tensor:
        if frame is None:
            raise SpecValueError("tensor arithmetic is only allowed inside forward", expr.span)
        both = isinstance(left, Tensor) and isinstance(right, Tensor)
        if both and op in _TENSOR_BINARY:
            return self.apply(_TENSOR_BINARY[op], (left, right), {}, expr.span, frame, hint)
        tensor, other = (left, right) if isinstance(left, Tensor) else (right, left)
        if not isinstance(other, sp.Basic) or isinstance(other, bool):
            raise SpecValueError(
                f"cannot combine a tensor with {_kind(other)} by '{op}'", expr.span
            )
        if op == "*":
            return self.apply("scale", (tensor,), {"factor": other}, expr.span, frame, hint)
        if op == "/" and tensor is left:
            if other == 0:
                raise SpecValueError("division by zero", expr.span)
            factor = sp.Pow(other, -1)
            return self.apply("scale", (tensor,), {"factor": factor}, expr.span, frame, hint)
        if op in ("+", "-"):
            if op == "-" and tensor is right:  # c - x = (-x) + c
                tensor = self.apply("neg", (tensor,), {}, expr.span, frame, None)
            offset = sp.Mul(-1, other) if op == "-" and tensor is left else other
            return self.apply("shift", (tensor,), {"offset": offset}, expr.span, frame, hint)
        raise SpecValueError(f"'{op}' between a tensor and a number is not supported", expr.span)

    # Calls -------------------------------------------------------------------------------

    def call(self, expr: n.ExprCall, scope: Scope, frame, hint: str) -> object:
        callee_name = expr.callee.name if isinstance(expr.callee, n.ExprName) else None
        callee = None
        if callee_name is not None:
            callee = scope.find(callee_name)
            if callee is None and callee_name == ROUTE:
                callee = ROUTE  # the mixture-of-experts form (elaborate/route.py)
            if callee is None:
                callee = REGISTRY.get(callee_name) or build.scalar_function(callee_name)
            if callee is None:
                scope.lookup(callee_name, expr.callee.span)
        else:
            callee = self.evaluate(expr.callee, scope, frame)
        args = tuple(self.evaluate(a.value, scope, frame) for a in expr.args if a.name is None)
        kwargs: dict[str, object] = {}
        for a in expr.args:
            if a.name is not None:
                if a.name in kwargs:
                    raise SpecValueError(f"argument {a.name!r} given twice", a.span)
                kwargs[a.name] = self.evaluate(a.value, scope, frame)
        if isinstance(callee, tuple):  # a built-in scalar function
            return self.scalar_call(callee_name, callee, args, kwargs, expr.span)
        if frame is None:
            raise SpecValueError(
                "calls to layers, fns and ops are only allowed inside forward", expr.span
            )
        if callee == ROUTE:
            return self.route(args, kwargs, expr.span, frame)
        if isinstance(callee, OpDef):
            if callee.bind_scope is not None:
                try:
                    kwargs = callee.bind_scope(args, kwargs, scope.find)
                except ValueError as err:
                    raise SpecValueError(str(err), expr.span) from None
            return self.apply(callee.name, args, kwargs, expr.span, frame, hint)
        # A call assigned to a name (`q = rope(...)`) names the value it returns after it.
        result_name = ".".join(p for p in (frame.path, hint) if p) if hint else None
        if isinstance(callee, Instance):
            return self.nested(
                lambda: self.call_layer(callee, args, kwargs, expr.span, frame.calls, result_name),
                callee.decl.name,
                callee.path,
                expr.span,
            )
        if isinstance(callee, FnRef):
            path = f"{frame.path}.{callee.decl.name}" if frame.path else callee.decl.name
            decl = callee.decl
            return self.nested(
                lambda: self.run_body(
                    decl.name,
                    decl.params,
                    decl.returns,
                    decl.body,
                    self.globals,
                    args,
                    kwargs,
                    path,
                    frame.region,
                    (*frame.calls, decl.name),
                    expr.span,
                    result_name,
                ),
                decl.name,
                path,
                expr.span,
            )
        if isinstance(callee, LayerRef):
            raise NameResolutionError(
                f"{callee.decl.name} is a layer: instantiate it as a member "
                f"(`name = {callee.decl.name}(...)`) and call the member",
                expr.span,
            )
        raise SpecValueError(f"{_kind(callee)} is not callable", expr.span)

    def nested(self, run, name: str, path: str, span: Span | None) -> object:
        try:
            return run()
        except MemspecError as err:
            if err.span is not None and span is not None and err.span.source != span.source:
                raise err.with_note(f"while expanding {name} ({path})", span) from None
            raise

    def scalar_call(self, name, spec, args, kwargs, span) -> sp.Expr:
        arity, func = spec
        if kwargs or len(args) != arity:
            raise SpecValueError(f"{name} takes {arity} argument{'s' if arity > 1 else ''}", span)
        for a in args:
            if isinstance(a, bool) or not isinstance(a, sp.Basic):
                raise SpecValueError(f"{name} needs numbers, got {_kind(a)}", span)
        return func(*args)

    def apply(
        self, op_name: str, args: tuple, kwargs: dict, span: Span | None, frame, hint
    ) -> Tensor | tuple[Tensor, ...]:
        """Apply a primitive op; an op with several outputs returns a tuple of them."""
        op = REGISTRY[op_name]
        tensors, attrs = self.split_args(op, args, kwargs, span)
        types = tuple(
            TensorType(v.shape, v.dtype, v.requires_grad, v.strides)
            for v in (self.builder.values[t.id] for t in tensors)
        )
        ctx = InferContext(op_name, types, attrs, self.config.precision.activation)
        try:
            outputs = op.infer(ctx)
        except OpShapeError as err:
            raise ShapeError(str(err), span) from None
        for expr, text in ctx.assumptions:
            self.builder.assume_integer(expr, text, span)
        outputs = tuple(
            dataclasses.replace(o, shape=tuple(self.builder.drop_floors(d) for d in o.shape))
            for o in outputs
        )
        requires_grad = op.differentiable and any(t.requires_grad for t in types)
        # The op an assignment or return produces is named after its target (or, for a
        # return, after the call it ends); ops nested inside an expression after the op.
        # An unpacking assignment names each output after its own target.
        locals_ = hint if isinstance(hint, tuple) else (op_name if hint is None else hint,)
        ids = []
        for k, out in enumerate(outputs):
            local = locals_[min(k, len(locals_) - 1)]
            path = ".".join(p for p in (frame.path, local) if p) or op_name
            if hint == "" and frame.result_name:
                path = frame.result_name
            storage = None
            if out.view_of is not None:
                storage = self.builder.values[tensors[out.view_of].id].storage
            ids.append(
                self.builder.add_value(
                    path,
                    out.shape,
                    out.dtype,
                    Role.ACTIVATION,
                    frame.region,
                    requires_grad and out.dtype.is_float,  # integers never require grad
                    storage,
                    out.strides,
                    span,
                )
            )
        self.builder.add_op(
            OpApply(
                len(self.builder.ops),
                op_name,
                tuple(t.id for t in tensors),
                tuple(ids),
                tuple(sorted(attrs.items())),
                self.builder.values[ids[0]].path,  # unique, unlike `path` when names repeat
                frame.region,
                frame.calls,
                span=span,
            )
        )
        if len(ids) > 1:
            return tuple(Tensor(i) for i in ids)
        return Tensor(ids[0])

    def split_args(self, op: OpDef, args: tuple, kwargs: dict, span):
        """Tensor arguments become inputs; constants fill `op.attrs` by position or name."""
        tensors = [a for a in args if isinstance(a, Tensor)]
        constants = [a for a in args if not isinstance(a, Tensor)]
        if any(isinstance(a, Tensor) for a in kwargs.values()):
            raise SpecValueError(f"{op.name}: pass tensors by position", span)
        variadic = op.tensors and op.tensors[0].startswith("*")
        required = [t for t in op.tensors if not t.endswith("?")]
        if not variadic and not (len(required) <= len(tensors) <= len(op.tensors)):
            expected = ", ".join(t.rstrip("?") for t in op.tensors)
            raise SpecValueError(f"{op.name} takes tensors ({expected}), got {len(tensors)}", span)
        if variadic and not tensors:
            raise SpecValueError(f"{op.name} needs at least one tensor", span)
        names = [name for name, _ in op.attrs]
        if len(constants) > len(names):
            raise SpecValueError(
                f"{op.name} takes {len(names)} constant argument(s)"
                f"{' (' + ', '.join(names) + ')' if names else ''}",
                span,
            )
        attrs = dict(op.attrs)
        attrs.update(zip(names, constants, strict=False))
        for key, value in kwargs.items():
            if key not in attrs:
                raise NameResolutionError(f"{op.name} has no argument {key!r}", span)
            attrs[key] = value
        for key, value in attrs.items():
            if value is None:
                raise SpecValueError(f"{op.name}: missing argument {key!r}", span)
        return tensors, attrs

    # Statements ----------------------------------------------------------------------------

    def run_stmts(self, stmts: tuple[n.Stmt, ...], scope: Scope, frame) -> object | None:
        for stmt in stmts:
            if isinstance(stmt, n.StmtAssign):
                value = self.evaluate(stmt.value, scope, frame, hint=stmt.target)
                _single(value, stmt.value)
                self.check_annotation(stmt.annotation, value, scope, stmt.target)
                scope.names[stmt.target] = value
            elif isinstance(stmt, n.StmtUnpack):
                value = self.evaluate(stmt.value, scope, frame, hint=stmt.targets)
                if not isinstance(value, tuple) or len(value) != len(stmt.targets):
                    got = len(value) if isinstance(value, tuple) else _kind(value)
                    raise SpecValueError(
                        f"{len(stmt.targets)} names to unpack, but the value is {got}"
                        + (" tensors" if isinstance(value, tuple) else ""),
                        stmt.value.span,
                    )
                scope.names.update(zip(stmt.targets, value, strict=True))
            elif isinstance(stmt, n.StmtReturn):
                value = self.evaluate(stmt.value, scope, frame, hint="")
                _single(value, stmt.value)
                self.check_annotation(stmt.annotation, value, scope, "return value")
                return value
            elif isinstance(stmt, n.StmtIf):
                branch = stmt.then if self.condition(stmt.condition, scope) else stmt.orelse
                result = self.run_stmts(branch, scope, frame)
                if result is not None:
                    return result
        return None

    def check_annotation(self, annotation, value, scope: Scope, what: str) -> None:
        if annotation is None:
            return
        if not isinstance(value, Tensor):
            raise ShapeError(f"{what} is {_kind(value)}, not a tensor", annotation.span)
        v = self.builder.values[value.id]
        bind_type(
            annotation,
            v.shape,
            v.dtype,
            lambda e: self.scalar(e, scope),
            None,
            lambda key: True,
            None,
            what,
        )


def _single(value: object, expr: n.Expr) -> None:
    """A multi-output op's tuple must be unpacked, never bound to one name."""
    if isinstance(value, tuple):
        names = ", ".join("abcdefgh"[: len(value)])
        callee = (
            expr.callee.name
            if isinstance(expr, n.ExprCall) and isinstance(expr.callee, n.ExprName)
            else "this"
        )
        call = f"{callee}(...)" if callee != "this" else "..."
        raise SpecValueError(
            f"{callee} returns {len(value)} tensors; name each: `{names} = {call}`", expr.span
        )


def _kind(value: object) -> str:
    if isinstance(value, tuple):
        return f"{len(value)} tensors"
    if isinstance(value, Tensor):
        return "a tensor"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Instance):
        return f"layer {value.decl.name}"
    if isinstance(value, LayerRef):
        return f"layer definition {value.decl.name}"
    if isinstance(value, FnRef):
        return f"fn {value.decl.name}"
    if isinstance(value, OpDef):
        return f"op {value.name}"
    if isinstance(value, sp.Basic):
        return "a number"
    return type(value).__name__

"""Running the statements of a `forward` or `fn` body: assignments, unpacking, `if`, `return`.

Each assignment names the value it binds after its target (the hint the evaluator
passes on to the op it applies); a type annotation (`y = f(x) : [B, D]`) checks the
value's shape without binding anything.
"""

from __future__ import annotations

from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.exprs import ExprEvaluator
from memspec.elaborate.frames import Frame
from memspec.elaborate.scope import Scope, Tensor, describe
from memspec.elaborate.shapes import bind_type
from memspec.errors import ShapeError, SpecValueError
from memspec.syntax import nodes as n

__all__ = ["StatementRunner"]


class StatementRunner:
    """Runs a body's statements through the evaluator; returns what `return` gives."""

    def __init__(self, exprs: ExprEvaluator, builder: GraphBuilder):
        self.exprs = exprs
        self.builder = builder

    def run(self, stmts: tuple[n.Stmt, ...], scope: Scope, frame: Frame) -> object | None:
        """The value of the first `return` reached, None when none is."""
        evaluate = self.exprs.evaluate
        for stmt in stmts:
            if isinstance(stmt, n.StmtAssign):
                value = evaluate(stmt.value, scope, frame, hint=stmt.target)
                _single(value, stmt.value)
                self.check_annotation(stmt.annotation, value, scope, stmt.target)
                scope.names[stmt.target] = value
            elif isinstance(stmt, n.StmtUnpack):
                value = evaluate(stmt.value, scope, frame, hint=stmt.targets)
                if not isinstance(value, tuple) or len(value) != len(stmt.targets):
                    got = len(value) if isinstance(value, tuple) else describe(value)
                    raise SpecValueError(
                        f"{len(stmt.targets)} names to unpack, but the value is {got}"
                        + (" tensors" if isinstance(value, tuple) else ""),
                        stmt.value.span,
                    )
                scope.names.update(zip(stmt.targets, value, strict=True))
            elif isinstance(stmt, n.StmtReturn) and isinstance(stmt.value, n.ExprTuple):
                values = []
                for item in stmt.value.items:  # `return cos, sin`: the caller unpacks them
                    values.append(evaluate(item, scope, frame, hint=""))
                    _single(values[-1], item)
                return tuple(values)
            elif isinstance(stmt, n.StmtReturn):
                value = evaluate(stmt.value, scope, frame, hint="")
                _single(value, stmt.value)
                self.check_annotation(stmt.annotation, value, scope, "return value")
                return value
            elif isinstance(stmt, n.StmtIf):
                taken = stmt.then if self.exprs.condition(stmt.condition, scope) else stmt.orelse
                result = self.run(taken, scope, frame)
                if result is not None:
                    return result
        return None

    def check_annotation(
        self, annotation: n.TypeTensor | None, value: object, scope: Scope, what: str
    ) -> None:
        if annotation is None:
            return
        if not isinstance(value, Tensor):
            raise ShapeError(f"{what} is {describe(value)}, not a tensor", annotation.span)
        v = self.builder.values[value.id]
        bind_type(
            annotation,
            self.builder.global_shape(value.id),
            v.dtype,
            lambda e: self.exprs.scalar(e, scope),
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

"""The AST: frozen dataclasses for the surface syntax of a spec.

Every node keeps the span of its source text, excluded from equality and hashing, so
tests can build expected nodes without positions and every later error can point at the
spec. Names follow `<Category><Variant>` (`ExprBinary`, `StmtAssign`). This module holds
the language of `forward` bodies (expressions, tensor types, statements);
`syntax/decls.py` the declarations that hold them (layers, dims, presets, `train`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memspec.source import Span

__all__ = [
    "Arg",
    "Body",
    "Expr",
    "ExprAttr",
    "ExprBinary",
    "ExprBool",
    "ExprCall",
    "ExprFloat",
    "ExprIndex",
    "ExprInt",
    "ExprList",
    "ExprName",
    "ExprString",
    "ExprTuple",
    "ExprUnary",
    "SigParam",
    "Stmt",
    "StmtAssign",
    "StmtIf",
    "StmtReturn",
    "StmtUnpack",
    "TypeTensor",
]


def span_field() -> Span | None:
    """A span that does not take part in equality, hashing or repr (cairo's LocationField)."""
    return field(default=None, kw_only=True, compare=False, hash=False, repr=False)


# Expressions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExprInt:
    value: int
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprFloat:
    text: str  # kept as written; turned into an exact sympy Rational, never a float
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprString:
    value: str
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprBool:
    value: bool
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprName:
    name: str
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprAttr:
    base: Expr
    name: str
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprUnary:
    op: str  # "-" or "not"
    operand: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprBinary:
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Arg:
    value: Expr
    name: str | None = None  # keyword arguments carry their name
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprCall:
    callee: Expr
    args: tuple[Arg, ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprTuple:
    """`return cos, sin`: several values, which the caller unpacks (`cos, sin = f(...)`)."""

    items: tuple[Expr, ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprList:
    """`[2, 2, 6, 2]`: per-stage values (depths, widths), indexed by an integer."""

    items: tuple[Expr, ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class ExprIndex:
    """`depths[i]`: an item of a list, `i` an integer literal or a name bound to one."""

    base: Expr
    index: Expr
    span: Span | None = span_field()


Expr = ExprInt | ExprFloat | ExprString | ExprBool | ExprName | ExprAttr | ExprUnary | ExprBinary
Expr = Expr | ExprCall | ExprTuple | ExprList | ExprIndex


# Shapes --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypeTensor:
    """`dtype[d0, d1, ...]`; `None` in `dims` stands for `...` (any leading dims)."""

    dtype: str | None
    dims: tuple[Expr | None, ...]
    span: Span | None = span_field()


# Forward statements ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StmtAssign:
    target: str
    value: Expr
    annotation: TypeTensor | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class StmtUnpack:
    """`values, indices = topk(probs, k)`: one name per output of a multi-output op."""

    targets: tuple[str, ...]
    value: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class StmtReturn:
    value: Expr
    annotation: TypeTensor | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class StmtIf:
    condition: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()
    span: Span | None = span_field()


Stmt = StmtAssign | StmtUnpack | StmtReturn | StmtIf


@dataclass(frozen=True, slots=True)
class SigParam:
    name: str
    type: TypeTensor | None = None
    default: Expr | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Body:
    """One implementation (`variants == (("", stmts),)`) or several named ones."""

    variants: tuple[tuple[str, tuple[Stmt, ...]], ...]
    span: Span | None = span_field()

"""The AST: frozen dataclasses for the surface syntax of a spec.

Every node keeps the span of its source text, excluded from equality and hashing, so
tests can build expected nodes without positions and every later error can point at the
spec. Names follow `<Category><Variant>` (`ExprBinary`, `DeclDim`, `StmtAssign`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memspec.source import Span

__all__ = [
    "Arg",
    "Body",
    "Decl",
    "DeclAssume",
    "DeclConvention",
    "DeclDim",
    "DeclExpect",
    "DeclFn",
    "DeclLayer",
    "DeclLet",
    "DeclOptimizer",
    "DeclPrecision",
    "DeclPreset",
    "DeclTrain",
    "DeclUse",
    "Expr",
    "ExprAttr",
    "ExprBinary",
    "ExprBool",
    "ExprCall",
    "ExprFloat",
    "ExprInt",
    "ExprName",
    "ExprString",
    "ExprUnary",
    "LayerBuffer",
    "LayerForward",
    "LayerIf",
    "LayerLet",
    "LayerParam",
    "LayerStmt",
    "LayerSub",
    "Module",
    "Param",
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


Expr = ExprInt | ExprFloat | ExprString | ExprBool | ExprName | ExprAttr | ExprUnary | ExprBinary
Expr = Expr | ExprCall


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


# Layer statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerLet:
    name: str
    value: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerSub:
    """`name = Layer(args)`, or `name = repeat count of Layer(args)` when `count` is set."""

    name: str
    layer: str
    args: tuple[Arg, ...]
    count: Expr | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerParam:
    name: str
    type: TypeTensor
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerBuffer:
    name: str
    type: TypeTensor
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerForward:
    params: tuple[SigParam, ...]
    returns: TypeTensor | None
    body: Body
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerIf:
    condition: Expr
    then: tuple[LayerStmt, ...]
    orelse: tuple[LayerStmt, ...] = ()
    span: Span | None = span_field()


LayerStmt = LayerLet | LayerSub | LayerParam | LayerBuffer | LayerForward | LayerIf


# Declarations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclUse:
    """`use std`, `use std.layers` (`library` set) or `use "file.mspec"` (`path` set)."""

    library: str | None = None
    path: str | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclDim:
    name: str
    symbol: str
    default: Expr | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclLet:
    name: str
    value: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: Expr | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclLayer:
    """A layer; a `model` is a layer without parameters (`is_model`)."""

    name: str
    params: tuple[Param, ...]
    body: tuple[LayerStmt, ...]
    is_model: bool = False
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclFn:
    name: str
    params: tuple[SigParam, ...]
    returns: TypeTensor | None
    body: Body
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclPreset:
    name: str
    bindings: tuple[tuple[str, Expr, Span | None], ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclAssume:
    text: str
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclExpect:
    quantity: str
    value: Expr
    preset: str | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclTrain:
    settings: tuple[tuple[str, str, Span | None], ...]
    variants: tuple[str, ...] = ()
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclPrecision:
    name: str
    rules: tuple[tuple[str, str, Span | None], ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclOptimizer:
    name: str
    description: str
    states: tuple[tuple[str, str, Span | None], ...]  # (state name, "like" target)
    # (implementation, count, "like" target): tensors a step holds at once besides state
    temps: tuple[tuple[str, int, str, Span | None], ...] = ()
    flops: tuple[tuple[int, str, Span | None], ...] = ()  # (count, "element")
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclConvention:
    """`count output of A, B` / `count output of kind norm, matmul` / `count saved of *`.

    A rule is (what, names, kinds, span); empty names and kinds mean every op.
    """

    name: str
    description: str
    rules: tuple[tuple[str, tuple[str, ...], tuple[str, ...], Span | None], ...]
    span: Span | None = span_field()


Decl = DeclUse | DeclDim | DeclLet | DeclLayer | DeclFn | DeclPreset | DeclExpect | DeclTrain
Decl = Decl | DeclPrecision | DeclOptimizer | DeclConvention | DeclAssume


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed spec file."""

    decls: tuple[Decl, ...]
    span: Span | None = span_field()

"""The AST's declarations: what a spec file declares at top level (dims, lets, layers,
fns, presets, expectations, `train` and its policies) and the statements of a layer's
body. The expressions and statements inside them are in `syntax/nodes.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.source import Span
from memspec.syntax.nodes import Arg, Body, Expr, SigParam, TypeTensor, span_field

__all__ = [
    "Decl",
    "DeclAssume",
    "DeclAssumeSize",
    "DeclConvention",
    "DeclDim",
    "DeclExpect",
    "DeclFn",
    "DeclLayer",
    "DeclLet",
    "DeclOptimizer",
    "DeclPrecision",
    "DeclPreset",
    "DeclRecompute",
    "DeclScaler",
    "DeclTpPlan",
    "DeclTrain",
    "DeclUse",
    "LayerBuffer",
    "LayerForward",
    "LayerIf",
    "LayerLet",
    "LayerParam",
    "LayerStmt",
    "LayerSub",
    "Module",
    "Param",
]


# Layer statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerLet:
    name: str
    value: Expr
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerSub:
    """`name = Layer(args)`, or `name = repeat count of Layer(args)` when `count` is set;
    `repeat count as index of Layer(args)` names the repetition (0, 1, ...) for `args`;
    `repeat count of checkpoint Layer(args)` makes each repetition a checkpoint."""

    name: str
    layer: str
    args: tuple[Arg, ...]
    count: Expr | None = None
    index: str | None = None
    checkpoint: bool = False
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class LayerParam:
    name: str
    type: TypeTensor
    frozen: bool = False  # `param table: [P, D] frozen`: requires_grad=False
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
    # a model's `generate(...)`: its forward under generate() (--mode inference)
    generate: bool = False


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
class DeclHfConfig:
    """`hf_config "llama" { D = hidden_size, ... }`: a config.json's fields as dims."""

    model_types: tuple[str, ...]
    bindings: tuple[tuple[str, Expr, Span | None], ...]
    requires: tuple[Expr, ...] = ()
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclAssume:
    text: str
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclAssumeSize:
    """`assume I % 32 == 0`: a size's divisibility, which shapes may rely on (a stride-2
    conv of I is I/2) and bound values must meet."""

    fact: Expr
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
class DeclScaler:
    """`scaler CLASS(ARGS)` in a precision: the loss scaler verify runs."""

    torch_class: str
    args: tuple[tuple[str, object], ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclPrecision:
    name: str
    rules: tuple[tuple[str, str, Span | None], ...]
    span: Span | None = span_field()
    description: str = ""
    # ("cast", dtype or "widest", op names, span): autocast's op lists
    casts: tuple[tuple[str, str, tuple[str, ...], Span | None], ...] = ()
    scalers: tuple[DeclScaler, ...] = ()


@dataclass(frozen=True, slots=True)
class DeclOptimizer:
    """An optimizer's rules as written. A shape is ("like", target, dims reduced),
    ("scalar",), ("blocks", size, target), ("gram", target) or ("fixed", elements); a
    condition is (quantity, comparison, number) or None."""

    name: str
    description: str
    # (state name, shape, dtype or None, condition, "shared" or None, span)
    states: tuple[tuple, ...]
    # (implementation, count, shape, dtype or None, condition, lifetime, span): tensors a
    # step holds besides state, in the order it makes them; the last one's lifetime
    temps: tuple[tuple, ...] = ()
    flops: tuple[tuple[int, str, Span | None], ...] = ()  # (count, "element")
    # (implementation or None, class path, ((keyword, value), ...), span): what verify runs
    torch: tuple[tuple, ...] = ()
    params: tuple[tuple, ...] = ()  # (condition, span): the parameters it takes
    rest: tuple[tuple[str, Span | None], ...] = ()  # (optimizer, span) for the others
    span: Span | None = span_field()
    made: tuple[tuple[str, Span | None], ...] = ()  # `state at WHEN`: (when, span)


@dataclass(frozen=True, slots=True)
class DeclConvention:
    """`count output of A, B` / `count output of kind norm, matmul` / `count saved of *`.

    A rule is (what, names, kinds, span); empty names and kinds mean every op.
    """

    name: str
    description: str
    rules: tuple[tuple[str, tuple[str, ...], tuple[str, ...], Span | None], ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclRecompute:
    """`recompute full "..." { checkpoint each repeat }`: which parts of the forward run
    again in backward. A rule is (what, names, span): `repeat` checkpoints every
    repetition of every repeated layer, `call` each run of ops inside calls of `names`."""

    name: str
    description: str
    rules: tuple[tuple[str, tuple[str, ...], Span | None], ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class DeclTpPlan:
    """`tp_plan Layer { member style [output] ... }`: how tensor parallelism shards the
    members of every instance of `layer` (a style per member, the layout of its output
    under sequence parallelism or None, and its span)."""

    layer: str
    styles: tuple[tuple[str, str, str | None, Span | None], ...]
    span: Span | None = span_field()

    @property
    def name(self) -> str:
        return self.layer


Decl = DeclUse | DeclDim | DeclLet | DeclLayer | DeclFn | DeclPreset | DeclExpect | DeclTrain
Decl = (
    Decl
    | DeclPrecision
    | DeclOptimizer
    | DeclConvention
    | DeclRecompute
    | DeclTpPlan
    | DeclAssume
    | DeclAssumeSize
    | DeclHfConfig
)


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed spec file."""

    decls: tuple[Decl, ...]
    span: Span | None = span_field()

"""AST -> IR: instantiate the model's layers and run their `forward`s symbolically.

Layer instantiation follows PyTorch: a layer's sublayers, `param`s and `buffer`s are
created when it is instantiated (so unused parameters still count), with hierarchical
names equal to `state_dict` keys. `forward` bodies are elaborated per call, turning every
primitive op into an `OpApply` whose shapes the op's own rule infers and checks.
`repeat N of Block(...)` creates one region of multiplicity N and elaborates Block once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from memspec.config import TrainConfig
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.exprs import ExprEvaluator
from memspec.elaborate.route import RouteForm
from memspec.elaborate.scope import FnRef, Instance, LayerRef, Scope, Tensor
from memspec.elaborate.shapes import bind_type, divisibility_text, same_shape, type_dims
from memspec.errors import MemspecError, NameResolutionError, ShapeError, SpecValueError
from memspec.ir.graph import CallOutput, Graph
from memspec.ir.types import DType, Role, Shape, shape_str
from memspec.source import Span
from memspec.symbolic.symbols import Dim, SymbolTable, dim_symbol
from memspec.syntax import nodes as n
from memspec.syntax.imports import Program

__all__ = ["MAX_INSTANCE_DEPTH", "Elaboration", "elaborate"]

MAX_INSTANCE_DEPTH = 64  # layers nest a handful deep; more is a runaway definition


@dataclass(frozen=True)
class Elaboration:
    """The IR graph with the symbol table and which variant each multi-variant body used."""

    graph: Graph
    symbols: SymbolTable
    variants_used: tuple[tuple[str, str], ...]
    evaluate: object  # Expr -> sympy, in the global scope (for presets and expects)


class Elaborator(ExprEvaluator, RouteForm):
    """Walks the model's layers, building the graph through `GraphBuilder`."""

    def __init__(self, program: Program, config: TrainConfig):
        super().__init__(GraphBuilder(), config)
        self.program = program
        self.symbols = SymbolTable()
        self.globals = Scope()
        self.stack: list[str] = []  # layer names being instantiated, for recursion checks
        self.variants_used: dict[str, str] = {}

    # Globals ---------------------------------------------------------------------------

    def declare_globals(self) -> None:
        for decl in self.program.dims.values():
            symbol = dim_symbol(decl.symbol)
            self.globals.names[decl.symbol] = symbol
            self.globals.names[decl.name] = symbol
        for decl in self.program.dims.values():
            default = None
            if decl.default is not None:
                default = self.scalar(decl.default, self.globals)
            self.symbols.add(Dim(decl.name, dim_symbol(decl.symbol), default, span=decl.span))
        for name, layer in self.program.layers.items():
            self.globals.names[name] = LayerRef(layer)
        for name, fn in self.program.fns.items():
            self.globals.names[name] = FnRef(fn)
        for decl in self.program.lets.values():
            self.globals.names[decl.name] = self.evaluate(decl.value, self.globals)

    # Instantiation ---------------------------------------------------------------------

    def instantiate(
        self,
        decl: n.DeclLayer,
        args: dict[str, object],
        path: str,
        region: int | None,
        span: Span | None,
    ) -> Instance:
        if decl.name in self.stack:
            chain = " -> ".join([*self.stack, decl.name])
            raise SpecValueError(f"recursive layer definition: {chain}", span)
        if len(self.stack) >= MAX_INSTANCE_DEPTH:
            raise SpecValueError(f"layers nest more than {MAX_INSTANCE_DEPTH} deep", span)
        scope = self.globals.child()
        scope.names.update(args)
        inst = Instance(decl, path, region, scope, span=span)
        inst.arguments = set(args)
        self.stack.append(decl.name)
        try:
            self.layer_stmts(inst, decl.body)
        except MemspecError as err:
            if not path:  # the model itself: the error's own span says it all
                raise
            raise err.with_note(f"while instantiating {decl.name} as {path}", span) from None
        finally:
            self.stack.pop()
        return inst

    def layer_stmts(self, inst: Instance, stmts: tuple[n.LayerStmt, ...]) -> None:
        for stmt in stmts:
            if isinstance(stmt, n.LayerLet):
                self.define(inst, stmt.name, self.evaluate(stmt.value, inst.scope), stmt.span)
            elif isinstance(stmt, n.LayerSub):
                self.define(inst, stmt.name, self.sublayer(inst, stmt), stmt.span)
            elif isinstance(stmt, (n.LayerParam, n.LayerBuffer)):
                self.define(inst, stmt.name, self.tensor_state(inst, stmt), stmt.span)
            elif isinstance(stmt, n.LayerForward):
                if inst.forward is not None:
                    raise NameResolutionError(f"{inst.decl.name} has two forwards", stmt.span)
                inst.forward = stmt
            elif isinstance(stmt, n.LayerIf):
                taken = stmt.then if self.condition(stmt.condition, inst.scope) else stmt.orelse
                self.layer_stmts(inst, taken)

    def define(self, inst: Instance, name: str, thing: object, span: Span | None) -> None:
        """Add a member; it may shadow a layer argument of the same name (`bias`), once."""
        if name in inst.arguments:
            inst.arguments.discard(name)
        elif name in inst.scope.names:
            raise NameResolutionError(f"{name!r} is defined twice in this layer", span)
        inst.scope.names[name] = thing

    def sublayer(self, inst: Instance, stmt: n.LayerSub) -> Instance:
        ref = inst.scope.find(stmt.layer)
        if not isinstance(ref, LayerRef):
            raise NameResolutionError(
                f"unknown layer {stmt.layer!r}{self.globals.suggest(stmt.layer)}", stmt.span
            )
        path = f"{inst.path}.{stmt.name}" if inst.path else stmt.name
        region = inst.region
        if stmt.count is not None:
            count = self.scalar(stmt.count, inst.scope)
            if count.is_number and (not count.is_Integer or count < 1):
                raise SpecValueError(
                    f"repeat count must be a positive integer, got {count}", stmt.count.span
                )
            region = self.builder.add_region(path, count, inst.region, stmt.span)
        args = self.bind_args(ref.decl, stmt.args, inst.scope, stmt.span)
        sub = self.instantiate(ref.decl, args, path, region, stmt.span)
        sub.repeated = stmt.count is not None
        return sub

    def bind_args(
        self, decl: n.DeclLayer, args: tuple[n.Arg, ...], caller: Scope, span: Span | None
    ) -> dict[str, object]:
        """Layer arguments by position, then keyword, then default."""
        names = [p.name for p in decl.params]
        bound: dict[str, object] = {}
        for i, arg in enumerate(args):
            if arg.name is None:
                if i >= len(names):
                    raise SpecValueError(
                        f"{decl.name} takes {len(names)} argument"
                        f"{'s' if len(names) != 1 else ''}, got {len(args)}",
                        arg.span or span,
                    )
                key = names[i]
            else:
                if arg.name not in names:
                    raise NameResolutionError(
                        f"{decl.name} has no parameter {arg.name!r}", arg.span
                    )
                key = arg.name
            if key in bound:
                raise SpecValueError(f"{decl.name}: argument {key!r} given twice", arg.span)
            value = self.evaluate(arg.value, caller)
            if isinstance(value, Tensor):
                raise SpecValueError(
                    "layer arguments are sizes or constants, not tensors", arg.span
                )
            bound[key] = value
        scope = self.globals.child()
        for param in decl.params:
            if param.name not in bound:
                if param.default is None:
                    raise SpecValueError(f"{decl.name}: missing argument {param.name!r}", span)
                scope.names.update(bound)
                bound[param.name] = self.evaluate(param.default, scope)
        return bound

    def tensor_state(self, inst: Instance, stmt: n.LayerParam | n.LayerBuffer) -> Tensor:
        shape = type_dims(stmt.type, lambda e: self.scalar(e, inst.scope))
        self.check_sizes(shape, stmt.type.span)
        is_param = isinstance(stmt, n.LayerParam)
        precision = self.config.precision
        dtype = DType.parse(stmt.type.dtype) if stmt.type.dtype else None
        if stmt.type.dtype and dtype is None:
            raise ShapeError(f"unknown dtype {stmt.type.dtype!r}", stmt.type.span)
        dtype = dtype or (precision.param if is_param else precision.buffer)
        path = f"{inst.path}.{stmt.name}" if inst.path else stmt.name
        vid = self.builder.add_value(
            path,
            shape,
            dtype,
            Role.PARAMETER if is_param else Role.BUFFER,
            inst.region,
            requires_grad=is_param,
            span=stmt.span,
        )
        return Tensor(vid)

    def check_sizes(self, shape: Shape, span: Span | None) -> None:
        for dim in shape:
            if not isinstance(dim, sp.Expr) or (dim.is_number and (not dim.is_Integer or dim < 0)):
                raise ShapeError(f"a tensor size must be a non-negative integer, got {dim}", span)
            self.builder.assume_integer(dim, divisibility_text(dim), span)

    # The model ---------------------------------------------------------------------------

    def model(self) -> Graph:
        models = self.program.models
        if not models:
            entry = self.program.entry
            raise NameResolutionError(
                "the spec defines no model (write `model Name { ... }`)",
                Span(entry, 1, 1, 1, 1),
            )
        if len(models) > 1:
            raise NameResolutionError("the spec defines more than one model", models[1].span)
        decl = models[0]
        inst = self.instantiate(decl, {}, "", None, decl.span)
        forward = inst.forward
        if forward is None:
            raise NameResolutionError(f"model {decl.name} has no forward", decl.span)
        args: list[object] = []
        for param in forward.params:
            if param.type is None:
                raise ShapeError(
                    f"model input {param.name!r} needs a type such as [B, L]", param.span
                )
            shape = type_dims(param.type, lambda e: self.scalar(e, inst.scope))
            dtype = DType.parse(param.type.dtype) if param.type.dtype else None
            dtype = dtype or self.config.precision.activation
            vid = self.builder.add_value(
                param.name, shape, dtype, Role.INPUT, None, False, span=param.span
            )
            args.append(Tensor(vid))
        result = self.call_layer(inst, tuple(args), {}, decl.span, calls=())
        outputs = (result.id,) if isinstance(result, Tensor) else ()
        return self.builder.freeze(decl.name, outputs)

    # Calls (used by ExprEvaluator) ----------------------------------------------------------

    def call_layer(
        self,
        inst: Instance,
        args: tuple,
        kwargs: dict,
        span: Span | None,
        calls: tuple[str, ...],
        result_name: str | None = None,
    ) -> object:
        forward = inst.forward
        if forward is None:
            raise NameResolutionError(f"layer {inst.decl.name} has no forward", span)
        first = args[0] if args else None
        result = self.run_body(
            inst.decl.name,
            forward.params,
            forward.returns,
            forward.body,
            inst.scope,
            args,
            kwargs,
            inst.path,
            inst.region,
            (*calls, inst.decl.name),
            span,
            result_name,
        )
        if inst.repeated:
            self.check_repeat(inst, first, result, span)
            self.builder.carried.append((inst.region, first.id, result.id))
        return result

    def check_repeat(self, inst: Instance, first: object, result: object, span) -> None:
        if not (isinstance(first, Tensor) and isinstance(result, Tensor)):
            raise ShapeError(f"repeat of {inst.decl.name} needs a tensor in and out", span)
        a, b = self.builder.values[first.id], self.builder.values[result.id]
        if not same_shape(a.shape, b.shape):
            raise ShapeError(
                f"repeat applies {inst.decl.name} in sequence, so its output "
                f"{shape_str(b.shape)} must match its input {shape_str(a.shape)}",
                span,
            )

    def run_body(
        self,
        name,
        params,
        returns,
        body: n.Body,
        outer: Scope,
        args: tuple,
        kwargs: dict,
        path: str,
        region: int | None,
        calls: tuple[str, ...],
        span: Span | None,
        result_name: str | None = None,
    ) -> object:
        scope = outer.child()
        scope.ellipsis = None
        bound = self.bind_call_args(name, params, args, kwargs, span)
        for param in params:
            value = bound[param.name]
            if param.type is not None:
                if not isinstance(value, Tensor):
                    raise ShapeError(f"{name}: argument {param.name!r} must be a tensor", span)
                v = self.builder.values[value.id]
                matched = bind_type(
                    param.type,
                    v.shape,
                    v.dtype,
                    lambda e, s=scope: self.scalar(e, s),
                    lambda key, size, s=scope: s.names.__setitem__(key, size),
                    # Signature names bind unless the layer itself
                    # defines them: global dims do not constrain them.
                    lambda key, s=scope: s.find_local(key, self.globals) is not None,
                    scope.ellipsis,
                    f"{name}: argument {param.name!r}",
                )
                if matched is not None:
                    scope.ellipsis = matched
            scope.names[param.name] = value
        stmts = self.pick_variant(name, body)
        frame = _Frame(path, region, calls, result_name)
        result = self.run_stmts(stmts, scope, frame)
        if result is None:
            raise SpecValueError(f"{name}: forward ends without `return`", body.span or span)
        if returns is not None and isinstance(result, Tensor):
            v = self.builder.values[result.id]
            bind_type(
                returns,
                v.shape,
                v.dtype,
                lambda e: self.scalar(e, scope),
                None,
                lambda key: True,
                scope.ellipsis,
                f"{name}: return value",
            )
        if isinstance(result, Tensor):
            self.builder.call_outputs.append(CallOutput(calls[-1], path, result.id))
        return result

    def bind_call_args(self, name, params, args, kwargs, span) -> dict[str, object]:
        if len(args) > len(params):
            raise SpecValueError(
                f"{name} takes {len(params)} argument"
                f"{'s' if len(params) != 1 else ''}, got {len(args)}",
                span,
            )
        bound = {p.name: a for p, a in zip(params, args, strict=False)}
        for key, value in kwargs.items():
            if key not in {p.name for p in params}:
                raise NameResolutionError(f"{name} has no argument {key!r}", span)
            if key in bound:
                raise SpecValueError(f"{name}: argument {key!r} given twice", span)
            bound[key] = value
        for param in params:
            if param.name not in bound:
                if param.default is None:
                    raise SpecValueError(f"{name}: missing argument {param.name!r}", span)
                bound[param.name] = self.evaluate(param.default, self.globals)
        return bound

    def pick_variant(self, name: str, body: n.Body) -> tuple[n.Stmt, ...]:
        variants = dict(body.variants)
        if len(variants) == 1:
            return next(iter(variants.values()))
        chosen = next((v for v in self.config.variants if v in variants), body.variants[0][0])
        self.variants_used[name] = chosen
        return variants[chosen]


@dataclass(frozen=True)
class _Frame:
    """Where ops being elaborated belong: instance path, region, call stack."""

    path: str
    region: int | None
    calls: tuple[str, ...]
    result_name: str | None = None  # the caller's name for what this call returns


def elaborate(program: Program, config: TrainConfig) -> Elaboration:
    """Build the IR graph of `program`'s model under `config` (dtypes, variants)."""
    elaborator = Elaborator(program, config)
    elaborator.declare_globals()
    graph = elaborator.model()
    used = tuple(sorted(elaborator.variants_used.items()))
    return Elaboration(
        graph, elaborator.symbols, used, lambda expr: elaborator.scalar(expr, elaborator.globals)
    )

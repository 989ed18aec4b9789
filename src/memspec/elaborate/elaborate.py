"""AST -> IR: instantiate the model's layers and run their `forward`s symbolically.

The `Elaborator` wires the parts together and runs the bodies of calls: layers are
instantiated first (`instantiate.py`), with PyTorch's `state_dict` names; `forward` and
`fn` bodies are then elaborated per call, their statements (`statements.py`) and
expressions (`exprs.py`) turning every primitive op into an `OpApply` whose shapes the
op's own rule infers and checks (`apply.py`). The evaluator hands calls that run a body
back to the elaborator, which it knows only as `Callees`; the `route` form likewise
knows it only as `Forwards`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from memspec.config import TrainConfig
from memspec.elaborate.apply import OpApplier
from memspec.elaborate.binding import Argument, bind_arguments
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.conditions import declare_fact
from memspec.elaborate.decisions import rule_decisions
from memspec.elaborate.exprs import MAX_EXPR_DEPTH, ExprEvaluator
from memspec.elaborate.frames import Frame
from memspec.elaborate.instantiate import MAX_INSTANCE_DEPTH, Instantiator
from memspec.elaborate.repeat_index import check_no_index
from memspec.elaborate.route import RouteForm
from memspec.elaborate.scope import FnRef, Instance, LayerRef, Scope, Stack, Tensor
from memspec.elaborate.shapes import bind_type, same_shape, type_dims
from memspec.elaborate.statements import StatementRunner
from memspec.errors import NameResolutionError, ShapeError, SpecValueError, UsageError
from memspec.ir.graph import CallOutput, Graph
from memspec.ir.sizes import GENERAL, BoundSizes
from memspec.ir.types import DType, Role, shape_str
from memspec.parallel import TP
from memspec.source import Span
from memspec.symbolic.bind import Bindings
from memspec.symbolic.symbols import Dim, SymbolTable, dim_symbol
from memspec.syntax import decls as d
from memspec.syntax import nodes as n
from memspec.syntax.imports import Program
from memspec.tensor_parallel import STYLES, read_plans

__all__ = ["GENERATING", "MAX_EXPR_DEPTH", "MAX_INSTANCE_DEPTH", "Elaboration", "elaborate"]

GENERATING = "generating"  # a global: true under --mode inference
PAGED = "paged_kv"  # a global: true under --kv-cache paged
HF_GENERATE = "hf_generate"  # a global: true when transformers' generate() runs the loop
STATIC = "static_kv"  # a global: true under --kv-cache static
STATIC_LENGTH = "static_length"  # a global: a static cache's positions (0 without one)
QUANTIZED = "quantized_kv"  # a global: true under --kv-dtype fp8 with transformers' cache
DECODING = "decoding"  # a global: true in a decode step's forward
PROMPT = "prompt_length"  # a global: the prompt's tokens under --mode inference (0 without)
# a global: true when every repetition of the repeated layers is a checkpoint (--recompute
# full: transformers' activation_checkpointing_enable, which makes the input embeddings'
# output require a gradient: `if checkpointing { x = requires_grad_(x) }`)
CHECKPOINTING = "checkpointing"
# the names memspec sets in every spec's scope, with what they say
RESERVED = {
    GENERATING: "true under --mode inference",
    PAGED: "true under --kv-cache paged",
    HF_GENERATE: "true when transformers' generate() runs the loop",
    STATIC: "true under --kv-cache static",
    STATIC_LENGTH: "a static cache's positions",
    QUANTIZED: "true under --kv-dtype fp8 with a contiguous cache",
    DECODING: "true in a decode step's forward",
    PROMPT: "the prompt's tokens under --mode inference",
    CHECKPOINTING: "true under --recompute full",
}


@dataclass(frozen=True)
class Elaboration:
    """The IR graph with the symbol table and which variant each multi-variant body used."""

    graph: Graph
    symbols: SymbolTable
    variants_used: tuple[tuple[str, str], ...]
    evaluate: Callable[[n.Expr], sp.Expr]  # in the global scope (for presets and expects)
    bindings: Bindings  # the sizes the user bound, which the graph's decisions follow


# The sizes the user bound, read against the declared dims (the evaluator reads a preset's
# expressions in the global scope).
BindSizes = Callable[[SymbolTable, Callable[[n.Expr], sp.Expr]], Bindings]


class Elaborator:
    """Walks the model's layers and runs the bodies of calls, building the graph."""

    def __init__(
        self, program: Program, config: TrainConfig, split_first: frozenset[str] = frozenset()
    ):
        self.program = program
        self.config = config
        self.plans = read_plans(program) if config.parallel.tensor_parallel else None
        self.builder = GraphBuilder(tp=dim_symbol(TP) if self.plans else None)
        self.symbols = SymbolTable()
        self.globals = Scope()
        self.variants_used: dict[str, str] = {}
        self.ops = OpApplier(self.builder, config, bool(self.plans and self.plans.loss_parallel))
        self.exprs = ExprEvaluator(self.ops, callees=self)
        self.statements = StatementRunner(self.exprs, self.builder)
        self.layers = Instantiator(
            self.exprs, self.builder, config, self.globals, self.plans, split_first
        )
        self.route_form = RouteForm(self.builder, self.ops, forwards=self)

    def declare_globals(self) -> None:
        self.check_reserved()
        for decl in self.program.dims.values():
            symbol = dim_symbol(decl.symbol)
            self.globals.names[decl.symbol] = symbol
            self.globals.names[decl.name] = symbol
        for decl in self.program.dims.values():
            default = None
            if decl.default is not None:
                default = self.exprs.scalar(decl.default, self.globals)
            self.symbols.add(Dim(decl.name, dim_symbol(decl.symbol), default, span=decl.span))
        for name, layer in self.program.layers.items():
            self.globals.names[name] = LayerRef(layer)
        for name, fn in self.program.fns.items():
            self.globals.names[name] = FnRef(fn)
        for decl in self.program.lets.values():
            self.globals.names[decl.name] = self.exprs.evaluate(decl.value, self.globals)
        # whether the model runs its generate block (--mode inference), for `if generating`
        self.globals.names[GENERATING] = self.config.inference is not None
        self.globals.names[CHECKPOINTING] = self.config.recompute.repeats
        # whether its K/V cache is paged (--kv-cache paged), for `if paged_kv`
        run = self.config.inference
        self.globals.names[PAGED] = run is not None and run.cache == "paged"
        # whether transformers' generate() drives it (--loop generate), for `if hf_generate`
        self.globals.names[HF_GENERATE] = run is not None and run.loop == "generate"
        # a static cache (--kv-cache static) and its positions, for `if static_kv`
        self.globals.names[STATIC] = run is not None and run.cache == "static"
        static = (run.static_length or 0) if run is not None else 0
        self.globals.names[STATIC_LENGTH] = sp.Integer(static)
        # transformers' QuantizedCache(backend="fp8") (--kv-dtype fp8, --kv-cache contiguous)
        self.globals.names[QUANTIZED] = run is not None and run.quantized
        # whether this forward is a decode step's (one token, the cache before it)
        self.globals.names[DECODING] = run is not None and run.decoding
        # the prompt's length, which a sliding window's cache holds until the first decode
        self.globals.names[PROMPT] = sp.Integer(run.prompt_len if run is not None else 0)
        for fact in self.program.size_facts:
            declare_fact(self.builder, lambda e: self.exprs.scalar(e, self.globals), fact)

    def model(self, bound: BoundSizes = GENERAL) -> Graph:
        """The model's graph, its views and copies decided at the `bound` sizes."""
        self.builder.bound = bound
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
        inst = self.layers.instantiate(decl, {}, "", None, decl.span)
        if self.config.inference is not None:
            # compile_spec found the block (and refused a model without one)
            assert inst.generate is not None, "--mode inference without a generate block"
            inst.forward = inst.generate
        forward = inst.forward
        if forward is None:
            raise NameResolutionError(f"model {decl.name} has no forward", decl.span)
        args: list[object] = []
        for param in forward.params:
            if param.type is None:
                raise ShapeError(
                    f"model input {param.name!r} needs a type such as [B, L]", param.span
                )
            shape = type_dims(param.type, lambda e: self.exprs.scalar(e, inst.scope))
            dtype = DType.parse(param.type.dtype) if param.type.dtype else None
            dtype = dtype or self.config.precision.activation
            vid = self.builder.add_value(
                param.name, shape, dtype, Role.INPUT, None, False, span=param.span
            )
            args.append(Tensor(vid))
        result = self.call_layer(inst, tuple(args), {}, decl.span, calls=())
        if isinstance(result, tuple):
            raise SpecValueError(
                f"model {decl.name}'s forward returns {len(result)} values; it returns one "
                "(the loss, or the output torch would sum)",
                forward.body.span or decl.span,
            )
        made = isinstance(result, Tensor) and self.builder.values[result.id].role not in (
            Role.PARAMETER,
            Role.BUFFER,
            Role.INPUT,
        )
        if not made:
            what = "a parameter or buffer" if isinstance(result, Tensor) else "no tensor"
            if isinstance(result, Tensor) and self.builder.values[result.id].role is Role.INPUT:
                what = "one of its inputs"
            raise SpecValueError(
                f"model {decl.name}'s forward returns {what}; it returns a tensor it computes "
                "(the loss, or the output torch would sum)",
                forward.body.span or decl.span,
            )
        outputs = (result.id,)
        if self.plans is not None and not self.layers.styles:
            raise UsageError(
                "--tp: no layer of this model has a tp_plan, so nothing would be sharded; "
                "declare one for the layers with the big matrices, e.g. `tp_plan LlamaMLP "
                "{ gate_proj colwise; up_proj colwise; down_proj rowwise }` (styles: "
                f"{', '.join(STYLES)})",
                decl.span,
            )
        self.layers.freezer.check()
        if self.layers.lora is not None:
            self.layers.lora.check()
        self.layers.check_skips()
        graph = self.builder.freeze(decl.name, outputs)
        check_no_index(graph)
        styles = self.layers.styles
        return dataclasses.replace(
            graph,
            decisions=graph.decisions + rule_decisions(graph),
            tp_plan=tuple((path, planned.style.name) for path, planned in styles.items()),
            tp_replicated=tuple(path for path, planned in styles.items() if planned.replicated),
        )

    # Callees (for the evaluator) and Forwards (for the route form) -----------------------

    def call_layer(
        self,
        inst: Instance | Stack,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        calls: tuple[str, ...],
        result_name: str | None = None,
    ) -> object:
        """Run `inst`'s forward; a repeated layer's output is carried into its next copy."""
        if isinstance(inst, Stack):
            return self.call_stack(inst, args, kwargs, span, calls, result_name)
        if inst.passthrough:
            if not (args and isinstance(args[0], Tensor)):
                raise ShapeError(f"repeat of {inst.decl.name} needs a tensor in and out", span)
            return args[0]
        if inst.forward is None:
            raise NameResolutionError(f"layer {inst.decl.name} has no forward", span)
        first = args[0] if args else None
        result = self.run_forward(inst, args, span, (*calls, inst.decl.name), kwargs, result_name)
        if inst.repeated:
            self.check_repeat(inst, first, result, span)
            self.builder.carried.append((inst.region, first.id, result.id))
        return result

    def check_gradients(self, inst: Instance, first: Tensor, result: Tensor, span) -> None:
        """A repeat stands for repetitions that run alike; if a frozen parameter leaves
        its input without a gradient while its output has one (frozen embeddings before
        trained layers), the first repetition saves less than the rest and makes no
        gradient of its input: it is elaborated again with that one apart."""
        if self.builder.bound.is_one(self.builder.regions[inst.region].count):
            return  # one repetition at the bound sizes: it is the first, and alone
        into = self.builder.values[first.id]
        out = self.builder.values[result.id]
        if out.requires_grad and not into.requires_grad and self.made_from_frozen(first.id):
            raise SplitFirst(inst.path, span)

    def check_reserved(self) -> None:
        """The names memspec sets for every spec (`if generating`, `if checkpointing`)
        are no spec's own: a dim, let, layer or fn of that name would be replaced."""
        program = self.program
        kinds = (
            ("dim", program.dims),
            ("let", program.lets),
            ("layer", program.layers),
            ("fn", program.fns),
        )
        for kind, decls in kinds:
            for name, decl in decls.items():
                names = {name, decl.symbol} if kind == "dim" else {name}
                taken = sorted(names & set(RESERVED))
                if taken:
                    raise NameResolutionError(
                        f"{kind} {taken[0]!r}: the name is memspec's ({RESERVED[taken[0]]}); "
                        "choose another",
                        decl.span,
                    )

    def call_stack(
        self,
        stack: Stack,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        calls: tuple[str, ...],
        result_name: str | None,
    ) -> object:
        """Each part in turn, the output of one the first argument of the next; a
        repeated part's output is carried into its next repetition."""
        x = args[0] if args else None
        for region, layers in stack.parts:
            first = x
            for layer in layers:
                x = self.call_layer(layer, (x, *args[1:]), kwargs, span, calls, result_name)
            if region is not None:
                self.check_repeat(layers[-1], first, x, span)
                self.builder.carried.append((region, first.id, x.id))
        return x

    def made_from_frozen(self, vid: int) -> bool:
        """Whether a frozen parameter is among what `vid` was computed from."""
        made = {out: op for op in self.builder.ops for out in op.outputs}
        todo, seen = [vid], set()
        while todo:
            v = todo.pop()
            if v in seen:
                continue
            seen.add(v)
            value = self.builder.values[v]
            if value.role is Role.PARAMETER and not value.requires_grad:
                return True
            if v in made:
                todo.extend(made[v].inputs)
        return False

    def check_repeat(
        self, inst: Instance, first: object, result: object, span: Span | None
    ) -> None:
        if not (isinstance(first, Tensor) and isinstance(result, Tensor)):
            raise ShapeError(f"repeat of {inst.decl.name} needs a tensor in and out", span)
        self.check_gradients(inst, first, result, span)
        a, b = self.builder.values[first.id], self.builder.values[result.id]
        if not same_shape(a.shape, b.shape):
            raise ShapeError(
                f"repeat applies {inst.decl.name} in sequence, so its output "
                f"{shape_str(b.shape)} must match its input {shape_str(a.shape)}",
                span,
            )

    def run_forward(
        self,
        inst: Instance,
        args: tuple,
        span: Span | None,
        calls: tuple[str, ...],
        kwargs: dict[str, object] | None = None,
        result_name: str | None = None,
    ) -> object:
        """Run `inst`'s forward (which it has) in its own scope, path and region."""
        forward = inst.forward
        assert forward is not None  # callers report a missing forward in their own words
        frame = Frame(inst.path, inst.region, calls, result_name)
        return self.run_body(inst.decl.name, forward, inst.scope, args, kwargs or {}, span, frame)

    def call_fn(
        self,
        fn: FnRef,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        frame: Frame,
        result_name: str | None,
    ) -> object:
        """Run a fn in the caller's region, under the caller's path; it sees only globals."""
        decl = fn.decl
        if decl.name in frame.calls:
            chain = " -> ".join((*frame.calls[frame.calls.index(decl.name) :], decl.name))
            raise SpecValueError(
                f"fn {decl.name} calls itself ({chain}): a spec has no recursion (the "
                "model's shape would never end)",
                span,
            )
        inner = Frame(frame.member(decl.name), frame.region, (*frame.calls, decl.name), result_name)
        return self.run_body(decl.name, decl, self.globals, args, kwargs, span, inner)

    def route(
        self, args: tuple, kwargs: dict[str, object], span: Span | None, frame: Frame
    ) -> Tensor:
        return self.route_form.route(args, kwargs, span, frame)

    # Bodies ------------------------------------------------------------------------------

    def run_body(
        self,
        name: str,
        sig: d.LayerForward | d.DeclFn,
        outer: Scope,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        frame: Frame,
    ) -> object:
        """Bind the arguments to `sig`'s parameters, run its body, check what it returns."""
        scope = outer.child()
        scope.ellipsis = None
        self.bind_params(name, sig.params, args, kwargs, scope, span)
        result = self.statements.run(self.pick_variant(name, sig.body), scope, frame)
        if result is None:
            raise SpecValueError(f"{name}: forward ends without `return`", sig.body.span or span)
        if sig.returns is not None and isinstance(result, tuple):
            raise ShapeError(
                f"{name} returns {len(result)} values, but its signature declares one type; "
                "leave out `-> [...]`",
                sig.returns.span or span,
            )
        if sig.returns is not None and isinstance(result, Tensor):
            v = self.builder.values[result.id]
            bind_type(
                sig.returns,
                self.builder.global_shape(result.id),
                v.dtype,
                lambda e: self.exprs.scalar(e, scope),
                None,
                lambda key: True,
                scope.ellipsis,
                f"{name}: return value",
            )
        for value in result if isinstance(result, tuple) else (result,):
            if isinstance(value, Tensor):
                call = CallOutput(frame.calls[-1], frame.path, value.id)
                self.builder.call_outputs.append(call)
        return result

    def bind_params(
        self,
        name: str,
        params: tuple[n.SigParam, ...],
        args: tuple,
        kwargs: dict[str, object],
        scope: Scope,
        span: Span | None,
    ) -> None:
        """Bind arguments into `scope`; a typed parameter also binds its shape's names."""
        given = [Argument.evaluated(a) for a in args]
        given += [Argument.evaluated(v, k) for k, v in kwargs.items()]
        bound = bind_arguments(
            name,
            params,
            given,
            span,
            lambda expr, _: self.exprs.evaluate(expr, self.globals),  # defaults see globals
            given=len(args),
        )
        for param in params:
            value = bound[param.name]
            if param.type is not None:
                if not isinstance(value, Tensor):
                    raise ShapeError(f"{name}: argument {param.name!r} must be a tensor", span)
                v = self.builder.values[value.id]
                matched = bind_type(
                    param.type,
                    self.builder.global_shape(value.id),
                    v.dtype,
                    lambda e: self.exprs.scalar(e, scope),
                    lambda key, size: scope.names.__setitem__(key, size),
                    # Signature names bind unless the layer itself
                    # defines them: global dims do not constrain them.
                    lambda key: scope.find_local(key, self.globals) is not None,
                    scope.ellipsis,
                    f"{name}: argument {param.name!r}",
                )
                if matched is not None:
                    scope.ellipsis = matched
            scope.names[param.name] = value

    def pick_variant(self, name: str, body: n.Body) -> tuple[n.Stmt, ...]:
        variants = dict(body.variants)
        if len(variants) == 1:
            return next(iter(variants.values()))
        chosen = next((v for v in self.config.variants if v in variants), body.variants[0][0])
        self.variants_used[name] = chosen
        return variants[chosen]


class SplitFirst(Exception):
    """A repeat whose first repetition must run apart (`Elaborator.check_gradients`)."""

    def __init__(self, path: str, span: Span | None):
        super().__init__(path)
        self.path, self.span = path, span


def elaborate(program: Program, config: TrainConfig, bind: BindSizes | None = None) -> Elaboration:
    """Build the IR graph of `program`'s model under `config` (dtypes, variants).

    `bind` gives the sizes the user bound (a preset, `--set`) once the dims are declared
    and before the model is elaborated: torch decides views and copies on concrete sizes
    (B = 1 merges any stride), so the graph decides them at these.
    """
    split: frozenset[str] = frozenset()
    while True:
        elaborator = Elaborator(program, config, split)
        elaborator.declare_globals()

        def evaluate(expr: n.Expr, elaborator=elaborator) -> sp.Expr:
            return elaborator.exprs.scalar(expr, elaborator.globals)

        bindings = bind(elaborator.symbols, evaluate) if bind is not None else {}
        try:
            graph = elaborator.model(BoundSizes.of(bindings, elaborator.symbols.defaults()))
            break
        except SplitFirst as first:
            if first.path in split:  # apart already: cannot happen twice
                raise SpecValueError(
                    f"the repeat {first.path}'s first repetition is apart, and its second "
                    "still has an input without a gradient",
                    first.span,
                ) from None
            split = split | {first.path}
    used = tuple(sorted(elaborator.variants_used.items()))
    return Elaboration(graph, elaborator.symbols, used, evaluate, bindings)

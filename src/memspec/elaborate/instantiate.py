"""Instantiating layers, as PyTorch does: members are created before any `forward` runs.

A layer's sublayers, `param`s and `buffer`s are created when it is instantiated (so
unused parameters still count), with hierarchical names equal to `state_dict` keys.
`name = repeat N of Block(...)` makes one region of multiplicity N and instantiates
Block once inside it.
"""

from __future__ import annotations

import sympy as sp

from memspec.config import TrainConfig
from memspec.elaborate.binding import Argument, bind_arguments
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.exprs import ExprEvaluator
from memspec.elaborate.repeat_index import split_first, split_repeat
from memspec.elaborate.scope import Instance, LayerRef, Scope, Stack, Tensor
from memspec.elaborate.shapes import divisibility_text, type_dims
from memspec.errors import (
    MemspecError,
    NameResolutionError,
    ShapeError,
    SpecValueError,
    UsageError,
)
from memspec.freeze import Freezer, generic_name
from memspec.ir.types import DType, Role, Shape
from memspec.lora import LINEAR, LORA_LAYER, LoraTargets, is_adapter
from memspec.names import did_you_mean, name_hint
from memspec.quantize import FP8_BLOCK, INT8_THRESHOLD, SKIPPED
from memspec.source import Span
from memspec.syntax import decls as d
from memspec.syntax import nodes as n
from memspec.tensor_parallel import Planned, TpPlans

__all__ = ["MAX_INSTANCE_DEPTH", "Instantiator"]

MAX_INSTANCE_DEPTH = 64  # layers nest a handful deep; more is a runaway definition


class Instantiator:
    """Creates layer instances with their members, evaluating through `exprs`."""

    def __init__(
        self,
        exprs: ExprEvaluator,
        builder: GraphBuilder,
        config: TrainConfig,
        globals_: Scope,
        plans: TpPlans | None = None,
        split_first: frozenset[str] = frozenset(),
    ):
        self.exprs = exprs
        self.builder = builder
        self.config = config
        self.globals = globals_
        self.stack: list[str] = []  # layer names being instantiated, for recursion checks
        self.plans = plans  # under tensor parallelism, the spec's tp_plans
        self.styles: dict[str, Planned] = {}  # instance path -> what the plan says of it
        self.freezer = Freezer(config.freeze)
        self.lora = LoraTargets(config.lora) if config.lora is not None else None
        self.linears: list[str] = []  # every Linear's name, for --weights-skip's check
        # repeats whose first repetition runs apart (its input needs no gradient)
        self.split_first = split_first

    def instantiate(
        self,
        decl: d.DeclLayer,
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
            self.check_plan(inst)
        except MemspecError as err:
            if not path:  # the model itself: the error's own span says it all
                raise
            raise err.with_note(f"while instantiating {decl.name} as {path}", span) from None
        finally:
            self.stack.pop()
        return inst

    def layer_stmts(self, inst: Instance, stmts: tuple[d.LayerStmt, ...]) -> None:
        for stmt in stmts:
            if isinstance(stmt, d.LayerLet):
                value = self.exprs.evaluate(stmt.value, inst.scope)
                self.define(inst, stmt.name, value, stmt.span)
            elif isinstance(stmt, d.LayerSub):
                self.define(inst, stmt.name, self.sublayer(inst, stmt), stmt.span)
            elif isinstance(stmt, (d.LayerParam, d.LayerBuffer)):
                self.define(inst, stmt.name, self.tensor_state(inst, stmt), stmt.span)
            elif isinstance(stmt, d.LayerForward) and stmt.generate:
                if not inst.decl.is_model:
                    raise NameResolutionError(
                        f"only a model has a generate block ({inst.decl.name} is a layer)",
                        stmt.span,
                    )
                if inst.generate is not None:
                    raise NameResolutionError(
                        f"{inst.decl.name} has two generate blocks", stmt.span
                    )
                inst.generate = stmt
            elif isinstance(stmt, d.LayerForward):
                if inst.forward is not None:
                    raise NameResolutionError(f"{inst.decl.name} has two forwards", stmt.span)
                inst.forward = stmt
            elif isinstance(stmt, d.LayerIf):
                taken = stmt.orelse
                if self.exprs.condition(stmt.condition, inst.scope):
                    taken = stmt.then
                self.layer_stmts(inst, taken)

    def check_plan(self, inst: Instance) -> None:
        """Every member a plan styles is a sublayer with the parameters its style shards."""
        members = self.plans.layers.get(inst.decl.name, {}) if self.plans else {}
        for member, planned in members.items():
            style, span = planned.style, planned.span
            sub = inst.scope.names.get(member)
            if not isinstance(sub, Instance) or sub.repeated:
                raise NameResolutionError(
                    f"tp_plan {inst.decl.name}: {member!r} is not a (single) sublayer of "
                    f"{inst.decl.name}",
                    span,
                )
            if not isinstance(sub.scope.names.get("weight"), Tensor):
                raise NameResolutionError(
                    f"tp_plan {inst.decl.name}: {style.name} shards a Linear or an Embedding "
                    f"(a `weight` parameter), which {member} ({sub.decl.name}) has not",
                    span,
                )

    def define(self, inst: Instance, name: str, thing: object, span: Span | None) -> None:
        """Add a member; it may shadow a layer argument of the same name (`bias`), once."""
        if name in inst.arguments:
            inst.arguments.discard(name)
        elif name in inst.scope.names:
            raise NameResolutionError(f"{name!r} is defined twice in this layer", span)
        inst.scope.names[name] = thing

    def sublayer(self, inst: Instance, stmt: d.LayerSub) -> Instance | Stack:
        ref = inst.scope.find(stmt.layer)
        if not isinstance(ref, LayerRef):
            layers = [k for k, v in self.globals.names.items() if isinstance(v, LayerRef)]
            raise NameResolutionError(
                f"unknown layer {stmt.layer!r}{name_hint(stmt.layer, layers, 'layers')}",
                stmt.span,
            )
        path = f"{inst.path}.{stmt.name}" if inst.path else stmt.name
        region = inst.region
        styled = self.plans.style(inst.decl.name, stmt.name) if self.plans else None
        if styled is not None:
            self.styles[path] = styled
        if stmt.count is not None:
            count = self.exprs.scalar(stmt.count, inst.scope)
            if count.is_number and (not count.is_Integer or count < 0):
                raise SpecValueError(
                    f"repeat count must be a non-negative integer, got {count}", stmt.count.span
                )
            if count == 0:  # no copies: no parameters, and a call hands its input on
                self.layer_arguments(ref.decl, stmt.args, inst.scope, stmt.span)
                empty = Instance(ref.decl, path, region, self.globals.child(), span=stmt.span)
                empty.repeated = empty.passthrough = True
                return empty
            if stmt.index is not None:
                return split_repeat(self, inst, stmt, ref.decl, path, count)
            if path in self.split_first:
                return split_first(self, inst, stmt, ref.decl, path, count)
            region = self.builder.add_region(path, count, inst.region, stmt.span, stmt.checkpoint)
        args = self.layer_arguments(ref.decl, stmt.args, inst.scope, stmt.span)
        decl = ref.decl
        # a LoraLinear's own base_layer is the Linear it wraps, not another target
        if self.lora is not None and decl.name == LINEAR and inst.decl.name != LORA_LAYER:
            decl, args = self.lora_linear(decl, args, path, region, stmt.span)
        if self.config.weights is not None and decl.name == LINEAR:
            decl, args = self.quantized_linear(decl, args, path, region, stmt.span)
        sub = self.instantiate(decl, args, path, region, stmt.span)
        sub.repeated = stmt.count is not None
        return sub

    def injected(self, name: str, flag: str, span) -> d.DeclLayer:
        """The std layer a flag puts where the spec has a Linear (loaded for the flag)."""
        ref = self.globals.find(name)
        if not isinstance(ref, LayerRef):
            raise NameResolutionError(
                f"{flag} puts std's {name} where the spec has a Linear; the spec defines a "
                f"{name} of its own or loads none",
                span,
            )
        return ref.decl

    def quantized_linear(
        self, decl: d.DeclLayer, args: dict[str, object], path: str, region: int | None, span
    ) -> tuple[d.DeclLayer, dict[str, object]]:
        """A Linear becomes std's Linear4bit, Linear8bitLt or FP8Linear
        (`memspec.quantize`), but the output layer."""
        weights = self.config.weights
        assert weights is not None
        self.linears.append(generic_name(path, self.region_paths(region)))
        if weights.skips(path):
            return decl, args
        layer = self.injected(weights.layer, "--weights", span)
        if weights.int8:  # the layer's own defaults apply only to the spec's arguments
            return layer, {**args, "threshold": sp.Integer(INT8_THRESHOLD)}
        if weights.fp8:
            return layer, {**args, "block": sp.Integer(FP8_BLOCK)}
        return layer, {
            **args,
            "compute": weights.compute,
            "double_quant": weights.double_quant,
            "fused_rows": sp.Integer(weights.fused_rows),
        }

    def lora_linear(
        self, decl: d.DeclLayer, args: dict[str, object], path: str, region: int | None, span
    ) -> tuple[d.DeclLayer, dict[str, object]]:
        """A targeted Linear becomes std's LoraLinear, with its arguments and the
        adapter's (`memspec.lora`); any other stays as it is."""
        assert self.lora is not None
        if not self.lora.targeted(generic_name(path, self.region_paths(region))):
            return decl, args
        layer = self.injected(LORA_LAYER, "--lora", span)
        lora = self.lora.lora
        adapter = {
            "r": sp.Integer(lora.r),
            "lora_alpha": sp.Rational(str(lora.alpha)),
            "lora_dropout": sp.Rational(str(lora.dropout)),
        }
        return layer, {**args, **adapter}

    def layer_arguments(
        self, decl: d.DeclLayer, args: tuple[n.Arg, ...], caller: Scope, span: Span | None
    ) -> dict[str, object]:
        """Layer arguments: sizes and constants, evaluated in the caller's scope.

        A default sees the layer's other arguments (`d_ff = 4 * d_model`) and the globals,
        not the caller's names.
        """

        def constant(arg: n.Arg) -> object:
            value = self.exprs.evaluate(arg.value, caller)
            if isinstance(value, Tensor):
                raise SpecValueError(
                    "layer arguments are sizes or constants, not tensors", arg.span
                )
            return value

        def default(expr: n.Expr, bound: dict[str, object]) -> object:
            scope = self.globals.child()
            scope.names.update(bound)
            return self.exprs.evaluate(expr, scope)

        written = [Argument(a.name, lambda a=a: constant(a), a.span) for a in args]
        return bind_arguments(decl.name, decl.params, written, span, default, member="parameter")

    def tensor_state(self, inst: Instance, stmt: d.LayerParam | d.LayerBuffer) -> Tensor:
        shape = type_dims(stmt.type, lambda e: self.exprs.scalar(e, inst.scope))
        self.check_sizes(shape, stmt.type.span)
        is_param = isinstance(stmt, d.LayerParam)
        precision = self.config.precision
        dtype = DType.parse(stmt.type.dtype) if stmt.type.dtype else None
        if stmt.type.dtype and dtype is None:
            raise ShapeError(DType.unknown(stmt.type.dtype), stmt.type.span)
        dtype = dtype or (precision.param if is_param else precision.buffer)
        path = f"{inst.path}.{stmt.name}" if inst.path else stmt.name
        shard = self.shard(inst, stmt, shape)
        if shard is not None:
            whole = shape[shard]
            shape = (*shape[:shard], whole / self.builder.tp, *shape[shard + 1 :])
            style = self.styles[inst.path].style.name
            text = f"TP divides {whole} ({style} shards dim {shard} of {path} across TP ranks)"
            self.builder.assume_integer(shape[shard], text, stmt.span)
        # generation trains nothing (torch.no_grad())
        trained = is_param and not stmt.frozen and self.config.inference is None
        if is_param and self.lora is not None:  # PEFT trains the adapters alone
            trained = trained and is_adapter(path)
        if is_param and self.freezer.patterns:
            trained = trained and not self.freezer.frozen(generic_name(path, self.regions(inst)))
        vid = self.builder.add_value(
            path,
            shape,
            dtype,
            Role.PARAMETER if is_param else Role.BUFFER,
            inst.region,
            requires_grad=trained,
            span=stmt.span,
            shard=shard,
        )
        if shard is not None and self.styles[inst.path].replicated:
            self.builder.whole_outputs.add(vid)
        return Tensor(vid)

    def shard(self, inst: Instance, stmt: d.LayerParam | d.LayerBuffer, shape: Shape) -> int | None:
        """The dim of a planned member's parameter that each TP rank holds 1/TP of."""
        if inst.path not in self.styles:
            return None
        planned = self.styles[inst.path]
        style, span = planned.style, planned.span
        dim = style.shard_of(stmt.name)
        if dim is False or isinstance(stmt, d.LayerBuffer):
            known = ", ".join(name for name, _ in style.shards)
            raise SpecValueError(
                f"{style.name} shards the parameters {known} of a Linear or an Embedding; "
                f"{inst.decl.name} also has {stmt.name!r}",
                span,
            )
        if dim is not None and dim >= len(shape):
            raise SpecValueError(
                f"{style.name} shards dim {dim} of {inst.path}.{stmt.name}, which has "
                f"{len(shape)}: the style is for a Linear ([out, in]) or an Embedding",
                span,
            )
        return dim

    def regions(self, inst: Instance) -> list[str]:
        """The paths of the repeat regions `inst` is in, outermost first."""
        return self.region_paths(inst.region)

    def check_skips(self) -> None:
        """A --weights-skip name that keeps no Linear is a mistake: say so. So is --weights
        on a model none of whose Linears it stores quantized: the report would be the
        unquantized model's under a quantized name."""
        weights = self.config.weights
        if weights is None:
            return
        if not any(not weights.skips(n) for n in self.linears):
            why = (
                "every one of this model's is skipped (--weights-skip)"
                if self.linears
                else "this model has none: one whose projections are other layers (GPT-2's "
                "Conv1D, which transformers' bitsandbytes quantizes too) is not modelled"
            )
            raise UsageError(f"--weights {weights.format} stores Linear layers quantized; {why}")
        if weights.skip == SKIPPED:  # the default: lm_head where there is one
            return
        for name in weights.skip:
            if not any(n == name or n.endswith("." + name) for n in self.linears):
                leaves = sorted({n.rsplit(".", 1)[-1] for n in self.linears})
                raise UsageError(
                    f"--weights-skip {name!r} names no Linear layer"
                    f"{did_you_mean(name, [*leaves, *sorted(set(self.linears))])}"
                )

    def region_paths(self, region: int | None) -> list[str]:
        """The paths of `region` and the regions it is in, outermost first."""
        paths = []
        while region is not None:
            paths.append(self.builder.regions[region].path)
            region = self.builder.regions[region].parent
        return paths[::-1]

    def check_sizes(self, shape: Shape, span: Span | None) -> None:
        for dim in shape:
            if not isinstance(dim, sp.Expr) or (dim.is_number and (not dim.is_Integer or dim < 0)):
                raise ShapeError(f"a tensor size must be a non-negative integer, got {dim}", span)
            self.builder.assume_integer(dim, lambda dim=dim: divisibility_text(dim), span)

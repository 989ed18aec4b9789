"""Applying primitive ops: each call becomes an `OpApply` whose outputs the op's rule infers.

The op's own rules (memspec/ops) check the arguments and infer output shapes, dtypes and
views; this module turns a call's arguments into the op's tensor inputs and constant
attributes, names the outputs after what the spec calls them, and records everything in
the `GraphBuilder`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from memspec.config import TrainConfig
from memspec.elaborate.autocast import Autocast
from memspec.elaborate.builder import GraphBuilder
from memspec.elaborate.decisions import layout_decisions
from memspec.elaborate.frames import Frame, Hint
from memspec.elaborate.scope import Tensor
from memspec.elaborate.sharding import PARTIAL, ShardingError, localize_axes, output_shards
from memspec.errors import NameResolutionError, ShapeError, SpecValueError
from memspec.ir.graph import OpApply
from memspec.ir.types import Role
from memspec.names import name_hint
from memspec.ops import REGISTRY, OpDef
from memspec.ops.loss_parallel import PARALLEL_LOSS
from memspec.ops.registry import InferContext, OpShapeError, TensorType
from memspec.source import Span

__all__ = ["OpApplier"]


class OpApplier:
    """Adds primitive ops to the graph being built."""

    def __init__(self, builder: GraphBuilder, config: TrainConfig, loss_parallel: bool = False):
        self.builder = builder
        self.config = config
        self.loss_parallel = loss_parallel  # the loss runs under torch's loss_parallel()
        # sequence parallelism: each sequence-sharded value's gathered whole, made once
        # for every column-parallel member that reads it
        self.gathered: dict[int, Tensor] = {}
        self.autocast = None
        if config.precision.casts:
            self.autocast = Autocast(config.precision, builder.values, self._apply_at)

    def _apply_at(self, op_name, tensors, attrs, span, frame, path, shards=None) -> Tensor:
        out = self.apply(op_name, tensors, attrs, span, frame, None, path=path, shards=shards)
        assert isinstance(out, Tensor)
        return out

    def call(
        self,
        op: OpDef,
        args: tuple,
        kwargs: dict[str, object],
        lookup: Callable[[str], object],
        span: Span | None,
        frame: Frame,
        hint: Hint,
    ) -> Tensor | tuple[Tensor, ...]:
        """A call of `op` written in a spec; the op may complete its constants from scope."""
        if op.bind_scope is not None:
            try:
                kwargs = op.bind_scope(args, kwargs, lookup)
            except ValueError as err:
                raise SpecValueError(str(err), span) from None
        return self.apply(op.name, args, kwargs, span, frame, hint)

    def apply(
        self,
        op_name: str,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        frame: Frame,
        hint: Hint,
        path: str | None = None,
        shards: tuple[int | None, ...] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Apply a primitive op; an op with several outputs returns a tuple of them.
        `path` names the output instead of the frame and hint (autocast's casts);
        `shards` gives the outputs' shards (a collective's) instead of propagating them."""
        op = REGISTRY[op_name]
        tensors, attrs = self.split_args(op, args, kwargs, span)
        if self.autocast is not None:
            tensors = self.autocast.inputs(op_name, tensors, span, frame)
        if self.builder.tp is not None and shards is None:
            if op_name == "sequence_scatter":
                return self._sequence_scatter(tensors, span, frame, hint)
            if op_name == "linear":  # a column-parallel member's input, as it reads it
                tensors[0] = self._gather(tensors, span, frame)
                tensors[0] = self._copy_in(tensors, span, frame)
        elif op_name == "sequence_scatter" and shards is None:
            return tensors[0]  # outside tensor parallelism, x itself
        types = tuple(
            TensorType(v.shape, v.dtype, v.requires_grad, v.strides)
            for v in (self.builder.values[t.id] for t in tensors)
        )
        out_shards = shards
        # an input only read for its dtype (type_as's other) is no slice of anything
        constant = op.constant_positions(len(tensors))
        shards = tuple(
            None if k in constant else self.builder.values[t.id].shard
            for k, t in enumerate(tensors)
        )
        sharded = any(s is not None for s in shards) and out_shards is None
        rank = len(types[0].shape) if types else 0
        if self.loss_parallel and op_name in PARALLEL_LOSS and shards[0] == rank - 1:
            # DTensor's handlers under loss_parallel(): the log-probabilities stay
            # sharded, the loss comes out whole
            whole = op_name == "nll_loss"
            op_name, op = PARALLEL_LOSS[op_name], REGISTRY[PARALLEL_LOSS[op_name]]
            out_shards, sharded = (None if whole else shards[0],), False
        if sharded and op_name in ("rearrange", "repeat"):
            out_shards = (self._localize(attrs, types[0].shape, shards[0], span),)
        ctx = InferContext(
            op_name, types, attrs, self.config.precision.activation, bound=self.builder.bound
        )
        try:
            inferred = op.infer(ctx)
            if sharded and out_shards is None:
                out_shards = output_shards(op, ctx, shards)
        except OpShapeError as err:
            raise ShapeError(str(err), span) from None
        except ShardingError as err:
            raise ShapeError(str(err), span) from None
        if out_shards is not None and PARTIAL in out_shards:
            self._check_partial(op_name, tensors, span)
        for expr, text in ctx.assumptions:
            self.builder.assume_integer(expr, text, span)
        outputs = tuple(
            dataclasses.replace(o, shape=tuple(self.builder.drop_floors(d) for d in o.shape))
            for o in inferred
        )
        requires_grad = op.leaf or (
            op.differentiable
            and any(t.requires_grad for k, t in enumerate(types) if k not in constant)
        )
        # The op an assignment or return produces is named after its target (or, for a
        # return, after the call it ends); ops nested inside an expression after the op.
        # An unpacking assignment names each output after its own target.
        locals_ = hint if isinstance(hint, tuple) else (op_name if hint is None else hint,)
        ids = []
        for k, out in enumerate(outputs):
            name = path or frame.member(locals_[min(k, len(locals_) - 1)]) or op_name
            if hint == "" and frame.result_name and path is None:
                name = frame.result_name
            storage = None
            if out.view_of is not None:
                storage = self.builder.values[tensors[out.view_of].id].storage
            ids.append(
                self.builder.add_value(
                    name,
                    out.shape,
                    out.dtype,
                    Role.ACTIVATION,
                    frame.region,
                    requires_grad and out.dtype.is_float,  # integers never require grad
                    storage,
                    out.strides,
                    span,
                    None if out_shards is None or out_shards[k] == PARTIAL else out_shards[k],
                )
            )
        paths = [self.builder.values[i].path for i in ids]
        self.builder.decisions.extend(layout_decisions(op, ctx, inferred, paths, span))
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
        if out_shards is not None and PARTIAL in out_shards:
            return self._reduce(ids, tensors[1].id, span, frame)
        if len(ids) > 1:
            return tuple(Tensor(i) for i in ids)
        return Tensor(ids[0])

    def _sequence_scatter(
        self, tensors: list[Tensor], span: Span | None, frame: Frame, hint: Hint
    ) -> Tensor:
        """Where activations enter the sequence-parallel region: this rank's slice of the
        sequence under --sp, x itself otherwise (or when it is sharded so already)."""
        x = self.builder.values[tensors[0].id]
        dim = len(x.shape) - 2
        if not self.config.parallel.sp or x.shard == dim:
            return tensors[0]
        if dim < 0 or x.shard is not None:
            what = "1-D" if dim < 0 else f"sharded on dim {x.shard}"
            raise ShapeError(
                f"sequence_scatter takes a whole tensor of [..., sequence, features]; this one "
                f"is {what}",
                span,
            )
        attrs = {"dim": dim, "degree": self.builder.tp}
        out = self.apply("sequence_scatter", tensors, attrs, span, frame, hint, shards=(dim,))
        assert isinstance(out, Tensor)
        return out

    def _localize(self, attrs: dict, shape, shard: int, span: Span | None) -> int:
        """An einops pattern's sizes made this rank's, for an input sharded on `shard`
        (each rank takes whole heads); the output's shard."""
        try:
            attrs["axes"], out = localize_axes(
                str(attrs["pattern"]), attrs["axes"], shape, shard, self.builder.tp
            )
        except ShardingError as err:
            raise ShapeError(str(err), span) from None
        for name, size in attrs["axes"]:
            whole = size * self.builder.tp
            text = f"TP divides {whole} (axis {name} of {attrs['pattern']!r}, sharded)"
            self.builder.assume_integer(size, text, span)
        return out

    def _reduce(self, ids: list[int], weight: int, span: Span | None, frame: Frame) -> Tensor:
        """Each rank's partial sums, all-reduced into the whole output on every rank, or
        under sequence parallelism reduce-scattered (each rank its slice of the sequence)
        unless the plan keeps the member's output whole (`replicated`)."""
        (out_id,) = ids
        out = self.builder.values[out_id]
        if self.config.parallel.sp and weight not in self.builder.whole_outputs:
            dim = len(out.shape) - 2
            attrs = {"dim": dim, "degree": self.builder.tp}
            name = f"{out.path}.reduce_scatter"
            return self._apply_at(
                "reduce_scatter", [Tensor(out_id)], attrs, span, frame, name, (dim,)
            )
        name = f"{out.path}.all_reduce"
        return self._apply_at("all_reduce", [Tensor(out_id)], {}, span, frame, name, (None,))

    def _copy_in(self, tensors: list[Tensor], span: Span | None, frame: Frame) -> Tensor:
        """A column-parallel member's whole input, which its backward all-reduces (each
        member apart); a gathered input's backward reduce-scatters instead."""
        x, weight = (self.builder.values[t.id] for t in tensors[:2])
        gathered = {t.id for t in self.gathered.values()}
        if weight.shard != 0 or x.shard is not None or x.id in gathered or not x.requires_grad:
            return tensors[0]
        name = f"{self.builder.values[weight.id].path.rpartition('.')[0]}.input"
        return self._apply_at("copy_to_tp_region", [tensors[0]], {}, span, frame, name, (None,))

    def _gather(self, tensors: list[Tensor], span: Span | None, frame: Frame) -> Tensor:
        """A column-parallel member's input, all-gathered on the sequence when it is
        sharded there (sequence parallelism); once per value however many read it."""
        x, weight = (self.builder.values[t.id] for t in tensors[:2])
        if not self.config.parallel.sp or weight.shard != 0 or x.shard in (None, len(x.shape) - 1):
            return tensors[0]
        if x.id not in self.gathered:
            parallel = self.config.parallel
            saves = "shard" if parallel.sp_convention == "megatron" else "gathered"
            attrs = {"dim": x.shard, "degree": self.builder.tp, "saves": saves}
            self.gathered[x.id] = self._apply_at(
                "all_gather", [tensors[0]], attrs, span, frame, f"{x.path}.all_gather", (None,)
            )
        return self.gathered[x.id]

    def _check_partial(self, op_name: str, tensors: list[Tensor], span: Span | None) -> None:
        """Partial sums are what a rowwise linear or a vocab-parallel embedding make
        (a loss under loss_parallel is an op of its own); anything else summing over a
        shard is refused."""
        values = [self.builder.values[t.id] for t in tensors]
        if op_name == "linear" and values[1].shard == 1:
            return
        if op_name == "embedding" and values[1].shard == 0:
            return
        raise ShapeError(
            f"{op_name} sums over a dim sharded across TP ranks: only a rowwise linear, a "
            "vocab_parallel embedding may (check the tp_plan)",
            span,
        )

    def is_float(self, tensor: Tensor) -> bool:
        return self.builder.values[tensor.id].dtype.is_float

    def split_args(
        self, op: OpDef, args: tuple, kwargs: dict[str, object], span: Span | None
    ) -> tuple[list[Tensor], dict[str, object]]:
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
                hint = name_hint(key, names, "its arguments are")
                raise NameResolutionError(f"{op.name} has no argument {key!r}{hint}", span)
            attrs[key] = value
        for key, value in attrs.items():
            if value is None:
                raise SpecValueError(f"{op.name}: missing argument {key!r}", span)
        return tensors, attrs

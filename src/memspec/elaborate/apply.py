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
from memspec.errors import NameResolutionError, ShapeError, SpecValueError
from memspec.ir.graph import OpApply
from memspec.ir.types import Role
from memspec.names import name_hint
from memspec.ops import REGISTRY, OpDef
from memspec.ops.registry import InferContext, OpShapeError, TensorType
from memspec.source import Span

__all__ = ["OpApplier"]


class OpApplier:
    """Adds primitive ops to the graph being built."""

    def __init__(self, builder: GraphBuilder, config: TrainConfig):
        self.builder = builder
        self.config = config
        self.autocast = None
        if config.precision.casts:
            self.autocast = Autocast(config.precision, builder.values, self._apply_at)

    def _apply_at(self, op_name, tensors, attrs, span, frame, path) -> Tensor:
        out = self.apply(op_name, tensors, attrs, span, frame, None, path=path)
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
    ) -> Tensor | tuple[Tensor, ...]:
        """Apply a primitive op; an op with several outputs returns a tuple of them.
        `path` names the output instead of the frame and hint (autocast's casts)."""
        op = REGISTRY[op_name]
        tensors, attrs = self.split_args(op, args, kwargs, span)
        if self.autocast is not None:
            tensors = self.autocast.inputs(op_name, tensors, span, frame)
        types = tuple(
            TensorType(v.shape, v.dtype, v.requires_grad, v.strides)
            for v in (self.builder.values[t.id] for t in tensors)
        )
        ctx = InferContext(
            op_name, types, attrs, self.config.precision.activation, bound=self.builder.bound
        )
        try:
            inferred = op.infer(ctx)
        except OpShapeError as err:
            raise ShapeError(str(err), span) from None
        for expr, text in ctx.assumptions:
            self.builder.assume_integer(expr, text, span)
        outputs = tuple(
            dataclasses.replace(o, shape=tuple(self.builder.drop_floors(d) for d in o.shape))
            for o in inferred
        )
        requires_grad = op.differentiable and any(t.requires_grad for t in types)
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
        if len(ids) > 1:
            return tuple(Tensor(i) for i in ids)
        return Tensor(ids[0])

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

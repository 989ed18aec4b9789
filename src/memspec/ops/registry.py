"""The primitive-op registry: `OpDef` and `register`.

An `OpDef` holds every rule about one op (xdsl's ops, micrograd's `_backward` beside the
op): how spec arguments map to tensor inputs and constant attributes, the output shape
and dtype (with a clear error on mismatch), and what PyTorch's autograd saves for
backward, its FLOPs forward and backward, its kind (which activation conventions name),
and the words `memspec ops` prints about it. Registering a second op of the same name is
an error (torch's flop_counter).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.sizes import GENERAL, BoundSizes
from memspec.ir.types import DType, Shape, shape_str

__all__ = [
    "REGISTRY",
    "BackwardMoment",
    "Grad",
    "InferContext",
    "Lowering",
    "OpDef",
    "OpKind",
    "OpShapeError",
    "OutputSpec",
    "Saved",
    "TensorType",
    "lookup",
    "register",
    "same_dim",
    "saved_if",
    "through_if_same_shape",
    "torch_functional",
]


def torch_functional():
    """`(torch, torch.nn.functional)`, imported on first use by a lowering."""
    import torch
    import torch.nn.functional as F

    return torch, F


class OpShapeError(Exception):
    """Raised by a shape rule; the elaborator attaches the call's span."""


@dataclass(frozen=True, slots=True)
class TensorType:
    shape: Shape
    dtype: DType
    requires_grad: bool = False
    strides: tuple[sp.Expr, ...] | None = None  # None: contiguous

    @property
    def contiguous(self) -> bool:
        return self.strides is None


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One output of an op: its type, and the input it is a view of (None: new storage)."""

    shape: Shape
    dtype: DType
    view_of: int | None = None
    strides: tuple[sp.Expr, ...] | None = None  # of a view; None: contiguous


@dataclass(frozen=True, slots=True)
class Saved:
    """A tensor kept for backward: an op input/output (`value`) or an internal tensor.

    `count` internal tensors of that shape, each its own storage (a scan's per-step
    states), may be saved under one label.
    """

    label: str
    value: int | None = None
    shape: Shape | None = None
    dtype: DType | None = None
    count: sp.Expr = sp.Integer(1)
    # kept as an attribute of the node's ctx (bitsandbytes' ctx.tensors), not with
    # save_for_backward: neither the node's backward nor a checkpoint frees it, only the
    # graph's end (the loop drops the loss as the step ends)
    in_ctx: bool = False


@dataclass
class InferContext:
    """What a shape rule sees: input types, attributes, the activation dtype, and the
    sizes the user bound, at which views and copies are decided (as torch does)."""

    op: str
    inputs: tuple[TensorType, ...]
    attrs: dict[str, object]
    act_dtype: DType
    assumptions: list[tuple[sp.Expr, str]] = field(default_factory=list)
    bound: BoundSizes = GENERAL

    def fail(self, message: str) -> OpShapeError:
        return OpShapeError(f"{self.op}: {message}")

    def expect_same(self, a: sp.Expr, b: sp.Expr, what: str | Callable[[], str]) -> None:
        """`what` names the dims in the error; a function that makes the name is called
        only then (printing shapes for every op costs a fifth of a large model's build)."""
        if not same_dim(a, b):
            raise self.fail(f"{what() if callable(what) else what}: {a} != {b}")

    def expect_rank(self, index: int, minimum: int) -> Shape:
        shape = self.inputs[index].shape
        if len(shape) < minimum:
            raise self.fail(
                f"argument {index + 1} needs at least {minimum} dims, got {shape_str(shape)}"
            )
        return shape

    def assume_integer(self, expr: sp.Expr, text: str) -> None:
        if expr.is_integer is not True:
            self.assumptions.append((expr, text))

    def float_dtype(self) -> DType:
        """The dtype of a floating-point result: the inputs' float dtype, else activations'."""
        floats = [t.dtype for t in self.inputs if t.dtype.is_float]
        return floats[0] if floats else self.act_dtype

    def product_dtype(self) -> DType:
        """The dtype of a product (mm, bmm, conv, SDPA): its float operands share one.

        torch does not promote inside these kernels ("expected m1 and m2 to have the same
        dtype"): a float32 table meeting bfloat16 activations is refused here, as torch
        refuses it, rather than given one operand's dtype. Autocast's casts come before.
        """
        floats = [t.dtype for t in self.inputs if t.dtype.is_float]
        if len(set(floats)) > 1:
            names = ", ".join(d.value for d in floats)
            raise self.fail(
                f"operands of different float dtypes ({names}): torch refuses the product; "
                "cast one (type_as) or declare the buffer's dtype"
            )
        return self.float_dtype()


def same_dim(a: sp.Expr, b: sp.Expr) -> bool:
    """Whether two symbolic sizes are equal for every value of their symbols."""
    return a == b or sp.expand(a - b) == 0


Infer = Callable[[InferContext], tuple[OutputSpec, ...]]
SavedRule = Callable[[OpApply, Graph], tuple[Saved, ...]]
# The PyTorch lowering: receives torch tensors and attributes with every size bound to a
# Python number; imports torch itself, so that memspec never imports it unless asked to.
Lowering = Callable[[tuple, dict], object]
FlopRule = Callable[[OpApply, Graph], sp.Expr]


class Grad(enum.Enum):
    """How backward makes one input's gradient."""

    NEW = "new"  # a fresh tensor shaped like the input
    THROUGH = "through"  # the output's gradient itself: no new memory
    # a fresh tensor handed on as a view of itself (nn.Linear's weight gradient comes out
    # of TBackward transposed, its input's of mm viewed back to 3-D): the view shares its
    # base's storage, so autograd cannot add a later gradient into it in place
    VIEW = "view"
    NONE = "none"  # no gradient flows to this input through this op
    # the output's gradient viewed (a reshape, a permutation): no new memory, but a view,
    # which autograd never sums a later gradient into in place
    THROUGH_VIEW = "through, a view"
    # a narrowed view of the output's gradient (cat's backward): a tensor of its own over
    # part of that gradient's storage, which it keeps alive. Its strides are the input's
    # own on every dim of size > 1 (each dim before the narrowed one has size 1), so
    # AccumulateGrad keeps it as a parameter's `.grad`, storage and all
    PART = "part"
    # a narrowed view whose strides are not the input's own (a dim of size > 1 before
    # the narrowed one): AccumulateGrad copies it into a new tensor of the input's size
    PART_STRIDED = "part, strided"


GradRule = Callable[[OpApply, Graph], tuple[Grad, ...]]


@dataclass(frozen=True, slots=True)
class BackwardMoment:
    """One moment inside a composite op's backward, before its inputs' gradients are
    complete: the bytes of the temporaries alive then (the partial sums of its inputs'
    gradients among them); by their `Saved` labels, the bytes freed of internal saved
    tensors that hold several (a scan's states) and the saved tensors the op holds no
    more; and whether it holds the gradient of its output no more.

    A moment that `given`s positions of inputs is no peak of its own: a node inside the
    op has returned, and autograd's engine adds the gradient it made for each of those
    inputs (a new tensor of the input's size) into the one the input has, beside the
    `temporaries` alive then (RMSNorm's x gets two parts, each as its node returns). An
    input given by a moment gets no gradient after the moments."""

    temporaries: sp.Expr
    freed: tuple[tuple[str, sp.Expr], ...] = ()
    dropped: tuple[str, ...] = ()
    output_grad_dropped: bool = False
    given: tuple[int, ...] = ()


# (op, graph, whether autograd adds a second gradient into the first in place)
MomentsRule = Callable[[OpApply, Graph, bool], tuple[BackwardMoment, ...]]


def _saves_nothing(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    return ()


class OpKind(enum.Enum):
    """What an op does, in the words an activation convention uses to pick ops
    (`count output of kind norm, matmul`), so a user's own layer that calls a norm op is
    counted like RMSNorm without being named."""

    MATMUL = "matmul"  # matrix products: linear, matmul, einsum
    ATTENTION = "attention"  # fused attention kernels
    CONV = "conv"  # convolutions
    POOLING = "pooling"  # windowed pooling
    NORM = "norm"  # normalization layers' ops
    ACTIVATION = "activation"  # the nonlinearities between projections
    SOFTMAX = "softmax"  # softmax and log-softmax
    ELEMENTWISE = "elementwise"  # arithmetic, pointwise functions, masks, dropout, rotations
    REDUCTION = "reduction"  # means and sums over whole dims
    LOSS = "loss"  # losses: of integer targets, mean squared error
    SCAN = "scan"  # recurrences over a sequence
    INDEXING = "indexing"  # lookups, gathers, scatters and top-k by integer indices
    RESAMPLE = "resample"  # interpolation to another size
    LAYOUT = "layout"  # reshapes, permutations, slices and joins: no arithmetic
    CREATION = "creation"  # tensors made from sizes alone
    COMMUNICATION = "communication"  # collectives between parallel ranks


@dataclass(frozen=True, slots=True)
class OpDef:
    """One primitive op.

    `tensors` names the tensor arguments in order (a trailing `?` marks an optional one,
    a leading `*` any number); `attrs` names constant arguments with their defaults.
    `shape_doc` and `saved_doc` say in words what `infer` and `saved` compute, for
    `memspec ops` and the README's table of ops.

    `bind_scope` says how an op's constant arguments are completed from the names in
    scope at the call: given the call's positional and keyword arguments and a lookup of
    a name in scope, it returns the keyword arguments, or raises ValueError with the
    user's message (the elaborator locates it at the call). einops' `rearrange` binds
    the pattern's axes that are named like a size in scope. None: the call's own.
    """

    name: str
    doc: str
    tensors: tuple[str, ...]
    infer: Infer
    saved: SavedRule = _saves_nothing
    attrs: tuple[tuple[str, object], ...] = ()
    lower: Lowering | None = None  # (torch tensors, concrete attrs) -> output tensor
    # Forward FLOPs of the matrix products inside the op (2 per multiply-add); None for
    # ops with none. Backward costs one forward per product operand that needs a gradient.
    flops: FlopRule | None = None
    # False for ops autograd does not record (creation, integer index bookkeeping): their
    # outputs never require grad. Integer outputs never do in any case, as in PyTorch.
    differentiable: bool = True
    # None: every input that requires grad gets a new gradient tensor (most formulas).
    grads: GradRule | None = None
    grads_doc: str | None = None  # `grads` in words; required with it
    # A composite op's backward (many small autograd nodes): the moments at which it can
    # peak; None: one kernel, whose moment is its inputs' gradients beside what it saved.
    backward_moments: MomentsRule | None = None
    bind_scope: Callable[[tuple, dict, Callable[[str], object]], dict] | None = None
    # Backward FLOPs; None: one forward per product operand among the first two inputs
    # that needs a gradient (x @ W^T makes W's gradient, and x's when x needs one).
    backward_flops: FlopRule | None = None
    # inputs (by name) whose gradient autograd's engine makes after the node returns, by
    # summing the output's gradient to the input's shape (validate_outputs' sum_to: a
    # bias broadcast over rows)
    summed: tuple[str, ...] = ()
    # the aten ops whose output is this op's output (a view of it at most): what a
    # selective-activation-checkpointing policy names (`save aten mm, bmm`)
    aten: tuple[str, ...] = ()
    # aten ops it dispatches for intermediates of its own (Mamba's scan: one bmm a step),
    # which a selective-checkpointing policy saving them would keep, unmodelled
    aten_inside: tuple[str, ...] = ()
    # bytes the op allocates and frees within its forward, beside its outputs (a
    # collective's staging copy); None: none
    workspace: FlopRule | None = None
    # inputs (by name) autograd never differentiates through (`x.type_as(other)`'s
    # other): the output needs a gradient only when another input does
    constants: tuple[str, ...] = ()
    # whether the op's output is written into storage the loop holds already (a static
    # K/V cache in a decode step): no new memory, and its inputs are not kept alive by it
    preallocated: Callable[[OpApply], bool] | None = None
    # the output is made a leaf that requires a gradient (`requires_grad_(True)` on a
    # tensor that needs none): AccumulateGrad keeps its gradient on it (`.grad`), and
    # the graph keeps the tensor, until the graph is freed at the step's end
    leaf: bool = False
    kind: OpKind = field(kw_only=True)
    shape_doc: str = field(kw_only=True)
    saved_doc: str = field(kw_only=True)

    def __post_init__(self) -> None:
        if (self.grads is None) != (self.grads_doc is None):
            raise ValueError(f"op {self.name!r}: give grads and grads_doc together")

    def constant_positions(self, count: int) -> frozenset[int]:
        """Positions among `count` inputs of those in `constants`."""
        return frozenset(k for k, name in enumerate(self.tensors[:count]) if name in self.constants)

    def summed_inputs(self, op: OpApply) -> tuple[int, ...]:
        """Positions among `op`'s inputs of those in `summed`."""
        return tuple(
            i for i, name in enumerate(self.tensors[: len(op.inputs)]) if name in self.summed
        )

    @property
    def gradient_doc(self) -> str:
        """How backward makes the inputs' gradients, in words."""
        if not self.differentiable:
            return "none: autograd does not record it"
        return self.grads_doc or "a new tensor for each input that needs one"

    def backward_flops_of(self, op: OpApply, graph: Graph) -> sp.Expr:
        """The op's backward FLOPs (zero for an op without a FLOP rule)."""
        if self.flops is None:
            return sp.Integer(0)
        if self.backward_flops is not None:
            return self.backward_flops(op, graph)
        needed = sum(1 for vid in op.inputs[:2] if graph.value(vid).requires_grad)
        return self.flops(op, graph) * needed

    def gradient_kinds(self, op: OpApply, graph: Graph) -> tuple[Grad, ...]:
        if self.grads is None:
            return (Grad.NEW,) * len(op.inputs)
        return self.grads(op, graph)


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add `op` to the registry; a duplicate name is an error."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


def lookup(name: str) -> OpDef | None:
    return REGISTRY.get(name)


def through_if_same_shape(op: OpApply, graph: Graph) -> tuple[Grad, ...]:
    """add's backward hands its output's gradient to each input of the output's shape;
    a broadcast input gets a new, summed gradient. The shapes are compared at the bound
    sizes: at B = 1 a [1, L, D] input has the output's shape and gets its gradient."""
    out = graph.value(op.outputs[0]).shape
    return tuple(
        Grad.THROUGH
        if len(graph.value(v).shape) == len(out)
        and all(graph.bound.equal(a, b) for a, b in zip(graph.value(v).shape, out, strict=True))
        else Grad.NEW
        for v in op.inputs
    )


def saved_if(graph: Graph, op: OpApply, index: int, needed_by: tuple[int, ...], label: str):
    """Input `index` is saved when any input in `needed_by` requires grad (PyTorch's rule)."""
    if any(graph.value(op.inputs[i]).requires_grad for i in needed_by if i < len(op.inputs)):
        return (Saved(label, op.inputs[index]),)
    return ()

"""Elementwise ops: arithmetic, activations, dropout (masks and rotary: `positional.py`).

Saved-tensor rules as observed with torch 2.13.0 on the CPU through
`torch.autograd.graph.saved_tensors_hooks`.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import DType, Shape, shape_str
from memspec.ops.promotion import DEFAULT_FLOAT, result_type
from memspec.ops.registry import (
    Grad,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
    same_dim,
    saved_if,
    through_if_same_shape,
    torch_functional,
)
from memspec.ops.strides import iterated

__all__ = ["broadcast"]


def broadcast(ctx: InferContext, a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting of two symbolic shapes (sizes equal, or one of them 1)."""
    out: list[sp.Expr] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else sp.Integer(1)
        y = b[-i] if i <= len(b) else sp.Integer(1)
        if same_dim(x, y) or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ctx.fail(f"shapes {shape_str(a)} and {shape_str(b)} do not broadcast")
    return tuple(reversed(out))


def _promoted(ctx: InferContext, *numbers: sp.Expr) -> DType:
    """torch's result dtype of the op's tensors and numbers (see `promotion`)."""
    try:
        return result_type(((t.dtype, len(t.shape)) for t in ctx.inputs), numbers)
    except ValueError as err:
        raise ctx.fail(str(err)) from None


def _layout(ctx: InferContext, shape) -> tuple:
    """An elementwise output's strides: the inputs' memory order (TensorIterator's)."""
    return iterated(shape, [(t.shape, t.strides) for t in ctx.inputs], ctx.bound)


def _binary(ctx: InferContext) -> tuple[OutputSpec, ...]:
    a, b = ctx.inputs
    shape = broadcast(ctx, a.shape, b.shape)
    return (OutputSpec(shape, _promoted(ctx), strides=_layout(ctx, shape)),)


def _true_divide(ctx: InferContext) -> tuple[OutputSpec, ...]:
    """`/` of integers is true division: the default float dtype."""
    (out,) = _binary(ctx)
    return (out if out.dtype.is_float else OutputSpec(out.shape, DEFAULT_FLOAT),)


def _with_number(attr: str):
    """The shape rule of x op number: x's shape, torch's promoted dtype."""

    def infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
        (x,) = ctx.inputs
        dtype = _promoted(ctx, sp.sympify(ctx.attrs[attr]))
        return (OutputSpec(x.shape, dtype, strides=_layout(ctx, x.shape)),)

    return infer


def _neg_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    if x.dtype is DType.bool:
        raise ctx.fail("cannot negate a bool tensor")
    return (OutputSpec(x.shape, x.dtype, strides=_layout(ctx, x.shape)),)


def _unary(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, ctx.float_dtype(), strides=_layout(ctx, x.shape)),)


def _to_float(ctx: InferContext) -> tuple[OutputSpec, ...]:
    """exp, sin, sigmoid, ...: torch computes them in a float dtype, and an integer (or
    bool) x promotes to the default float dtype, whatever the activations' dtype is."""
    (x,) = ctx.inputs
    dtype = x.dtype if x.dtype.is_float else DEFAULT_FLOAT
    return (OutputSpec(x.shape, dtype, strides=_layout(ctx, x.shape)),)


def _inplace(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)


def _saves_input(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of silu/gelu: the input."""
    return (Saved("input", op.inputs[0]),)


def _saves_output(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of relu/sigmoid/tanh/softmax: the output."""
    return (Saved("output", op.outputs[0]),)


def _mul_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`a * b` saves b when a needs a gradient, and a when b does."""
    return (
        *saved_if(graph, op, 1, (0,), "right operand"),
        *saved_if(graph, op, 0, (1,), "left operand"),
    )


def _div_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """`a / b` (both tensors) saves b for either gradient and a for b's."""
    return (*saved_if(graph, op, 1, (0, 1), "divisor"), *saved_if(graph, op, 0, (1,), "dividend"))


def _dropout_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """CPU dropout multiplies by a scaled mask of the input's dtype and saves it."""
    x = graph.value(op.inputs[0])
    return (Saved("mask", shape=x.shape, dtype=x.dtype),)


def _native_dropout_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """torch.native_dropout (CUDA's dropout kernel; it runs on the CPU too) keeps the
    mask as bool, one byte per element."""
    return (Saved("mask", shape=graph.value(op.inputs[0]).shape, dtype=DType.bool),)


def _f(name: str):
    """Lowering to `torch.nn.functional.<name>(x)`."""
    return lambda tensors, attrs: getattr(torch_functional()[1], name)(*tensors)


def _pointwise(name: str, doc: str, kind: OpKind, saved, saved_doc: str, lower, **rules) -> None:
    """Register a one-tensor op whose output has its input's shape (None: saves nothing)."""
    if saved is not None:
        rules["saved"] = saved
    register(
        OpDef(
            name,
            doc,
            ("x",),
            rules.pop("infer", _unary),
            lower=lower,
            kind=kind,
            shape_doc=rules.pop("shape_doc", "x's shape"),
            saved_doc=saved_doc,
            **rules,
        )
    )


_BROADCAST = "a and b broadcast together (NumPy's rule); torch's dtype promotion"
_NOTHING = "nothing"
_TO_FLOAT = "x's shape; an integer x gives float32 (torch's default dtype)"
_NUMBER = "x's shape; an integer x stays integer when the constant is an integer"
_ELEMENTWISE, _ACTIVATION = OpKind.ELEMENTWISE, OpKind.ACTIVATION
register(
    OpDef(
        "add",
        "a + b, broadcasting",
        ("a", "b"),
        _binary,
        lower=lambda t, a: t[0] + t[1],
        grads=through_if_same_shape,
        grads_doc="the output's gradient itself for an input of its shape; a new, summed one "
        "for a broadcast input",
        kind=_ELEMENTWISE,
        shape_doc=_BROADCAST,
        saved_doc=_NOTHING,
    )
)
register(
    OpDef(
        "sub",
        "a - b, broadcasting",
        ("a", "b"),
        _binary,
        lower=lambda t, a: t[0] - t[1],
        grads=lambda op, graph: (through_if_same_shape(op, graph)[0], Grad.NEW),
        grads_doc="a's as for add; a new, negated one for b",
        kind=_ELEMENTWISE,
        shape_doc=_BROADCAST,
        saved_doc=_NOTHING,
    )
)
register(
    OpDef(
        "mul",
        "a * b of two tensors, broadcasting",
        ("a", "b"),
        _binary,
        _mul_saved,
        lower=lambda t, a: t[0] * t[1],
        kind=_ELEMENTWISE,
        shape_doc=_BROADCAST,
        saved_doc="b when a needs a gradient, a when b does",
    )
)
register(
    OpDef(
        "div",
        "a / b of two tensors, broadcasting",
        ("a", "b"),
        _true_divide,
        _div_saved,
        lower=lambda t, a: t[0] / t[1],
        kind=_ELEMENTWISE,
        shape_doc=f"{_BROADCAST}; integers divide to float32",
        saved_doc="b when either needs a gradient, a when b does",
    )
)


def _div_inplace(ctx: InferContext) -> tuple[OutputSpec, ...]:
    """a /= b: b broadcasts to a, whose storage holds the result. Refused where either
    needs a gradient: autograd's handling of an overwritten input is not modelled (div
    is)."""
    a, b = ctx.inputs
    shape = broadcast(ctx, a.shape, b.shape)
    if len(shape) != len(a.shape):
        raise ctx.fail("b broadcasts to a's shape: the result is a's storage")
    for x, y in zip(shape, a.shape, strict=True):
        ctx.expect_same(x, y, "b broadcast against a (the result is a's storage)")
    if a.requires_grad or b.requires_grad:
        raise ctx.fail("in place where a gradient is needed: not modelled (div is)")
    if not a.dtype.is_float or _promoted(ctx) != a.dtype:
        raise ctx.fail(f"the quotient is a's dtype in place, {a.dtype.value}: a float, b no wider")
    return (OutputSpec(a.shape, a.dtype, view_of=0, strides=a.strides),)


register(
    OpDef(
        "div_",
        "a /= b in place, b broadcasting: the output is a's storage (under no_grad: refused "
        "where a gradient is needed)",
        ("a", "b"),
        _div_inplace,
        lower=lambda t, a: t[0].div_(t[1]),
        differentiable=False,
        kind=_ELEMENTWISE,
        shape_doc="a's shape, in a's storage; b broadcasts to it",
        saved_doc="nothing",
    )
)
_pointwise(
    "scale",
    "x times a constant: saves nothing",
    _ELEMENTWISE,
    None,
    _NOTHING,
    lambda t, a: t[0] * a["factor"],
    infer=_with_number("factor"),
    shape_doc=_NUMBER,
    attrs=(("factor", 1),),
)
_pointwise(
    "shift",
    "x plus a constant: saves nothing",
    _ELEMENTWISE,
    None,
    _NOTHING,
    lambda t, a: t[0] + a["offset"],
    infer=_with_number("offset"),
    shape_doc=_NUMBER,
    attrs=(("offset", 0),),
    grads=lambda op, graph: (Grad.THROUGH,),
    grads_doc="the output's gradient itself",
)
_pointwise("neg", "-x", _ELEMENTWISE, None, _NOTHING, lambda t, a: -t[0], infer=_neg_infer)
_pointwise("silu", "x * sigmoid(x)", _ACTIVATION, _saves_input, "the input", _f("silu"))
_pointwise(
    "gelu",
    "GELU, exact (erf) or tanh approximation",
    _ACTIVATION,
    _saves_input,
    "the input",
    lambda t, a: torch_functional()[1].gelu(t[0], approximate=a["approximate"]),
    attrs=(("approximate", "none"),),
)
_pointwise("relu", "max(x, 0)", _ACTIVATION, _saves_output, "the output", _f("relu"))
_pointwise(
    "relu_",
    "max(x, 0) in place: the output is x's storage",
    _ACTIVATION,
    _saves_output,
    "the output (x's storage)",
    lambda t, a: torch_functional()[1].relu(t[0], inplace=True),
    infer=_inplace,
    shape_doc="x's shape, in x's storage",
)
_pointwise("softplus", "log(1 + exp(x))", _ACTIVATION, _saves_input, "the input", _f("softplus"))
_pointwise(
    "exp",
    "exp(x)",
    _ELEMENTWISE,
    _saves_output,
    "the output",
    lambda t, a: torch_functional()[0].exp(t[0]),
    infer=_to_float,
    shape_doc=_TO_FLOAT,
)
for _name, _doc in (("sigmoid", "1 / (1 + exp(-x))"), ("tanh", "tanh(x)")):
    _pointwise(
        _name,
        _doc,
        _ELEMENTWISE,
        _saves_output,
        "the output",
        _f(_name),
        infer=_to_float,
        shape_doc=_TO_FLOAT,
    )
_pointwise(
    "dropout",
    "training-mode dropout",
    _ELEMENTWISE,
    _dropout_saved,
    "a scaled mask of x's shape and dtype",
    lambda t, a: torch_functional()[1].dropout(t[0], a["p"], training=True),
    attrs=(("p", 0),),
)
_pointwise(
    "native_dropout",
    "training-mode dropout as CUDA runs it (torch.native_dropout: Megatron-LM's and "
    "F.dropout's kernel on a GPU)",
    _ELEMENTWISE,
    _native_dropout_saved,
    "a bool mask of x's shape (1 byte per element)",
    lambda t, a: torch_functional()[0].native_dropout(t[0], a["p"], True)[0],
    attrs=(("p", 0),),
)
_pointwise(
    "pow",
    "x ** exponent, a constant exponent (torch.pow(x, 3.0) in Hugging Face's gelu_new)",
    _ELEMENTWISE,
    _saves_input,
    "the input",
    lambda tensors, attrs: tensors[0].pow(attrs["exponent"]),
    attrs=(("exponent", None),),
)

"""`memspec verify` says what a mismatch is made of: a wrong op rule, defined here, and
the hints it must print (both sides' tensors, the whole-tensor and dtype relations)."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.ir.types import DType
from memspec.ops.registry import REGISTRY, OpDef, OpKind, OutputSpec, Saved, register
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from memspec.verify.report import render_verify

SPEC = """
use std
dim batch_size as B
dim d_model as D
dim classes as C
model Toy {
    proj = Linear(D, D)
    head = Linear(D, C)
    forward(x: [B, D], targets: int64[B]) {
        return cross_entropy(head(OP(proj(x))), targets)
    }
}
"""
SIZES = {"B": 2, "D": 4, "C": 3}


def _same_shape(ctx):
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, ctx.float_dtype()),)


@pytest.fixture
def wrong_ops():
    """`cube_copy`: x.pow(3), whose rule says it saves a copy of x (torch saves x
    itself); `cube_half`: (x * 1).pow(3), whose rule says the tensor it makes and saves
    is bfloat16 (torch's is float32)."""
    copy = OpDef(
        "cube_copy",
        "x ** 3, with a wrong saved rule",
        ("x",),
        _same_shape,
        lambda op, graph: (Saved("a copy of x", None, graph.value(op.inputs[0]).shape,
                                 DType.float32),),
        lower=lambda t, a: t[0].pow(3),
        kind=OpKind.ELEMENTWISE,
        shape_doc="x's shape",
        saved_doc="a copy of x (wrong: torch saves x)",
    )
    half = OpDef(
        "cube_half",
        "(x * 1) ** 3, with a wrong dtype in its saved rule",
        ("x",),
        _same_shape,
        lambda op, graph: (Saved("x * 1", None, graph.value(op.inputs[0]).shape,
                                 DType.bfloat16),),
        lower=lambda t, a: (t[0] * 1).pow(3),
        kind=OpKind.ELEMENTWISE,
        shape_doc="x's shape",
        saved_doc="x * 1 (wrong dtype)",
    )
    for op in (copy, half):
        register(op)
    yield
    for op in (copy, half):
        del REGISTRY[op.name]


def _verify(op: str, **sizes: int) -> str:
    result = compile_spec(SPEC.replace("OP", op), convention="autograd", set=SIZES | sizes)
    measured = measure_step(result)
    peak = compare_peak(result, measure_peak(result, result.peak.options))
    return render_verify(result, compare(result, measured), measured, peak)


def test_a_copy_against_a_view_names_both_sides(wrong_ops):
    text = _verify("cube_copy")
    # torch saved proj's output itself, which memspec's rule does not
    assert (
        "  proj                                   -              32           32  MISMATCH\n"
        "      hint: memspec: saves nothing under this name\n"
        "      hint: torch:   [2, 4] float32, 32 B (saved in cube_copy)\n"
        "      hint: torch holds 1 x the [2, 4] float32, 32 B (saved in cube_copy) more: "
        "a copy on one side, a view on the other?\n"
    ) in text
    # memspec's rule makes a copy that torch never made
    assert (
        "      hint: memspec: cube_copy.a_copy_of_x [B, D] float32, 32 B x 1: "
        "saved by cube_copy (a copy of x)\n"
        "      hint: torch:   saved nothing under this name (another storage instead?)\n"
        "      hint: memspec holds 1 x cube_copy.a_copy_of_x [2, 4] float32 (32 B) more: "
        "a copy on one side, a view on the other?\n"
    ) in text
    assert "verify: MISMATCH" in text


def test_a_dtype_ratio(wrong_ops):
    text = _verify("cube_half")
    assert (
        "  cube_half [internal]                  16              32           16  MISMATCH\n"
        "      hint: memspec: cube_half.x_*_1 [B, D] bfloat16, 16 B x 1: saved by cube_half "
        "(x * 1)\n"
        "      hint: torch:   [2, 4] float32, 32 B (saved in cube_half)\n"
        "      hint: measured / predicted = 2, as float64 / float32, float32 / float16, "
        "float32 / bfloat16: a dtype differs?\n"
        "  cube_half   "
    ) in text


def test_the_peak_names_each_category_that_differs(wrong_ops):
    """At B = 64 the step peaks in backward, where the wrong dtype shows."""
    text = _verify("cube_half", B=64)
    assert "  hint: ACT: memspec holds 1,280 B more\n" in text
    assert (
        "  hint: TEMP: the tracker holds 2,560 B more; = 4 x proj [B, D] float32 (1,024 B)"
        not in text
    )
    assert "verify --peak: MISMATCH" in text
